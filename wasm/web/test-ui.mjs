// The web UI's browser test: drives Debian's Chromium (playwright-core) against a running
// demo-serving-api: type a question, send, watch the answer stream in, stop a long answer (and
// check that the server is left with nothing running), and see a server error on the page.
// Prints JSON. Usage: node test-ui.mjs CHROMIUM BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [chromiumPath, base, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node test-ui.mjs CHROMIUM BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
const out = {};
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/`);
  const state = (s) => page.waitForSelector(`#status[data-state="${s}"]`, { timeout: 120_000 });
  const lastAnswer = () => page.$$eval(".turn.assistant", (els) => els.at(-1)?.textContent ?? "");

  // 1. A question; the answer's length is sampled while it streams.
  await page.fill("#input", "What is the capital of France? Answer in one sentence.");
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "48");
  await page.click("#send");
  const lengths = new Set();
  while ((await page.getAttribute("#status", "data-state")) === "streaming") {
    lengths.add((await lastAnswer()).length);
    await page.waitForTimeout(20);
  }
  await state("done");
  out.answer = await lastAnswer();
  out.lengths_seen_while_streaming = lengths.size;
  await page.screenshot({ path: screenshot, fullPage: true });

  // 2. Stop a long answer; the server must end the request (nothing left running).
  await page.fill("#input", "Write a very long story about a lighthouse keeper.");
  await page.fill("#max-tokens", "400");
  await page.click("#send");
  await page.waitForFunction(
    () => (document.querySelectorAll(".turn.assistant")[1]?.textContent.length ?? 0) > 20,
    null,
    { timeout: 120_000 },
  );
  await page.click("#stop");
  await state("stopped");
  out.stopped_answer = await lastAnswer();
  let running = null;
  for (let i = 0; i < 50; i++) {
    const health = await (await fetch(`${base}/health`)).json();
    running = health.running;
    if (running === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  out.running_after_stop = running;

  // 3. A request the server refuses: its message appears on the page.
  await page.fill("#input", "Hello again.");
  await page.fill("#temperature", "5");
  await page.click("#send");
  await state("error");
  out.error = await page.textContent("#error");
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
