//! /api/v1/attachments: clinical files go straight between the client and S3 through presigned
//! URLs; this function only records them, signs URLs, and confirms and deletes objects.

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::attachments::{self, content_disposition, object_key, Attachment, ATTACHMENT_COLUMNS};
use shared::audit::{Audit, Event};
use shared::auth::{AuthContext, CurrentUser};
use shared::config::{ConfigError, Env};
use shared::db::{param, typed};
use shared::http::{parse_uuid, JsonBody, Paging, QueryParams};
use shared::secrets::SecretsClient;
use shared::storage::{drain_deletions, Storage, StorageConfig};
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Clone)]
pub struct AttachmentsState {
    pub auth: AuthContext,
    pub storage: Storage,
}

impl FromRef<AttachmentsState> for AuthContext {
    fn from_ref(state: &AttachmentsState) -> Self {
        state.auth.clone()
    }
}

impl AttachmentsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        let auth =
            AuthContext::from_env(env, &SecretsClient::from_env(env), "carevault-attachments")
                .await?;
        let sdk_config = shared::aws::sdk_config().await;
        Ok(Self {
            auth,
            storage: Storage::new(&sdk_config, storage_config),
        })
    }
}

pub fn router(state: AttachmentsState) -> Router {
    Router::new()
        .route(
            "/api/v1/attachments",
            get(list_attachments).post(create_attachment),
        )
        .route(
            "/api/v1/attachments/{id}",
            get(read_attachment).delete(delete_attachment),
        )
        .route("/api/v1/attachments/{id}/content", get(download_attachment))
        .route(
            "/api/v1/patients/{id}/attachments",
            get(list_patient_attachments),
        )
        .with_state(state)
}

const ATTACHMENT: &str = "attachment";
pub const ATTACHMENT_CREATE: &str = "attachment.create";
pub const ATTACHMENT_READ: &str = "attachment.read";
pub const ATTACHMENT_LIST: &str = "attachment.list";
pub const ATTACHMENT_DOWNLOAD: &str = "attachment.download";
pub const ATTACHMENT_DELETE: &str = "attachment.delete";

fn not_found() -> ApiError {
    ApiError::NotFound("Attachment not found".into())
}

/// A file name as a person gave it: 1 to 255 characters, no control characters, no path.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct FileName(String);

impl TryFrom<String> for FileName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let count = raw.chars().count();
        if count == 0 || raw.trim().is_empty() {
            return Err("String should have at least 1 character".into());
        }
        if count > 255 {
            return Err("String should have at most 255 characters".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("File name must not contain control characters".into());
        }
        if raw.contains(['/', '\\']) || raw == "." || raw == ".." {
            return Err("File name must not contain a path".into());
        }
        Ok(Self(raw))
    }
}

/// `type/subtype` (RFC 6838 restricted names), stored in lower case.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct MimeType(String);

impl TryFrom<String> for MimeType {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let is_name = |part: &str| {
            (1..=127).contains(&part.len())
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
        };
        match raw.trim().split_once('/') {
            Some((kind, subtype)) if is_name(kind) && is_name(subtype) => {
                Ok(Self(raw.trim().to_ascii_lowercase()))
            }
            _ => Err("Value error, Invalid MIME type format".into()),
        }
    }
}

#[derive(Deserialize)]
struct AttachmentCreate {
    patient_id: Uuid,
    file_name: FileName,
    #[serde(default)]
    mime_type: Option<MimeType>,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Serialize)]
struct CreatedAttachment {
    #[serde(flatten)]
    attachment: Attachment,
    upload_url: String,
    upload_method: &'static str,
    upload_headers: serde_json::Map<String, serde_json::Value>,
    upload_expires_at: DateTime<Utc>,
}

async fn create_attachment(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    body: Result<JsonBody<AttachmentCreate>, ApiError>,
) -> ApiResult<Json<CreatedAttachment>> {
    let audit = audit.by(&current);
    let id = Uuid::new_v4();
    let patient_id = body.as_ref().ok().map(|JsonBody(b)| b.patient_id);
    let event = Event::new(ATTACHMENT_CREATE, ATTACHMENT)
        .resource(Some(id))
        .patient(patient_id);
    let result = create(&state, &current, &audit, &event, id, body).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn create(
    state: &AttachmentsState,
    current: &CurrentUser,
    audit: &Audit,
    event: &Event,
    id: Uuid,
    body: Result<JsonBody<AttachmentCreate>, ApiError>,
) -> ApiResult<Json<CreatedAttachment>> {
    current.require_writer()?;
    let JsonBody(body) = body?;
    let config = &state.storage.config;
    let mime_type = body
        .mime_type
        .map(|m| m.0)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    if !config.allowed_mime_types.is_empty() && !config.allowed_mime_types.contains(&mime_type) {
        return Err(ApiError::validation(
            &["body", "mime_type"],
            format!(
                "MIME type not allowed; allowed: {}",
                config.allowed_mime_types.join(", ")
            ),
            "value_error",
        ));
    }
    if body.size.is_some_and(|size| size > config.max_upload_bytes) {
        return Err(ApiError::validation(
            &["body", "size"],
            format!(
                "Input should be less than or equal to {}",
                config.max_upload_bytes
            ),
            "less_than_equal",
        ));
    }
    let key = object_key(body.patient_id, id);
    // Signing is local computation; done before the insert so a failure leaves no row.
    let upload = state
        .storage
        .presign_upload(&key, &mime_type, body.size)
        .await?;
    let declared_size = body.size.map(|s| s as i64);
    // The row and its audit event in one statement; no row (unknown patient), no event.
    let (logged, audit_params) =
        audit.logged_cte(event, "created", "created.id", "created.patient_id", 7);
    let mut params = vec![
        param(id, Type::UUID),
        param(body.patient_id, Type::UUID),
        param(body.file_name.0.clone(), Type::VARCHAR),
        param(mime_type.clone(), Type::VARCHAR),
        param(key.clone(), Type::TEXT),
        param(declared_size, Type::INT8),
    ];
    params.extend(audit_params);
    let client = state.auth.pool.get().await?;
    let inserted = client
        .query_typed_opt(
            &format!(
                "WITH created AS (
                    INSERT INTO attachments (id, patient_id, file_name, mime_type, object_key, declared_size)
                    SELECT $1, p.id, $3, $4, $5, $6 FROM patients p WHERE p.id = $2
                    RETURNING {ATTACHMENT_COLUMNS}
                 ), {logged}
                 SELECT * FROM created"
            ),
            &typed(&params),
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("Patient not found".into()))?;
    Ok(Json(CreatedAttachment {
        attachment: Attachment::from_row(&inserted),
        upload_url: upload.url,
        upload_method: "PUT",
        upload_headers: upload
            .headers
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect(),
        upload_expires_at: upload.expires_at.into(),
    }))
}

#[derive(Deserialize)]
struct ListParams {
    skip: Option<i64>,
    limit: Option<i64>,
    patient_id: Option<String>,
}

#[derive(Serialize)]
struct AttachmentList {
    data: Vec<Attachment>,
    count: i64,
}

async fn list_attachments(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    params: Result<QueryParams<ListParams>, ApiError>,
) -> ApiResult<Json<AttachmentList>> {
    let audit = audit.by(&current);
    let result = async {
        let QueryParams(params) = params?;
        list_filtered(&state, params).await
    }
    .await;
    let event = list_event(Event::new(ATTACHMENT_LIST, ATTACHMENT), &result);
    audit.read(&state.auth.pool, event, result.map(Json)).await
}

/// Which attachments (and so which patients' files) a list showed.
fn list_event(event: Event, result: &ApiResult<AttachmentList>) -> Event {
    match result {
        Ok(list) => {
            let mut patients: Vec<Uuid> = list.data.iter().map(|a| a.patient_id).collect();
            patients.sort();
            patients.dedup();
            let event = if patients.len() == 1 {
                event.patient(Some(patients[0]))
            } else {
                event
            };
            event.details(json!({
                "attachment_ids": list.data.iter().map(|a| a.id).collect::<Vec<_>>(),
                "patient_ids": patients,
            }))
        }
        Err(_) => event,
    }
}

async fn list_filtered(state: &AttachmentsState, params: ListParams) -> ApiResult<AttachmentList> {
    let paging = Paging {
        skip: params.skip,
        limit: params.limit,
    };
    let patient_id = match params.patient_id.as_deref().map(str::trim) {
        Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| {
            ApiError::validation(
                &["query", "patient_id"],
                "Input should be a valid UUID",
                "uuid_parsing",
            )
        })?),
        None => None,
    };
    list(state, patient_id, paging).await
}

async fn list_patient_attachments(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    paging: Result<QueryParams<Paging>, ApiError>,
) -> ApiResult<Json<AttachmentList>> {
    let audit = audit.by(&current);
    let patient_id = parse_uuid("patient_id", &raw_id);
    let result = async {
        let patient_id = patient_id.clone()?;
        let QueryParams(paging) = paging?;
        list_of_patient(&state, patient_id, paging).await
    }
    .await;
    let event = list_event(
        Event::new(ATTACHMENT_LIST, ATTACHMENT).patient(patient_id.ok()),
        &result,
    );
    audit.read(&state.auth.pool, event, result.map(Json)).await
}

async fn list_of_patient(
    state: &AttachmentsState,
    patient_id: Uuid,
    paging: Paging,
) -> ApiResult<AttachmentList> {
    let client = state.auth.pool.get().await?;
    if client
        .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&patient_id])
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("Patient not found".into()));
    }
    drop(client);
    list(state, Some(patient_id), paging).await
}

/// A page of attachments, newest first, with pending ones checked against the bucket.
async fn list(
    state: &AttachmentsState,
    patient_id: Option<Uuid>,
    paging: Paging,
) -> ApiResult<AttachmentList> {
    let (skip, limit) = paging.checked()?;
    let client = state.auth.pool.get().await?;
    let (count_sql, page_sql) = (
        "SELECT count(*) FROM attachments WHERE ($1::uuid IS NULL OR patient_id = $1)",
        format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE ($1::uuid IS NULL OR patient_id = $1)
             ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3"
        ),
    );
    let (count, rows) = shared::db::count_and_page(
        &client,
        count_sql,
        &[&patient_id],
        &page_sql,
        &[&patient_id, &skip, &limit],
    )
    .await?;
    drop(client);
    let mut data: Vec<Attachment> = rows.iter().map(Attachment::from_row).collect();
    attachments::refresh_pending(&state.auth.pool, &state.storage, &mut data).await?;
    Ok(AttachmentList { data, count })
}

/// The attachment, confirmed against the bucket if its upload was still pending.
async fn load(state: &AttachmentsState, raw_id: &str) -> ApiResult<Attachment> {
    let id = parse_uuid("attachment_id", raw_id)?;
    let client = state.auth.pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&id])
        .await?
        .ok_or_else(not_found)?;
    drop(client);
    let mut found = [Attachment::from_row(&row)];
    attachments::refresh_pending(&state.auth.pool, &state.storage, &mut found).await?;
    let [attachment] = found;
    Ok(attachment)
}

/// The event of a request about one attachment, once its outcome is known.
fn attachment_event(action: &'static str, raw_id: &str, result: &ApiResult<Attachment>) -> Event {
    let event = Event::new(action, ATTACHMENT).resource(Uuid::parse_str(raw_id).ok());
    match result {
        Ok(attachment) => event.patient(Some(attachment.patient_id)),
        Err(_) => event,
    }
}

async fn read_attachment(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Attachment>> {
    let result = load(&state, &raw_id).await;
    let event = attachment_event(ATTACHMENT_READ, &raw_id, &result);
    audit
        .by(&current)
        .read(&state.auth.pool, event, result.map(Json))
        .await
}

#[derive(Deserialize)]
struct ContentParams {
    /// false: 200 with the URL as JSON instead of the 302, for a browser app, which cannot read
    /// a redirect's Location from fetch (it would follow it and pull the whole file into memory).
    redirect: Option<bool>,
}

/// 302 to a short-lived presigned GET (or, with `redirect=false`, that URL as JSON); the file
/// never passes through Lambda.
async fn download_attachment(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    params: Result<QueryParams<ContentParams>, ApiError>,
) -> ApiResult<Response> {
    let (loaded, redirect) = match params {
        Ok(QueryParams(params)) => (load(&state, &raw_id).await, params.redirect.unwrap_or(true)),
        Err(error) => (Err(error), true),
    };
    let event = attachment_event(ATTACHMENT_DOWNLOAD, &raw_id, &loaded);
    let result = match loaded {
        Ok(attachment) if attachment.is_pending() => Err(ApiError::Conflict(
            "Attachment content has not been uploaded".into(),
        )),
        Ok(attachment) => content_response(&state, attachment, redirect).await,
        Err(error) => Err(error),
    };
    // Recorded before the URL (a credential for the file) is handed out.
    audit
        .by(&current)
        .read(&state.auth.pool, event, result)
        .await
}

async fn content_response(
    state: &AttachmentsState,
    attachment: Attachment,
    redirect: bool,
) -> ApiResult<Response> {
    let download = state
        .storage
        .presign_download(
            &attachment.object_key,
            &attachment.mime_type,
            &content_disposition(&attachment.file_name),
        )
        .await?;
    let status = if redirect {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(json!({ "url": download.url }))).into_response();
    let headers = response.headers_mut();
    if redirect {
        let location = HeaderValue::from_str(&download.url)
            .map_err(|e| ApiError::internal(format!("presigned URL is not a header value: {e}")))?;
        headers.insert(header::LOCATION, location);
    }
    // The URL is a bearer credential for a short while: no cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn delete_attachment(
    State(state): State<AttachmentsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let audit = audit.by(&current);
    let event = Event::new(ATTACHMENT_DELETE, ATTACHMENT).resource(Uuid::parse_str(&raw_id).ok());
    let result = delete(&state, &current, &audit, &event, &raw_id).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn delete(
    state: &AttachmentsState,
    current: &CurrentUser,
    audit: &Audit,
    event: &Event,
    raw_id: &str,
) -> ApiResult<Json<serde_json::Value>> {
    current.require_writer()?;
    let id = parse_uuid("attachment_id", raw_id)?;
    // Row deleted, object queued and audit event written in one statement: never one without
    // the others, in one round trip.
    let (logged, audit_params) = audit.logged_cte(event, "gone", "gone.id", "gone.patient_id", 2);
    let mut params = vec![param(id, Type::UUID)];
    params.extend(audit_params);
    let client = state.auth.pool.get().await?;
    let key: String = client
        .query_typed_opt(
            &format!(
                "WITH gone AS (
                    DELETE FROM attachments WHERE id = $1 RETURNING id, patient_id, object_key
                 ), queued AS (
                    INSERT INTO object_deletions (object_key) SELECT object_key FROM gone
                    ON CONFLICT (object_key) DO UPDATE SET queued_at = now()
                 ), {logged}
                 SELECT object_key FROM gone"
            ),
            &typed(&params),
        )
        .await?
        .ok_or_else(not_found)?
        .get(0);
    drop(client);
    // Delete the object now; if S3 cannot be reached the key stays queued for the sweep.
    drain_deletions(&state.auth.pool, &state.storage, Some(vec![key]), 0).await?;
    Ok(Json(
        json!({ "message": "Attachment deleted successfully" }),
    ))
}
