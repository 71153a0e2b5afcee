//! A minimal Lambda Runtime API on 127.0.0.1, so a function's release `bootstrap` runs exactly as
//! Lambda runs it: it polls `next`, gets an event with Lambda's headers, and posts the response.
//! No cargo-lambda emulator is in the measured path.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

/// Where the response to one invocation goes: the function's answer or its error.
type ResponseSender = oneshot::Sender<Result<serde_json::Value, String>>;

#[derive(Clone)]
struct Shared {
    /// Events waiting for the function's next poll.
    queue: Arc<AsyncMutex<mpsc::Receiver<(String, serde_json::Value)>>>,
    /// Where each request id's response goes.
    waiting: Arc<Mutex<HashMap<String, ResponseSender>>>,
    /// Signalled at the function's first poll: its init is over.
    first_poll: Arc<Mutex<Option<oneshot::Sender<Instant>>>>,
}

pub struct RuntimeApi {
    pub address: String,
    sender: mpsc::Sender<(String, serde_json::Value)>,
    shared: Shared,
    first_poll: Option<oneshot::Receiver<Instant>>,
    server: tokio::task::JoinHandle<()>,
}

async fn next(State(shared): State<Shared>) -> Response {
    if let Some(signal) = shared.first_poll.lock().unwrap().take() {
        let _ = signal.send(Instant::now());
    }
    let Some((request_id, event)) = shared.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&request_id).unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"),
    );
    (headers, axum::Json(event)).into_response()
}

async fn respond(
    State(shared): State<Shared>,
    Path(request_id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if let Some(sender) = shared.waiting.lock().unwrap().remove(&request_id) {
        let _ = sender.send(Ok(value));
    }
    StatusCode::ACCEPTED
}

async fn error(
    State(shared): State<Shared>,
    Path(request_id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    if let Some(sender) = shared.waiting.lock().unwrap().remove(&request_id) {
        let _ = sender.send(Err(String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn init_error(body: axum::body::Bytes) -> StatusCode {
    eprintln!("function init error: {}", String::from_utf8_lossy(&body));
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (sender, receiver) = mpsc::channel(1);
        let (first_tx, first_rx) = oneshot::channel();
        let shared = Shared {
            queue: Arc::new(AsyncMutex::new(receiver)),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            first_poll: Arc::new(Mutex::new(Some(first_tx))),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            sender,
            shared,
            first_poll: Some(first_rx),
            server,
        }
    }

    /// Waits until the function polls for its first event; the instant it did.
    pub async fn first_poll(&mut self) -> Instant {
        self.first_poll
            .take()
            .expect("first poll awaited once")
            .await
            .expect("the function polled")
    }

    /// Hands `event` to the function and waits for its response.
    pub async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap()
            .insert(request_id.clone(), tx);
        self.sender
            .send((request_id, event))
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| "no response within 30 s".to_owned())?
            .map_err(|e| e.to_string())?
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A function process started as Lambda starts it.
pub struct FunctionProcess {
    pub child: Child,
    pub started: Instant,
}

impl FunctionProcess {
    pub fn spawn(binary: &std::path::Path, runtime_api: &str, env: &[(String, String)]) -> Self {
        let started = Instant::now();
        let child = Command::new(binary)
            .env_clear()
            .envs(env.iter().cloned())
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Self { child, started }
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
