//! Writing a chunk: its rows as the job copied them (in their numbered order), and the record
//! of its files, made once in the transaction that marks it done.

use chrono::Duration;
use futures_util::TryStreamExt;
use shared::db::DbPool;
use shared::StoreError;
use uuid::Uuid;

use super::{load, Export, ExportFile, ExportType, Status};
use crate::attachments::{Attachment, ATTACHMENT_COLUMNS};
use crate::audit_events::AuditEventOut;
use crate::patients::model::{Patient, PATIENT_COLUMNS};

/// One chunk to write.
#[derive(Debug, Clone)]
pub struct ChunkWork {
    pub export: Export,
    pub chunk: i32,
    pub resource_type: ExportType,
    pub first_seq: i64,
    pub last_seq: i64,
}

impl ChunkWork {
    /// How many rows the chunk holds: its numbers are consecutive.
    pub fn rows(&self) -> i64 {
        self.last_seq - self.first_seq + 1
    }
}

/// The chunk, when its job is running and it is not written yet.
pub async fn work(
    pool: &DbPool,
    export_id: Uuid,
    chunk: i32,
) -> Result<Option<ChunkWork>, StoreError> {
    let client = pool.get().await?;
    let Some(export) = load(&**client, export_id).await? else {
        return Ok(None);
    };
    if export.status != Status::Running {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT resource_type, first_seq, last_seq FROM bulk_export_chunks \
             WHERE export_id = $1 AND chunk = $2 AND done_at IS NULL",
            &[&export_id, &chunk],
        )
        .await?;
    Ok(row.and_then(|row| {
        Some(ChunkWork {
            resource_type: ExportType::parse(row.get(0))?,
            first_seq: row.get(1),
            last_seq: row.get(2),
            export,
            chunk,
        })
    }))
}

/// One exported row, as the domain reads it.
pub enum Record {
    Patient(Patient),
    Document(Attachment),
    AuditEvent(AuditEventOut),
}

/// The chunk's rows, in order, streamed (the memory held is a row's, whatever the chunk's
/// size), under the worker's statement limit (`sizes`): the statement runs as long as the rows
/// take to reach S3.
pub async fn records(
    client: &tokio_postgres::Client,
    work: &ChunkWork,
    sizes: &super::plan::Sizes,
) -> Result<impl futures_util::Stream<Item = Result<Record, StoreError>>, StoreError> {
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            sizes.statement_timeout_ms()
        ))
        .await?;
    let sql = match work.resource_type {
        ExportType::Patient => format!(
            "SELECT {PATIENT_COLUMNS}, identifiers FROM bulk_export_patients \
             WHERE export_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
        ),
        ExportType::DocumentReference => format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM bulk_export_documents \
             WHERE export_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
        ),
        // The trail's events themselves, by the ids the plan kept (the trail is append-only).
        ExportType::AuditEvent => format!(
            "SELECT {} FROM bulk_export_audit_events s JOIN audit_events e ON e.id = s.id \
             WHERE s.export_id = $1 AND s.seq BETWEEN $2 AND $3 ORDER BY s.seq",
            super::plan::qualified("e", crate::audit_events::COLUMNS)
        ),
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&work.export.id, &work.first_seq, &work.last_seq];
    let resource_type = work.resource_type;
    let rows = client.query_raw(&sql, params).await?;
    Ok(rows
        .map_ok(move |row| match resource_type {
            ExportType::Patient => Record::Patient(Patient::from_row(&row)),
            ExportType::DocumentReference => Record::Document(Attachment::from_row(&row)),
            ExportType::AuditEvent => Record::AuditEvent(AuditEventOut::from_row(&row)),
        })
        .map_err(StoreError::from))
}

/// What recording a chunk's files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; `completed`: it was the job's last chunk.
    Recorded { completed: bool },
    /// Another delivery of the same message recorded it first (its files have the same keys
    /// and the same bytes).
    AlreadyDone,
    /// The job is gone (cancelled or expired): the caller deletes what it wrote.
    Gone,
}

/// Marks the chunk written with `files`, drops its copied rows, and completes the job with its
/// last chunk; all in one transaction, with their audit events. The job row is held with a
/// key-share lock, so the chunks of a job finish side by side (their count's update orders
/// them) and a cancel does not wait.
pub async fn finish(
    pool: &DbPool,
    work: &ChunkWork,
    files: &[ExportFile],
    retention: Duration,
) -> Result<Finished, StoreError> {
    let id = work.export.id;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(job) = tx
        .query_opt(
            "SELECT status FROM bulk_exports WHERE id = $1 FOR KEY SHARE",
            &[&id],
        )
        .await?
    else {
        return Ok(Finished::Gone);
    };
    match job.get::<_, &str>(0) {
        "running" => {}
        // A delivery after the last chunk: its files are the recorded ones.
        "completed" => return Ok(Finished::AlreadyDone),
        // Cancelled or failed: nothing of it stays.
        _ => return Ok(Finished::Gone),
    }
    let marked = tx
        .execute(
            "UPDATE bulk_export_chunks SET done_at = now() \
             WHERE export_id = $1 AND chunk = $2 AND done_at IS NULL",
            &[&id, &work.chunk],
        )
        .await?;
    if marked == 0 {
        return Ok(Finished::AlreadyDone);
    }
    for file in files {
        tx.execute(
            "INSERT INTO bulk_export_files \
                 (export_id, object_key, kind, resource_type, chunk, resources, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &file.object_key,
                &file.kind,
                &file.resource_type,
                &work.chunk,
                &file.resources,
                &file.bytes,
            ],
        )
        .await?;
        super::record(
            &*tx,
            &work.export,
            super::ACTION_FILE_WRITTEN,
            serde_json::json!({
                "type": file.resource_type,
                "object_key": file.object_key,
                "resources": file.resources,
                "bytes": file.bytes,
            }),
        )
        .await?;
    }
    let table = match work.resource_type {
        ExportType::Patient => "bulk_export_patients",
        ExportType::DocumentReference => "bulk_export_documents",
        ExportType::AuditEvent => "bulk_export_audit_events",
    };
    tx.execute(
        &format!("DELETE FROM {table} WHERE export_id = $1 AND seq BETWEEN $2 AND $3"),
        &[&id, &work.first_seq, &work.last_seq],
    )
    .await?;
    // Cancelled meanwhile: the update finds no running job, and nothing of this is kept.
    let Some(row) = tx
        .query_opt(
            "UPDATE bulk_exports SET chunks_done = chunks_done + 1, touched_at = now() \
             WHERE id = $1 AND status = 'running' RETURNING chunks_done = chunks_total",
            &[&id],
        )
        .await?
    else {
        return Ok(Finished::Gone);
    };
    let completed: bool = row.get(0);
    if completed {
        tx.execute(
            "UPDATE bulk_exports SET status = 'completed', finished_at = now(), \
                 expires_at = now() + $2 * interval '1 second' \
             WHERE id = $1",
            &[&id, &(retention.num_seconds() as f64)],
        )
        .await?;
        super::record(
            &*tx,
            &work.export,
            super::ACTION_COMPLETED,
            serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Finished::Recorded { completed })
}

/// Marks a job that cannot complete failed, and drops what it copied and planned; the job when
/// it was accepted or running (None when it is gone or already finished).
pub async fn fail(
    pool: &DbPool,
    id: Uuid,
    error: &str,
    retention: Duration,
) -> Result<Option<Export>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let failed = tx
        .execute(
            "UPDATE bulk_exports SET status = 'failed', error = $2, finished_at = now(), \
                 expires_at = now() + $3 * interval '1 second' \
             WHERE id = $1 AND status IN ('accepted', 'running')",
            &[&id, &error, &(retention.num_seconds() as f64)],
        )
        .await?;
    if failed == 0 {
        return Ok(None);
    }
    for table in [
        "bulk_export_patients",
        "bulk_export_documents",
        "bulk_export_audit_events",
        "bulk_export_chunks",
        "bulk_export_files",
    ] {
        tx.execute(&format!("DELETE FROM {table} WHERE export_id = $1"), &[&id])
            .await?;
    }
    let export = load(&*tx, id).await?;
    if let Some(export) = &export {
        super::record(
            &*tx,
            export,
            super::ACTION_FAILED,
            serde_json::json!({ "reason": error }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(export)
}
