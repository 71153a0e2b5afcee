//! What the attachments' upkeep (the attachment-events function: S3 notifications and the
//! scheduled sweep) reads and writes: the attachment an object key belongs to, objects no row
//! points at, objects replaced behind our back, uploads that were never completed, and where
//! the walk of the bucket stopped. The system is the actor of every audit event here.

use std::time::Duration;

use serde_json::json;
use shared::audit::{Attribution, Event, LoggedRows};
use shared::db::{DbPool, SqlParams};
use shared::storage::queue_deletions_cte;
use shared::StoreError;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Attachment, ATTACHMENT_COLUMNS};

/// The attachment whose object is at `key`.
pub async fn find_by_key(pool: &DbPool, key: &str) -> Result<Option<Attachment>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_typed_opt(
            &format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE object_key = $1"),
            &[(&key, Type::TEXT)],
        )
        .await?
        .as_ref()
        .map(Attachment::from_row))
}

/// The patient and attachment ids a key of ours names, as SQL over a column `object_key`;
/// NULL for any other key.
const KEY_ATTACHMENT_ID: &str = "CASE WHEN object_key ~ '^patients/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/attachments/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN split_part(object_key, '/', 4)::uuid END";
const KEY_PATIENT_ID: &str = "CASE WHEN object_key ~ '^patients/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/attachments/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN split_part(object_key, '/', 2)::uuid END";

/// Queues for deletion those of `keys` that no attachment row points at, each with an audit
/// event (the patient is the one the key names), in one statement. Returns the keys queued.
pub async fn queue_orphans(pool: &DbPool, keys: &[String]) -> Result<Vec<String>, StoreError> {
    let mut params = SqlParams::new();
    let keys = params.push(keys.to_vec(), Type::TEXT_ARRAY);
    let logged = shared::audit::logged_cte(
        &Attribution::default(),
        &Event::new("attachment.orphan_object_queued", "attachment"),
        &mut params,
        &LoggedRows {
            source: "queued",
            resource: KEY_ATTACHMENT_ID,
            patient: KEY_PATIENT_ID,
            details: None,
        },
    );
    let queued = queue_deletions_cte(&format!(
        "SELECT k FROM unnest({keys}::text[]) k
         WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.object_key = k)"
    ));
    let rows = pool
        .get()
        .await?
        .query_typed(
            &format!(
                "WITH {queued}, {logged}
                 SELECT object_key FROM queued"
            ),
            &params.typed(),
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The object of an uploaded attachment holds other bytes than were confirmed: flagged on the
/// row, with its audit event, for a person to look at.
pub async fn flag_replaced(
    pool: &DbPool,
    attachment: &Attachment,
    stored_etag: Option<&str>,
) -> Result<(), StoreError> {
    let mut params = SqlParams::new();
    let id = params.push(attachment.id, Type::UUID);
    let logged = shared::audit::logged_cte(
        &Attribution::default(),
        &Event::new("attachment.object_replaced", "attachment").details(json!({
            "recorded_etag": attachment.etag,
            "stored_etag": stored_etag,
        })),
        &mut params,
        &LoggedRows {
            source: "flagged",
            resource: "id",
            patient: "patient_id",
            details: None,
        },
    );
    pool.get()
        .await?
        .query_typed(
            &format!(
                "WITH flagged AS (
                    UPDATE attachments SET content_mismatch = true WHERE id = {id}
                    RETURNING id, patient_id
                 ), {logged}
                 SELECT id FROM flagged"
            ),
            &params.typed(),
        )
        .await?;
    Ok(())
}

/// Up to 500 pending uploads, oldest first, without activity (created, or part URLs issued)
/// for `idle`.
pub async fn stale_uploads(pool: &DbPool, idle: Duration) -> Result<Vec<Attachment>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_typed(
            &format!(
                "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE status = 'pending'
                 AND coalesce(upload_activity_at, created_at) < now() - make_interval(secs => $1::float8)
                 ORDER BY created_at LIMIT 500"
            ),
            &[(&idle.as_secs_f64(), Type::FLOAT8)],
        )
        .await?
        .iter()
        .map(Attachment::from_row)
        .collect())
}

/// Deletes the rows of abandoned uploads among `ids` that are still pending and still idle for
/// `idle` (a client may have come back meanwhile); deleting a pending multipart row queues its
/// abort (a trigger, in this statement). Returns the object keys to delete.
pub async fn remove_abandoned(
    pool: &DbPool,
    ids: &[Uuid],
    idle: Duration,
) -> Result<Vec<String>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_typed(
            "DELETE FROM attachments WHERE id = ANY($1) AND status = 'pending'
             AND coalesce(upload_activity_at, created_at) < now() - make_interval(secs => $2::float8)
             RETURNING object_key",
            &[(&ids, Type::UUID_ARRAY), (&idle.as_secs_f64(), Type::FLOAT8)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The key after which the next walk of the bucket goes on (None: from the start).
pub async fn sweep_position(pool: &DbPool) -> Result<Option<String>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_one("SELECT start_after FROM bucket_sweep WHERE id = 1", &[])
        .await?
        .get(0))
}

/// Where this walk of the bucket stopped.
pub async fn save_sweep_position(pool: &DbPool, position: Option<&str>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE bucket_sweep SET start_after = $1, swept_at = now() WHERE id = 1",
            &[&position],
        )
        .await?;
    Ok(())
}
