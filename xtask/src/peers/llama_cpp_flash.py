"""llama.cpp with and without flash attention (its -fa, `flash_attn` here) at the context lengths
of `demo-flash-attention --benchmark`, on the same machine, model and text: for each length n,
a prefill of the first n tokens of the reference text (whole model, tokens per second) and then
the next K tokens decoded one by one, teacher-forced (tokens per second). Prints one JSON object.

Run by `cargo xtask bench --peer llama-cpp` with llama-cpp-python's interpreter."""
import json
import sys
import time

import llama_cpp
from llama_cpp import Llama

model_path, threads, contexts, k, text_path = (
    sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3].split(",")], int(sys.argv[4]),
    sys.argv[5])
with open(text_path, encoding="utf-8", errors="replace") as f:
    text = f.read()
rows = []
for fa in (False, True):
    m = Llama(model_path=model_path, n_ctx=8192, n_batch=512, n_ubatch=512, n_threads=threads,
              n_threads_batch=threads, flash_attn=fa, verbose=False)
    ids = m.tokenize(text.encode(), add_bos=False)
    for n in sorted(contexts):
        m.reset()
        t = time.perf_counter()
        m.eval(ids[:n])
        prefill = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for tok in ids[n:n + k]:
            m.eval([tok])
        decode = k / (time.perf_counter() - t)
        rows.append({"flash_attn": fa, "context": n, "prefill": prefill, "decode": decode})
    del m
print(json.dumps({"version": llama_cpp.__version__, "threads": threads, "rows": rows}))
