"""llama.cpp's own GGUF reader (the `gguf` Python package, gguf-py from the llama.cpp
repository) reads the files our requantizer writes, and its dequantizers give back the model.

usage: python gguf_reads_our_files.py SOURCE.gguf DIR

For every DIR/model.<FORMAT>.gguf written by `demo-quantization --write DIR`:
- the file parses; it has the source's tensors (names, shapes) and metadata keys, with the
  tokenizer unchanged;
- every matrix, dequantized by gguf-py, is close to the source's matrix (dequantized by
  gguf-py too): relative error below the format's bound. A wrong block layout gives errors
  near 100%, not a few percent.
"""

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import dequantize

# Relative error ‖W − Ŵ‖/‖W‖ over all matrices, per format: about twice what the
# quantization chapter's table measures, far below what a misread layout gives.
BOUNDS = {"F16": 0.001, "Q8_0": 0.015, "Q6_K": 0.02, "Q5_K": 0.08, "Q5_0": 0.08,
          "Q4_K": 0.08, "Q4_1": 0.001, "Q4_0": 0.16}


def matrices(reader):
    out = {}
    for t in reader.tensors:
        if len(t.shape) == 2:
            out[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
    return out


def field(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]) for i in f.data]


def main():
    source_path, directory = Path(sys.argv[1]), Path(sys.argv[2])
    source = gguf.GGUFReader(source_path)
    want = matrices(source)
    files = sorted(directory.glob("model.*.gguf"))
    if not files:
        sys.exit(f"no model.*.gguf in {directory}")
    failed = False
    for path in files:
        fmt = path.name[len("model."):-len(".gguf")]
        ours = gguf.GGUFReader(path)
        assert [t.name for t in ours.tensors] == [t.name for t in source.tensors], path
        assert [list(t.shape) for t in ours.tensors] == [list(t.shape) for t in source.tensors]
        assert set(ours.fields) == set(source.fields), path
        assert field(ours, "tokenizer.ggml.tokens") == field(source, "tokenizer.ggml.tokens")
        got = matrices(ours)
        err2 = sum(float(np.sum((got[n] - w) ** 2)) for n, w in want.items())
        norm2 = sum(float(np.sum(w ** 2)) for w in want.values())
        rel = (err2 / norm2) ** 0.5
        types = sorted({t.tensor_type.name for t in ours.tensors if len(t.shape) == 2})
        ok = rel <= BOUNDS.get(fmt, 0.2)
        failed |= not ok
        print(f"{path.name}: read by gguf {importlib.metadata.version('gguf')} ({', '.join(types)}), "
              f"relative error {100 * rel:.2f}% {'ok' if ok else 'TOO LARGE'}")
    if failed:
        sys.exit("a file written by our requantizer does not read back correctly in gguf-py")


if __name__ == "__main__":
    main()
