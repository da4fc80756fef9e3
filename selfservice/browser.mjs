// Drives the self-service page in headless Chromium (Debian's chromium,
// playwright-core from .ci/npm). Run by cmd/totpgate's
// TestSelfServicePageInChromium, which starts the sidecar and the app and
// checks what this prints. Screenshots go to ARTIFACTS.
import { chromium } from "playwright-core";
import { authenticator } from "otplib";
import fs from "node:fs";
import path from "node:path";

const base = process.env.TOTPGATE_URL;
const user = process.env.TOTPGATE_USER;
const out = process.env.ARTIFACTS;
fs.mkdirSync(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const context = await browser.newContext({ acceptDownloads: true });
  // The app's session cookie: the page acts for whoever is logged in.
  await context.addCookies([{ name: "session", value: user, url: base }]);
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));

  await page.goto(`${base}/mfa/`);
  await page.getByText("Two-factor authentication is off.").waitFor();
  await page.screenshot({ path: path.join(out, "1-off.png") });

  // Every form control has a label a screen reader announces.
  const unlabeled = await page.$$eval("input", (els) =>
    els.filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id));

  // Keyboard only: Tab to the button, Enter.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.id);
  await page.keyboard.press("Enter");
  await page.locator("#qr").waitFor({ state: "visible" });
  await page.waitForFunction(() => document.querySelector("#qr").complete && document.querySelector("#qr").naturalWidth > 0);
  await page.screenshot({ path: path.join(out, "2-enroll.png") });
  await page.locator("#qr").screenshot({ path: path.join(out, "qr.png") });
  const secret = (await page.locator("#secret").textContent()).replace(/\s+/g, "");
  if (!/^([A-Z2-7]{4} )+[A-Z2-7]{1,4}$/.test((await page.locator("#secret").textContent()).trim())) {
    throw new Error("the secret is not grouped by four for typing");
  }

  // Confirm with the previous step's code: the test's login then uses the next ones.
  const code = authenticator.clone({ epoch: Date.now() - 30_000 }).generate(secret);
  await page.locator("#confirm-code").fill(code);
  await page.keyboard.press("Enter");
  await page.locator("#codes li").first().waitFor();
  const codes = await page.locator("#codes li").allTextContents();
  await page.screenshot({ path: path.join(out, "3-recovery-codes.png") });

  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#codes-download").click()]);
  const file = path.join(out, "recovery-codes.txt");
  await download.saveAs(file);
  const downloaded = fs.readFileSync(file, "utf8").trim().split("\n");
  await page.locator("#codes-done").click();
  await page.getByText(/Two-factor authentication is on\. Recovery codes left: \d+\./).waitFor();
  await page.screenshot({ path: path.join(out, "4-on.png") });

  console.log(JSON.stringify({ secret, codes, downloaded, unlabeled, focused, errors, downloadName: download.suggestedFilename() }));
} finally {
  await browser.close();
}
