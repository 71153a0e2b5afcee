// The console's calls to /fhir/R4 (Group and bulk export are FHIR-only): the session's bearer
// token, FHIR JSON, and a refusal's OperationOutcome text as the error a page shows.
import { apiBaseUrl, session } from "./client";
import { ApiError, statusMeaning } from "./errors";

export const fhirBase = `${apiBaseUrl}/fhir/R4`;

export interface FhirAnswer<T> {
  status: number;
  data: T;
  headers: Headers;
}

/** The text of an OperationOutcome's issues, if the body is one. */
function outcomeText(body: unknown): string | null {
  const outcome = body as { resourceType?: string; issue?: { diagnostics?: string }[] } | null;
  if (outcome?.resourceType !== "OperationOutcome") return null;
  const texts = (outcome.issue ?? []).map((issue) => issue.diagnostics).filter((text): text is string => !!text);
  return texts.length > 0 ? texts.join("; ") : null;
}

/** Where to send a request for `path`: under the FHIR base, or for a URL the API handed out (a
 * status URL names the API's own host) its path on the API as this console reaches it (locally,
 * the console's own origin passes /fhir to the API). */
function target(path: string): string {
  if (!/^https?:/.test(path)) return `${fhirBase}/${path}`;
  const url = new URL(path);
  return url.pathname.startsWith("/fhir/R4/") ? `${apiBaseUrl}${url.pathname}${url.search}` : path;
}

/** `path` under the FHIR base (or a URL the API handed out); throws an ApiError for a 4xx or
 * 5xx, with the OperationOutcome's text. */
export async function fhir<T>(path: string, init: RequestInit = {}): Promise<FhirAnswer<T>> {
  const headers = new Headers(init.headers);
  headers.set("Accept", "application/fhir+json");
  if (init.body) headers.set("Content-Type", "application/fhir+json");
  if (session.token) headers.set("Authorization", `Bearer ${session.token}`);
  let response: Response;
  try {
    response = await fetch(target(path), { ...init, headers });
  } catch {
    throw new ApiError(0, statusMeaning(0));
  }
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (response.status === 401 && session.token) session.signOut(true);
  if (!response.ok) throw new ApiError(response.status, outcomeText(body) ?? statusMeaning(response.status));
  return { status: response.status, data: body as T, headers: response.headers };
}

export interface Bundle<T> {
  total?: number;
  entry?: { resource: T }[];
}

export interface GroupResource {
  resourceType: "Group";
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string };
  type: "person";
  actual: true;
  name: string;
  quantity?: number;
  member?: { entity: { reference: string } }[];
}

/** The patient ids a Group lists. */
export const memberIds = (group: GroupResource) =>
  (group.member ?? []).map((member) => member.entity.reference.replace(/^Patient\//, ""));
