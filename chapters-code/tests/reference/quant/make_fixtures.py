"""Regenerates quant_fixtures.json: block-format reference values from the `gguf` Python
package (llama.cpp's own numpy reference code, `pip install gguf==0.19.0 numpy`).

- For Q4_K, Q5_K, Q6_K and Q5_0: random blocks (random bytes, with sane f16 scales) and what
  gguf's dequantizer makes of them. Our dequantizers must give the same f32 bits.
- For Q5_0, Q4_0, Q4_1, Q8_0: gguf's quantizer (a port of llama.cpp's reference) on a
  synthetic row. Our quantizers must give the same bytes.

usage: python make_fixtures.py > quant_fixtures.json
"""

import importlib.metadata
import json
import sys

import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES

rng = np.random.default_rng(20261129)


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(qtype, n):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    scales = rng.uniform(0.0005, 0.05, size=n)
    mins = rng.uniform(0.0, 0.05, size=n)
    if qtype in (T.Q4_K, T.Q5_K):
        raw[:, 0:2] = f16_bytes(scales)
        raw[:, 2:4] = f16_bytes(mins)
    elif qtype == T.Q6_K:
        raw[:, type_size - 2:] = f16_bytes(scales)
    elif qtype == T.Q5_0:
        raw[:, 0:2] = f16_bytes(scales)
    return raw


def bits(values):
    return [int(v) for v in np.asarray(values, dtype=np.float32).view(np.uint32).reshape(-1)]


cases = []
for qtype in (T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0):
    blocks = random_blocks(qtype, 6)
    values = gguf.quants.dequantize(blocks.reshape(-1), qtype)
    cases.append({"kind": "dequantize", "type": qtype.name, "blocks": blocks.tobytes().hex(), "values": bits(values)})

# llama.cpp's quantization test data: 0.1 + 2 cos(i + offset), 1024 values.
row = (0.1 + 2 * np.cos(np.arange(1024, dtype=np.float32))).astype(np.float32)
for qtype in (T.Q5_0, T.Q4_0, T.Q4_1, T.Q8_0):
    q = gguf.quants.quantize(row, qtype)
    cases.append({"kind": "quantize", "type": qtype.name, "input": bits(row), "blocks": q.tobytes().hex()})

json.dump({"generator": "make_fixtures.py", "gguf": importlib.metadata.version("gguf"), "cases": cases}, sys.stdout)
print()
