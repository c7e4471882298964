// The JavaScript side of the module's exported functions, shared by the Web Worker and the
// Node tests: copy bytes in, read text out. Nothing here knows about the model.

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export class Engine {
  /** @param {WebAssembly.Instance} instance */
  constructor(instance) {
    this.x = instance.exports;
  }

  /** Instantiates the module from its bytes (or a compiled WebAssembly.Module). */
  static async create(source) {
    const { instance } =
      source instanceof WebAssembly.Module
        ? { instance: await WebAssembly.instantiate(source, {}) }
        : await WebAssembly.instantiate(source, {});
    return new Engine(instance);
  }

  message() {
    const ptr = this.x.prodml_message_ptr();
    const len = this.x.prodml_message_len();
    return decoder.decode(new Uint8Array(this.x.memory.buffer, ptr, len));
  }

  /** Reserves `len` bytes in the module's memory; returns a writer for them. */
  reserve(len) {
    const ptr = this.x.prodml_alloc(len);
    if (len > 0 && ptr === 0) throw new Error(`cannot reserve ${len} bytes in wasm memory`);
    return {
      ptr,
      len,
      // The memory may grow between calls: take a fresh view each time.
      write: (chunk, at) => new Uint8Array(this.x.memory.buffer, ptr, len).set(chunk, at),
    };
  }

  /** Loads a model whose bytes were written into `reserved` (see `reserve`). */
  load(reserved) {
    if (this.x.prodml_load(reserved.ptr, reserved.len) !== 0) throw new Error(this.message());
  }

  /**
   * Starts a greedy generation; returns the prompt's length in tokens. `prompt` is raw text,
   * or with `chat` one user message; `messages` (OpenAI's `[{ role, content }, …]`) is a whole
   * conversation instead.
   */
  start(prompt, { chat = false, maxTokens = 128, messages = null } = {}) {
    const text = messages === null ? prompt : JSON.stringify(messages);
    const kind = messages !== null ? 2 : chat ? 1 : 0;
    const bytes = encoder.encode(text);
    const r = this.reserve(bytes.length);
    if (bytes.length > 0) r.write(bytes, 0);
    const n = this.x.prodml_start(r.ptr, r.len, kind, maxTokens);
    if (n < 0) throw new Error(this.message());
    return n;
  }

  /** One token: `{ id, text }`, or `{ done: true, text }` at the end. */
  step() {
    const id = this.x.prodml_step();
    if (id === -1) throw new Error(this.message());
    const text = this.message();
    return id === -2 ? { done: true, text } : { id, text };
  }

  stop() {
    this.x.prodml_stop();
  }

  get simd128() {
    return this.x.prodml_simd128() === 1;
  }

  /** The dot-product kernels that run: "scalar", "simd128" or "relaxed-simd". */
  get kernels() {
    return ["scalar", "simd128", "relaxed-simd"][this.x.prodml_kernels()];
  }

  // ANCHOR: pick
  /**
   * The first of `candidates` (fastest first: `{ name, compile: () => Promise<Module> }`) that
   * this engine compiles and whose kernels give the scalar reference's bits on a quick
   * self-test (an engine without relaxed-SIMD refuses that module at compile time; one whose
   * relaxed instructions differ between its compilers fails the test). Returns the engine and
   * what was tried, and how long the winner's self-test took.
   */
  static async pick(candidates) {
    const tried = [];
    for (const { name, compile } of candidates) {
      let module;
      try {
        module = await compile();
      } catch (e) {
        tried.push(`${name}: ${e.message}`);
        continue;
      }
      const engine = await Engine.create(module);
      const t = performance.now();
      const differ = engine.x.prodml_kernel_self_test(256, 18, 1);
      const selfTestMs = performance.now() - t;
      if (differ !== 0) {
        tried.push(`${name}: ${differ} of its self-test's rows differ from the scalar reference`);
        continue;
      }
      return { engine, name, tried, selfTestMs };
    }
    throw new Error(`no module could run: ${tried.join("; ")}`);
  }
  // ANCHOR_END: pick
}
