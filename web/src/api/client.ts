// The one API client of the console, generated from docs/openapi.json (openapi-typescript types,
// openapi-fetch calls), and the session: the access token lives in this tab's sessionStorage
// (never a cookie, never the URL), is sent as a bearer header, and is dropped on any 401.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";
import { ApiError, errorDetail } from "./errors";

export type Schemas = components["schemas"];
export type Patient = Schemas["PatientPublic"];
export type Attachment = Schemas["AttachmentPublic"];
export type AttachmentCreated = Schemas["AttachmentCreated"];
export type User = Schemas["UserPublic"];
export type Role = Schemas["Role"];
export type AuditEvent = Schemas["AuditEvent"];

/** The API's origin, given at build time; empty means the console's own origin (local proxy). */
export const apiBaseUrl = (import.meta.env.VITE_API_URL ?? "").replace(/\/+$/, "");

const TOKEN_KEY = "carevault.access_token";

type SessionListener = (token: string | null, expired: boolean) => void;
const listeners = new Set<SessionListener>();
let token: string | null = sessionStorage.getItem(TOKEN_KEY);

export const session = {
  get token(): string | null {
    return token;
  },
  signIn(accessToken: string) {
    token = accessToken;
    sessionStorage.setItem(TOKEN_KEY, accessToken);
    listeners.forEach((listener) => listener(token, false));
  },
  signOut(expired = false) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    listeners.forEach((listener) => listener(null, expired));
  },
  subscribe(listener: SessionListener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};

const bearer: Middleware = {
  onRequest({ request }) {
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ response }) {
    // A token the API no longer accepts (expired, user deleted): back to the login page.
    if (response.status === 401 && token) session.signOut(true);
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: apiBaseUrl });
api.use(bearer);

interface FetchResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The call's data, or an ApiError carrying the API's `detail` text. */
export async function call<T>(request: Promise<FetchResult<T>>): Promise<T> {
  let result: FetchResult<T>;
  try {
    result = await request;
  } catch (caught) {
    if (caught instanceof SecondFactorRequired) throw caught;
    throw new ApiError(0, errorDetail(0, null));
  }
  const { data, error, response } = result;
  if (!response.ok || error !== undefined) throw new ApiError(response.status, errorDetail(response.status, error));
  return data as T;
}

/** Like call, with the response's ETag (for If-Match on the next write). */
export async function callWithEtag<T>(request: Promise<FetchResult<T>>): Promise<{ data: T; etag: string | null }> {
  let etag: string | null = null;
  const data = await call(
    request.then((result) => {
      etag = result.response.headers.get("ETag");
      return result;
    }),
  );
  return { data, etag };
}

/** A right password for an account with a second factor: the sign-in step to finish. */
export class SecondFactorRequired extends Error {
  readonly mfaToken: string;
  readonly methods: string[];

  constructor(mfaToken: string, methods: string[]) {
    super("A second factor is required");
    this.name = "SecondFactorRequired";
    this.mfaToken = mfaToken;
    this.methods = methods;
  }
}

/** POST /login/access-token takes a form, as OAuth2's password flow does. An account with a
 * second factor answers 401 with the step's token: thrown as SecondFactorRequired. */
export async function logIn(email: string, password: string): Promise<void> {
  const request = api.POST("/api/v1/login/access-token", {
    body: { username: email, password },
    bodySerializer: (body) => new URLSearchParams(body as Record<string, string>).toString(),
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  const tokenResponse = await call(
    request.then((result) => {
      const step = result.error as { mfa_token?: unknown; mfa_methods?: unknown } | undefined;
      if (result.response.status === 401 && typeof step?.mfa_token === "string") {
        throw new SecondFactorRequired(step.mfa_token, Array.isArray(step.mfa_methods) ? step.mfa_methods.map(String) : []);
      }
      return result;
    }),
  );
  session.signIn(tokenResponse.access_token);
}

/** The second step of a sign-in: a TOTP or recovery code, or a passkey's assertion. */
export async function finishSignIn(mfaToken: string, factor: { code: string } | { passkey: unknown }): Promise<void> {
  const tokenResponse = await call(api.POST("/api/v1/login/mfa", { body: { mfa_token: mfaToken, ...factor } as never }));
  session.signIn(tokenResponse.access_token);
}

/** Ends every session of this user on the API (POST /logout), then here. Signed out locally
 * even when the API cannot be reached: the tab must not keep a token the user meant to drop. */
export async function logOut(): Promise<void> {
  try {
    await api.POST("/api/v1/logout");
  } finally {
    session.signOut();
  }
}
