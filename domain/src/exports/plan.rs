//! Planning a job: one REPEATABLE READ transaction copies every row the export holds into the
//! job's own tables (one snapshot: the export is the database as of `transaction_time`, whatever
//! is written while it runs, and a retried chunk reads the same rows), numbers them, and splits
//! them into chunks, one SQS message each.

use chrono::{DateTime, Utc};
use shared::db::{DbPool, SqlParams};
use shared::StoreError;
use tokio_postgres::types::Type;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::{load, ExportFile, ExportType, Level};
use crate::attachments::{AttachmentFilter, ATTACHMENT_COLUMNS};
use crate::patients::model::{identifiers_column, PATIENT_COLUMNS};
use crate::patients::search::{Filter, Search};

/// `_typeFilter` as the domain's searches (each a list of filters that all hold); each list's
/// searches are alternatives (OR), an empty list keeps every row. Kept with the job as parsed
/// at kick-off.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanFilters {
    pub patients: Vec<Vec<Filter>>,
    pub documents: Vec<AttachmentFilter>,
}

impl PlanFilters {
    /// How many `_typeFilter`s.
    pub fn len(&self) -> usize {
        self.patients.len() + self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What planning left to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Planned {
    /// The job is gone (cancelled, failed or expired).
    Gone,
    /// These chunks are to be written (all of them, or those not yet written when the job was
    /// planned before: a redelivered message queues them again, harmlessly).
    Chunks(Vec<i32>),
    /// The job cannot be planned (its filters no longer read as filters): it is to fail.
    Refused(&'static str),
}

/// How big a job's pieces are, and how long its statements may run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Rows per chunk (per SQS message).
    pub chunk_rows: i64,
    /// How long a finished job's status and files stay available.
    pub retention: chrono::Duration,
    /// The worker's statements' limit, over its login's (a request's): a plan copies the whole
    /// export in one statement, a chunk streams its rows for as long as S3 takes.
    pub statement_timeout: std::time::Duration,
}

impl Sizes {
    pub(crate) fn statement_timeout_ms(&self) -> u128 {
        self.statement_timeout.as_millis()
    }
}

/// Plans job `id`: see the module. `error_file`: the job's issues, already written.
pub async fn plan(
    pool: &DbPool,
    id: Uuid,
    sizes: Sizes,
    error_file: Option<&ExportFile>,
) -> Result<Planned, StoreError> {
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    // The first statement takes the snapshot; its transaction time is the snapshot's clock, or
    // the start of a write still running then (see carevault_export_horizon). A key-share lock:
    // a cancel (an update of the status) does not wait for the plan; the plan's own update of
    // the row then fails to serialise, and the retry finds the job cancelled.
    let Some(row) = tx
        .query_opt(
            "SELECT status, carevault_export_horizon() FROM bulk_exports WHERE id = $1 \
             FOR KEY SHARE",
            &[&id],
        )
        .await?
    else {
        return Ok(Planned::Gone);
    };
    let (status, transaction_time): (String, DateTime<Utc>) = (row.get(0), row.get(1));
    match status.as_str() {
        "accepted" => {}
        "running" => {
            let pending = tx
                .query(
                    "SELECT chunk FROM bulk_export_chunks WHERE export_id = $1 AND done_at IS NULL \
                     ORDER BY chunk",
                    &[&id],
                )
                .await?;
            return Ok(Planned::Chunks(pending.iter().map(|r| r.get(0)).collect()));
        }
        "completed" => return Ok(Planned::Chunks(Vec::new())),
        _ => return Ok(Planned::Gone),
    }
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        sizes.statement_timeout_ms()
    ))
    .await?;
    let export = load(&*tx, id).await?.expect("locked above");
    let Some(filters) = export.filters.clone() else {
        return Ok(Planned::Refused(
            "the export's _typeFilter no longer reads as filters; start it again",
        ));
    };
    let mut chunks = Vec::new();
    let mut staged = Vec::new();
    for resource_type in &export.types {
        let rows = stage(
            &tx,
            id,
            export.level,
            *resource_type,
            export.since,
            &filters,
        )
        .await?;
        staged.push(serde_json::json!({ "type": resource_type.as_str(), "resources": rows }));
        let mut first = 1;
        while first <= rows {
            let last = (first + sizes.chunk_rows - 1).min(rows);
            chunks.push((*resource_type, first, last));
            first = last + 1;
        }
    }
    for (at, (resource_type, first, last)) in chunks.iter().enumerate() {
        tx.execute(
            "INSERT INTO bulk_export_chunks (export_id, chunk, resource_type, first_seq, last_seq) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&id, &(at as i32), &resource_type.as_str(), first, last],
        )
        .await?;
    }
    if let Some(file) = error_file {
        tx.execute(
            "INSERT INTO bulk_export_files (export_id, object_key, kind, resource_type, resources, bytes) \
             VALUES ($1, $2, 'error', 'OperationOutcome', $3, $4) ON CONFLICT DO NOTHING",
            &[&id, &file.object_key, &file.resources, &file.bytes],
        )
        .await?;
    }
    let total = chunks.len() as i32;
    let completed = total == 0;
    tx.execute(
        "UPDATE bulk_exports SET status = $2, transaction_time = $3, chunks_total = $4, \
             touched_at = now(), \
             finished_at = CASE WHEN $2 = 'completed' THEN now() END, \
             expires_at = CASE WHEN $2 = 'completed' THEN now() + $5 * interval '1 second' END \
         WHERE id = $1",
        &[
            &id,
            &if completed { "completed" } else { "running" },
            &transaction_time,
            &total,
            &(sizes.retention.num_seconds() as f64),
        ],
    )
    .await?;
    super::record(
        &*tx,
        &export,
        super::ACTION_PLANNED,
        serde_json::json!({ "chunks": total, "staged": staged, "transaction_time": transaction_time }),
    )
    .await?;
    if completed {
        super::record(
            &*tx,
            &export,
            super::ACTION_COMPLETED,
            serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Planned::Chunks((0..total).collect()))
}

/// Copies the rows of `resource_type` that the job holds into its table, numbered from 1;
/// returns how many.
async fn stage(
    tx: &tokio_postgres::Transaction<'_>,
    id: Uuid,
    level: Level,
    resource_type: ExportType,
    since: Option<DateTime<Utc>>,
    filters: &PlanFilters,
) -> Result<i64, StoreError> {
    let mut params = SqlParams::new();
    let job = params.push(id, Type::UUID);
    let mut conditions = Vec::new();
    let members = |params: &mut SqlParams, column: &str| {
        level.group().map(|group| {
            format!(
                "{column} IN (SELECT patient_id FROM patient_group_members WHERE group_id = {})",
                params.push(group, Type::UUID)
            )
        })
    };
    let statement = match resource_type {
        ExportType::Patient => {
            conditions.extend(members(&mut params, "p.id"));
            if let Some(since) = since {
                conditions.push(format!(
                    "p.updated_at >= {}",
                    params.push(since, Type::TIMESTAMPTZ)
                ));
            }
            if !filters.patients.is_empty() {
                let any: Vec<String> = filters
                    .patients
                    .iter()
                    .map(|filters| Search::condition(filters, &mut params))
                    .collect();
                conditions.push(format!("({})", any.join(" OR ")));
            }
            format!(
                "INSERT INTO bulk_export_patients (export_id, seq, {PATIENT_COLUMNS}, identifiers) \
                 SELECT {job}, row_number() OVER (), {}, {} FROM patients p WHERE {}",
                qualified("p", PATIENT_COLUMNS),
                identifiers_column("p"),
                all(&conditions)
            )
        }
        ExportType::DocumentReference => {
            conditions.extend(members(&mut params, "a.patient_id"));
            if let Some(since) = since {
                conditions.push(format!(
                    "coalesce(a.uploaded_at, a.created_at) >= {}",
                    params.push(since, Type::TIMESTAMPTZ)
                ));
            }
            if !filters.documents.is_empty() {
                // The filter's SQL is over the bare table: a subquery keeps it so.
                let any: Vec<String> = filters
                    .documents
                    .iter()
                    .map(|f| {
                        format!(
                            "a.id IN (SELECT id FROM attachments WHERE true{})",
                            f.sql(&mut params)
                        )
                    })
                    .collect();
                conditions.push(format!("({})", any.join(" OR ")));
            }
            format!(
                "INSERT INTO bulk_export_documents (export_id, seq, {ATTACHMENT_COLUMNS}) \
                 SELECT {job}, row_number() OVER (), {} FROM attachments a WHERE {}",
                qualified("a", ATTACHMENT_COLUMNS),
                all(&conditions)
            )
        }
        ExportType::AuditEvent => {
            if let Some(since) = since {
                conditions.push(format!(
                    "e.occurred_at >= {}",
                    params.push(since, Type::TIMESTAMPTZ)
                ));
            }
            format!(
                "INSERT INTO bulk_export_audit_events (export_id, seq, id) \
                 SELECT {job}, row_number() OVER (), e.id FROM audit_events e WHERE {}",
                all(&conditions),
            )
        }
    };
    let counted = format!("WITH staged AS ({statement} RETURNING 1) SELECT count(*) FROM staged");
    Ok(tx.query_typed_one(&counted, &params.typed()).await?.get(0))
}

/// `a, b` as `p.a, p.b`.
pub(crate) fn qualified(relation: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{relation}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn all(conditions: &[String]) -> String {
    if conditions.is_empty() {
        "true".into()
    } else {
        conditions.join(" AND ")
    }
}
