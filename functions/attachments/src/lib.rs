//! /api/v1/attachments: clinical files go straight between the client and S3 through presigned
//! URLs; this function only records them, signs URLs, and confirms and deletes objects.

mod multipart;

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::attachments::{
    self, content_disposition, describe_listed, Attachment, AttachmentCreate, AttachmentFilter,
    CreatedAttachment, Window, ATTACHMENT_CREATE, ATTACHMENT_DELETE, ATTACHMENT_DOWNLOAD,
    ATTACHMENT_LIST, ATTACHMENT_READ, PARTS_LIST, PART_URLS_ISSUE, PATIENT_ATTACHMENT_LIST,
    UPLOAD_COMPLETE,
};
use domain::paging::Count;
use domain::patients::PatientError;
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, CurrentUser, Writer};
use edge::http::{JsonBody, QueryParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::input::{parse_uuid, Paging};
use shared::storage::{Storage, StorageConfig};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

#[derive(Clone, FromRef)]
pub struct AttachmentsState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    pub storage: Storage,
}

impl AttachmentsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        let auth = AuthContext::verifying(env, "carevault-attachments").await?;
        let sdk_config = shared::aws::sdk_config().await;
        Ok(Self {
            db: auth.pool.clone(),
            auth,
            storage: Storage::new(&sdk_config, storage_config),
        })
    }
}

use multipart::{complete_upload, issue_part_urls, list_upload_parts};

pub fn router(state: AttachmentsState) -> Router {
    let trail = AuditTrail::new(state.db.clone());
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

async fn create_attachment(
    State(state): State<AttachmentsState>,
    _writer: Writer,
    audit: AuditEntry,
    JsonBody(body): JsonBody<AttachmentCreate>,
) -> ApiResult<Json<CreatedAttachment>> {
    Ok(Json(
        attachments::create(&state.db, &state.storage, &audit, &body).await?,
    ))
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
    audit: AuditEntry,
    QueryParams(params): QueryParams<ListParams>,
) -> ApiResult<Json<AttachmentList>> {
    let list = list_filtered(&state, params).await?;
    describe_list(&audit, &list);
    Ok(Json(list))
}

fn describe_list(audit: &AuditEntry, list: &AttachmentList) {
    describe_listed(audit, &list.data);
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
    audit: AuditEntry,
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
    let client = state.db.get().await?;
    let known = domain::patients::exists(&client, patient_id).await?;
    if !known {
        return Err(PatientError::NotFound.into());
    }
    drop(client);
    list(state, Some(patient_id), paging).await
}

/// A page of attachments (of one patient, or all), newest first, with their count.
async fn list(
    state: &AttachmentsState,
    patient_id: Option<Uuid>,
    paging: Paging,
) -> ApiResult<AttachmentList> {
    let (skip, limit) = paging.checked()?;
    let filter = AttachmentFilter {
        patients: patient_id.map(|id| vec![id]),
        ..AttachmentFilter::default()
    };
    let page = attachments::list(
        &state.db,
        &state.storage,
        &filter,
        Window::Offset { skip, limit },
        Count::Exact,
    )
    .await?;
    Ok(AttachmentList {
        data: page.items,
        count: page.total.unwrap_or_default(),
    })
}

/// The attachment, confirmed against the bucket if its upload was still pending.
pub(crate) async fn load(state: &AttachmentsState, raw_id: &str) -> ApiResult<Attachment> {
    let id = parse_uuid("attachment_id", raw_id)?;
    attachments::find(&state.db, &state.storage, id)
        .await?
        .ok_or_else(not_found)
}

async fn read_attachment(
    State(state): State<AttachmentsState>,
    _current: CurrentUser,
    audit: AuditEntry,
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
    audit: AuditEntry,
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
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_uuid("attachment_id", &raw_id)?;
    attachments::delete(&state.db, &state.storage, &audit, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(
        json!({ "message": "Attachment deleted successfully" }),
    ))
}
