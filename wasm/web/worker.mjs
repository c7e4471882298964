// The Web Worker: owns the WebAssembly engine, so that decoding never blocks the page.
// The model file is streamed straight into the module's memory (one copy at the peak) and
// kept in the Cache API for the next visit.
import { Engine } from "../js/engine.mjs";

let engine = null;

// A task boundary without setTimeout's clamping (nested timeouts wait at least 4 ms, a tenth
// of a token here): a message to ourselves queues behind any message the page has sent.
const channel = new MessageChannel();
const yieldToMessages = () =>
  new Promise((resolve) => {
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
let stopping = false;
const now = () => performance.now();

// ANCHOR: init
async function init({ wasmUrl, relaxedUrl = null, modelUrl }) {
  let t = now();
  // The relaxed-SIMD module first where there is one; the simd128 module everywhere.
  const candidates = [
    ...(relaxedUrl ? [{ name: "relaxed-simd", url: relaxedUrl }] : []),
    { name: "simd128", url: wasmUrl },
  ].map(({ name, url }) => ({ name, compile: () => WebAssembly.compileStreaming(fetch(url)) }));
  const picked = await Engine.pick(candidates);
  engine = picked.engine;
  const instantiateMs = now() - t - picked.selfTestMs;

  t = now();
  const cache = await caches.open("prodml-models");
  let response = await cache.match(modelUrl);
  const cached = response !== undefined;
  let storing = Promise.resolve();
  if (!cached) {
    response = await fetch(modelUrl);
    if (!response.ok) throw new Error(`${modelUrl}: HTTP ${response.status}`);
    // The cache reads its own branch of the body while we read ours.
    storing = cache.put(modelUrl, response.clone());
  }
  const size = Number(response.headers.get("content-length"));
  if (!Number.isFinite(size) || size <= 0) throw new Error(`${modelUrl}: no Content-Length`);
  const reserved = engine.reserve(size);
  const reader = response.body.getReader();
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > size) throw new Error(`${modelUrl}: longer than its Content-Length`);
    reserved.write(value, at);
    at += value.length;
  }
  if (at !== size) throw new Error(`${modelUrl}: ${at} of ${size} bytes`);
  await storing;
  engine.load(reserved);
  postMessage({
    type: "loaded", instantiateMs, loadMs: now() - t, cached, bytes: size,
    simd128: engine.simd128, module: picked.name, kernels: engine.kernels, tried: picked.tried,
    selfTestMs: picked.selfTestMs,
  });
}
// ANCHOR_END: init

async function generate({ prompt, chat, maxTokens, messages = null }) {
  stopping = false;
  const t0 = now();
  const promptTokens = engine.start(prompt, { chat, maxTokens, messages });
  const ids = [];
  let firstTokenMs = null;
  let firstAt = null;
  for (;;) {
    if (stopping) {
      engine.stop();
      return finish("stopped", "");
    }
    const s = engine.step();
    if (s.done) return finish("finished", s.text);
    if (firstTokenMs === null) {
      firstTokenMs = now() - t0;
      firstAt = now();
    }
    ids.push(s.id);
    postMessage({ type: "token", id: s.id, text: s.text });
    // Let a "stop" message in between two tokens.
    await yieldToMessages();
  }

  function finish(reason, text) {
    const decodeS = firstAt === null ? 0 : (now() - firstAt) / 1000;
    postMessage({
      type: "done", reason, text, ids, promptTokens, firstTokenMs,
      tokPerS: ids.length > 1 && decodeS > 0 ? (ids.length - 1) / decodeS : 0,
    });
  }
}

onmessage = async ({ data }) => {
  try {
    if (data.type === "init") await init(data);
    else if (data.type === "generate") await generate(data);
    else if (data.type === "stop") stopping = true;
  } catch (e) {
    postMessage({ type: "error", message: String(e?.message ?? e) });
  }
};
