// The chat page's in-browser switch, in Debian's Chromium (playwright-core): against a
// demo-serving-api started with --wasm-module, tick "run the model in this browser", wait for
// the model to load into the Web Worker, ask a question, ask a second one in the same
// conversation, then stop a long answer. Prints JSON.
// Usage: node test-ui-switch.mjs CHROMIUM BASE_URL SCREENSHOT.png QUESTION1 QUESTION2
import { chromium } from "playwright-core";

const [chromiumPath, base, screenshot, question1, question2] = process.argv.slice(2);
if (!question2) {
  console.error("usage: node test-ui-switch.mjs CHROMIUM BASE_URL SCREENSHOT.png QUESTION1 QUESTION2");
  process.exit(2);
}
const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
const out = {};
try {
  const page = await (await browser.newContext()).newPage();
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));
  await page.goto(`${base}/`);
  const state = (s) => page.waitForSelector(`#status[data-state="${s}"]`, { timeout: 300_000 });
  const lastAnswer = () => page.$$eval(".turn.assistant", (els) => els.at(-1)?.textContent ?? "");

  await page.waitForSelector("#in-browser:not([disabled])", { timeout: 30_000 });
  await page.check("#in-browser");
  await page.waitForSelector("#browser-status[data-load]", { timeout: 300_000 });
  out.load = JSON.parse(await page.getAttribute("#browser-status", "data-load"));

  const ask = async (question, maxTokens) => {
    await page.fill("#input", question);
    await page.fill("#max-tokens", String(maxTokens));
    await page.click("#send");
    await state("done");
    return lastAnswer();
  };
  out.answer1 = await ask(question1, 24);
  out.answer2 = await ask(question2, 24);
  out.status = await page.textContent("#status");
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.fill("#input", "Write a very long story about a lighthouse keeper.");
  await page.fill("#max-tokens", "400");
  await page.click("#send");
  await page.waitForFunction(
    () => (document.querySelectorAll(".turn.assistant")[2]?.textContent.length ?? 0) > 10,
    null,
    { timeout: 120_000 },
  );
  await page.click("#stop");
  await state("stopped");
  out.stopped_answer = await lastAnswer();
  // Every answer came from the worker: the page never called the API.
  out.api_calls = requests.filter((p) => p.startsWith("/v1/")).length;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
