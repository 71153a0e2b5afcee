//! S3 ObjectCreated notifications mark attachments uploaded; the scheduled event (EventBridge)
//! retries queued object deletions and clears uploads that were never completed.

use serde::Deserialize;
use serde_json::{json, Value};
use shared::attachments::{self, attachment_id_of};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::secrets::SecretsClient;
use shared::storage::{drain_deletions, Storage, StorageConfig};

pub struct EventsState {
    pub pool: DbPool,
    pub storage: Storage,
    /// A pending upload older than this with no object is abandoned: its row is removed.
    pub abandoned_after_hours: i64,
}

impl EventsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        Ok(Self {
            pool: shared::db::pool_from_env(
                env,
                &SecretsClient::from_env(env),
                "carevault-attachment-events",
            )
            .await?,
            storage: Storage::new(&shared::aws::sdk_config().await, storage_config),
            abandoned_after_hours: env.number_in("ABANDONED_UPLOAD_HOURS", 24, 2..=24 * 30)?,
        })
    }
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventSource", default)]
    event_source: String,
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
}

/// One invocation: an S3 notification or a scheduled sweep; anything else is refused cleanly.
pub async fn handle(state: &EventsState, event: Value) -> Result<Value, String> {
    if event.get("Records").is_some() {
        let event: S3Event =
            serde_json::from_value(event).map_err(|e| format!("malformed S3 event: {e}"))?;
        return confirm_uploads(state, event).await;
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.events") {
        return sweep(state).await;
    }
    Err("unsupported event: expected an S3 notification or a scheduled event".into())
}

async fn confirm_uploads(state: &EventsState, event: S3Event) -> Result<Value, String> {
    let (mut confirmed, mut ignored) = (0, 0);
    for record in event.records {
        if record.event_source != "aws:s3" || !record.event_name.starts_with("ObjectCreated:") {
            ignored += 1;
            continue;
        }
        // Keys arrive URL-encoded, with '+' for spaces.
        let key = percent_encoding::percent_decode_str(&record.s3.object.key.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let Some(id) = attachment_id_of(&key) else {
            tracing::warn!("S3 notification for a key that is not an attachment; ignored");
            ignored += 1;
            continue;
        };
        // The notification lacks the Content-Type: one HEAD gives what S3 really stored.
        match state.storage.head(&key).await? {
            Some(stored) => {
                let outcome = attachments::confirm(&state.pool, id, &stored)
                    .await
                    .map_err(|e| e.to_string())?;
                if outcome.is_some() {
                    confirmed += 1;
                } else {
                    // Unknown attachment, or already confirmed (a redelivered event).
                    ignored += 1;
                }
            }
            None => ignored += 1,
        }
    }
    tracing::info!(confirmed, ignored, "S3 notifications handled");
    Ok(json!({ "confirmed": confirmed, "ignored": ignored }))
}

async fn sweep(state: &EventsState) -> Result<Value, String> {
    let (deleted, still_queued) = drain_deletions(&state.pool, &state.storage, None, 1000)
        .await
        .map_err(|e| e.to_string())?;
    let client = state.pool.get().await.map_err(|e| e.to_string())?;
    let stale = client
        .query(
            &format!(
                "SELECT {} FROM attachments WHERE status = 'pending'
                 AND created_at < now() - make_interval(hours => $1::int) ORDER BY created_at LIMIT 500",
                attachments::ATTACHMENT_COLUMNS
            ),
            &[&(state.abandoned_after_hours as i32)],
        )
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    // Abandoned: still no object. An S3 error proves nothing, so those rows stay for next time.
    let mut abandoned = Vec::new();
    for attachment in stale.iter().map(attachments::Attachment::from_row) {
        match state.storage.head(&attachment.object_key).await {
            Ok(Some(stored)) => {
                attachments::confirm(&state.pool, attachment.id, &stored)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(None) => abandoned.push(attachment.id),
            Err(error) => tracing::warn!(%error, "could not check a stale upload"),
        }
    }
    let client = state.pool.get().await.map_err(|e| e.to_string())?;
    let removed = client
        .execute(
            "DELETE FROM attachments WHERE id = ANY($1) AND status = 'pending'",
            &[&abandoned],
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(deleted, still_queued, removed, "sweep done");
    Ok(
        json!({ "objects_deleted": deleted, "objects_still_queued": still_queued, "abandoned_uploads_removed": removed }),
    )
}
