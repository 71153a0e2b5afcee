//! Attachments as stored and answered, their S3 keys, and upload confirmation: shared by the
//! attachments API (which checks pending uploads on read) and the S3 event handler.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use tokio_postgres::types::Type;

use crate::audit::{Attribution, Event, LoggedRows};
use crate::db::{DbPool, SqlParams};
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

/// Every attachment's key starts with this; nothing else is stored under it.
pub const KEY_PREFIX: &str = "patients/";

/// Made by the server from ids only, never from the file name.
pub fn object_key(patient_id: Uuid, attachment_id: Uuid) -> String {
    format!("{KEY_PREFIX}{patient_id}/attachments/{attachment_id}")
}

/// Marks a pending attachment uploaded with what S3 stored, flagging a Content-Type or size
/// other than declared. Already uploaded (a redelivered event): changes nothing, returns None.
pub async fn confirm(
    pool: &DbPool,
    id: Uuid,
    stored: &StoredObject,
) -> ApiResult<Option<Attachment>> {
    let mut params = SqlParams::new();
    let id_p = params.push(id, Type::UUID);
    let size = params.push(stored.size, Type::INT8);
    let etag = params.push(stored.etag.clone(), Type::TEXT);
    let content_type = params.push(stored.content_type.clone(), Type::TEXT);
    // The confirmation and its audit event (the system is the actor) are one statement.
    let logged = crate::audit::logged_cte(
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
                "WITH confirmed AS (
                    UPDATE attachments SET
                        status = 'uploaded',
                        size = {size},
                        etag = {etag},
                        stored_content_type = {content_type},
                        content_mismatch = lower(coalesce({content_type}, '')) <> mime_type
                            OR (declared_size IS NOT NULL AND declared_size <> {size}),
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
        if row.get::<_, bool>(10) {
            tracing::warn!(attachment_id = %id, "uploaded object differs from what was declared");
        }
        Attachment::from_row(&row)
    }))
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
) -> ApiResult<()> {
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
}
