// The page: sends the prompt to the worker, appends each piece of text as it arrives, and
// shows where the time went. All state for the browser test is in data-* attributes.
const $ = (id) => document.getElementById(id);
const status = $("status");
const worker = new Worker(new URL("worker.mjs", import.meta.url), { type: "module" });

const params = new URLSearchParams(location.search);
worker.postMessage({
  type: "init",
  wasmUrl: params.get("wasm") ?? "../prodml_wasm.wasm",
  relaxedUrl: params.get("relaxed"),
  modelUrl: params.get("model") ?? "../model.gguf",
});

let tokens = 0;
worker.onmessage = ({ data }) => {
  switch (data.type) {
    case "loaded":
      status.dataset.state = "ready";
      status.dataset.load = JSON.stringify(data);
      status.textContent = `model ready: ${(data.bytes / 1e6).toFixed(1)} MB ${
        data.cached ? "from the browser's cache" : "downloaded"
      } in ${data.loadMs.toFixed(0)} ms; module instantiated in ${data.instantiateMs.toFixed(1)} ms; simd128: ${data.simd128}`;
      $("generate").disabled = false;
      break;
    case "token":
      tokens += 1;
      $("output").textContent += data.text;
      status.textContent = `${tokens} tokens…`;
      break;
    case "done":
      $("output").textContent += data.text;
      status.dataset.state = "done";
      status.dataset.run = JSON.stringify(data);
      status.textContent = `${data.ids.length} tokens (${data.reason}); first token after ${data.firstTokenMs?.toFixed(0)} ms, then ${data.tokPerS.toFixed(1)} tokens/s`;
      $("generate").disabled = false;
      $("stop").disabled = true;
      break;
    case "error":
      status.dataset.state = "error";
      status.textContent = `error: ${data.message}`;
      $("generate").disabled = status.dataset.load === undefined;
      $("stop").disabled = true;
      break;
  }
};

$("generate").onclick = () => {
  tokens = 0;
  $("output").textContent = "";
  status.dataset.state = "generating";
  $("generate").disabled = true;
  $("stop").disabled = false;
  worker.postMessage({
    type: "generate",
    prompt: $("prompt").value,
    chat: $("chat").checked,
    maxTokens: Number($("max-tokens").value),
  });
};
$("stop").onclick = () => worker.postMessage({ type: "stop" });
