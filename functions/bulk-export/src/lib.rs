//! The bulk export worker. The export queue's event source mapping invokes it with batches of
//! job messages (`domain::exports::JobMessage`); a message whose step fails is reported in the
//! batch response, so SQS delivers it again after its visibility timeout and moves it to the
//! dead-letter queue after the last try. Every step is idempotent: planning runs once per job
//! (a redelivery queues its unwritten chunks again), and a chunk's files have keys and bytes
//! fixed by the job's snapshot, recorded once, so a chunk written twice (a worker killed
//! mid-way, a duplicate delivery) leaves every resource in the output exactly once.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Duration;
use domain::exports::chunks::{self, ChunkWork, Finished};
use domain::exports::plan::{self, Planned, Sizes};
use domain::exports::{self, ExportFile, JobMessage};
use futures_util::TryStreamExt;
use serde_json::Value;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::queue::JobQueue;
use shared::secrets::SecretsClient;
use shared::storage::{Storage, StorageConfig, StoredPart, S3_MIN_PART_BYTES};
use uuid::Uuid;

pub struct WorkerState {
    pub pool: DbPool,
    pub storage: Storage,
    pub queue: JobQueue,
    pub sizes: Sizes,
    /// A file is closed and the next one started before it passes this many bytes.
    pub file_max_bytes: u64,
    /// The bytes held before a part is uploaded: the worker's memory, whatever the export's size.
    pub part_bytes: usize,
}

impl WorkerState {
    /// EXPORT_CHUNK_ROWS (50,000), EXPORT_FILE_MAX_BYTES (1 GiB), EXPORT_PART_BYTES (8 MiB, at
    /// least S3's 5 MiB), EXPORT_RETENTION_HOURS (24, at most 48), EXPORT_STATEMENT_TIMEOUT_MS
    /// (840,000: its statements' limit, over its login's), and the storage and database settings.
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let sdk_config = shared::aws::sdk_config().await;
        Ok(Self {
            pool: shared::db::pool_from_env(
                env,
                &SecretsClient::from_env(env),
                "carevault-bulk-export",
            )
            .await?,
            storage: Storage::new(&sdk_config, StorageConfig::from_env(env)?),
            queue: JobQueue::from_env(&sdk_config, env)?,
            sizes: Sizes {
                chunk_rows: env.number_in("EXPORT_CHUNK_ROWS", 50_000, 1..=1_000_000)?,
                // The bucket's lifecycle rule deletes export files after 3 days.
                retention: Duration::hours(env.number_in("EXPORT_RETENTION_HOURS", 24, 1..=48)?),
                statement_timeout: env.millis_in(
                    "EXPORT_STATEMENT_TIMEOUT_MS",
                    840_000,
                    1_000..=900_000,
                )?,
            },
            file_max_bytes: env.number_in(
                "EXPORT_FILE_MAX_BYTES",
                1024 * 1024 * 1024,
                1..=shared::storage::S3_MAX_OBJECT_BYTES,
            )?,
            part_bytes: env.number_in(
                "EXPORT_PART_BYTES",
                8 * 1024 * 1024,
                S3_MIN_PART_BYTES as usize..=64 * 1024 * 1024,
            )?,
        })
    }
}

/// How many times SQS delivers a message before the dead-letter queue takes it: the queue's
/// redrive policy (template.yaml, scripts/lib/export_queue.py) says the same.
pub const DELIVERIES: u32 = 5;

/// One invocation: each message's step; the ones that failed go back to the queue.
pub async fn handle(state: &WorkerState, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let step = message
            .body
            .as_deref()
            .ok_or_else(|| "a message without a body".to_owned())
            .and_then(|body| {
                serde_json::from_str::<JobMessage>(body)
                    .map_err(|e| format!("not a job message: {e}"))
            });
        let done = match &step {
            Ok(JobMessage::Plan { export_id }) => plan_job(state, *export_id).await,
            Ok(JobMessage::Chunk { export_id, chunk }) => {
                write_chunk(state, *export_id, *chunk).await
            }
            Ok(JobMessage::Cleanup { export_id }) => clean_up(state, *export_id).await,
            Err(error) => Err(error.clone()),
        };
        let Err(error) = done else { continue };
        // Retried after the visibility timeout; the dead-letter queue keeps it after the last.
        tracing::error!(message_id = %id, %error, "a job step failed");
        let deliveries: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if let (Ok(step), true) = (&step, deliveries >= DELIVERIES) {
            // Its last try: the job cannot complete, and its status says so (500).
            let reason = "a step of the export failed on every try; start it again";
            if let Err(failed) = give_up(state, step.export_id(), reason).await {
                tracing::error!(error = %failed, "a failed export could not be marked failed");
            }
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// Marks the job failed (its status answers 500 with `reason`, in general terms: the step's own
/// error, which may name internals, stays in the worker's log) and removes what it wrote.
async fn give_up(state: &WorkerState, id: Uuid, reason: &str) -> Result<(), String> {
    let failed = chunks::fail(&state.pool, id, reason, state.sizes.retention)
        .await
        .map_err(|e| e.to_string())?;
    if failed.is_some() {
        remove_files(state, id).await?;
    }
    Ok(())
}

async fn plan_job(state: &WorkerState, id: Uuid) -> Result<(), String> {
    let Some(export) = exports::load(&**state.pool.get().await.map_err(|e| e.to_string())?, id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let error_file = if export.status == exports::Status::Accepted && !export.issues.is_empty() {
        let key = format!("{}OperationOutcome.issues.ndjson", exports::job_prefix(id));
        let mut writer = NdjsonFile::start(state, key).await?;
        for issue in &export.issues {
            writer.line(state, issue).await?;
        }
        Some(writer.finish(state, "error", "OperationOutcome").await?)
    } else {
        None
    };
    let planned = plan::plan(&state.pool, id, state.sizes, error_file.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    match planned {
        Planned::Gone => remove_files(state, id).await,
        Planned::Refused(reason) => give_up(state, id, reason).await,
        Planned::Chunks(list) => {
            let messages: Vec<JobMessage> = list
                .iter()
                .map(|chunk| JobMessage::Chunk {
                    export_id: id,
                    chunk: *chunk,
                })
                .collect();
            state
                .queue
                .send_all(&messages)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

async fn remove_files(state: &WorkerState, id: Uuid) -> Result<(), String> {
    state
        .storage
        .delete_prefix(&exports::job_prefix(id))
        .await
        .map(|_| ())
}

/// A cancelled job: its rows, then its files (the cancel deleted those it found; a step that
/// was writing may have added some since).
async fn clean_up(state: &WorkerState, id: Uuid) -> Result<(), String> {
    exports::remove(&state.pool, id)
        .await
        .map_err(|e| e.to_string())?;
    remove_files(state, id).await
}

async fn write_chunk(state: &WorkerState, id: Uuid, chunk: i32) -> Result<(), String> {
    let Some(work) = chunks::work(&state.pool, id, chunk)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let files = write_files(state, &work).await?;
    match chunks::finish(&state.pool, &work, &files, state.sizes.retention)
        .await
        .map_err(|e| e.to_string())?
    {
        Finished::Recorded { .. } | Finished::AlreadyDone => Ok(()),
        // Cancelled or failed while it was written: nothing of it stays.
        Finished::Gone => remove_files(state, id).await,
    }
}

/// The chunk's rows as NDJSON files of at most `file_max_bytes`, each streamed to S3 part by part.
async fn write_files(state: &WorkerState, work: &ChunkWork) -> Result<Vec<ExportFile>, String> {
    let client = state.pool.get().await.map_err(|e| e.to_string())?;
    let records = chunks::records(&client, work, &state.sizes)
        .await
        .map_err(|e| e.to_string())?;
    let mut records = std::pin::pin!(records);
    let type_name = work.resource_type.as_str();
    let key = |file: usize| {
        format!(
            "{}{type_name}.{:06}.{file:03}.ndjson",
            exports::job_prefix(work.export.id),
            work.chunk
        )
    };
    let mut files = Vec::new();
    let mut current: Option<NdjsonFile> = None;
    let mut rows = 0i64;
    while let Some(record) = records.try_next().await.map_err(|e| e.to_string())? {
        rows += 1;
        let mut line =
            serde_json::to_vec(&fhir_resources::resource(&record, &work.export.fhir_base))
                .map_err(|e| e.to_string())?;
        line.push(b'\n');
        if current.as_ref().is_some_and(|file| {
            file.resources > 0 && file.bytes + line.len() as u64 > state.file_max_bytes
        }) {
            let full = current.take().expect("checked above");
            files.push(full.finish(state, "output", type_name).await?);
        }
        if current.is_none() {
            current = Some(NdjsonFile::start(state, key(files.len())).await?);
        }
        current
            .as_mut()
            .expect("started above")
            .bytes(state, &line)
            .await?;
    }
    if rows != work.rows() {
        // The chunk's rows are numbered without gaps: fewer means they are gone (another
        // delivery recorded the chunk and dropped them). Its files are not completed; the retry
        // finds the chunk done.
        if let Some(file) = current {
            file.abort(state).await;
        }
        return Err(format!(
            "chunk {} of export {} read {rows} of its {} rows",
            work.chunk,
            work.export.id,
            work.rows()
        ));
    }
    if let Some(file) = current {
        files.push(file.finish(state, "output", type_name).await?);
    }
    Ok(files)
}

/// One NDJSON file being written: a multipart upload whose parts (SHA-256 checked) go up as the
/// buffer fills.
struct NdjsonFile {
    key: String,
    upload_id: String,
    buffer: Vec<u8>,
    parts: Vec<StoredPart>,
    bytes: u64,
    resources: i64,
}

impl NdjsonFile {
    async fn start(state: &WorkerState, key: String) -> Result<Self, String> {
        let upload_id = state
            .storage
            .create_multipart_upload(&key, "application/fhir+ndjson")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            key,
            upload_id,
            buffer: Vec::with_capacity(state.part_bytes),
            parts: Vec::new(),
            bytes: 0,
            resources: 0,
        })
    }

    async fn line(&mut self, state: &WorkerState, resource: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(resource).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.bytes(state, &line).await
    }

    /// One resource's line, newline included.
    async fn bytes(&mut self, state: &WorkerState, line: &[u8]) -> Result<(), String> {
        self.buffer.extend_from_slice(line);
        self.bytes += line.len() as u64;
        self.resources += 1;
        if self.buffer.len() >= state.part_bytes {
            self.upload_buffer(state).await?;
        }
        Ok(())
    }

    async fn upload_buffer(&mut self, state: &WorkerState) -> Result<(), String> {
        let bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(state.part_bytes));
        let part = state
            .storage
            .upload_part(
                &self.key,
                &self.upload_id,
                self.parts.len() as i32 + 1,
                bytes,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.parts.push(part);
        Ok(())
    }

    async fn finish(
        mut self,
        state: &WorkerState,
        kind: &str,
        resource_type: &str,
    ) -> Result<ExportFile, String> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.upload_buffer(state).await?;
        }
        state
            .storage
            .complete_replacing(&self.key, &self.upload_id, &self.parts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExportFile {
            object_key: self.key,
            kind: kind.to_owned(),
            resource_type: resource_type.to_owned(),
            resources: self.resources,
            bytes: self.bytes as i64,
        })
    }

    async fn abort(self, state: &WorkerState) {
        if let Err(error) = state
            .storage
            .abort_multipart_upload(&self.key, &self.upload_id)
            .await
        {
            tracing::warn!(%error, "an unfinished export file is left to the lifecycle rule");
        }
    }
}
