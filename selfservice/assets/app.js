// Self-service page for totpgate. It uses only the public API under the
// same prefix the page is served at, with the app's session cookie.
"use strict";

const api = location.pathname.replace(/\/$/, ""); // e.g. "/mfa"
const $ = (id) => document.getElementById(id);
let shownCodes = [];

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

function show(id, visible) {
  $(id).hidden = !visible;
}

async function call(method, path, body) {
  const res = await fetch(api + path, {
    method,
    credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch { data = null; }
  }
  return { ok: res.ok, status: res.status, data };
}

// problemText is the human part of an RFC 9457 answer.
function problemText(r) {
  return (r.data && (r.data.detail || r.data.title)) || `Request failed (${r.status}).`;
}

async function refresh() {
  const r = await call("GET", "/status");
  if (r.status === 401) {
    say("Log in to the application first, then come back to this page.", true);
    return;
  }
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  const s = r.data;
  show("status-section", true);
  const text = {
    none: "Two-factor authentication is off.",
    pending: "Setup started but not confirmed yet.",
    active: `Two-factor authentication is on. Recovery codes left: ${s.recovery_codes_remaining}.`,
  }[s.state] || s.state;
  $("status-text").textContent = text;
  show("enroll-section", s.state !== "active");
  show("active-section", s.state === "active");
}

function showCodes(codes) {
  shownCodes = codes;
  const list = $("codes");
  list.replaceChildren(...codes.map((c) => {
    const li = document.createElement("li");
    li.textContent = c;
    return li;
  }));
  show("codes-section", true);
  $("codes-copy").focus();
}

$("enroll-start").addEventListener("click", async () => {
  const r = await call("POST", "/enroll");
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  $("qr").src = "data:image/png;base64," + r.data.qr_png;
  // Grouped by four for typing on a phone; authenticator apps ignore the spaces.
  $("secret").textContent = r.data.secret.match(/.{1,4}/g).join(" ");
  $("status-text").textContent = "Setting up: scan the code, then confirm.";
  show("enroll-details", true);
  say("Scan the code, then enter the 6-digit code your app shows.");
  $("confirm-code").focus();
});

$("confirm-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await call("POST", "/enroll/confirm", { code: $("confirm-code").value.trim() });
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  show("enroll-details", false);
  $("secret").textContent = "";
  $("qr").removeAttribute("src");
  say("Two-factor authentication is on. Save your recovery codes now.");
  showCodes(r.data.recovery_codes);
  await refresh();
});

$("codes-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(shownCodes.join("\n") + "\n");
    say("Recovery codes copied.");
  } catch {
    say("Copying is not allowed here; select the codes or download them.", true);
  }
});

$("codes-download").addEventListener("click", () => {
  const blob = new Blob([shownCodes.join("\n") + "\n"], { type: "text/plain" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "recovery-codes.txt";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  say("Recovery codes downloaded.");
});

$("codes-done").addEventListener("click", () => {
  shownCodes = [];
  $("codes").replaceChildren();
  show("codes-section", false);
  say("Done.");
});

$("regenerate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await call("POST", "/recovery-codes", { code: $("regenerate-code").value.trim() });
  $("regenerate-code").value = "";
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  say("New recovery codes: the old ones no longer work.");
  showCodes(r.data.recovery_codes);
  await refresh();
});

$("disable-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await call("POST", "/disable", { code: $("disable-code").value.trim() });
  $("disable-code").value = "";
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  say("Two-factor authentication is off.");
  await refresh();
});

refresh();
