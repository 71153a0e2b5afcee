//! Attachments as stored and answered, their S3 keys, and upload confirmation: shared by the
//! attachments API (which checks pending uploads on read) and the S3 event handler.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::db::DbPool;
use crate::error::ApiResult;
use crate::storage::{Storage, StoredObject};

/// `{id, patient_id, file_name, mime_type, status, size, etag, created_at, uploaded_at}`.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub file_name: String,
    pub mime_type: String,
    pub status: String,
    pub size: Option<i64>,
    pub etag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub uploaded_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub object_key: String,
}

pub const PENDING: &str = "pending";
pub const UPLOADED: &str = "uploaded";

/// The columns `Attachment::from_row` reads, in order.
pub const ATTACHMENT_COLUMNS: &str =
    "id, patient_id, file_name, mime_type, status, size, etag, created_at, uploaded_at, object_key";

impl Attachment {
    pub fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            patient_id: row.get(1),
            file_name: row.get(2),
            mime_type: row.get(3),
            status: row.get(4),
            size: row.get(5),
            etag: row.get(6),
            created_at: row.get(7),
            uploaded_at: row.get(8),
            object_key: row.get(9),
        }
    }

    pub fn is_pending(&self) -> bool {
        self.status == PENDING
    }
}

/// Made by the server from ids only, never from the file name.
pub fn object_key(patient_id: Uuid, attachment_id: Uuid) -> String {
    format!("patients/{patient_id}/attachments/{attachment_id}")
}

/// The attachment id in a key of ours; None for any other key.
pub fn attachment_id_of(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix("patients/")?;
    let (patient, rest) = rest.split_once('/')?;
    let attachment = rest.strip_prefix("attachments/")?;
    Uuid::parse_str(patient).ok()?;
    Uuid::parse_str(attachment).ok()
}

/// Marks a pending attachment uploaded with what S3 stored, flagging a Content-Type or size
/// other than declared. Already uploaded (a redelivered event): changes nothing, returns None.
pub async fn confirm(
    pool: &DbPool,
    id: Uuid,
    stored: &StoredObject,
) -> ApiResult<Option<Attachment>> {
    let client = pool.get().await?;
    // The confirmation and its audit event (the system is the actor) are one statement.
    let row = client
        .query_opt(
            &format!(
                "WITH confirmed AS (
                    UPDATE attachments SET
                        status = 'uploaded',
                        size = $2,
                        etag = $3,
                        stored_content_type = $4,
                        content_mismatch = lower(coalesce($4, '')) <> mime_type
                            OR (declared_size IS NOT NULL AND declared_size <> $2),
                        uploaded_at = now()
                    WHERE id = $1 AND status = 'pending'
                    RETURNING {ATTACHMENT_COLUMNS}, content_mismatch
                 ), logged AS (
                    INSERT INTO audit_events (id, action, outcome, resource_type, resource_id, patient_id, details)
                    SELECT gen_random_uuid(), 'attachment.upload_confirmed', 'success', 'attachment', id, patient_id,
                           jsonb_build_object('size', size, 'content_mismatch', content_mismatch)
                    FROM confirmed
                 )
                 SELECT * FROM confirmed"
            ),
            &[&id, &stored.size, &stored.etag, &stored.content_type],
        )
        .await?;
    Ok(row.map(|row| {
        if row.get::<_, bool>(10) {
            tracing::warn!(attachment_id = %id, "uploaded object differs from what was declared");
        }
        Attachment::from_row(&row)
    }))
}

/// For attachments still pending (no S3 notification arrived yet, or it was lost): one HEAD
/// each, concurrently, confirming those whose object exists. S3 errors leave them pending.
pub async fn refresh_pending(
    pool: &DbPool,
    storage: &Storage,
    attachments: &mut [Attachment],
) -> ApiResult<()> {
    let checks = attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_pending())
        .map(|(i, a)| async move { (i, storage.head(&a.object_key).await) });
    for (i, outcome) in futures_util::future::join_all(checks).await {
        match outcome {
            Ok(Some(stored)) => {
                if let Some(confirmed) = confirm(pool, attachments[i].id, &stored).await? {
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

    #[test]
    fn keys_round_trip() {
        let (p, a) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(attachment_id_of(&object_key(p, a)), Some(a));
        for other in [
            "",
            "patients/x/attachments/y",
            "other/key",
            &format!("patients/{p}/files/{a}"),
        ] {
            assert_eq!(attachment_id_of(other), None, "{other}");
        }
    }
}
