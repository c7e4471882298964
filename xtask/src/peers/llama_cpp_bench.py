"""llama.cpp on the same machine, the same model and the same workload as
`demo-tgi-architecture --benchmark`: prefill a 128-token prompt, decode 128 tokens greedily,
best of 3, at 1 thread and at all threads. Prints one JSON object.

Run by `cargo xtask bench --peer llama-cpp` with llama-cpp-python's interpreter."""
import json
import os
import sys
import time

import llama_cpp
from llama_cpp import Llama

model_path, threads_all = sys.argv[1], int(sys.argv[2])
text = ("The history of the city begins with a small fishing village on the banks of the river. "
        "Over the centuries it grew into a trading port, then an industrial centre, and today it is "
        "known for its universities, its museums and its parks. ") * 8
rows = []
for threads in sorted({1, threads_all}):
    m = Llama(model_path=model_path, n_ctx=512, n_batch=512, n_threads=threads,
              n_threads_batch=threads, flash_attn=False, verbose=False)
    prompt = m.tokenize(text.encode(), add_bos=False)[:128]
    best_prefill = best_decode = 0.0
    for _ in range(3):
        m.reset()
        t = time.perf_counter()
        m.eval(prompt)
        best_prefill = max(best_prefill, len(prompt) / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(128):
            logits = m.scores[m.n_tokens - 1]
            m.eval([int(logits.argmax())])
        best_decode = max(best_decode, 128 / (time.perf_counter() - t))
    rows.append({"threads": threads, "prefill": best_prefill, "decode": best_decode})
    del m
print(json.dumps({"version": llama_cpp.__version__, "rows": rows,
                  "system_info": llama_cpp.llama_print_system_info().decode()}))
