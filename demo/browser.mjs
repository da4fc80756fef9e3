// Walks `totpgate demo` in headless Chromium as a person would: log in,
// turn on two-factor login on the settings page, log out, log in with a
// code, log out, log in with a recovery code. Run by cmd/totpgate's
// TestDemoInChromium; screenshots go to ARTIFACTS.
import { chromium } from "playwright-core";
import { authenticator } from "otplib";
import fs from "node:fs";
import path from "node:path";

const base = process.env.DEMO_URL;
const out = process.env.ARTIFACTS;
fs.mkdirSync(out, { recursive: true });
const shot = (page, name) => page.screenshot({ path: path.join(out, name), fullPage: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const steps = [];
try {
  // A phone-sized window: the pages must read well there.
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  const errors = [];
  // Answers the page expects (401 while logged out, the held login) log
  // "Failed to load resource"; anything else (CSP, script errors) counts.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));

  const logIn = async () => {
    await page.goto(base + "/");
    await page.locator("#username").fill("alice");
    await page.locator("#password").fill("demo");
    await page.locator("#login-submit").click();
  };

  await logIn();
  await page.getByText("Logged in as alice").waitFor();
  await shot(page, "1-logged-in.png");
  steps.push("password login");

  await page.locator("#settings").click();
  await page.getByText("Two-factor authentication is off.").waitFor();
  await page.locator("#enroll-start").click();
  await page.locator("#qr").waitFor({ state: "visible" });
  await shot(page, "2-enroll.png");
  const secret = (await page.locator("#secret").textContent()).replace(/\s+/g, "");
  await page.locator("#confirm-code").fill(authenticator.clone({ epoch: Date.now() - 30_000 }).generate(secret));
  await page.keyboard.press("Enter");
  await page.locator("#codes li").first().waitFor();
  const codes = await page.locator("#codes li").allTextContents();
  await shot(page, "3-recovery-codes.png");
  await page.locator("#codes-done").click();
  steps.push("enrolled");

  await page.goto(base + "/");
  await page.locator("#logout").click();
  await page.locator("#username").waitFor();
  await logIn();
  await page.locator("#code").waitFor({ state: "visible" });
  await shot(page, "4-code-asked.png");
  await page.locator("#code").fill(authenticator.generate(secret));
  await page.locator("#login-submit").click();
  await page.getByText("Logged in as alice").waitFor();
  steps.push("login with a code");

  await page.locator("#logout").click();
  await page.locator("#username").waitFor();
  await logIn();
  await page.locator("#code").waitFor({ state: "visible" });
  await page.locator("#code").fill(codes[0]);
  await page.locator("#login-submit").click();
  await page.getByText("Logged in as alice").waitFor();
  await shot(page, "5-logged-in-with-recovery-code.png");
  steps.push("login with a recovery code");

  console.log(JSON.stringify({ steps, secret, codes, errors }));
} catch (e) {
  console.log(JSON.stringify({ steps, failure: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
