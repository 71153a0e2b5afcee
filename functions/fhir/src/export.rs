//! FHIR Bulk Data export (Flat FHIR v2): the kick-off (`$export` at system level, for every
//! patient, for a group), the status URL (progress, then the manifest with presigned S3 URLs)
//! and cancel. The work runs on the queue's worker (functions/bulk-export), never here.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::exports::{
    self, ExportError, ExportRequest, ExportType, JobMessage, Level, Owner, PlanFilters, Status,
};
use domain::smart::scopes::{Context, Perms, ResourceType};
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::outcome::{operation_outcome, KeepBody, PlainJson};
use crate::query;
use crate::{FhirState, PublicBase};

/// The `_outputFormat`s the specification names for NDJSON; NDJSON is all this server writes.
const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// The most `_typeFilter` queries one export takes (each becomes part of one statement).
const MAX_TYPE_FILTERS: usize = 32;

/// How long a client should wait before polling again, in seconds.
const POLL_AFTER_SECONDS: u64 = 2;

/// The parameters a kick-off takes, from the query (GET) or a Parameters resource (POST).
#[derive(Debug, Default)]
struct KickOff {
    output_format: Option<String>,
    since: Option<String>,
    types: Vec<String>,
    type_filters: Vec<String>,
    unknown: Vec<String>,
}

impl KickOff {
    fn take(&mut self, name: &str, value: String) {
        match name {
            "_outputFormat" => self.output_format = Some(value),
            "_since" => self.since = Some(value),
            "_type" => self.types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "_typeFilter" => self.type_filters.extend(type_filters(&value)),
            other => self.unknown.push(other.to_owned()),
        }
    }

    fn of_query(raw: Option<&str>) -> Self {
        let mut kick_off = Self::default();
        for param in query::params(raw) {
            let name = match &param.modifier {
                Some(modifier) => format!("{}:{modifier}", param.name),
                None => param.name.clone(),
            };
            kick_off.take(&name, param.value);
        }
        kick_off
    }

    fn of_parameters(headers: &HeaderMap, body: &[u8]) -> ApiResult<Self> {
        let parameters = crate::resource_body(headers, body, "Parameters")?;
        let mut kick_off = Self::default();
        let list = match &parameters["parameter"] {
            Value::Null => &Vec::new(),
            Value::Array(list) => list,
            _ => {
                return Err(ApiError::BadRequest(
                    "Parameters.parameter must be a list".into(),
                ))
            }
        };
        for parameter in list {
            let name = parameter["name"]
                .as_str()
                .ok_or_else(|| ApiError::BadRequest("Each parameter needs a name".into()))?;
            let value = ["valueString", "valueInstant", "valueCode", "valueDateTime"]
                .iter()
                .find_map(|key| parameter[*key].as_str())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Parameter {name} needs a valueString (valueInstant for _since)"
                    ))
                })?;
            kick_off.take(name, value.to_owned());
        }
        Ok(kick_off)
    }
}

/// The queries of one `_typeFilter` value: the specification's comma-separated list of
/// `<Type>?<query>`. A comma that does not start another `<Type>?` belongs to the query before
/// it (a search's own OR, sent unencoded).
fn type_filters(value: &str) -> Vec<String> {
    let starts_query = |piece: &str| {
        piece.split_once('?').is_some_and(|(name, _)| {
            name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
        })
    };
    let mut queries: Vec<String> = Vec::new();
    for piece in value.split(',') {
        match queries.last_mut() {
            Some(query) if !starts_query(piece) => {
                query.push(',');
                query.push_str(piece);
            }
            _ => queries.push(piece.to_owned()),
        }
    }
    queries
}

fn bad(parameter: &str, detail: String) -> ApiError {
    ApiError::BadParameter {
        parameter: parameter.to_owned(),
        detail,
    }
}

fn lenient(headers: &HeaderMap) -> bool {
    prefer(headers).any(|p| p == "handling=lenient")
}

/// The `Prefer` header's preferences, each trimmed.
fn prefer(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']).map(|p| p.trim().to_ascii_lowercase()))
}

/// An instant with its offset (FHIR's `instant`); a `+` the query turned into a space is read
/// back as the `+` it was.
fn instant(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim().replace(' ', "+");
    DateTime::parse_from_rfc3339(&raw)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// Who owns jobs a caller starts: a SMART backend client (system scopes), or a superuser's own
/// session. Anyone else is refused.
fn owner(caller: &FhirCaller) -> ApiResult<Owner> {
    match (&caller.smart, &caller.user) {
        (Some(smart), _) if smart.grant.scopes.has_context(Context::System) => {
            Ok(Owner::Client(smart.client_id))
        }
        (None, Some(user)) if user.is_superuser => Ok(Owner::User(user.id)),
        _ => Err(ApiError::Forbidden(
            "Bulk export needs a SMART backend client's system scopes or a superuser".into(),
        )),
    }
}

/// Whether the caller may export `export_type`: a backend client with `system/<Type>.rs` (or
/// v1 `.read`); a superuser may export everything.
fn may_export(caller: &FhirCaller, export_type: ExportType) -> bool {
    let resource = match export_type {
        ExportType::Patient => ResourceType::Patient,
        ExportType::DocumentReference => ResourceType::DocumentReference,
        ExportType::AuditEvent => ResourceType::AuditEvent,
    };
    match &caller.smart {
        Some(smart) => smart
            .grant
            .scopes
            .perms(Context::System, resource)
            .contains(Perms::READ),
        None => true,
    }
}

/// The export a kick-off asks for, checked: 400 for what it cannot be, 403 for what the caller
/// may not export.
fn export_request(
    caller: &FhirCaller,
    level: Level,
    kick_off: KickOff,
    headers: &HeaderMap,
    (request, fhir_base): (String, String),
) -> ApiResult<ExportRequest> {
    let owner = owner(caller)?;
    let lenient = lenient(headers);
    let mut issues = Vec::new();
    if let Some(format) = &kick_off.output_format {
        if !OUTPUT_FORMATS.contains(&format.as_str()) {
            return Err(bad(
                "_outputFormat",
                format!("_outputFormat {format:?} is not served: use application/fhir+ndjson"),
            ));
        }
    }
    if let Some(first) = kick_off.unknown.first() {
        if !lenient {
            return Err(bad(
                first,
                format!(
                    "Unknown export parameters: {} (Prefer: handling=lenient ignores them)",
                    kick_off.unknown.join(", ")
                ),
            ));
        }
    }
    let since = match &kick_off.since {
        None => None,
        Some(raw) => Some(instant(raw).ok_or_else(|| {
            bad(
                "_since",
                format!("_since must be an instant with its time zone, not {raw:?}"),
            )
        })?),
    };
    if since.is_some_and(|since| since > Utc::now()) {
        return Err(bad("_since", "_since is in the future".into()));
    }
    let served = ExportType::at(level);
    let types: Vec<ExportType> = if kick_off.types.is_empty() {
        // Every type served here that the caller may export.
        served
            .iter()
            .copied()
            .filter(|t| may_export(caller, *t))
            .collect()
    } else {
        let mut types = Vec::new();
        for name in &kick_off.types {
            match ExportType::parse(name).filter(|t| served.contains(t)) {
                Some(t) if !may_export(caller, t) => {
                    return Err(ApiError::Forbidden(format!(
                        "The token's scopes do not permit exporting {name} (system/{name}.rs)"
                    )))
                }
                Some(t) => types.push(t),
                None if lenient => issues.push(json!({
                    "resourceType": "OperationOutcome",
                    "issue": [{
                        "severity": "warning",
                        "code": "not-supported",
                        "diagnostics": format!("{name} is not exported at this level; skipped"),
                    }],
                })),
                None => {
                    return Err(bad(
                        "_type",
                        format!(
                            "_type {name:?} is not exported here (this level exports {})",
                            served
                                .iter()
                                .map(|t| t.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
        }
        types.sort();
        types.dedup();
        types
    };
    if types.is_empty() {
        return Err(ApiError::Forbidden(
            "The token's scopes permit exporting none of the types served here".into(),
        ));
    }
    if kick_off.type_filters.len() > MAX_TYPE_FILTERS {
        return Err(bad(
            "_typeFilter",
            format!("At most {MAX_TYPE_FILTERS} _typeFilter queries"),
        ));
    }
    let mut filters = PlanFilters::default();
    for raw in &kick_off.type_filters {
        type_filter(raw, &types, &mut filters)?;
    }
    Ok(ExportRequest {
        owner,
        level,
        types,
        since,
        filters,
        request,
        fhir_base,
        issues,
    })
}

/// One `_typeFilter`, `<Type>?<search>`, added to `filters`: the search parsed as that type's
/// FHIR search parses it, so a filter means what the search means.
fn type_filter(raw: &str, types: &[ExportType], filters: &mut PlanFilters) -> ApiResult<()> {
    let refused = |why: String| bad("_typeFilter", format!("_typeFilter {raw:?}: {why}"));
    let (name, search) = raw
        .split_once('?')
        .ok_or_else(|| refused("not <Type>?<search parameters>".into()))?;
    let resource_type =
        ExportType::parse(name).ok_or_else(|| refused(format!("unknown type {name:?}")))?;
    if !types.contains(&resource_type) {
        return Err(refused("names a type this export does not hold".into()));
    }
    let params = query::params(Some(search));
    let parsed = match resource_type {
        ExportType::Patient => crate::patient::search_of(&params).and_then(|(search, common)| {
            only_filters(&common)?;
            filters.patients.push(search.filters);
            Ok(())
        }),
        ExportType::DocumentReference => {
            crate::document::filter_of(&params).and_then(|(found, common)| {
                only_filters(&common)?;
                filters.documents.push(found);
                Ok(())
            })
        }
        ExportType::AuditEvent => Err(ApiError::BadRequest(
            "AuditEvent exports take _since, not _typeFilter".into(),
        )),
    };
    parsed.map_err(|e| refused(e.client_text()))
}

/// A filter's search holds search parameters only: no paging, none unknown.
fn only_filters(common: &query::Common) -> ApiResult<()> {
    common.refuse(false)?;
    if common.cursor.is_some() {
        return Err(ApiError::BadRequest(
            "paging parameters do not filter".into(),
        ));
    }
    Ok(())
}

/// `GET|POST /fhir/R4/$export`, `/Patient/$export`, `/Group/{id}/$export`: 202 with the status
/// URL in `Content-Location`.
async fn kick_off(
    state: FhirState,
    caller: FhirCaller,
    audit: AuditEntry,
    level: Level,
    Sent {
        method,
        headers,
        uri,
        body,
    }: Sent,
) -> ApiResult<Response> {
    let raw = uri.query().map(str::to_owned);
    if !prefer(&headers).any(|p| p == "respond-async") {
        return Err(ApiError::BadRequest(
            "A bulk export runs asynchronously: send Prefer: respond-async".into(),
        ));
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        if !accept.contains("json") && !accept.contains("*/*") {
            return Err(ApiError::BadRequest(
                "A bulk export answers application/fhir+json: send Accept: application/fhir+json"
                    .into(),
            ));
        }
    }
    let kick_off = if method == Method::POST {
        KickOff::of_parameters(&headers, &body)?
    } else {
        KickOff::of_query(raw.as_deref())
    };
    let base = PublicBase::of(&state.base, &headers, &uri);
    let request = format!(
        "{base}{}{}",
        uri.path(),
        raw.as_deref().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let request = export_request(&caller, level, kick_off, &headers, (request, base.clone()))?;
    let export = exports::start(&state.db, &request)
        .await
        .map_err(|e| match e {
            ExportError::InProgress => ApiError::TooManyRequests {
                detail: "An export by this client is in progress: wait for it, or cancel it".into(),
                retry_after: std::time::Duration::from_secs(60),
            },
            ExportError::UnknownGroup => ApiError::NotFound(format!(
                "Group/{} is not known",
                uri.path().split('/').nth(2).unwrap_or("")
            )),
            ExportError::Store(store) => store.into(),
        })?;
    audit.describe(|event| {
        event.resource(Some(export.id)).details(json!({
            "level": match level { Level::System => "system", Level::Patient => "patient", Level::Group(_) => "group" },
            "group_id": match level { Level::Group(id) => Some(id), _ => None },
            "types": request.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "since": request.since,
            "type_filters": request.filters.len(),
        }))
    });
    if let Err(error) = state
        .queue
        .send_all(&[JobMessage::Plan {
            export_id: export.id,
        }])
        .await
    {
        // Not queued: no job stays behind to block the client's next kick-off.
        tracing::error!(%error, "an export's planning could not be queued");
        exports::withdraw(&state.db, export.id).await?;
        return Err(ApiError::Unavailable(
            "The export queue is unavailable, please retry".into(),
        ));
    }
    let status_url = format!("{base}/$export-status/{}", export.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(information(&format!(
            "Export accepted: poll {status_url} for its progress and files"
        ))),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, location);
    }
    Ok(response)
}

/// An OperationOutcome that informs.
fn information(text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": text }],
    })
}

/// A kick-off as sent: its method (GET or POST), headers, URL and body.
pub struct Sent {
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Sent {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let body = axum::body::Bytes::from_request(
            axum::extract::Request::from_parts(parts.clone(), body),
            state,
        )
        .await
        .map_err(|e| ApiError::BadRequest(format!("The body could not be read: {e}")))?;
        Ok(Self {
            method: parts.method,
            headers: parts.headers,
            uri: parts.uri,
            body,
        })
    }
}

pub async fn system(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    sent: Sent,
) -> ApiResult<Response> {
    kick_off(state, caller, audit, Level::System, sent).await
}

pub async fn patients(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    sent: Sent,
) -> ApiResult<Response> {
    kick_off(state, caller, audit, Level::Patient, sent).await
}

pub async fn group(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    sent: Sent,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::NotFound(format!("Group/{raw_id} is not known")))?;
    kick_off(state, caller, audit, Level::Group(id), sent).await
}

fn job_not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "No export job {raw_id} (it expired, was cancelled, or is another client's)"
    ))
}

/// `GET /fhir/R4/$export-status/{id}`: 202 with `X-Progress` while the job runs; its manifest
/// (200) when done, with fresh presigned URLs each time; 500 with an OperationOutcome when it
/// failed.
pub async fn status(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    let owner = owner(&caller)?;
    let id = Uuid::parse_str(&raw_id).map_err(|_| job_not_found(&raw_id))?;
    let (export, files) = exports::find(&state.db, id, owner)
        .await?
        .ok_or_else(|| job_not_found(&raw_id))?;
    match export.status {
        Status::Accepted | Status::Running => {
            let mut response =
                (StatusCode::ACCEPTED, Json(information(&export.progress()))).into_response();
            let headers = response.headers_mut();
            if let Ok(progress) = HeaderValue::from_str(&export.progress()) {
                headers.insert("x-progress", progress);
            }
            headers.insert(header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECONDS));
            Ok(response)
        }
        Status::Failed | Status::Cancelled => {
            let text = format!(
                "The export failed: {}",
                export.error.as_deref().unwrap_or("unknown cause")
            );
            let mut response = (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, &text)),
            )
                .into_response();
            response.extensions_mut().insert(KeepBody);
            Ok(response)
        }
        Status::Completed => {
            let mut output = Vec::new();
            let mut error = Vec::new();
            for file in &files {
                let name = file
                    .object_key
                    .rsplit('/')
                    .next()
                    .unwrap_or("export.ndjson");
                let url = state
                    .storage
                    .presign_download(
                        &file.object_key,
                        "application/fhir+ndjson",
                        &domain::attachments::content_disposition(name),
                    )
                    .await?
                    .url;
                let entry =
                    json!({ "type": file.resource_type, "url": url, "count": file.resources });
                if file.kind == "error" {
                    error.push(entry);
                } else {
                    output.push(entry);
                }
            }
            audit.describe(|event| {
                event.details(json!({
                    "download_urls": files.len(),
                    "files": files.iter().map(|f| &f.object_key).collect::<Vec<_>>(),
                    "resources": files.iter().filter(|f| f.kind == "output").map(|f| f.resources).sum::<i64>(),
                }))
            });
            let manifest = json!({
                "transactionTime": export.transaction_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                "request": export.request,
                "requiresAccessToken": false,
                "output": output,
                "error": error,
            });
            let mut response = (StatusCode::OK, Json(manifest)).into_response();
            response.extensions_mut().insert(PlainJson);
            if let Some(expires) = export.expires_at {
                if let Ok(value) =
                    HeaderValue::from_str(&expires.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                {
                    response.headers_mut().insert(header::EXPIRES, value);
                }
            }
            Ok(response)
        }
    }
}

/// `DELETE /fhir/R4/$export-status/{id}`: the job stops (a chunk being written finds it gone and
/// removes what it wrote), its files are deleted, and its status URL answers 404 from now on.
pub async fn cancel(
    State(state): State<FhirState>,
    caller: FhirCaller,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    let owner = owner(&caller)?;
    let id = Uuid::parse_str(&raw_id).map_err(|_| job_not_found(&raw_id))?;
    if !exports::cancel(&state.db, id, owner).await? {
        return Err(job_not_found(&raw_id));
    }
    // The worker removes the job with the rows copied for it (and any file a step still
    // writing adds); if the queue cannot take it now, the cancel stands all the same.
    if let Err(error) = state
        .queue
        .send_all(&[JobMessage::Cleanup { export_id: id }])
        .await
    {
        tracing::warn!(%error, "a cancelled export's clean-up could not be queued");
    }
    // What cannot be deleted now expires with the bucket's lifecycle rule for exports.
    if let Err(error) = state.storage.delete_prefix(&exports::job_prefix(id)).await {
        tracing::warn!(%error, "a cancelled export's files are left to the lifecycle rule");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(information(
            "The export was cancelled and its files deleted",
        )),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::type_filters;

    #[test]
    fn a_type_filter_value_is_a_comma_separated_list_of_queries() {
        assert_eq!(
            type_filters("Patient?name=Ada,DocumentReference?patient=1"),
            ["Patient?name=Ada", "DocumentReference?patient=1"]
        );
        // A search's own OR stays in its query.
        assert_eq!(
            type_filters("Patient?name=Ada,Grace,DocumentReference?contenttype=a,b"),
            [
                "Patient?name=Ada,Grace",
                "DocumentReference?contenttype=a,b"
            ]
        );
        assert_eq!(type_filters("nonsense,more"), ["nonsense,more"]);
    }
}
