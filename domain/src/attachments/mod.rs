//! Attachments as stored and answered, their S3 keys, creation (`create`), upload confirmation
//! and deletion: for the JSON API, FHIR's DocumentReference and the S3 event handler. With
//! `uploads` (a multipart upload's signed parts) and `upkeep` (what the S3 notifications and
//! the scheduled sweep do), this module sends every statement on the attachments tables.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use shared::audit::{Attribution, Event, LoggedRows};
use shared::db::{DbPool, SqlParams};
use shared::storage::{drain_deletions, queue_deletions_cte, Storage, StoredObject};
use shared::trail::{AuditEntry, RouteEvent};
use shared::StoreError;
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

mod create;
mod list;
pub mod upkeep;
pub mod uploads;
pub use create::{
    create, headers_json, AttachmentCreate, AttachmentError, AttachmentField, CreatedAttachment,
    FileName, MimeType, UploadInstructions, UploadKind,
};
pub use list::{list, AttachmentFilter, Window};

const ATTACHMENT: &str = "attachment";
pub const ATTACHMENT_CREATE: RouteEvent = RouteEvent::new("attachment.create", ATTACHMENT);
pub const ATTACHMENT_LIST: RouteEvent = RouteEvent::new("attachment.list", ATTACHMENT);
pub const PATIENT_ATTACHMENT_LIST: RouteEvent =
    RouteEvent::new("attachment.list", ATTACHMENT).patient_from("id");
pub const ATTACHMENT_READ: RouteEvent =
    RouteEvent::new("attachment.read", ATTACHMENT).resource_from("id");
pub const ATTACHMENT_DOWNLOAD: RouteEvent =
    RouteEvent::new("attachment.download", ATTACHMENT).resource_from("id");
pub const ATTACHMENT_DELETE: RouteEvent =
    RouteEvent::new("attachment.delete", ATTACHMENT).resource_from("id");
pub const PART_URLS_ISSUE: RouteEvent =
    RouteEvent::new("attachment.upload_part_urls", ATTACHMENT).resource_from("id");
pub const PARTS_LIST: RouteEvent =
    RouteEvent::new("attachment.upload_parts_list", ATTACHMENT).resource_from("id");
pub const UPLOAD_COMPLETE: RouteEvent =
    RouteEvent::new("attachment.upload_complete", ATTACHMENT).resource_from("id");

/// `{id, patient_id, file_name, mime_type, status, size, etag, checksum_sha256, created_at,
/// uploaded_at}`.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub file_name: String,
    pub mime_type: String,
    pub status: String,
    pub size: Option<i64>,
    pub etag: Option<String>,
    /// Once uploaded, as S3 reports it: base64 SHA-256 of a single upload that declared one,
    /// the composite `<base64>-<parts>` of a multipart upload; null otherwise.
    pub checksum_sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub uploaded_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub object_key: String,
    #[serde(skip)]
    pub declared_size: Option<i64>,
    #[serde(skip)]
    pub declared_sha256: Option<String>,
    /// The open (or completed) S3 multipart upload; None for a single PUT.
    #[serde(skip)]
    pub multipart: Option<MultipartUpload>,
}

/// An attachment's multipart upload: S3's id for it and the server's plan of parts.
#[derive(Debug, Clone, PartialEq)]
pub struct MultipartUpload {
    pub upload_id: String,
    pub plan: PartPlan,
}

/// How a file of `size` bytes is cut into parts: all `part_size` long but the last.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PartPlan {
    pub size: u64,
    pub part_size: u64,
    pub part_count: u32,
}

/// The smallest part the server plans (S3 allows 5 MiB): fewer, larger requests.
pub const MIN_PART_BYTES: u64 = 8 * 1024 * 1024;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;

impl PartPlan {
    /// Parts of at least 8 MiB, in whole MiB, and at most 10,000 of them: a 5 TiB file gets
    /// 525 MiB parts. A file of 0 bytes is one empty part.
    pub fn for_size(size: u64) -> Self {
        const MIB: u64 = 1024 * 1024;
        let part_size = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        let part_size = part_size.max(MIN_PART_BYTES);
        Self {
            size,
            part_size,
            part_count: size.div_ceil(part_size).max(1) as u32,
        }
    }

    /// Whether a part of this number exists in the plan.
    pub fn has_part(&self, part_number: i64) -> bool {
        (1..=self.part_count as i64).contains(&part_number)
    }

    /// The exact length of part `part_number` (1-based).
    pub fn part_len(&self, part_number: u32) -> u64 {
        if part_number < self.part_count {
            self.part_size
        } else {
            self.size - self.part_size * (self.part_count as u64 - 1)
        }
    }
}

pub const PENDING: &str = "pending";
pub const UPLOADED: &str = "uploaded";

/// The columns `Attachment::from_row` reads, in order.
pub const ATTACHMENT_COLUMNS: &str = "id, patient_id, file_name, mime_type, status, size, etag, \
     checksum_sha256, created_at, uploaded_at, object_key, declared_sha256, upload_id, \
     declared_size, part_size";

impl Attachment {
    pub fn from_row(row: &Row) -> Self {
        let upload_id: Option<String> = row.get(12);
        let declared_size: Option<i64> = row.get(13);
        let part_size: Option<i64> = row.get(14);
        let multipart = match (upload_id, declared_size, part_size) {
            (Some(upload_id), Some(size), Some(part_size)) => {
                let (size, part_size) = (size as u64, part_size as u64);
                Some(MultipartUpload {
                    upload_id,
                    plan: PartPlan {
                        size,
                        part_size,
                        part_count: size.div_ceil(part_size).max(1) as u32,
                    },
                })
            }
            _ => None,
        };
        Self {
            id: row.get(0),
            patient_id: row.get(1),
            file_name: row.get(2),
            mime_type: row.get(3),
            status: row.get(4),
            size: row.get(5),
            etag: row.get(6),
            checksum_sha256: row.get(7),
            created_at: row.get(8),
            uploaded_at: row.get(9),
            object_key: row.get(10),
            declared_size,
            declared_sha256: row.get(11),
            multipart,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.status == PENDING
    }
}

/// Every attachment's key starts with this; nothing else is stored under it.
pub const KEY_PREFIX: &str = "patients/";

/// Made by the server from ids only, never from the file name.
pub fn object_key(patient_id: Uuid, attachment_id: Uuid) -> String {
    format!("{KEY_PREFIX}{patient_id}/attachments/{attachment_id}")
}

/// Marks a pending attachment uploaded with what S3 stored, flagging a Content-Type, size or
/// multipart checksum other than declared. A single upload that declared a SHA-256 is
/// confirmed only when S3 stored exactly that checksum: other bytes under its key (written past
/// the upload URL) are queued for deletion and audited, and the attachment stays pending, so its
/// upload URL can write the right bytes. Already uploaded (a redelivered event): changes
/// nothing, returns None.
pub async fn confirm(
    pool: &DbPool,
    storage: &Storage,
    attachment: &Attachment,
    stored: &StoredObject,
) -> Result<Option<Attachment>, StoreError> {
    if attachment.multipart.is_none()
        && attachment
            .declared_sha256
            .as_ref()
            .is_some_and(|declared| stored.checksum_sha256.as_ref() != Some(declared))
    {
        reject_object(pool, storage, attachment, stored).await?;
        return Ok(None);
    }
    let mut params = SqlParams::new();
    let id_p = params.push(attachment.id, Type::UUID);
    let size = params.push(stored.size, Type::INT8);
    let etag = params.push(stored.etag.clone(), Type::TEXT);
    let content_type = params.push(stored.content_type.clone(), Type::TEXT);
    let checksum = params.push(stored.checksum_sha256.clone(), Type::TEXT);
    // The confirmation and its audit event (the system is the actor) are one statement.
    let logged = shared::audit::logged_cte(
        &Attribution::default(),
        &Event::new("attachment.upload_confirmed", "attachment"),
        &mut params,
        &LoggedRows {
            source: "confirmed",
            resource: "confirmed.id",
            patient: "confirmed.patient_id",
            details: Some(
                "jsonb_build_object('size', confirmed.size, 'content_mismatch', confirmed.content_mismatch)",
            ),
        },
    );
    let client = pool.get().await?;
    let row = client
        .query_typed_opt(
            &format!(
                "WITH signed AS (
                    SELECT {COMPOSITE_OF_SIGNED_PARTS} AS composite
                    FROM upload_parts p JOIN attachments a ON a.id = p.attachment_id
                    WHERE a.id = {id_p} AND p.part_number <= a.part_count
                 ), confirmed AS (
                    UPDATE attachments SET
                        status = 'uploaded',
                        size = {size},
                        etag = {etag},
                        stored_content_type = {content_type},
                        checksum_sha256 = CASE WHEN upload_id IS NULL THEN {checksum}
                            ELSE coalesce({checksum}, (SELECT composite FROM signed)) END,
                        content_mismatch = lower(coalesce({content_type}, '')) <> mime_type
                            OR (declared_size IS NOT NULL AND declared_size <> {size})
                            OR (upload_id IS NOT NULL AND {checksum} IS NOT NULL
                                AND {checksum} IS DISTINCT FROM (SELECT composite FROM signed)),
                        uploaded_at = now()
                    WHERE id = {id_p} AND status = 'pending'
                    RETURNING {ATTACHMENT_COLUMNS}, content_mismatch
                 ), {logged}
                 SELECT * FROM confirmed"
            ),
            &params.typed(),
        )
        .await?;
    Ok(row.map(|row| {
        if row.get::<_, bool>("content_mismatch") {
            tracing::warn!(attachment_id = %attachment.id, "uploaded object differs from what was declared");
        }
        Attachment::from_row(&row)
    }))
}

/// S3's composite checksum computed in SQL from the part digests the API signed (rows `p` of
/// upload_parts): SHA-256 of the concatenated digests in part order, base64, `-`, the count.
const COMPOSITE_OF_SIGNED_PARTS: &str = "encode(sha256(string_agg(decode(p.sha256, 'base64'), \
     ''::bytea ORDER BY p.part_number)), 'base64') || '-' || count(*)";

/// Other bytes than the declared SHA-256 under a pending single upload's key: queued for
/// deletion with an audit event (one statement), then deleted.
async fn reject_object(
    pool: &DbPool,
    storage: &Storage,
    attachment: &Attachment,
    stored: &StoredObject,
) -> Result<(), StoreError> {
    tracing::warn!(attachment_id = %attachment.id, "uploaded object's checksum is not the declared one; removed");
    let mut params = SqlParams::new();
    let id = params.push(attachment.id, Type::UUID);
    let logged = shared::audit::logged_cte(
        &Attribution::default(),
        &Event::new("attachment.checksum_mismatch", "attachment").details(serde_json::json!({
            "declared_sha256": attachment.declared_sha256,
            "stored_sha256": stored.checksum_sha256,
        })),
        &mut params,
        &LoggedRows {
            source: "rejected",
            resource: "id",
            patient: "patient_id",
            details: None,
        },
    );
    let queued = queue_deletions_cte("SELECT object_key FROM rejected");
    let keys: Vec<String> = pool
        .get()
        .await?
        .query_typed(
            &format!(
                "WITH rejected AS (
                    SELECT id, patient_id, object_key FROM attachments
                    WHERE id = {id} AND status = 'pending'
                 ), {queued}, {logged}
                 SELECT object_key FROM rejected"
            ),
            &params.typed(),
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    drain_deletions(pool, storage, keys).await;
    Ok(())
}

/// The attachment with this id, its pending upload checked against the bucket; None when
/// there is none.
pub async fn find(
    pool: &DbPool,
    storage: &Storage,
    id: Uuid,
) -> Result<Option<Attachment>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&id]).await? else {
        return Ok(None);
    };
    drop(client);
    let mut found = [Attachment::from_row(&row)];
    refresh_pending(pool, storage, &mut found).await?;
    let [attachment] = found;
    Ok(Some(attachment))
}

/// How many HEAD requests one request keeps in flight when it checks pending uploads: enough
/// to hide S3's latency for a page, few enough that a page of 1,000 pending attachments cannot
/// flood S3 or the function's sockets.
pub const MAX_HEADS_IN_FLIGHT: usize = 8;

/// For attachments still pending (no S3 notification arrived yet, or it was lost): one HEAD
/// each, at most `MAX_HEADS_IN_FLIGHT` at a time, confirming those whose object exists. S3
/// errors leave them pending.
pub async fn refresh_pending(
    pool: &DbPool,
    storage: &Storage,
    attachments: &mut [Attachment],
) -> Result<(), StoreError> {
    use futures_util::StreamExt;
    let pending: Vec<(usize, String)> = attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_pending())
        .map(|(i, a)| (i, a.object_key.clone()))
        .collect();
    let checks: Vec<(usize, Result<Option<StoredObject>, String>)> =
        futures_util::stream::iter(pending)
            .map(|(i, key)| async move { (i, storage.head(&key).await) })
            .buffer_unordered(MAX_HEADS_IN_FLIGHT)
            .collect()
            .await;
    for (i, outcome) in checks {
        match outcome {
            Ok(Some(stored)) => {
                if let Some(confirmed) = confirm(pool, storage, &attachments[i], &stored).await? {
                    attachments[i] = confirmed;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, attachment_id = %attachments[i].id, "could not check a pending upload")
            }
        }
    }
    Ok(())
}

/// Characters RFC 5987 allows unescaped in `filename*` (attr-char); everything else is %XX.
const NOT_ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266):
/// the fallback holds only printable ASCII other than quote, backslash, `%` and `;`, so no file
/// name can break out of the header or inject a parameter.
pub fn content_disposition(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | '%' | ';') => c,
            _ => '_',
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(file_name, NOT_ATTR_CHAR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The changed rows of a statement whose CTE `source` returns attachments.
pub fn attachment_rows(source: &str) -> LoggedRows<'_> {
    LoggedRows {
        source,
        resource: "id",
        patient: "patient_id",
        details: None,
    }
}

/// Which attachments (and so which patients' files) a list showed; the FHIR search's too.
pub fn describe_listed(audit: &AuditEntry, listed: &[Attachment]) {
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

/// Deletes a patient's attachments inside the patient's deletion `transaction`, their files
/// queued for deletion in it (the caller drains the queue once it commits); the keys queued.
pub async fn delete_of_patient(
    transaction: &tokio_postgres::Transaction<'_>,
    patient_id: Uuid,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let queued = queue_deletions_cte("SELECT object_key FROM attachments WHERE patient_id = $1");
    let keys = transaction
        .query(
            &format!("WITH {queued} SELECT object_key FROM queued"),
            &[&patient_id],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    transaction
        .execute(
            "DELETE FROM attachments WHERE patient_id = $1",
            &[&patient_id],
        )
        .await?;
    Ok(keys)
}

/// Deletes an attachment and its file (a pending multipart upload aborted); None when there
/// is no such attachment.
pub async fn delete(
    pool: &DbPool,
    storage: &Storage,
    audit: &AuditEntry,
    id: Uuid,
) -> Result<Option<()>, StoreError> {
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
    let queued = queue_deletions_cte("SELECT object_key FROM gone");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_escapes_everything_dangerous() {
        assert_eq!(
            content_disposition("scan.png"),
            "attachment; filename=\"scan.png\"; filename*=UTF-8''scan.png"
        );
        assert_eq!(
            content_disposition("a\"b;c\r\nd é 🙂.pdf"),
            "attachment; filename=\"a_b_c__d _ _.pdf\"; filename*=UTF-8''a%22b%3Bc%0D%0Ad%20%C3%A9%20%F0%9F%99%82.pdf"
        );
    }
}
