//! FHIR Bulk Data export jobs (Flat FHIR v2): what an export asks for, who owns it, its state,
//! and its files. The request path starts, reads and cancels a job; the worker (an SQS-driven
//! Lambda) plans it (`plan`: one snapshot of every row it exports, split into chunks) and writes
//! each chunk (`chunks`).

pub mod chunks;
pub mod plan;

pub use plan::PlanFilters;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::db::DbPool;
use shared::trail::RouteEvent;
use shared::StoreError;
use uuid::Uuid;

const EXPORT: &str = "bulk_export";

pub const EXPORT_KICK_OFF: RouteEvent = RouteEvent::new("bulk_export.kick_off", EXPORT);
pub const EXPORT_STATUS: RouteEvent =
    RouteEvent::new("bulk_export.status", EXPORT).resource_from("id");
pub const EXPORT_CANCEL: RouteEvent =
    RouteEvent::new("bulk_export.cancel", EXPORT).resource_from("id");

/// The worker's audit actions (the request path's are the route events above).
pub const ACTION_PLANNED: &str = "bulk_export.planned";
pub const ACTION_FILE_WRITTEN: &str = "bulk_export.file_written";
pub const ACTION_COMPLETED: &str = "bulk_export.completed";
pub const ACTION_FAILED: &str = "bulk_export.failed";
pub const RESOURCE: &str = EXPORT;

/// Where every export's files live in the bucket (its own lifecycle rule expires them).
pub const KEY_PREFIX: &str = "exports/";

/// The prefix of one job's files.
pub fn job_prefix(id: Uuid) -> String {
    format!("{KEY_PREFIX}{id}/")
}

/// The resource types an export can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExportType {
    Patient,
    DocumentReference,
    AuditEvent,
}

impl ExportType {
    pub const ALL: [Self; 3] = [Self::Patient, Self::DocumentReference, Self::AuditEvent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "Patient",
            Self::DocumentReference => "DocumentReference",
            Self::AuditEvent => "AuditEvent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The types an export at `level` may hold: the patient compartment, and at system level the
    /// audit trail too.
    pub fn at(level: Level) -> &'static [Self] {
        match level {
            Level::System => &Self::ALL,
            Level::Patient | Level::Group(_) => &[Self::Patient, Self::DocumentReference],
        }
    }
}

/// Which records: every one (system), every patient's compartment, or one group's members'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
    Group(Uuid),
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Patient => "patient",
            Self::Group(_) => "group",
        }
    }

    fn group(self) -> Option<Uuid> {
        match self {
            Self::Group(id) => Some(id),
            _ => None,
        }
    }
}

/// Who started a job, and so alone may read or cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A SMART backend client.
    Client(Uuid),
    /// A superuser's session.
    User(Uuid),
}

impl Owner {
    fn as_text(self) -> String {
        match self {
            Self::Client(id) => format!("client:{id}"),
            Self::User(id) => format!("user:{id}"),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "client" => Some(Self::Client(id)),
            "user" => Some(Self::User(id)),
            _ => None,
        }
    }
}

/// A kick-off, checked by the interface.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub owner: Owner,
    pub level: Level,
    pub types: Vec<ExportType>,
    pub since: Option<DateTime<Utc>>,
    /// `_typeFilter`, parsed by the interface.
    pub filters: PlanFilters,
    /// The kick-off URL, repeated in the manifest.
    pub request: String,
    /// The FHIR base the kick-off was sent to.
    pub fhir_base: String,
    /// OperationOutcome issues for the error file (what `handling=lenient` skipped).
    pub issues: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Running,
    Completed,
    Failed,
    /// Cancelled by its owner: gone for them, removed by the worker.
    Cancelled,
}

impl Status {
    fn parse(text: &str) -> Self {
        match text {
            "accepted" => Self::Accepted,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// A job accepted or running without progress for this long has failed, whatever became of its
/// messages (dead-lettered after a crash on every delivery): longer than every delivery of a
/// step can take (5 deliveries, each at most the worker's 15 minutes plus the visibility
/// timeout's 16). `COLUMNS` says the same.
const STALLED_AFTER: &str = "160 minutes";

/// Why a stalled job failed, as its status says.
const STALLED: &str = "the export made no progress for too long; start it again";

#[derive(Debug, Clone)]
pub struct Export {
    pub id: Uuid,
    pub owner: Owner,
    pub level: Level,
    pub types: Vec<ExportType>,
    pub since: Option<DateTime<Utc>>,
    /// None when what the kick-off stored no longer reads as filters (a deploy changed them
    /// since): the job fails rather than export more than was asked.
    pub filters: Option<PlanFilters>,
    pub request: String,
    pub fhir_base: String,
    pub status: Status,
    pub issues: Vec<Value>,
    pub transaction_time: Option<DateTime<Utc>>,
    pub chunks_total: Option<i32>,
    pub chunks_done: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, owner, level, group_id, types, since, type_filters, request, status, \
     issues, transaction_time, chunks_total, chunks_done, error, created_at, expires_at, \
     fhir_base, touched_at < now() - interval '160 minutes' AS stalled";

impl Export {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        let level = match row.get::<_, &str>(2) {
            "group" => Level::Group(row.get(3)),
            "patient" => Level::Patient,
            _ => Level::System,
        };
        let types: Vec<String> = row.get(4);
        Self {
            id: row.get(0),
            owner: Owner::parse(row.get(1)).expect("owners are written by Owner::as_text"),
            level,
            types: types.iter().filter_map(|t| ExportType::parse(t)).collect(),
            since: row.get(5),
            filters: serde_json::from_value(row.get(6)).ok(),
            request: row.get(7),
            status: match Status::parse(row.get(8)) {
                Status::Accepted | Status::Running if row.get::<_, bool>(17) => Status::Failed,
                status => status,
            },
            issues: serde_json::from_value(row.get(9)).unwrap_or_default(),
            transaction_time: row.get(10),
            chunks_total: row.get(11),
            chunks_done: row.get(12),
            error: if row.get::<_, bool>(17) && row.get::<_, Option<String>>(13).is_none() {
                Some(STALLED.to_owned())
            } else {
                row.get(13)
            },
            created_at: row.get(14),
            expires_at: row.get(15),
            fhir_base: row.get(16),
        }
    }

    /// How far the job is, for `X-Progress`.
    pub fn progress(&self) -> String {
        match (self.status, self.chunks_total) {
            (Status::Accepted, _) => "planning".into(),
            (_, Some(total)) if total > 0 => format!(
                "{}% ({} of {total} chunks written)",
                self.chunks_done * 100 / total,
                self.chunks_done
            ),
            _ => "writing".into(),
        }
    }
}

/// A file of a job's manifest.
#[derive(Debug, Clone)]
pub struct ExportFile {
    pub object_key: String,
    /// `output` or `error`.
    pub kind: String,
    pub resource_type: String,
    pub resources: i64,
    pub bytes: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The owner has a job accepted or running already.
    #[error("an export by this client is already in progress")]
    InProgress,
    #[error("no such group")]
    UnknownGroup,
    #[error(transparent)]
    Store(#[from] StoreError),
}

store_errors!(ExportError);

/// Records a job, accepted; the caller queues its planning. Finished jobs past their expiry go
/// first (their files expire by the bucket's lifecycle rule; cancelled ones are the worker's),
/// and the owner's stalled job is failed, so it blocks no new one.
pub async fn start(pool: &DbPool, request: &ExportRequest) -> Result<Export, ExportError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM bulk_exports WHERE expires_at < now() AND status IN ('completed', 'failed')",
            &[],
        )
        .await?;
    client
        .execute(
            &format!(
                "UPDATE bulk_exports SET status = 'failed', error = $2, finished_at = now(), \
                     expires_at = now() + interval '1 day' \
                 WHERE owner = $1 AND status IN ('accepted', 'running') \
                   AND touched_at < now() - interval '{STALLED_AFTER}'"
            ),
            &[&request.owner.as_text(), &STALLED],
        )
        .await?;
    if let Level::Group(group) = request.level {
        if client
            .query_opt("SELECT 1 FROM patient_groups WHERE id = $1", &[&group])
            .await?
            .is_none()
        {
            return Err(ExportError::UnknownGroup);
        }
    }
    let types: Vec<&str> = request.types.iter().map(|t| t.as_str()).collect();
    let inserted = client
        .query_one(
            &format!(
                "INSERT INTO bulk_exports (id, owner, level, group_id, types, since, type_filters, \
                     request, status, issues, fhir_base) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'accepted', $9, $10) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &request.owner.as_text(),
                &request.level.as_str(),
                &request.level.group(),
                &types,
                &request.since,
                &serde_json::to_value(&request.filters).expect("filters serialise"),
                &request.request,
                &Value::Array(request.issues.clone()),
                &request.fhir_base,
            ],
        )
        .await;
    match inserted {
        Ok(row) => Ok(Export::from_row(&row)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(ExportError::InProgress)
        }
        Err(e) => Err(e.into()),
    }
}

/// The job and its files, when `owner` started it and it has not expired.
pub async fn find(
    pool: &DbPool,
    id: Uuid,
    owner: Owner,
) -> Result<Option<(Export, Vec<ExportFile>)>, StoreError> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM bulk_exports WHERE id = $1 AND owner = $2 \
                 AND status <> 'cancelled' AND (expires_at IS NULL OR expires_at > now())"
            ),
            &[&id, &owner.as_text()],
        )
        .await?
    else {
        return Ok(None);
    };
    let export = Export::from_row(&row);
    let files = if export.status == Status::Completed {
        client
            .query(
                "SELECT object_key, kind, resource_type, resources, bytes FROM bulk_export_files \
                 WHERE export_id = $1 ORDER BY kind DESC, resource_type, chunk, object_key",
                &[&id],
            )
            .await?
            .iter()
            .map(|row| ExportFile {
                object_key: row.get(0),
                kind: row.get(1),
                resource_type: row.get(2),
                resources: row.get(3),
                bytes: row.get(4),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Some((export, files)))
}

/// The job by id, whoever owns it (the worker's read).
pub async fn load(
    client: &impl tokio_postgres::GenericClient,
    id: Uuid,
) -> Result<Option<Export>, StoreError> {
    Ok(client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM bulk_exports WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(Export::from_row))
}

/// Cancels `owner`'s job: from now on it is gone for them, a step of it finds it cancelled and
/// stops, and the worker removes it (`remove`) with the rows copied for it; the caller deletes
/// its files and queues the removal. One short statement, whatever the job holds, never
/// waiting on a plan in progress (which holds the row's key-share lock only). Whether there was
/// such a job.
pub async fn cancel(pool: &DbPool, id: Uuid, owner: Owner) -> Result<bool, StoreError> {
    Ok(pool
        .get()
        .await?
        .execute(
            "UPDATE bulk_exports SET status = 'cancelled', finished_at = now(), expires_at = now() \
             WHERE id = $1 AND owner = $2 AND status <> 'cancelled' \
               AND (expires_at IS NULL OR expires_at > now())",
            &[&id, &owner.as_text()],
        )
        .await?
        == 1)
}

/// Withdraws a job just accepted whose planning could not be queued: it never was.
pub async fn withdraw(pool: &DbPool, id: Uuid) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM bulk_exports WHERE id = $1 AND status = 'accepted'",
            &[&id],
        )
        .await?;
    Ok(())
}

/// Removes a cancelled job with everything it holds (the worker's clean-up step).
pub async fn remove(pool: &DbPool, id: Uuid) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM bulk_exports WHERE id = $1 AND status = 'cancelled'",
            &[&id],
        )
        .await?;
    Ok(())
}

/// Writes one of the job's own events (the worker's steps, on the owner's behalf) on `client`:
/// inside the transaction of the change it records, so it exists exactly when the change does.
pub(crate) async fn record(
    client: &impl tokio_postgres::GenericClient,
    export: &Export,
    action: &'static str,
    details: Value,
) -> Result<(), StoreError> {
    let (who, owner) = attribution(export.owner);
    let event = shared::audit::Event::new(action, RESOURCE)
        .resource(Some(export.id))
        .details(owner)
        .details(details);
    shared::audit::insert(client, &who, &event).await
}

/// The audit trail's attribution of a job's own steps (run by the worker, on the owner's
/// behalf): the user, or the client in the event's details.
fn attribution(owner: Owner) -> (shared::audit::Attribution, Value) {
    match owner {
        Owner::User(id) => (
            shared::audit::Attribution {
                actor_id: Some(id),
                ..Default::default()
            },
            serde_json::json!({}),
        ),
        Owner::Client(id) => (
            shared::audit::Attribution::default(),
            serde_json::json!({ "smart_client_id": id }),
        ),
    }
}

/// The messages the worker takes from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum JobMessage {
    /// Take the job's snapshot and split it into chunks (again: queue the chunks not done).
    Plan { export_id: Uuid },
    /// Write one chunk's files.
    Chunk { export_id: Uuid, chunk: i32 },
    /// Remove a cancelled job with the rows copied for it, and its files.
    Cleanup { export_id: Uuid },
}

impl JobMessage {
    pub fn export_id(&self) -> Uuid {
        match self {
            Self::Plan { export_id }
            | Self::Chunk { export_id, .. }
            | Self::Cleanup { export_id } => *export_id,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_job_reads_as_stalled_after_the_same_time_it_is_failed_after() {
        assert!(super::COLUMNS.contains(&format!("interval '{}'", super::STALLED_AFTER)));
    }
}
