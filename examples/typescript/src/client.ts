// A typed totpgate client: every path, body and answer type comes from
// src/schema.d.ts, which openapi-typescript generates from openapi.yaml
// (`npm run generate`); nothing is decoded by hand.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

export type Client = ReturnType<typeof createClient<paths>>;

// newClient talks to a sidecar at baseUrl. headers carry the app's session
// (the sidecar asks the app who the caller is with them).
export function newClient(baseUrl: string, headers: Record<string, string> = {}): Client {
  return createClient<paths>({ baseUrl, headers });
}
