// The demo app's login page: a JSON login, and, when totpgate holds the
// answer (401 mfa_required), the second call with the code.
"use strict";
const $ = (id) => document.getElementById(id);
let challenge = null;

function show(section) {
  for (const id of ["loading", "out", "in"]) $(id).hidden = id !== section;
}

async function refresh() {
  const res = await fetch("/api/me", { headers: { Accept: "application/json" } });
  if (res.ok) {
    const me = await res.json();
    $("who").textContent = me.id;
    show("in");
    return;
  }
  challenge = null;
  $("password-step").hidden = false;
  $("code-step").hidden = true;
  $("login-submit").textContent = "Log in";
  show("out");
  $("username").focus();
}

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let doc = {};
  try { doc = await res.json(); } catch { /* an empty answer */ }
  return { res, doc };
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("msg").textContent = "";
  if (!challenge) {
    const { res, doc } = await post("/login", { username: $("username").value, password: $("password").value });
    if (res.ok) return refresh();
    if (res.status === 401 && doc.code === "mfa_required") {
      challenge = doc.challenge_id;
      $("password-step").hidden = true;
      $("code-step").hidden = false;
      $("login-submit").textContent = "Verify";
      $("code").value = "";
      $("code").focus();
      $("msg").textContent = "Password accepted. Enter the code from your authenticator app.";
      return;
    }
    $("msg").textContent = doc.detail || doc.error || `Login failed (${res.status}).`;
    return;
  }
  const { res, doc } = await post("/mfa/challenge", { challenge_id: challenge, code: $("code").value.trim() });
  if (res.ok) return refresh();
  if (res.status === 404) {
    $("msg").textContent = "That login expired. Log in again.";
    return refresh();
  }
  $("msg").textContent = doc.detail || `The code was not accepted (${res.status}).`;
  if (doc.attempts_remaining !== undefined) $("msg").textContent += ` Attempts left: ${doc.attempts_remaining}.`;
});

$("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST" });
  refresh();
});

refresh();
