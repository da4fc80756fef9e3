// The full journey through the generated client against a running sidecar
// in front of a real app (started by cmd/totpgate's TestTypeScriptClient):
// enroll, confirm with an otplib code, log in with MFA in one call and in
// two, recover with a recovery code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticator } from "otplib";
import { newClient } from "./client.js";

const base = process.env.TOTPGATE_URL;
if (!base) throw new Error("TOTPGATE_URL is not set");
const user = `ts-${Date.now()}`;
const session = { Cookie: `session=${user}` };

// A code for the step `offset` periods from now, so each login offers a
// fresh one (a code is accepted once per step).
function code(secret: string, offset: number): string {
  return authenticator.clone({ epoch: Date.now() + offset * 30_000 }).generate(secret);
}

async function login(extra: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...extra },
    body: JSON.stringify({ user, password: "pw" }),
  });
}

test("enroll, log in with MFA in one call and in two, recover", async () => {
  const api = newClient(base, session);

  const before = await api.GET("/mfa/status");
  assert.equal(before.response.status, 200);
  assert.equal(before.data?.state, "none");

  const enrolled = await api.POST("/mfa/enroll");
  assert.equal(enrolled.response.status, 201, JSON.stringify(enrolled.error));
  const secret = enrolled.data!.secret;
  assert.match(enrolled.data!.otpauth_uri, /^otpauth:\/\/totp\//);
  assert.equal(enrolled.response.headers.get("cache-control"), "no-store");

  const confirmed = await api.POST("/mfa/enroll/confirm", { body: { code: code(secret, -1) } });
  assert.equal(confirmed.response.status, 200, JSON.stringify(confirmed.error));
  const recovery = confirmed.data!.recovery_codes;
  assert.ok(recovery.length >= 5);

  // One call: the code rides along in the login request.
  const one = await login({ "X-TOTP-Code": code(secret, 0) });
  assert.equal(one.status, 200);
  assert.match(await one.text(), /SESSION-/);

  // Two calls: the app's answer is held behind a challenge.
  const held = await login();
  assert.equal(held.status, 401);
  const problem = (await held.json()) as { code: string; challenge_id: string };
  assert.equal(problem.code, "mfa_required");
  const done = await newClient(base).POST("/mfa/challenge", {
    body: { challenge_id: problem.challenge_id, code: code(secret, 1) },
    parseAs: "text",
  });
  assert.equal(done.response.status, 200, String(done.error));
  assert.match(String(done.data), /SESSION-/);

  // Recovery: a recovery code instead of a TOTP code, once.
  const recovered = await login({ "X-TOTP-Code": recovery[0]! });
  assert.equal(recovered.status, 200);
  const again = await login({ "X-TOTP-Code": recovery[0]! });
  assert.notEqual(again.status, 200);

  const status = await api.GET("/mfa/status");
  assert.equal(status.data?.state, "active");
  assert.equal(status.data?.recovery_codes_remaining, recovery.length - 1);
});
