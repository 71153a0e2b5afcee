//! A new attachment: the body that asks for one, the upload it gets (one presigned PUT, or a
//! multipart plan), and the row with its audit event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::db::{DbPool, SqlParams};
use shared::domain::{Sha256Digest, WholeNumber};
use shared::storage::StorageError;
use shared::storage::{Storage, StorageConfig, S3_SINGLE_PUT_LIMIT};
use shared::trail::AuditEntry;
use shared::{ApiError, StoreError};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{attachment_rows, object_key, Attachment, PartPlan, ATTACHMENT_COLUMNS};

/// Why an attachment was not created; each interface answers it in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// The patient it would belong to does not exist.
    #[error("no such patient")]
    PatientNotFound,
    /// A rule of the upload settings or of S3 refuses it: which field, why (FastAPI's message)
    /// and FastAPI's error type.
    #[error("{message}")]
    Refused {
        field: AttachmentField,
        message: String,
        kind: &'static str,
    },
    /// The database's or the trail's own failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket's own failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

store_errors!(AttachmentError);

/// The field of a new attachment a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentField {
    MimeType,
    Size,
    Sha256,
    Upload,
}

impl AttachmentField {
    /// Its name in the JSON API's body.
    pub fn name(self) -> &'static str {
        match self {
            Self::MimeType => "mime_type",
            Self::Size => "size",
            Self::Sha256 => "sha256",
            Self::Upload => "upload",
        }
    }
}

fn refused(
    field: AttachmentField,
    message: impl Into<String>,
    kind: &'static str,
) -> AttachmentError {
    AttachmentError::Refused {
        field,
        message: message.into(),
        kind,
    }
}

/// The JSON API's answer (FastAPI's texts and statuses); FHIR locates them at its elements.
impl From<AttachmentError> for ApiError {
    fn from(error: AttachmentError) -> Self {
        match error {
            AttachmentError::PatientNotFound => ApiError::NotFound("Patient not found".into()),
            AttachmentError::Refused {
                field,
                message,
                kind,
            } => ApiError::validation(&["body", field.name()], message, kind),
            AttachmentError::Store(error) => error.into(),
            AttachmentError::Storage(error) => error.into(),
        }
    }
}

/// A file name as a person gave it: 1 to 255 characters, no control characters, no path.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct FileName(String);

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
pub struct MimeType(String);

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
    pub patient_id: Uuid,
    pub file_name: FileName,
    #[serde(default)]
    pub mime_type: Option<MimeType>,
    #[serde(default)]
    pub size: Option<WholeNumber>,
    /// Base64 SHA-256 of the whole file: S3 refuses other bytes (single uploads).
    #[serde(default)]
    pub sha256: Option<Sha256Digest>,
    /// How the bytes go up; by default multipart above the threshold, single below.
    #[serde(default)]
    pub upload: Option<UploadKind>,
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

pub fn headers_json(headers: Vec<(String, String)>) -> serde_json::Map<String, serde_json::Value> {
    headers
        .into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect()
}

impl AttachmentCreate {
    /// The declared size in bytes, which cannot be negative.
    fn size(&self) -> Result<Option<u64>, AttachmentError> {
        self.size
            .map(|WholeNumber(n)| u64::try_from(n))
            .transpose()
            .map_err(|_| {
                refused(
                    AttachmentField::Size,
                    "Input should be greater than or equal to 0",
                    "greater_than_equal",
                )
            })
    }
}

/// Which upload a creation asks for, checked against the settings and S3's limits.
fn choose_upload(
    config: &StorageConfig,
    body: &AttachmentCreate,
) -> Result<Option<PartPlan>, AttachmentError> {
    let size = body.size()?;
    if size.is_some_and(|size| size > config.max_upload_bytes) {
        return Err(refused(
            AttachmentField::Size,
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
        (UploadKind::Single, Some(size)) if size > S3_SINGLE_PUT_LIMIT => Err(refused(
            AttachmentField::Upload,
            format!("A single upload holds at most {S3_SINGLE_PUT_LIMIT} bytes; use multipart"),
            "value_error",
        )),
        (UploadKind::Single, _) => Ok(None),
        (UploadKind::Multipart, None) => Err(refused(
            AttachmentField::Size,
            "Field required for a multipart upload",
            "missing",
        )),
        (UploadKind::Multipart, Some(_)) if body.sha256.is_some() => Err(refused(
            AttachmentField::Sha256,
            "S3 cannot verify a whole-file SHA-256 of a multipart upload; send each part's SHA-256 with its part number instead",
            "value_error",
        )),
        (UploadKind::Multipart, Some(size)) => Ok(Some(PartPlan::for_size(size))),
    }
}

/// Creates an attachment (pending) and what its client needs to send the bytes: the row and
/// its audit event in one statement, the URL signed (or the multipart upload opened) first.
/// (Long because its steps' order is the point: sign or open before the row, abort what the row
/// could not take; the checks are `choose_upload`, the statement `insert_attachment`.)
pub async fn create(
    pool: &DbPool,
    storage: &Storage,
    audit: &AuditEntry,
    body: &AttachmentCreate,
) -> Result<CreatedAttachment, AttachmentError> {
    let id = Uuid::new_v4();
    audit.describe(|event| event.resource(Some(id)).patient(Some(body.patient_id)));
    let config = &storage.config;
    let mime_type = body
        .mime_type
        .as_ref()
        .map(|m| m.0.clone())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    if !config.allowed_mime_types.is_empty() && !config.allowed_mime_types.contains(&mime_type) {
        return Err(refused(
            AttachmentField::MimeType,
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
    audit: &AuditEntry,
    id: Uuid,
    body: &AttachmentCreate,
    mime_type: &str,
    key: &str,
    plan: Option<PartPlan>,
    upload_id: Option<&str>,
) -> Result<tokio_postgres::Row, AttachmentError> {
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
    let created_by = params.push(audit.actor_id(), Type::UUID);
    let logged = audit.logged_cte(&mut params, &attachment_rows("created"));
    let client = pool.get().await?;
    client
        .query_typed_opt(
            &format!(
                "WITH created AS (
                    INSERT INTO attachments (id, patient_id, file_name, mime_type, object_key,
                        declared_size, declared_sha256, upload_id, part_size, part_count,
                        created_by)
                    SELECT {id}, p.id, {file_name}, {mime}, {key}, {declared_size},
                        {declared_sha256}, {upload_id}, {part_size}, {part_count}, {created_by}
                    FROM patients p WHERE p.id = {patient_id}
                    RETURNING {ATTACHMENT_COLUMNS}
                 ), {logged}
                 SELECT * FROM created"
            ),
            &params.typed(),
        )
        .await?
        .ok_or(AttachmentError::PatientNotFound)
}
