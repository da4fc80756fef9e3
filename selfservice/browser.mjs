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
  // A challenged login (401 from /login) is what the test asks for; the
  // browser logs it as a failed load. Anything else is an error.
  page.on("console", (m) => {
    if (m.type() === "error" && !new URL(m.location().url || base).pathname.endsWith("/login")) errors.push(m.text());
  });
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

  // Trusted devices. Trust this browser with the keyboard: the current
  // step's code (confirming used the previous one), Enter.
  await page.locator("#devices-section").waitFor({ state: "visible" });
  const trustText = await page.locator("#trust-submit").textContent();
  await page.locator("#trust-code").focus();
  await page.keyboard.type(authenticator.generate(secret));
  await page.keyboard.press("Enter");
  await page.locator("#devices li.current").waitFor();
  const trustMessage = await page.locator("#message").textContent();
  const trustedHere = await page.locator("#devices li.current .this-browser").textContent();
  const deviceCookie = async (ctx) => (await ctx.cookies()).find((c) => c.name === "__Host-totpgate-device");
  const trusted = await deviceCookie(context);
  await page.screenshot({ path: path.join(out, "5-trusted.png"), fullPage: true });

  // Another browser of the same user trusts itself (with a recovery code):
  // this page then lists two devices, this one marked.
  const other = await browser.newContext({ userAgent: "Other browser/1.0" });
  await other.addCookies([{ name: "session", value: user, url: base }]);
  const otherPage = await other.newPage();
  await otherPage.goto(`${base}/mfa/`);
  const otherTrust = await otherPage.evaluate(async (code) =>
    (await fetch("/mfa/devices", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }) })).status, codes[0]);
  await page.reload();
  await page.locator("#devices li").nth(1).waitFor();
  const listed = await page.locator("#devices li").evaluateAll((lis) => lis.map((li) => ({
    label: li.querySelector(".device-label").textContent,
    current: li.classList.contains("current"),
    times: li.querySelectorAll("time[datetime]").length,
    revoke: li.querySelector("button").getAttribute("aria-label"),
  })));
  await page.screenshot({ path: path.join(out, "6-two-devices.png"), fullPage: true });

  // Log in to the app again in this browser, from the page's origin, with
  // no code: the trusted device passes it, and its token rotates.
  const login = (p) => p.evaluate(async (user) => {
    const r = await fetch("/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, password: "pw" }) });
    const text = await r.text();
    let code = "";
    try { code = JSON.parse(text).code || ""; } catch { /* the app's own answer */ }
    return { status: r.status, code, session: text.includes("SESSION-") };
  }, user);
  const trustedLogin = await login(page);
  const rotated = await deviceCookie(context);

  // Sign out every other device, with the keyboard: the other browser's
  // next login is challenged; this one stays.
  await page.reload();
  await page.locator("#devices-revoke-others").waitFor({ state: "visible" });
  await page.locator("#devices-revoke-others").focus();
  await page.keyboard.press("Enter");
  await page.getByText("Signed out 1 other device.").waitFor();
  // The message comes first, then the list is loaded again.
  await page.locator("#devices li", { hasText: "Other browser/1.0" }).waitFor({ state: "detached" });
  const afterOthers = await page.locator("#devices li").count();
  const otherLogin = await login(otherPage);
  await other.close();

  // Revoke this browser (with the mouse): the answer clears the cookie,
  // and the token it held is refused even when presented again.
  await page.locator("#devices li.current button").click();
  await page.getByText("This browser is no longer trusted", { exact: false }).waitFor();
  await page.locator("#trust-form").waitFor({ state: "visible" });
  await page.screenshot({ path: path.join(out, "7-revoked.png"), fullPage: true });
  const cleared = (await deviceCookie(context)) === undefined;
  const afterRevoke = await page.locator("#devices li").count();
  const revokedLogin = await login(page);
  // The token this browser held, presented again (from here: a __Host-
  // cookie cannot be put back into the browser over http).
  const replayed = await fetch(`${base}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Cookie: `${rotated.name}=${rotated.value}` },
    body: JSON.stringify({ user, password: "pw" }),
  });
  const replayedLogin = { status: replayed.status, code: (await replayed.json().catch(() => ({}))).code || "", session: false };

  // Step-up: the app's own form posts a password change (a same-origin
  // navigation). The gate holds it and sends the browser to this page,
  // which asks for a code (a recovery code: this step's TOTP code is
  // spent); after it the change reaches the app, once, and the answer is
  // the app's own. A second change within max_age goes straight through.
  const postForm = async () => {
    await page.goto(`${base}/account`);
    await page.evaluate(() => {
      const f = document.createElement("form");
      f.method = "POST";
      f.action = "/settings/password";
      const i = document.createElement("input");
      i.name = "password";
      i.value = "n3w";
      f.append(i);
      document.body.append(f);
      f.submit();
    });
  };
  await postForm();
  await page.locator("#step-up-section").waitFor({ state: "visible" });
  const stepUpURL = page.url();
  await page.screenshot({ path: path.join(out, "8-step-up.png"), fullPage: true });
  await page.locator("#step-up-code").fill(codes[1]);
  await page.keyboard.press("Enter");
  await page.locator("#step-up-done").waitFor({ state: "visible" });
  const stepUpMessage = await page.locator("#message").textContent();
  const proof = (await context.cookies()).find((c) => c.name === "__Host-totpgate-step-up");
  await postForm();
  await page.waitForLoadState();
  const direct = { url: page.url(), body: await page.locator("body").textContent() };

  const unlabeledAtEnd = await page.$$eval("input", (els) =>
    els.filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id));
  const nameless = await page.$$eval("button", (els) =>
    els.filter((el) => !(el.getAttribute("aria-label") || el.textContent).trim()).map((el) => el.outerHTML));

  console.log(JSON.stringify({
    secret, codes, downloaded, unlabeled: [...unlabeled, ...unlabeledAtEnd], nameless, focused, errors, downloadName: download.suggestedFilename(),
    devices: {
      trustText, trustMessage, trustedHere, otherTrust, listed, afterOthers, afterRevoke, cleared,
      trusted: trusted && { value: trusted.value, secure: trusted.secure, httpOnly: trusted.httpOnly, sameSite: trusted.sameSite, path: trusted.path, domain: trusted.domain },
      rotated: Boolean(rotated && trusted && rotated.value !== trusted.value && rotated.value.length === 43),
      trustedLogin, otherLogin, revokedLogin, replayedLogin,
    },
    stepUp: {
      pageURL: stepUpURL, message: stepUpMessage, direct,
      proof: proof && { secure: proof.secure, httpOnly: proof.httpOnly, sameSite: proof.sameSite, path: proof.path },
    },
  }));
} finally {
  await browser.close();
}
