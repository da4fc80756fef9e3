// The full journey through the generated client against a running sidecar
// in front of a real app (started by cmd/totpgate's TestTypeScriptClient):
// enroll, confirm with an otplib code, log in with MFA in one call and in
// two, recover with a recovery code; and a trusted device: remembered at
// the two-call login, passing the next login without a code, listed,
// revoked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticator } from "otplib";
import { newClient } from "./client.js";

const base = process.env.TOTPGATE_URL;
if (!base) throw new Error("TOTPGATE_URL is not set");
const user = `ts-${Date.now()}`;
const session = { Cookie: `session=${user}` };
const deviceCookie = "__Host-totpgate-device";

// A code for the step `offset` periods from now, so each login offers a
// fresh one (a code is accepted once per step).
function code(secret: string, offset: number): string {
  return authenticator.clone({ epoch: Date.now() + offset * 30_000 }).generate(secret);
}

async function login(extra: Record<string, string> = {}, who = user): Promise<Response> {
  return fetch(`${base}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...extra },
    body: JSON.stringify({ user: who, password: "pw" }),
  });
}

// enroll turns MFA on for the caller of api: the secret and recovery codes.
async function enroll(api: ReturnType<typeof newClient>): Promise<{ secret: string; recovery: string[] }> {
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
  return { secret, recovery };
}

// deviceToken is the sidecar's device cookie an answer sets ("" when it
// sets none, or clears it).
function deviceToken(res: Response): string {
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(";").map((s) => s.trim());
    const [name, value] = [pair!.slice(0, pair!.indexOf("=")), pair!.slice(pair!.indexOf("=") + 1)];
    if (name !== deviceCookie) continue;
    for (const want of ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"]) {
      assert.ok(attrs.includes(want), `device cookie ${c} lacks ${want}`);
    }
    assert.ok(!attrs.some((a) => a.toLowerCase().startsWith("domain=")), `device cookie ${c} has a Domain`);
    return value ?? "";
  }
  return "";
}

test("enroll, log in with MFA in one call and in two, recover", async () => {
  const api = newClient(base, session);
  const { secret, recovery } = await enroll(api);

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

test("trust the device at a two-call login, log in on it without a code, revoke it", async () => {
  const who = `ts-device-${Date.now()}`;
  const { secret } = await enroll(newClient(base, { Cookie: `session=${who}` }));

  const status = await newClient(base, { Cookie: `session=${who}` }).GET("/mfa/status");
  assert.equal(status.data?.trusted_devices_enabled, true);
  assert.equal(status.data?.trusted_device_ttl_seconds, 30 * 24 * 3600);

  // The two-call login, asking to remember the device with the code.
  const held = await login({}, who);
  assert.equal(held.status, 401);
  const problem = (await held.json()) as { code: string; challenge_id: string };
  assert.equal(problem.code, "mfa_required");
  const done = await newClient(base).POST("/mfa/challenge", {
    body: { challenge_id: problem.challenge_id, code: code(secret, 0), remember_device: true },
    parseAs: "text",
  });
  assert.equal(done.response.status, 200, String(done.error));
  assert.match(String(done.data), /SESSION-/);
  const first = deviceToken(done.response);
  assert.equal(first.length, 43, "the released answer sets the device cookie");

  // The next login presents the cookie and no code: the app's answer
  // passes, with a new token.
  const again = await login({ Cookie: `${deviceCookie}=${first}` }, who);
  assert.equal(again.status, 200);
  assert.match(await again.text(), /SESSION-/);
  const rotated = deviceToken(again);
  assert.equal(rotated.length, 43);
  assert.notEqual(rotated, first, "the device token rotates on each use");

  // Listed (one, current for the request carrying its cookie), revoked.
  const onDevice = newClient(base, { Cookie: `session=${who}; ${deviceCookie}=${rotated}` });
  const list = await onDevice.GET("/mfa/devices");
  assert.equal(list.response.status, 200, JSON.stringify(list.error));
  assert.equal(list.data!.devices.length, 1);
  const device = list.data!.devices[0]!;
  assert.equal(device.current, true);
  assert.ok(new Date(device.expires_at) > new Date(device.created_at));
  const revoked = await onDevice.DELETE("/mfa/devices/{device_id}", { params: { path: { device_id: device.id } } });
  assert.equal(revoked.response.status, 204);
  assert.match(revoked.response.headers.get("set-cookie") ?? "", /^__Host-totpgate-device=;/, "revoking this device clears its cookie");

  // The revoked device's token gives no session: the login is challenged.
  const after = await login({ Cookie: `${deviceCookie}=${rotated}` }, who);
  assert.equal(after.status, 401);
  assert.equal(((await after.json()) as { code: string }).code, "mfa_required");
  const none = await newClient(base, { Cookie: `session=${who}` }).GET("/mfa/devices");
  assert.equal(none.data?.devices.length, 0);
});
