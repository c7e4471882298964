"""llama.cpp's own GGUF reader (gguf-py) reads the student that `demo-distillation --write DIR`
writes: the file parses, keeps the teacher's tokenizer and embedding byte for byte, has
`block_count` blocks shaped like the teacher's, and carries its training provenance; every
matrix dequantizes (with gguf-py's dequantizers) to finite values.

usage: python gguf_reads_the_student.py TEACHER.gguf DIR
"""

import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import dequantize


def field(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]) for i in f.data]


def scalar(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def main():
    teacher_path, directory = Path(sys.argv[1]), Path(sys.argv[2])
    teacher = gguf.GGUFReader(teacher_path)
    files = sorted(directory.glob("student-*.gguf"))
    if not files:
        sys.exit(f"no student-*.gguf in {directory}")
    shapes = {t.name.split(".", 2)[2]: list(t.shape) for t in teacher.tensors if t.name.startswith("blk.0.")}
    teacher_embd = next(t for t in teacher.tensors if t.name == "token_embd.weight")
    for path in files:
        s = gguf.GGUFReader(path)
        blocks = int(scalar(s, "llama.block_count"))
        kept = [int(s.fields["distill.teacher_blocks"].parts[i][0]) for i in s.fields["distill.teacher_blocks"].data]
        assert len(kept) == blocks, (kept, blocks)
        for key in ("distill.objective", "distill.seed", "distill.git_sha", "distill.steps"):
            assert key in s.fields, f"{path.name} lacks {key}"
        assert field(s, "tokenizer.ggml.tokens") == field(teacher, "tokenizer.ggml.tokens")
        names = {t.name: t for t in s.tensors}
        for b in range(blocks):
            for suffix, shape in shapes.items():
                t = names.get(f"blk.{b}.{suffix}")
                assert t is not None, f"{path.name} lacks blk.{b}.{suffix}"
                assert list(t.shape) == shape, (t.name, list(t.shape), shape)
                if len(t.shape) == 2:
                    w = dequantize(t.data, t.tensor_type)
                    assert np.isfinite(w).all() and np.abs(w).max() > 0, t.name
        assert not any(n.startswith(f"blk.{blocks}.") for n in names), "extra blocks"
        embd = names["token_embd.weight"]
        assert embd.tensor_type == teacher_embd.tensor_type
        assert bytes(embd.data) == bytes(teacher_embd.data), "the embedding is not the teacher's"
        types = sorted({t.tensor_type.name for t in s.tensors if len(t.shape) == 2 and t.name.startswith("blk.")})
        print(f"{path.name}: gguf-py reads {blocks} blocks (teacher's {kept}), {'/'.join(types)} matrices, "
              f"the teacher's tokenizer and embedding, provenance keys present: OK")


if __name__ == "__main__":
    main()
