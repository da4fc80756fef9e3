// Step-up through the generated client against a running sidecar whose
// app has a sensitive route (started by cmd/totpgate's
// TestTypeScriptClientJourney, with POST /settings/password as a step-up
// route): the change is held until a fresh code, reaches the app once,
// and the proof cookie lets the same session through afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticator } from "otplib";
import { newClient } from "./client.js";

const base = process.env.TOTPGATE_URL;
if (!base) throw new Error("TOTPGATE_URL is not set");
const user = `ts-step-${Date.now()}`;
const session = `session=${user}`;

function code(secret: string, offset: number): string {
  return authenticator.clone({ epoch: Date.now() + offset * 30_000 }).generate(secret);
}

async function changePassword(cookie: string): Promise<Response> {
  return fetch(`${base}/settings/password`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Cookie: cookie },
    body: JSON.stringify({ password: "n3w" }),
  });
}

// proofOf is the step-up proof cookie a completion set, as name=value.
function proofOf(res: Response): string {
  const set = res.headers.getSetCookie().find((c) => c.startsWith("__Host-totpgate-step-up="));
  assert.ok(set, "the completion sets the step-up proof cookie");
  assert.match(set, /; Secure/i);
  assert.match(set, /; HttpOnly/i);
  return set.split(";")[0]!;
}

// enroll turns MFA on for the user of cookie and answers the secret.
async function enroll(cookie: string): Promise<string> {
  const api = newClient(base!, { Cookie: cookie });
  const enrolled = await api.POST("/mfa/enroll");
  assert.equal(enrolled.response.status, 201, JSON.stringify(enrolled.error));
  const secret = enrolled.data!.secret;
  const confirmed = await api.POST("/mfa/enroll/confirm", { body: { code: code(secret, -1) } });
  assert.equal(confirmed.response.status, 200, JSON.stringify(confirmed.error));
  return secret;
}

test("a sensitive route needs a fresh code, once, for this session", async () => {
  const api = newClient(base, { Cookie: session });
  const secret = await enroll(session);
  const otherSession = `session=${user}-other`;
  await enroll(otherSession);

  // Held: 401 mfa_step_up_required with a challenge.
  const held = await changePassword(session);
  assert.equal(held.status, 401);
  const problem = (await held.json()) as { code: string; challenge_id: string; challenge_url: string };
  assert.equal(problem.code, "mfa_step_up_required");
  assert.equal(problem.challenge_url, "/mfa/step-up");

  // The completion, from the same session, is the app's own answer.
  const done = await api.POST("/mfa/step-up", { body: { challenge_id: problem.challenge_id, code: code(secret, 0) }, parseAs: "text" });
  assert.equal(done.response.status, 200, String(done.error));
  assert.match(String(done.data), /"changed":1/);
  const proof = proofOf(done.response);

  // Replayed: not found, and the app counted one change.
  const replay = await api.POST("/mfa/step-up", { body: { challenge_id: problem.challenge_id, code: code(secret, 1) } });
  assert.equal(replay.response.status, 404);
  assert.equal(replay.error?.code, "challenge_not_found");

  // With the proof, the same session passes straight to the app.
  const direct = await changePassword(`${session}; ${proof}`);
  assert.equal(direct.status, 200);
  assert.match(await direct.text(), /"changed":2/);

  // Another enrolled user's session with the same proof is held.
  const other = await changePassword(`${otherSession}; ${proof}`);
  assert.equal(other.status, 401);
  assert.match(await other.text(), /mfa_step_up_required/);
});
