//! S3 ObjectCreated notifications mark attachments uploaded, and remove objects no attachment
//! row points at; the scheduled event (EventBridge) retries queued object deletions, clears
//! uploads that were never completed, and walks the bucket for objects without a row, so no
//! patient file stays in the bucket outside every record even when a notification is lost.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::s3::S3Event;
use domain::attachments::{self, upkeep, KEY_PREFIX};
use serde_json::{json, Value};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::secrets::SecretsClient;
use shared::storage::{drain_deletions, drain_queue, Storage, StorageConfig};
use shared::ApiResult;

pub struct EventsState {
    pub pool: DbPool,
    pub storage: Storage,
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
        })
    }
}

/// One invocation: an S3 notification or a scheduled sweep; anything else is refused cleanly.
pub async fn handle(state: &EventsState, event: Value) -> Result<Value, String> {
    if event.get("Records").is_some() {
        let event: S3Event =
            serde_json::from_value(event).map_err(|e| format!("malformed S3 event: {e}"))?;
        return object_events(state, event).await;
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.events") {
        return sweep(state).await.map_err(|e| e.to_string());
    }
    Err("unsupported event: expected an S3 notification or a scheduled event".into())
}

async fn object_events(state: &EventsState, event: S3Event) -> Result<Value, String> {
    let (mut confirmed, mut orphans, mut replaced, mut ignored) = (0, 0, 0, 0);
    for record in event.records {
        let created = record.event_source.as_deref() == Some("aws:s3")
            && record
                .event_name
                .as_deref()
                .is_some_and(|name| name.starts_with("ObjectCreated:"));
        let Some(raw_key) = record.s3.object.key.filter(|_| created) else {
            ignored += 1;
            continue;
        };
        // Keys arrive URL-encoded, with '+' for spaces.
        let key = percent_encoding::percent_decode_str(&raw_key.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        if !key.starts_with(KEY_PREFIX) {
            tracing::warn!("S3 notification for a key outside the attachments prefix; ignored");
            ignored += 1;
            continue;
        }
        // The notification lacks the Content-Type: one HEAD gives what S3 really stored.
        let Some(stored) = state.storage.head(&key).await? else {
            ignored += 1;
            continue;
        };
        let row = upkeep::find_by_key(&state.pool, &key)
            .await
            .map_err(|e| e.to_string())?;
        match row {
            None => {
                let queued = upkeep::queue_orphans(&state.pool, &[key])
                    .await
                    .map_err(|e| e.to_string())?;
                orphans += queued.len();
                drain_deletions(&state.pool, &state.storage, queued).await;
            }
            Some(attachment) if attachment.is_pending() => {
                match attachments::confirm(&state.pool, &state.storage, &attachment, &stored)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(_) => confirmed += 1,
                    None => ignored += 1,
                }
            }
            // Other bytes than were confirmed (upload URLs cannot overwrite; this is someone
            // with direct bucket access, or a restore): flagged for a person to look at.
            Some(attachment) if attachment.etag != stored.etag => {
                tracing::warn!(attachment_id = %attachment.id, "an uploaded attachment's object was replaced");
                upkeep::flag_replaced(&state.pool, &attachment, stored.etag.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                replaced += 1;
            }
            // Already confirmed with these bytes: a redelivered event.
            Some(_) => ignored += 1,
        }
    }
    tracing::info!(
        confirmed,
        orphans,
        replaced,
        ignored,
        "S3 notifications handled"
    );
    Ok(json!({
        "confirmed": confirmed,
        "orphans_queued": orphans,
        "replaced": replaced,
        "ignored": ignored,
    }))
}

/// Pages of the bucket listing one sweep walks (1,000 keys each); the next sweep goes on from
/// where this one stopped, so a bucket of any size is covered within a bounded run time.
const LISTING_PAGES_PER_SWEEP: usize = 20;

async fn sweep(state: &EventsState) -> ApiResult<Value> {
    let (deleted, still_queued) = drain_queue(&state.pool, &state.storage, 1000).await?;
    let removed = remove_abandoned_uploads(state).await?;
    let orphans = remove_orphan_objects(state).await?;
    tracing::info!(deleted, still_queued, removed, orphans, "sweep done");
    Ok(json!({
        "objects_deleted": deleted,
        "objects_still_queued": still_queued,
        "abandoned_uploads_removed": removed,
        "orphan_objects_queued": orphans,
    }))
}

/// Pending uploads without activity for the abandonment window (created, or part URLs issued)
/// whose object never arrived lose their row; an open multipart upload is aborted with it.
async fn remove_abandoned_uploads(state: &EventsState) -> ApiResult<u64> {
    let idle = state.storage.config.abandoned_after;
    let stale = upkeep::stale_uploads(&state.pool, idle).await?;
    // Abandoned: still no object. An S3 error proves nothing, so those rows stay for next time.
    let mut abandoned = Vec::new();
    for attachment in stale {
        match state.storage.head(&attachment.object_key).await {
            Ok(Some(stored)) => {
                attachments::confirm(&state.pool, &state.storage, &attachment, &stored).await?;
            }
            Ok(None) => abandoned.push(attachment.id),
            Err(error) => tracing::warn!(%error, "could not check a stale upload"),
        }
    }
    let removed = upkeep::remove_abandoned(&state.pool, &abandoned, idle).await?;
    let count = removed.len() as u64;
    drain_deletions(&state.pool, &state.storage, removed).await;
    Ok(count)
}

/// Walks the bucket's attachments prefix from where the last sweep stopped and queues (then
/// deletes) every object no row points at and older than an upload URL's lifetime (a younger
/// one may belong to a row still being written).
async fn remove_orphan_objects(state: &EventsState) -> ApiResult<usize> {
    let mut position = upkeep::sweep_position(&state.pool).await?;
    let old_enough = SystemTime::now()
        .checked_sub(state.storage.config.upload_url_ttl + Duration::from_secs(1))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut queued_total = 0;
    for _ in 0..LISTING_PAGES_PER_SWEEP {
        let (objects, more) = match state
            .storage
            .list_page(KEY_PREFIX, position.as_deref())
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "could not list the bucket; the next sweep goes on");
                break;
            }
        };
        let candidates: Vec<String> = objects
            .iter()
            .filter(|o| o.last_modified < old_enough)
            .map(|o| o.key.clone())
            .collect();
        let queued = upkeep::queue_orphans(&state.pool, &candidates).await?;
        queued_total += queued.len();
        drain_deletions(&state.pool, &state.storage, queued).await;
        position = if more {
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        if position.is_none() {
            break;
        }
    }
    upkeep::save_sweep_position(&state.pool, position.as_deref()).await?;
    Ok(queued_total)
}
