// Runs the WebAssembly engine under Node on a list of prompts, greedily, and prints JSON: the
// tokens and text of each, and how long instantiating, loading and decoding took.
// Usage: node node-greedy.mjs MODULE.wasm MODEL.gguf PROMPTS.json
// PROMPTS.json: [{ "prompt": "...", "chat": false, "max_tokens": 32 }, ...]
import { readFile, open } from "node:fs/promises";
import { Engine } from "./engine.mjs";

const [wasmPath, modelPath, promptsPath] = process.argv.slice(2);
if (!promptsPath) {
  console.error("usage: node node-greedy.mjs MODULE.wasm MODEL.gguf PROMPTS.json");
  process.exit(2);
}
const now = () => performance.now();

let t = now();
const module = await WebAssembly.compile(await readFile(wasmPath));
const engine = await Engine.create(module);
const instantiateMs = now() - t;

// Stream the file into wasm memory in chunks: one copy of the model at the peak.
t = now();
const file = await open(modelPath);
const { size } = await file.stat();
const reserved = engine.reserve(size);
const chunk = new Uint8Array(1 << 20);
for (let at = 0; at < size; ) {
  const { bytesRead } = await file.read(chunk, 0, Math.min(chunk.length, size - at), at);
  if (bytesRead === 0) throw new Error(`${modelPath}: short read at ${at}`);
  reserved.write(chunk.subarray(0, bytesRead), at);
  at += bytesRead;
}
await file.close();
engine.load(reserved);
const loadMs = now() - t;

const results = [];
for (const p of JSON.parse(await readFile(promptsPath, "utf8"))) {
  const t0 = now();
  const promptTokens = engine.start(p.prompt, { chat: !!p.chat, maxTokens: p.max_tokens ?? 32 });
  const ids = [];
  let text = "";
  let firstMs = null;
  for (;;) {
    const s = engine.step();
    text += s.text;
    if (s.done) break;
    if (firstMs === null) firstMs = now() - t0;
    ids.push(s.id);
  }
  const totalMs = now() - t0;
  results.push({ prompt_tokens: promptTokens, ids, text, first_token_ms: firstMs, total_ms: totalMs });
}
console.log(JSON.stringify({ simd128: engine.simd128, instantiate_ms: instantiateMs, load_ms: loadMs, results }));
