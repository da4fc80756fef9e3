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

// call answers the status, the JSON body (null for any other), whether
// it is a problem, and, for an answer reached by a redirect, its URL.
async function call(method, path, body, headers = {}) {
  const res = await fetch(api + path, {
    method,
    credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json", ...headers } : headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch { data = null; }
  }
  const problem = (res.headers.get("Content-Type") || "").startsWith("application/problem+json");
  return { ok: res.ok, status: res.status, data, problem, redirectedTo: res.redirected ? res.url : "" };
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
  // Trusted devices: only with MFA on, and where the sidecar allows them
  // (mfa.trusted_device_ttl above 0).
  const devicesOn = s.state === "active" && s.trusted_devices_enabled === true;
  show("devices-section", devicesOn);
  if (devicesOn) {
    const ttl = s.trusted_device_ttl_seconds;
    const trustFor = ttl ? `Trust this browser for ${period(ttl)}` : "Trust this browser";
    $("trust-submit").textContent = trustFor;
    $("trust-label").textContent = `Code from your app (or a recovery code), to ${trustFor[0].toLowerCase()}${trustFor.slice(1)}`;
    await loadDevices();
  }
}

// period says a number of seconds the way people do ("30 days").
function period(secs) {
  for (const [size, unit] of [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]]) {
    if (secs >= size && secs % size === 0) {
      const n = secs / size;
      return `${n} ${unit}${n === 1 ? "" : "s"}`;
    }
  }
  return `${secs} seconds`;
}

function dateText(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// The caller's trusted devices, this browser marked; the trust form shows
// while this browser is not one of them.
async function loadDevices() {
  const r = await call("GET", "/devices");
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  const devices = r.data.devices;
  $("devices").replaceChildren(...devices.map(deviceItem));
  const here = devices.some((d) => d.current);
  show("devices-empty", devices.length === 0);
  show("devices-revoke-others", devices.some((d) => !d.current));
  show("trust-form", !here);
  show("trusted-here", here);
}

function deviceItem(d) {
  const li = document.createElement("li");
  li.className = d.current ? "device current" : "device";
  const name = document.createElement("span");
  name.className = "device-label";
  name.textContent = d.label;
  li.append(name);
  if (d.current) {
    const here = document.createElement("strong");
    here.className = "this-browser";
    here.textContent = "This browser";
    li.append(" ", here);
  }
  const facts = document.createElement("dl");
  for (const [term, iso] of [["Trusted", d.created_at], ["Last used", d.last_used_at], ["Expires", d.expires_at]]) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const time = document.createElement("time");
    time.dateTime = iso;
    time.textContent = dateText(iso);
    const dd = document.createElement("dd");
    dd.append(time);
    facts.append(dt, dd);
  }
  li.append(facts);
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.className = "device-revoke";
  revoke.textContent = "Revoke";
  // The visible word starts the accessible name, which says which device.
  revoke.setAttribute("aria-label", d.current ? "Revoke this browser" : `Revoke ${d.label}, trusted ${dateText(d.created_at)}`);
  revoke.addEventListener("click", () => revokeDevice(d));
  li.append(revoke);
  return li;
}

async function revokeDevice(d) {
  const r = await call("DELETE", "/devices/" + encodeURIComponent(d.id));
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  await devicesChanged(d.current ? "This browser is no longer trusted: logging in here asks for a code again." : `Revoked: ${d.label}.`);
}

// devicesChanged tells what changed, shows the devices again and puts the
// focus back on their heading (the button pressed may be gone).
async function devicesChanged(message) {
  say(message);
  await refresh();
  $("devices-heading").focus();
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

$("trust-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await call("POST", "/devices", { code: $("trust-code").value.trim() });
  $("trust-code").value = "";
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  await devicesChanged(`This browser is trusted until ${dateText(r.data.expires_at)}: logging in here needs no code.`);
});

$("devices-revoke-others").addEventListener("click", async () => {
  const r = await call("POST", "/devices/revoke-others");
  if (!r.ok) {
    say(problemText(r), true);
    return;
  }
  const n = r.data.revoked;
  await devicesChanged(n === 1 ? "Signed out 1 other device." : `Signed out ${n} other devices.`);
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


// A form post to a step-up route was held and the browser sent here with
// its challenge in the fragment: ask for the code, then have the held
// request sent. The fragment is dropped from the address (and history) at
// once; the id lives on in memory only.
const stepUp = new URLSearchParams(location.hash.slice(1)).get("step-up");
if (stepUp) {
  history.replaceState(null, "", location.pathname + location.search);
  show("step-up-section", true);
  const back = document.referrer && new URL(document.referrer).origin === location.origin ? document.referrer : "/";
  $("step-up-back").href = back;
  $("step-up-heading").focus();
}

$("step-up-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  // The header binds the call to the 303 that brought this browser here
  // (its cookie).
  const r = await call("POST", "/step-up", { challenge_id: stepUp, code: $("step-up-code").value.trim() },
    { "X-Totpgate-Step-Up-Page": "1" });
  $("step-up-code").value = "";
  if (r.redirectedTo) {
    // The application answered the request with a redirect: go where it sends.
    location.assign(r.redirectedTo);
    return;
  }
  if (!r.ok && r.problem) {
    say(r.status === 404 ? "This confirmation has expired or was used. Go back and try again." : problemText(r), true);
    return;
  }
  show("step-up-form", false);
  show("step-up-done", true);
  say(r.ok ? "Confirmed." : `Confirmed; the application answered ${r.status}.`);
});

refresh();
