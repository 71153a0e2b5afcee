//! Every FHIR answer is `application/fhir+json`, and every 4xx and 5xx an OperationOutcome:
//! one layer renders the typed error of every refusal (from handlers and extractors alike: a
//! missing token, a wrong role, the audit trail down) as one, keeping the status and headers
//! (`WWW-Authenticate: Bearer` on 401, `Retry-After` on 429).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use shared::ApiError;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// FHIR's issue type for an HTTP status (hl7.org/fhir/R4/valueset-issue-type.html).
fn issue_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 406 | 415 => "invalid",
        401 => "login",
        403 => "forbidden",
        404 | 410 => "not-found",
        409 | 412 => "conflict",
        413 => "too-costly",
        422 => "business-rule",
        429 => "throttled",
        503 | 504 => "transient",
        _ => "exception",
    }
}

/// The text an error shows: its message, or its field errors (`loc: msg`, joined by `; `).
fn diagnostics(error: &ApiError) -> String {
    match error {
        ApiError::Validation(errors) => errors
            .iter()
            .map(|error| {
                let loc: Vec<String> = error
                    .loc
                    .iter()
                    .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                    .collect();
                format!("{}: {}", loc.join("."), error.msg)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.client_text(),
    }
}

/// An OperationOutcome with one error issue.
pub fn operation_outcome(status: StatusCode, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": if status.is_server_error() { "fatal" } else { "error" },
            "code": issue_code(status),
            "diagnostics": text,
        }],
    })
}

/// Every 4xx and 5xx as an OperationOutcome, made from the typed error the answer carries
/// (`ApiError` puts itself in the response's extensions); an error answer without one (none is
/// expected) gets its status's reason.
/// Marks an answer that stays `application/json` (SMART's discovery document is JSON, not a
/// FHIR resource).
#[derive(Clone, Copy)]
pub struct PlainJson;

/// Marks an error answer whose body is already the OperationOutcome to send (a failed export's
/// status).
#[derive(Clone, Copy)]
pub struct KeepBody;

pub async fn as_operation_outcome(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    if parts.extensions.get::<KeepBody>().is_some() {
        parts
            .headers
            .insert(header::CONTENT_TYPE, crate::fhir_json());
        return Response::from_parts(parts, body);
    }
    if !parts.status.is_client_error() && !parts.status.is_server_error() {
        let is_json = parts.extensions.get::<PlainJson>().is_none()
            && parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            parts
                .headers
                .insert(header::CONTENT_TYPE, crate::fhir_json());
        }
        return Response::from_parts(parts, body);
    }
    let error = parts.extensions.remove::<ApiError>();
    let text = error
        .as_ref()
        .map(diagnostics)
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| {
            parts
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_owned()
        });
    let mut outcome = operation_outcome(parts.status, &text);
    // A refused parameter is named where FHIR names HTTP parameters: `http.<name>`.
    if let Some(ApiError::BadParameter { parameter, .. }) = &error {
        let at = json!([format!("http.{parameter}")]);
        outcome["issue"][0]["location"] = at.clone();
        outcome["issue"][0]["expression"] = at;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, crate::fhir_json());
    Response::from_parts(parts, Body::from(outcome.to_string()))
}
