// Drive Debian's headless chromium with playwright-core for the Python tests (tests/browser.py).
// Reads a JSON spec on stdin: {url, steps: [...], timeout_ms, http_credentials?}; prints one JSON object on stdout.
// Steps: {wait_for_function: "js expr"} | {wait_for: "css"} | {fill: "css", value} | {click: "css"}
//        | {text: "css", as: "name"} | {evaluate: "js expr", as: "name"} | {sleep_ms: n}
import { chromium } from "playwright-core";

const spec = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
}));
const timeout = spec.timeout_ms ?? 20000;
// Without the background-networking flags chromium keeps dialling Google's hosts, refused on a closed network.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const out = { console: [], failed_requests: [], values: {} };
try {
  // http_credentials: {username, password} answered to a Basic-auth challenge (the Profile API's staff page).
  const page = await browser.newPage(spec.http_credentials ? { httpCredentials: spec.http_credentials } : {});
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on("requestfailed", (r) => out.failed_requests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  await page.goto(spec.url);
  for (const step of spec.steps ?? []) {
    if (step.wait_for_function) await page.waitForFunction(step.wait_for_function, null, { timeout });
    else if (step.wait_for) await page.waitForSelector(step.wait_for);
    else if (step.fill) await page.fill(step.fill, step.value);
    else if (step.click) await page.click(step.click);
    else if (step.text) out.values[step.as ?? step.text] = await page.textContent(step.text);
    else if (step.evaluate) out.values[step.as ?? "value"] = await page.evaluate(step.evaluate);
    else if (step.sleep_ms) await page.waitForTimeout(step.sleep_ms);
  }
  out.ok = true;
} catch (error) {
  out.ok = false;
  out.error = String(error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
