"""llama.cpp's prompt-lookup decoding (llama-cpp-python's LlamaPromptLookupDecoding) against
its plain greedy decoding, on the speculative-decoding chapter's tasks, given as token ids.

Usage: llama_cpp_lookup.py MODEL THREADS K TASKS.json, TASKS.json a list of
{"name", "prompt_ids", "stop_ids", "max_tokens"}. Prints one JSON object: for every task and
method ("plain", "lookup") the generated ids, the prefill time (to the first token), the decode
time (the tokens after the first), the target passes after the prompt and the tokens drafted.

Run by `cargo xtask bench --peer llama-cpp` with llama-cpp-python's interpreter."""
import json
import sys
import time

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

model_path, threads, k, tasks_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(tasks_path) as f:
    tasks = json.load(f)


def load(draft):
    # A draft model makes llama-cpp-python keep the logits of every position (logits_all).
    return Llama(model_path=model_path, n_ctx=2048, n_batch=512, n_threads=threads,
                 n_threads_batch=threads, flash_attn=False, verbose=False, draft_model=draft)


def counted(m):
    """Records the length and time of every batch m evaluates."""
    calls = []
    evaluate = m.eval

    def eval_counted(tokens):
        start = time.perf_counter()
        evaluate(tokens)
        calls.append((len(tokens), time.perf_counter() - start))

    m.eval = eval_counted
    return calls


engines = {
    "plain": load(None),
    "lookup": load(LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=k)),
}
calls = {name: counted(m) for name, m in engines.items()}


def decode(m, task, limit):
    """Greedy decoding of task with m, up to limit tokens: (ids, prefill s, decode s)."""
    m.reset()
    stops = set(task["stop_ids"])
    ids = []
    start = time.perf_counter()
    first = last = start
    for token in m.generate(task["prompt_ids"], temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                            repeat_penalty=1.0, reset=True):
        now = time.perf_counter()
        if not ids:
            first = now
        if token in stops:
            break
        ids.append(int(token))
        last = now
        if len(ids) == limit:
            break
    return ids, first - start, last - first


# Warm-up: the first evaluation of each engine maps the weights and sizes its buffers.
for m in engines.values():
    decode(m, tasks[0], 4)
rows = []
for task in tasks:
    for name, m in engines.items():
        calls[name].clear()
        ids, prefill, decoding = decode(m, task, task["max_tokens"])
        # The first call evaluates the prompt; each later one a token and its draft.
        later = calls[name][1:]
        by_length = {}
        for n, seconds in later:
            by_length.setdefault(n, []).append(seconds)
        rows.append({
            "task": task["name"], "method": name, "ids": ids,
            "prefill_s": prefill, "decode_s": decoding,
            "passes": len(later), "drafted": sum(n - 1 for n, _ in later),
            # Mean seconds of a pass, by the tokens it evaluated.
            "pass_s": {str(n): sum(v) / len(v) for n, v in by_length.items()},
        })
print(json.dumps({"version": llama_cpp.__version__, "threads": threads, "k": k, "rows": rows}))
