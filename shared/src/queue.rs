//! The job queue (SQS): work that outlives a request (a bulk export's planning and chunks) is
//! sent here and run by a worker Lambda that the queue's event source mapping invokes, with
//! SQS's retries, visibility timeout and dead-letter queue; never by a loop of our own.

use aws_config::SdkConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::Serialize;

use crate::config::{ConfigError, Env};

#[derive(Clone, Debug)]
pub struct JobQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// A message could not be sent: the queue is unreachable or refused it.
#[derive(Debug, thiserror::Error)]
#[error("the job queue is unavailable: {0}")]
pub struct QueueError(pub String);

/// SQS takes at most ten messages per batch.
const BATCH: usize = 10;

impl JobQueue {
    /// EXPORT_QUEUE_URL; `AWS_ENDPOINT_URL_SQS` (the SDK's standard setting) points the client at
    /// a local server.
    pub fn from_env(sdk_config: &SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            client: aws_sdk_sqs::Client::new(sdk_config),
            url: env.required("EXPORT_QUEUE_URL")?,
        })
    }

    /// Sends each message as JSON, ten to a request; every one is sent or the call fails (a
    /// message sent twice is harmless: every job step is idempotent).
    pub async fn send_all<T: Serialize>(&self, messages: &[T]) -> Result<(), QueueError> {
        for batch in messages.chunks(BATCH) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(at, message)| {
                    let body = serde_json::to_string(message)
                        .map_err(|e| QueueError(format!("message not serialisable: {e}")))?;
                    SendMessageBatchRequestEntry::builder()
                        .id(at.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let sent = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError(DisplayErrorContext(e).to_string()))?;
            if let Some(failed) = sent.failed().first() {
                return Err(QueueError(format!(
                    "{} message(s) refused: {}",
                    sent.failed().len(),
                    failed.message().unwrap_or(failed.code())
                )));
            }
        }
        Ok(())
    }
}
