//! The export queue's side of the tests: each test's own queue on the local SQS server (moto),
//! and the event source mapping's part, played as AWS plays it: receive a batch, invoke the
//! worker with the same `SqsEvent` JSON, delete what it did not report failed.

use serde_json::{json, Value};

use crate::stack::use_dev_stack_defaults;

pub async fn sqs_client() -> aws_sdk_sqs::Client {
    use_dev_stack_defaults();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// A queue of its own for one test (its messages never reach another test's worker), with the
/// visibility timeout after which a message the worker did not finish comes back.
pub async fn create_queue(name: &str, visibility_timeout_seconds: u32) -> String {
    sqs_client()
        .await
        .create_queue()
        .queue_name(name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            visibility_timeout_seconds.to_string(),
        )
        .send()
        .await
        .expect("create the test's export queue")
        .queue_url()
        .expect("a queue URL")
        .to_owned()
}

/// Up to ten messages of `queue_url` as the Lambda event the event source mapping sends.
pub async fn receive_event(queue_url: &str) -> Option<Value> {
    let received = sqs_client()
        .await
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive from the export queue");
    let messages = received.messages();
    if messages.is_empty() {
        return None;
    }
    let name = queue_url.rsplit('/').next().unwrap_or_default();
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    Some(json!({ "Records": records }))
}

/// Deletes the messages of `event` that `response` (the worker's batch response) did not name
/// as failed: those are done.
pub async fn delete_done(queue_url: &str, event: &Value, response: &Value) {
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let client = sqs_client().await;
    for record in event["Records"].as_array().unwrap() {
        if failed.contains(&record["messageId"].as_str().unwrap()) {
            continue;
        }
        client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(record["receiptHandle"].as_str().unwrap())
            .send()
            .await
            .expect("delete a done message");
    }
}
