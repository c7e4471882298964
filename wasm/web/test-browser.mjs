// The browser test: serves the page, the module and the model on loopback, drives Debian's
// Chromium (headless, through playwright-core) to load the model and generate, and prints JSON —
// each prompt's tokens and text, the load times (first visit and from the Cache API), a
// stopped generation, and a screenshot.
// Usage: node test-browser.mjs CHROMIUM MODULE.wasm MODEL.gguf PROMPTS.json SCREENSHOT.png [RELAXED.wasm]
// (RELAXED.wasm: the relaxed-SIMD build, offered to the page first.)
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [chromiumPath, wasmPath, modelPath, promptsPath, screenshot, relaxedPath] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node test-browser.mjs CHROMIUM MODULE.wasm MODEL.gguf PROMPTS.json SCREENSHOT.png [RELAXED.wasm]");
  process.exit(2);
}
const root = dirname(dirname(fileURLToPath(import.meta.url))); // wasm/
const types = { ".html": "text/html", ".mjs": "text/javascript", ".wasm": "application/wasm" };

// /web/… and /js/… from wasm/, the module and the model from where they are.
const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  const file =
    path === "/prodml_wasm.wasm" ? wasmPath
    : path === "/prodml_wasm_relaxed.wasm" && relaxedPath ? relaxedPath
    : path === "/model.gguf" ? modelPath
    : /^\/(web|js)\/[\w.-]+$/.test(path) ? join(root, normalize(path))
    : null;
  const info = file && (await stat(file).catch(() => null));
  if (!info) {
    res.writeHead(404).end();
    return;
  }
  const ext = file.slice(file.lastIndexOf("."));
  res.writeHead(200, {
    "content-type": types[ext] ?? "application/octet-stream",
    "content-length": info.size,
  });
  createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${server.address().port}/web/index.html${
  relaxedPath ? "?relaxed=../prodml_wasm_relaxed.wasm" : ""
}`;

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
const out = {};
try {
  const page = await (await browser.newContext()).newPage();
  const state = (s, timeout = 180_000) =>
    page.waitForSelector(`#status[data-state="${s}"]`, { timeout });
  const dataset = (key) => page.$eval("#status", (el, k) => JSON.parse(el.dataset[k]), key);

  await page.goto(url);
  await state("ready");
  out.load_first = await dataset("load");

  out.results = [];
  for (const p of JSON.parse(await readFile(promptsPath, "utf8"))) {
    await page.fill("#prompt", p.prompt);
    await page.setChecked("#chat", !!p.chat);
    await page.fill("#max-tokens", String(p.max_tokens ?? 32));
    await page.click("#generate");
    await state("done");
    const run = await dataset("run");
    out.results.push({ ...run, text: await page.textContent("#output") });
    if (out.results.length === 1) await page.screenshot({ path: screenshot, fullPage: true });
  }

  // Stop: a long generation, stopped after a few tokens.
  await page.fill("#prompt", "Write a long story about a lighthouse keeper.");
  await page.setChecked("#chat", true);
  await page.fill("#max-tokens", "400");
  await page.click("#generate");
  await page.waitForFunction(
    () => document.getElementById("output").textContent.length > 20,
    null,
    { timeout: 120_000 },
  );
  await page.click("#stop");
  await state("done");
  out.stop = await dataset("run");

  // The second visit reads the model from the Cache API.
  await page.reload();
  await state("ready");
  out.load_cached = await dataset("load");
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(out));
