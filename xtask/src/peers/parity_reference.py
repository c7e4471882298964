"""llama.cpp's reference outputs for the parity suite (`chapters-code/tests/parity/`).

Run by `cargo xtask parity-reference` (which passes the paths), in two roles.

As the orchestrator (no PRODML_PARITY_WORKER in the environment), it:
  1. creates a venv with pinned build tools and Python packages;
  2. downloads the llama-cpp-python sdist (pinned; it vendors llama.cpp) and extracts it;
  3. builds llama.cpp's shared library once per SIMD level this CPU can run, with the level
     chosen explicitly (GGML_NATIVE=OFF): AVX2 always, AVX-512 where the CPU has it, AVX-only
     where it has not, and AVX2 without llamafile's sgemm (which only prompt processing uses);
  4. runs itself as a worker on each build (each build is its own shared library, loaded
     through llama-cpp-python's ctypes bindings with LLAMA_CPP_LIB_PATH).

As a worker, in one of three phases:
  greedy   llama.cpp's normal generation: the prompt in one batch (only its last logits
           computed, as llama-cli does), then one token at a time, greedy, up to MAX_TOKENS or
           an end-of-generation token. At every step: the token and the top-5
           log-probabilities (log-softmax of the logits, in float64).
  cross    teacher-forced on another build's tokens (its prompt in one batch, then its tokens
           one at a time): this build's log-probabilities of the other build's top-5 ids.
  prefill  the prompt and this build's own generated tokens in ONE batch, every position's
           logits: its log-probabilities of its own top-5 ids (llama.cpp against its decode).

usage: parity_reference.py MODEL PROMPTS OUT_DIR WORK_DIR
"""
import gzip
import json
import os
import sys

import pathlib
import subprocess
import tarfile

MAX_TOKENS = 128
TOP = 5
DECIMALS = 4  # log-probabilities are stored rounded to 1e-4


LLAMA_CPP_PYTHON = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TOOLS = ["cmake==4.4.5", "ninja==1.13.2", "scikit-build-core==1.1.2", "numpy==2.4.6",
         "jinja2==3.1.6", "diskcache==5.6.3", "typing-extensions==4.16.0"]
X86 = ["-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_F16C=ON"]
AVX2 = X86 + ["-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_BMI2=ON"]
AVX512 = AVX2 + ["-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX512_VNNI=ON",
                 "-DGGML_AVX512_BF16=ON"]
OFF = ["-DGGML_AVX2=OFF", "-DGGML_FMA=OFF", "-DGGML_BMI2=OFF", "-DGGML_AVX512=OFF"]


def builds_for_this_cpu():
    """(name, cmake flags) of every build this CPU can run."""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    builds = [("avx2", AVX2), ("avx2-nosgemm", AVX2 + ["-DGGML_LLAMAFILE=OFF"])]
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512vbmi"} <= flags:
        builds.append(("avx512", AVX512))
    else:
        builds.append(("avx", X86 + OFF))
    return builds


def fetch_sdist(py, work):
    """The llama-cpp-python sdist from PyPI, checked by SHA-256. (`pip download` prepares the
    package's metadata, which needs its build backend: scikit-build-core is among the tools.)"""
    import hashlib
    tarball = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not tarball.exists():
        run([str(py), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "--no-build-isolation", "-d", str(work), f"llama-cpp-python=={LLAMA_CPP_PYTHON}"])
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        tarball.unlink()
        sys.exit(f"{tarball.name}: SHA-256 {digest}, expected {SDIST_SHA256}")
    return tarball


def run(cmd, **kw):
    print("+", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def orchestrate(model, prompts, out_dir, work):
    work.mkdir(parents=True, exist_ok=True)
    venv = work / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *TOOLS])
    src = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not src.exists():
        tarball = fetch_sdist(py, work)
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
    llama = src / "vendor" / "llama.cpp"
    commit = subprocess.run(["git", "-C", str(llama), "log", "-1", "--format=%H"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    builds = builds_for_this_cpu()
    for name, flags in builds:
        b = work / f"build-{name}"
        stamp = b / "flags.txt"
        if stamp.exists() and stamp.read_text() == " ".join(flags):
            continue
        run([str(venv / "bin" / "cmake"), "-S", str(llama), "-B", str(b), "-G", "Ninja",
             f"-DCMAKE_MAKE_PROGRAM={venv / 'bin' / 'ninja'}", "-DCMAKE_BUILD_TYPE=Release",
             "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_OPENSSL=OFF", *flags])
        run([str(venv / "bin" / "cmake"), "--build", str(b), "-j", str(os.cpu_count() or 2),
             "--target", "llama"])
        stamp.write_text(" ".join(flags))
    out_dir.mkdir(parents=True, exist_ok=True)
    outs = {name: out_dir / f"llama-{name}.json.gz" for name, _ in builds}

    def worker(phase, name, flags, *against):
        env = dict(os.environ, PRODML_PARITY_WORKER="1", PYTHONPATH=str(src),
                   LLAMA_CPP_LIB_PATH=str(work / f"build-{name}" / "bin"),
                   PRODML_LLAMA_FLAGS=" ".join(flags), PRODML_LLAMA_CPP_COMMIT=commit,
                   PRODML_LLAMA_CPP_PYTHON_VERSION=LLAMA_CPP_PYTHON, OMP_WAIT_POLICY="passive")
        run([str(py), __file__, phase, str(model), str(prompts), str(outs[name]), name,
             *map(str, against)], env=env)

    for name, flags in builds:
        worker("greedy", name, flags)
    for name, flags in builds:
        worker("cross", name, flags, *[outs[o] for o, _ in builds if o != name])
        worker("prefill", name, flags)


def load(model_path, logits_all):
    from llama_cpp import Llama
    return Llama(model_path=model_path, n_ctx=4096, n_batch=4096, n_ubatch=4096, n_threads=1,
                 n_threads_batch=1, logits_all=logits_all, flash_attn=False, verbose=False)


def last_logits(m):
    """The logits of the last evaluated token (the only ones computed without logits_all)."""
    import numpy as np
    return np.ctypeslib.as_array(m._ctx.get_logits(), shape=(m.n_vocab(),)).copy()


def log_softmax(logits):
    import numpy as np
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def top(lps):
    import numpy as np
    # The top TOP ids by log-probability; equal values keep the lower id first (a stable sort).
    ids = np.argsort(-lps, kind="stable")[:TOP]
    return [int(i) for i in ids], [round(float(lps[i]), DECIMALS) for i in ids]


def render(m, prompt):
    """The prompt's token ids: raw text as is, a chat through the GGUF's own template."""
    if "text" in prompt:
        text = prompt["text"]
    else:
        import jinja2
        template = m.metadata["tokenizer.chat_template"]
        env = jinja2.Environment(loader=jinja2.BaseLoader())
        text = env.from_string(template).render(messages=prompt["messages"],
                                                add_generation_prompt=True)
    return text, m.tokenize(text.encode(), add_bos=False, special=True)


def greedy(m, ids):
    import numpy as np
    from llama_cpp import llama_cpp
    m.reset()
    m.eval(ids)
    tokens, top_ids, top_lps = [], [], []
    vocab = llama_cpp.llama_model_get_vocab(m.model)
    while len(tokens) < MAX_TOKENS:
        lps = log_softmax(last_logits(m))
        i, v = top(lps)
        tok = int(np.argmax(lps))
        tokens.append(tok)
        top_ids.append(i)
        top_lps.append(v)
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        m.eval([tok])
    return tokens, top_ids, top_lps


def teacher_forced(m, ids, tokens, ask):
    """This build's log-probabilities of `ask[k]` (ids) at step k, fed `tokens` one at a time."""
    m.reset()
    m.eval(ids)
    out = []
    for k, tok in enumerate(tokens):
        lps = log_softmax(last_logits(m))
        out.append([round(float(lps[i]), DECIMALS) for i in ask[k]])
        if k + 1 < len(tokens):
            m.eval([tok])
    return out


def one_batch(m, ids, tokens, ask):
    """As teacher_forced, but the prompt and all tokens but the last in one batch."""
    m.reset()
    m.eval(ids + tokens[:-1])
    out = []
    for k in range(len(tokens)):
        lps = log_softmax(m.scores[len(ids) - 1 + k])
        out.append([round(float(lps[i]), DECIMALS) for i in ask[k]])
    return out


def read(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def write(path, result):
    """Gzipped compact JSON, byte-for-byte reproducible (no time stamp in the gzip header)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                               filename="") as gz:
        gz.write((json.dumps(result, separators=(",", ":")) + "\n").encode())


def main():
    if "PRODML_PARITY_WORKER" not in os.environ:
        model, prompts, out_dir, work = map(pathlib.Path, sys.argv[1:5])
        orchestrate(model.resolve(), prompts.resolve(), out_dir.resolve(), work.resolve())
        return
    from llama_cpp import llama_cpp
    phase, model_path, prompts_path, out_path, name = sys.argv[1:6]
    against = sys.argv[6:]
    prompts = json.load(open(prompts_path))["prompts"]
    m = load(model_path, logits_all=phase == "prefill")
    if phase == "greedy":
        rows = []
        for n, p in enumerate(prompts):
            text, ids = render(m, p)
            tokens, top_ids, top_lps = greedy(m, ids)
            rows.append({"id": p["id"], "prompt_ids": ids, "tokens": tokens, "top_ids": top_ids,
                         "top_lps": top_lps})
            print(f"[{name}] {n + 1}/{len(prompts)} {p['id']}: {len(ids)} + {len(tokens)} tokens",
                  file=sys.stderr)
        result = {
            "build": name,
            "cmake_flags": os.environ.get("PRODML_LLAMA_FLAGS", ""),
            "llama_cpp_python": os.environ.get("PRODML_LLAMA_CPP_PYTHON_VERSION", ""),
            "llama_cpp_commit": os.environ.get("PRODML_LLAMA_CPP_COMMIT", ""),
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "threads": 1,
            "max_tokens": MAX_TOKENS,
            "decimals": DECIMALS,
            "prompts": rows,
        }
    else:
        result = read(out_path)
        if phase == "prefill":
            result["prefill"] = [one_batch(m, r["prompt_ids"], r["tokens"], r["top_ids"])
                                 for r in result["prompts"]]
        elif phase == "cross":
            cross = result.setdefault("cross", {})
            for other_path in against:
                other = read(other_path)
                cross[other["build"]] = [
                    teacher_forced(m, r["prompt_ids"], r["tokens"], r["top_ids"])
                    for r in other["prompts"]]
                print(f"[{name}] teacher-forced on {other['build']}", file=sys.stderr)
        else:
            sys.exit(f"unknown phase {phase}")
    write(out_path, result)


if __name__ == "__main__":
    main()
