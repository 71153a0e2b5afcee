//! /api/v1/attachments: clinical files go straight between the client and S3 through presigned
//! URLs; this function only records them, signs URLs, and confirms and deletes objects.

mod multipart;

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::attachments::{
    self, content_disposition, object_key, Attachment, PartPlan, ATTACHMENT_COLUMNS,
};
use shared::audit::LoggedRows;
use shared::auth::{AuthContext, CurrentUser, Writer};
use shared::config::{ConfigError, Env};
use shared::db::{DbPool, SqlParams};
use shared::domain::{Sha256Digest, WholeNumber};
use shared::http::{parse_uuid, JsonBody, Paging, QueryParams};
use shared::secrets::SecretsClient;
use shared::storage::{
    drain_deletions, queue_deletions_cte, Storage, StorageConfig, S3_SINGLE_PUT_LIMIT,
};
use shared::tokens::TokenRole;
use shared::trail::{Audit, AuditTrail, RouteEvent};
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Clone, FromRef)]
pub struct AttachmentsState {
    pub auth: AuthContext,
    pub storage: Storage,
}

impl AttachmentsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        let auth = AuthContext::from_env(
            env,
            &Arc::new(SecretsClient::from_env(env)),
            "carevault-attachments",
            TokenRole::Verify,
        )
        .await?;
        let sdk_config = shared::aws::sdk_config().await;
        Ok(Self {
            auth,
            storage: Storage::new(&sdk_config, storage_config),
        })
    }
}

const ATTACHMENT: &str = "attachment";
pub const ATTACHMENT_CREATE: RouteEvent = RouteEvent::new("attachment.create", ATTACHMENT);
pub const ATTACHMENT_LIST: RouteEvent = RouteEvent::new("attachment.list", ATTACHMENT);
const PATIENT_ATTACHMENT_LIST: RouteEvent =
    RouteEvent::new("attachment.list", ATTACHMENT).patient_from("id");
pub const ATTACHMENT_READ: RouteEvent =
    RouteEvent::new("attachment.read", ATTACHMENT).resource_from("id");
pub const ATTACHMENT_DOWNLOAD: RouteEvent =
    RouteEvent::new("attachment.download", ATTACHMENT).resource_from("id");
pub const ATTACHMENT_DELETE: RouteEvent =
    RouteEvent::new("attachment.delete", ATTACHMENT).resource_from("id");
const PART_URLS_ISSUE: RouteEvent =
    RouteEvent::new("attachment.upload_part_urls", ATTACHMENT).resource_from("id");
const PARTS_LIST: RouteEvent =
    RouteEvent::new("attachment.upload_parts_list", ATTACHMENT).resource_from("id");
const UPLOAD_COMPLETE: RouteEvent =
    RouteEvent::new("attachment.upload_complete", ATTACHMENT).resource_from("id");

use multipart::{complete_upload, issue_part_urls, list_upload_parts};

pub fn router(state: AttachmentsState) -> Router {
    let trail = AuditTrail::new(state.auth.pool.clone());
    Router::new()
        .route(
            "/api/v1/attachments",
            get(list_attachments.layer(trail.on(ATTACHMENT_LIST)))
                .post(create_attachment.layer(trail.on(ATTACHMENT_CREATE))),
        )
        .route(
            "/api/v1/attachments/{id}",
            get(read_attachment.layer(trail.on(ATTACHMENT_READ)))
                .delete(delete_attachment.layer(trail.on(ATTACHMENT_DELETE))),
        )
        .route(
            "/api/v1/attachments/{id}/content",
            get(download_attachment.layer(trail.on(ATTACHMENT_DOWNLOAD))),
        )
        .route(
            "/api/v1/attachments/{id}/upload-parts",
            get(list_upload_parts.layer(trail.on(PARTS_LIST)))
                .post(issue_part_urls.layer(trail.on(PART_URLS_ISSUE))),
        )
        .route(
            "/api/v1/attachments/{id}/complete",
            post(complete_upload.layer(trail.on(UPLOAD_COMPLETE))),
        )
        .route(
            "/api/v1/patients/{id}/attachments",
            get(list_patient_attachments.layer(trail.on(PATIENT_ATTACHMENT_LIST))),
        )
        .with_state(state)
}

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
        // `invoice\u{202E}fdp.exe` shows as `invoiceexe.pdf`: no bidirectional overrides,
        // zero-width or other invisible formatting characters.
        if raw.chars().any(is_format_character) {
            return Err(
                "File name must not contain invisible formatting or bidirectional control characters"
                    .into(),
            );
        }
        if raw.contains(['/', '\\']) || raw == "." || raw == ".." {
            return Err("File name must not contain a path".into());
        }
        Ok(Self(raw))
    }
}

/// Unicode's format characters (general category Cf): bidirectional controls, zero-width
/// joiners and spaces, the byte-order mark, invisible operators, tag characters.
fn is_format_character(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
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

/// A new attachment as the JSON API's body (FHIR's DocumentReference maps to it).
#[derive(Deserialize)]
pub struct AttachmentCreate {
    patient_id: Uuid,
    file_name: FileName,
    #[serde(default)]
    mime_type: Option<MimeType>,
    #[serde(default)]
    size: Option<WholeNumber>,
    /// Base64 SHA-256 of the whole file: S3 refuses other bytes (single uploads).
    #[serde(default)]
    sha256: Option<Sha256Digest>,
    /// How the bytes go up; by default multipart above the threshold, single below.
    #[serde(default)]
    upload: Option<UploadKind>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    Single,
    Multipart,
}

/// What a client needs to send the bytes: one presigned PUT, or the plan of a multipart upload
/// whose part URLs it asks for (`POST /attachments/{id}/upload-parts`).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum UploadInstructions {
    Single {
        url: String,
        method: &'static str,
        headers: serde_json::Map<String, serde_json::Value>,
        expires_at: DateTime<Utc>,
    },
    Multipart {
        part_size: u64,
        part_count: u32,
        /// Abandoned (aborted by the sweep) if no part URLs are asked for by then; each
        /// request for part URLs moves it on.
        expires_at: DateTime<Utc>,
    },
}

/// The created attachment; single uploads also carry the flat `upload_*` fields the replaced
/// system's clients read.
#[derive(Serialize)]
pub struct CreatedAttachment {
    #[serde(flatten)]
    pub attachment: Attachment,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_expires_at: Option<DateTime<Utc>>,
    upload: UploadInstructions,
}

pub(crate) fn headers_json(
    headers: Vec<(String, String)>,
) -> serde_json::Map<String, serde_json::Value> {
    headers
        .into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect()
}

impl AttachmentCreate {
    /// The declared size in bytes, which cannot be negative.
    fn size(&self) -> ApiResult<Option<u64>> {
        self.size
            .map(|WholeNumber(n)| u64::try_from(n))
            .transpose()
            .map_err(|_| {
                ApiError::validation(
                    &["body", "size"],
                    "Input should be greater than or equal to 0",
                    "greater_than_equal",
                )
            })
    }
}

/// Which upload a creation asks for, checked against the settings and S3's limits.
fn choose_upload(config: &StorageConfig, body: &AttachmentCreate) -> ApiResult<Option<PartPlan>> {
    let size = body.size()?;
    if size.is_some_and(|size| size > config.max_upload_bytes) {
        return Err(ApiError::validation(
            &["body", "size"],
            format!(
                "Input should be less than or equal to {}",
                config.max_upload_bytes
            ),
            "less_than_equal",
        ));
    }
    let kind = body.upload.unwrap_or(match size {
        Some(size) if size > config.multipart_threshold_bytes => UploadKind::Multipart,
        _ => UploadKind::Single,
    });
    match (kind, size) {
        (UploadKind::Single, Some(size)) if size > S3_SINGLE_PUT_LIMIT => Err(ApiError::validation(
            &["body", "upload"],
            format!("A single upload holds at most {S3_SINGLE_PUT_LIMIT} bytes; use multipart"),
            "value_error",
        )),
        (UploadKind::Single, _) => Ok(None),
        (UploadKind::Multipart, None) => Err(ApiError::validation(
            &["body", "size"],
            "Field required for a multipart upload",
            "missing",
        )),
        (UploadKind::Multipart, Some(_)) if body.sha256.is_some() => Err(ApiError::validation(
            &["body", "sha256"],
            "S3 cannot verify a whole-file SHA-256 of a multipart upload; send each part's SHA-256 with its part number instead",
            "value_error",
        )),
        (UploadKind::Multipart, Some(size)) => Ok(Some(PartPlan::for_size(size))),
    }
}

async fn create_attachment(
    State(state): State<AttachmentsState>,
    _writer: Writer,
    audit: Audit,
    JsonBody(body): JsonBody<AttachmentCreate>,
) -> ApiResult<Json<CreatedAttachment>> {
    Ok(Json(
        create(&state.auth.pool, &state.storage, &audit, &body).await?,
    ))
}

/// Creates an attachment (pending) and what its client needs to send the bytes: the row and
/// its audit event in one statement, the URL signed (or the multipart upload opened) first.
pub async fn create(
    pool: &DbPool,
    storage: &Storage,
    audit: &Audit,
    body: &AttachmentCreate,
) -> ApiResult<CreatedAttachment> {
    let id = Uuid::new_v4();
    audit.describe(|event| event.resource(Some(id)).patient(Some(body.patient_id)));
    let config = &storage.config;
    let mime_type = body
        .mime_type
        .as_ref()
        .map(|m| m.0.clone())
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
    let plan = choose_upload(config, body)?;
    let key = object_key(body.patient_id, id);
    // Signing is local computation, done before the insert so a failure leaves no row; a
    // multipart upload is opened first and aborted if the row cannot be written.
    let (single, upload_id) = match plan {
        None => (
            Some(
                storage
                    .presign_upload(&key, &mime_type, body.size()?, body.sha256.as_ref())
                    .await?,
            ),
            None,
        ),
        Some(_) => (
            None,
            Some(storage.create_multipart_upload(&key, &mime_type).await?),
        ),
    };
    let inserted = insert_attachment(
        pool,
        audit,
        id,
        body,
        &mime_type,
        &key,
        plan,
        upload_id.as_deref(),
    )
    .await;
    let inserted = match (inserted, &upload_id) {
        (Ok(row), _) => row,
        (Err(error), Some(upload_id)) => {
            if let Err(why) = storage.abort_multipart_upload(&key, upload_id).await {
                tracing::warn!(error = %why, "could not abort the upload of a row never written; the bucket's lifecycle rule will");
            }
            return Err(error);
        }
        (Err(error), None) => return Err(error),
    };
    let attachment = Attachment::from_row(&inserted);
    Ok(match (single, plan) {
        (Some(upload), _) => {
            let headers = headers_json(upload.headers);
            let expires_at: DateTime<Utc> = upload.expires_at.into();
            CreatedAttachment {
                attachment,
                upload_url: Some(upload.url.clone()),
                upload_method: Some("PUT"),
                upload_headers: Some(headers.clone()),
                upload_expires_at: Some(expires_at),
                upload: UploadInstructions::Single {
                    url: upload.url,
                    method: "PUT",
                    headers,
                    expires_at,
                },
            }
        }
        (None, Some(plan)) => CreatedAttachment {
            upload: UploadInstructions::Multipart {
                part_size: plan.part_size,
                part_count: plan.part_count,
                expires_at: attachment.created_at
                    + chrono::Duration::from_std(config.abandoned_after).unwrap_or_default(),
            },
            attachment,
            upload_url: None,
            upload_method: None,
            upload_headers: None,
            upload_expires_at: None,
        },
        (None, None) => unreachable!("an upload is either single or planned in parts"),
    })
}

/// The row and its audit event in one statement; no row (unknown patient), no event.
#[allow(clippy::too_many_arguments)]
async fn insert_attachment(
    pool: &DbPool,
    audit: &Audit,
    id: Uuid,
    body: &AttachmentCreate,
    mime_type: &str,
    key: &str,
    plan: Option<PartPlan>,
    upload_id: Option<&str>,
) -> ApiResult<tokio_postgres::Row> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let patient_id = params.push(body.patient_id, Type::UUID);
    let file_name = params.push(body.file_name.0.clone(), Type::VARCHAR);
    let mime = params.push(mime_type.to_owned(), Type::VARCHAR);
    let key = params.push(key.to_owned(), Type::TEXT);
    let declared_size = params.push(body.size.map(|WholeNumber(n)| n), Type::INT8);
    let declared_sha256 = params.push(body.sha256.as_ref().map(Sha256Digest::base64), Type::TEXT);
    let upload_id = params.push(upload_id.map(str::to_owned), Type::TEXT);
    let part_size = params.push(plan.map(|p| p.part_size as i64), Type::INT8);
    let part_count = params.push(plan.map(|p| p.part_count as i32), Type::INT4);
    let logged = audit.logged_cte(&mut params, &attachment_rows("created"));
    let client = pool.get().await?;
    client
        .query_typed_opt(
            &format!(
                "WITH created AS (
                    INSERT INTO attachments (id, patient_id, file_name, mime_type, object_key,
                        declared_size, declared_sha256, upload_id, part_size, part_count)
                    SELECT {id}, p.id, {file_name}, {mime}, {key}, {declared_size},
                        {declared_sha256}, {upload_id}, {part_size}, {part_count}
                    FROM patients p WHERE p.id = {patient_id}
                    RETURNING {ATTACHMENT_COLUMNS}
                 ), {logged}
                 SELECT * FROM created"
            ),
            &params.typed(),
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("Patient not found".into()))
}

/// The changed rows of a statement whose CTE `source` returns attachments.
pub(crate) fn attachment_rows(source: &str) -> LoggedRows<'_> {
    LoggedRows {
        source,
        resource: "id",
        patient: "patient_id",
        details: None,
    }
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
    _current: CurrentUser,
    audit: Audit,
    QueryParams(params): QueryParams<ListParams>,
) -> ApiResult<Json<AttachmentList>> {
    let list = list_filtered(&state, params).await?;
    describe_list(&audit, &list);
    Ok(Json(list))
}

fn describe_list(audit: &Audit, list: &AttachmentList) {
    describe_listed(audit, &list.data);
}

/// Which attachments (and so which patients' files) a list showed; the FHIR search's too.
pub fn describe_listed(audit: &Audit, listed: &[Attachment]) {
    let mut patients: Vec<Uuid> = listed.iter().map(|a| a.patient_id).collect();
    patients.sort();
    patients.dedup();
    audit.describe(|event| {
        let event = if patients.len() == 1 {
            event.patient(Some(patients[0]))
        } else {
            event
        };
        event.details(json!({
            "attachment_ids": listed.iter().map(|a| a.id).collect::<Vec<_>>(),
            "patient_ids": patients,
        }))
    });
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
    _current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    QueryParams(paging): QueryParams<Paging>,
) -> ApiResult<Json<AttachmentList>> {
    let patient_id = parse_uuid("patient_id", &raw_id)?;
    let list = list_of_patient(&state, patient_id, paging).await?;
    describe_list(&audit, &list);
    Ok(Json(list))
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
pub(crate) async fn load(state: &AttachmentsState, raw_id: &str) -> ApiResult<Attachment> {
    let id = parse_uuid("attachment_id", raw_id)?;
    attachments::find(&state.auth.pool, &state.storage, id)
        .await?
        .ok_or_else(not_found)
}

async fn read_attachment(
    State(state): State<AttachmentsState>,
    _current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Attachment>> {
    let attachment = load(&state, &raw_id).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    Ok(Json(attachment))
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
    _current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    QueryParams(params): QueryParams<ContentParams>,
) -> ApiResult<Response> {
    let attachment = load(&state, &raw_id).await?;
    // Recorded (by the layer) before the URL, a credential for the file, is handed out.
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    if attachment.is_pending() {
        return Err(ApiError::Conflict(
            "Attachment content has not been uploaded".into(),
        ));
    }
    content_response(&state, attachment, params.redirect.unwrap_or(true)).await
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
    _writer: Writer,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_uuid("attachment_id", &raw_id)?;
    delete(&state.auth.pool, &state.storage, &audit, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(
        json!({ "message": "Attachment deleted successfully" }),
    ))
}

/// Deletes an attachment and its file (a pending multipart upload aborted); None when there
/// is no such attachment.
pub async fn delete(
    pool: &DbPool,
    storage: &Storage,
    audit: &Audit,
    id: Uuid,
) -> ApiResult<Option<()>> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    // Row deleted, object queued and audit event written in one statement: never one without
    // the others, in one round trip (a pending multipart upload's abort is queued by a trigger,
    // in the same statement).
    let logged = audit.logged_cte(
        &mut params,
        &LoggedRows {
            details: Some(
                "CASE WHEN gone.upload_id IS NOT NULL AND gone.status = 'pending' \
                 THEN jsonb_build_object('multipart_upload_aborted', true) ELSE '{}'::jsonb END",
            ),
            ..attachment_rows("gone")
        },
    );
    let queued = queue_deletions_cte("gone");
    let client = pool.get().await?;
    let Some(row) = client
        .query_typed_opt(
            &format!(
                "WITH gone AS (
                    DELETE FROM attachments WHERE id = {id}
                    RETURNING id, patient_id, object_key, upload_id, status
                 ), {queued}, {logged}
                 SELECT object_key FROM gone"
            ),
            &params.typed(),
        )
        .await?
    else {
        return Ok(None);
    };
    drop(client);
    // Delete the object now; whatever fails stays queued for the sweep, and the delete stands.
    drain_deletions(pool, storage, vec![row.get(0)]).await;
    Ok(Some(()))
}
