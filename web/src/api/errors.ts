// Turns any failed API call into the one sentence a user sees: the API's own `detail` text where
// it sent one (FastAPI's shape: a string, or a list of field errors), else a plain account of
// the status.

/** A failed API call: its HTTP status (0 when the server was not reached) and the text to show. */
export class ApiError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

interface FieldError {
  loc?: unknown;
  msg?: unknown;
}

// Where in the request a field error points, without FastAPI's "body"/"query"/"path" prefix.
function fieldName(loc: unknown): string | null {
  if (!Array.isArray(loc)) return null;
  const parts = loc.filter((part, index) => !(index === 0 && ["body", "query", "path", "header"].includes(String(part))));
  return parts.length > 0 ? parts.map(String).join(".") : null;
}

function describeFieldError(error: FieldError): string | null {
  if (typeof error?.msg !== "string" || error.msg.length === 0) return null;
  const field = fieldName(error.loc);
  return field ? `${field}: ${error.msg}` : error.msg;
}

/** What went wrong, as the API said it; the status's meaning when the body says nothing usable. */
export function errorDetail(status: number, body: unknown): string {
  const detail = (body as { detail?: unknown } | null | undefined)?.detail;
  if (typeof detail === "string" && detail.trim().length > 0) return detail;
  if (Array.isArray(detail)) {
    const lines = detail.map((item) => describeFieldError(item as FieldError)).filter((line): line is string => line !== null);
    if (lines.length > 0) return lines.join("; ");
  }
  return statusMeaning(status);
}

export function statusMeaning(status: number): string {
  switch (status) {
    case 0:
      return "CareVault could not be reached. Check your connection and try again.";
    case 401:
      return "Your session has ended. Please log in again.";
    case 403:
      return "You do not have permission to do this.";
    case 404:
      return "Not found.";
    case 412:
      return "This record was changed by someone else since you opened it.";
    case 413:
      return "The request is too large.";
    case 429:
      return "Too many requests. Wait a moment and try again.";
    case 503:
      return "CareVault is temporarily unavailable. Try again in a moment.";
    default:
      return status >= 500 ? `CareVault failed to answer (error ${status}). Try again later.` : `The request failed (error ${status}).`;
  }
}

/** The message S3 puts in its XML error body (`<Message>...</Message>`), if any. */
export function storageErrorMessage(status: number, xml: string): string {
  const match = /<Message>([^<]*)<\/Message>/.exec(xml);
  const code = /<Code>([^<]*)<\/Code>/.exec(xml);
  if (match && match[1].trim()) return `Storage refused the upload (${status}): ${match[1].trim()}`;
  if (code && code[1].trim()) return `Storage refused the upload (${status}): ${code[1].trim()}`;
  return status === 0 ? "The upload could not reach storage. Check your connection and try again." : `Storage refused the upload (error ${status}).`;
}

/** Any thrown value as text for the user. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error && error.message) return error.message;
  return "Something went wrong.";
}
