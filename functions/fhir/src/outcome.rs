//! Every FHIR answer is `application/fhir+json`, and every 4xx and 5xx an OperationOutcome:
//! one layer turns the shared error shape (`{"detail": ...}`, from handlers and extractors
//! alike: a missing token, a wrong role, the audit trail down) into one, keeping the status
//! and headers (`WWW-Authenticate: Bearer` on 401, `Retry-After` on 429).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A resource's values in the JSON API's terms (`values`), checked as the JSON API checks
/// them: a value that breaks a rule is 422, located by the resource's own element
/// (`fields` maps the JSON API's field names to them: `("dob", "birthDate")`).
pub fn checked<T: serde::de::DeserializeOwned>(
    resource_type: &str,
    values: Value,
    fields: &[(&str, &str)],
) -> Result<T, shared::ApiError> {
    shared::http::body_value(values).map_err(|error| match error {
        shared::ApiError::Validation(mut errors) => {
            for error in &mut errors {
                error.loc[0] = json!(resource_type);
                if let Some(field) = error.loc.get_mut(1) {
                    if let Some((_, element)) = fields.iter().find(|(f, _)| field == f) {
                        *field = json!(element);
                    }
                }
            }
            shared::ApiError::Validation(errors)
        }
        other => other,
    })
}

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

/// The text of a `detail`: a message, or a list of field errors (`loc: msg`).
fn diagnostics(detail: &Value) -> String {
    match detail {
        Value::String(text) => text.clone(),
        Value::Array(errors) => errors
            .iter()
            .map(|error| {
                let loc: Vec<String> = error["loc"]
                    .as_array()
                    .map(|parts| {
                        parts
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{}: {}", loc.join("."), error["msg"].as_str().unwrap_or(""))
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
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

pub async fn as_operation_outcome(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !parts.status.is_client_error() && !parts.status.is_server_error() {
        if is_json {
            parts
                .headers
                .insert(header::CONTENT_TYPE, crate::fhir_json());
        }
        return Response::from_parts(parts, body);
    }
    // Error bodies are small: the shared error shape, never a resource.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let text = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .map(|v| diagnostics(&v["detail"]))
        .filter(|t| !t.is_empty() && t != "null")
        .unwrap_or_else(|| {
            parts
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_owned()
        });
    let outcome = operation_outcome(parts.status, &text);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, crate::fhir_json());
    Response::from_parts(parts, Body::from(outcome.to_string()))
}
