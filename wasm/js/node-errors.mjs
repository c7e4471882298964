// Bad calls into the WebAssembly engine must come back as errors with a message, never as a
// trap. Prints JSON: each case and the message it got.
// Usage: node node-errors.mjs MODULE.wasm
import { readFile } from "node:fs/promises";
import { Engine } from "./engine.mjs";

const engine = await Engine.create(await readFile(process.argv[2]));
const cases = [];
const expectError = (name, f) => {
  try {
    f();
    cases.push({ name, error: null });
  } catch (e) {
    cases.push({ name, error: String(e.message) });
  }
};
expectError("start before load", () => engine.start("Hello"));
expectError("step before load", () => engine.step());
expectError("load bytes that are not GGUF", () => {
  const r = engine.reserve(64);
  r.write(new Uint8Array(64).fill(7), 0);
  engine.load(r);
});
expectError("load nothing", () => engine.load({ ptr: 0, len: 0 }));
console.log(JSON.stringify({ cases, self_test_differ: engine.x.prodml_kernel_self_test(4000, 18, 7) }));
