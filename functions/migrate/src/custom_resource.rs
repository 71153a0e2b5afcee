//! The CloudFormation custom resource protocol. CloudFormation waits for an answer at
//! `ResponseURL`; without one the stack hangs for an hour. So every request is answered,
//! SUCCESS or FAILED with the reason, before the function's own deadline.

use std::time::Duration;

use serde::Serialize;

/// What CloudFormation sends: Create, Update or Delete.
pub use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest as CustomResourceRequest;

/// Where to answer and what the answer must repeat, whatever the request type.
struct Addressed<'a> {
    is_delete: bool,
    response_url: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    physical_resource_id: Option<&'a str>,
}

fn addressed(request: &CustomResourceRequest) -> Result<Addressed<'_>, String> {
    Ok(match request {
        CustomResourceRequest::Create(r) => Addressed {
            is_delete: false,
            response_url: &r.response_url,
            stack_id: &r.stack_id,
            request_id: &r.request_id,
            logical_resource_id: &r.logical_resource_id,
            physical_resource_id: None,
        },
        CustomResourceRequest::Update(r) => Addressed {
            is_delete: false,
            response_url: &r.response_url,
            stack_id: &r.stack_id,
            request_id: &r.request_id,
            logical_resource_id: &r.logical_resource_id,
            physical_resource_id: Some(&r.physical_resource_id),
        },
        CustomResourceRequest::Delete(r) => Addressed {
            is_delete: true,
            response_url: &r.response_url,
            stack_id: &r.stack_id,
            request_id: &r.request_id,
            logical_resource_id: &r.logical_resource_id,
            physical_resource_id: Some(&r.physical_resource_id),
        },
        _ => return Err("unsupported custom resource request type".into()),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceResponse {
    pub status: &'static str,
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub data: serde_json::Value,
}

pub const PHYSICAL_RESOURCE_ID: &str = "carevault-database-schema";

/// Is this event a custom resource request rather than a direct invocation?
pub fn is_custom_resource(event: &serde_json::Value) -> bool {
    event.get("RequestType").is_some() && event.get("ResponseURL").is_some()
}

/// Runs `work` for Create and Update (Delete keeps the database: data outlives stacks), then
/// answers CloudFormation. `time_left` is the budget before the Lambda deadline.
pub async fn handle<F, Fut>(
    request: CustomResourceRequest,
    time_left: Duration,
    work: F,
) -> Result<CustomResourceResponse, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let request = addressed(&request)?;
    // Keep a few seconds to deliver the answer itself.
    let budget = time_left.saturating_sub(Duration::from_secs(5));
    let outcome = if request.is_delete {
        Ok(serde_json::json!({ "skipped": "Delete keeps the database" }))
    } else {
        match tokio::time::timeout(budget, work()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "migration did not finish within {} s",
                budget.as_secs()
            )),
        }
    };
    let (status, reason, data) = match outcome {
        Ok(data) => ("SUCCESS", "OK".to_owned(), data),
        // CloudFormation shows the reason in the console; keep it short.
        Err(reason) => ("FAILED", truncate(&reason, 1_000), serde_json::json!({})),
    };
    let response = CustomResourceResponse {
        status,
        reason,
        physical_resource_id: request
            .physical_resource_id
            .unwrap_or(PHYSICAL_RESOURCE_ID)
            .to_owned(),
        stack_id: request.stack_id.to_owned(),
        request_id: request.request_id.to_owned(),
        logical_resource_id: request.logical_resource_id.to_owned(),
        data,
    };
    send(request.response_url, &response).await?;
    Ok(response)
}

async fn send(url: &str, response: &CustomResourceResponse) -> Result<(), String> {
    let body = serde_json::to_vec(response).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls(shared::tls::client_config())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    // The URL is presigned for a PUT with no Content-Type: sending one breaks the signature.
    let answer = client
        .put(url)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("sending the custom resource response: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!(
            "CloudFormation refused the response: HTTP {}",
            answer.status()
        ));
    }
    Ok(())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
