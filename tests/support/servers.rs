//! Local HTTP servers a test starts on 127.0.0.1 in front of, or instead of, a real endpoint.

use std::sync::atomic::Ordering;

use axum::Router;

use crate::s3::http_client;
use crate::stack::stack_var;

/// A one-route HTTP server on 127.0.0.1 that records what is sent to it: stands in for the
/// CloudFormation response URL (a presigned S3 URL in AWS).
pub struct RequestRecorder {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<RecordedRequest>>>,
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl RequestRecorder {
    pub async fn start() -> Self {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let sink = sink.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                sink.lock().unwrap().push(RecordedRequest {
                    method: parts.method.to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: body.to_vec(),
                });
                ""
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/cloudformation-response",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    pub fn received(&self) -> Vec<RecordedRequest> {
        self.received.lock().unwrap().clone()
    }
}

/// An HTTP proxy in front of the local S3 server that counts the requests it is carrying at
/// once (each held a little, so requests sent together overlap): how a test sees how many S3
/// requests the API keeps in flight. Headers pass unchanged, so signatures still verify.
pub struct CountingS3Proxy {
    pub url: String,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingS3Proxy {
    pub async fn start() -> Self {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let upstream = stack_var("AWS_ENDPOINT_URL_S3");
        let (in_flight, most, requests) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let counters = (in_flight.clone(), most.clone(), requests.clone());
        let client = http_client();
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let (in_flight, most, requests) = counters.clone();
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                requests.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20)
                    .await
                    .unwrap_or_default();
                let target = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let mut forward = client.request(parts.method.clone(), target).body(body);
                for (name, value) in &parts.headers {
                    forward = forward.header(name, value);
                }
                let answer = forward.send().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match answer {
                    Ok(answer) => {
                        let mut response =
                            axum::response::Response::builder().status(answer.status());
                        for (name, value) in answer.headers() {
                            response = response.header(name, value);
                        }
                        response
                            .body(axum::body::Body::from(
                                answer.bytes().await.unwrap_or_default(),
                            ))
                            .unwrap()
                    }
                    Err(_) => axum::response::Response::builder()
                        .status(502)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            in_flight,
            most,
            requests,
        }
    }

    /// The most requests carried at once so far.
    pub fn most_in_flight(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub fn now_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}
