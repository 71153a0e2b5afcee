//! What API Gateway sends a function and what it answers: the request builder, the event it
//! becomes, one run through the `lambda_http` adapter, and the sample events in events/.

use std::collections::BTreeMap;

use axum::Router;
use base64::Engine;
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent, Service};
use serde_json::{json, Value};

/// An API Gateway HTTP API request, built up and turned into the event Lambda receives.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub(crate) method: String,
    pub path: String,
    query: Vec<(String, String)>,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    request_id: Option<String>,
    source_ip: String,
}

impl ApiRequest {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: Vec::new(),
            headers: BTreeMap::from([("user-agent".to_owned(), "carevault-tests".to_owned())]),
            body: None,
            request_id: None,
            source_ip: "198.51.100.7".into(),
        }
    }

    /// API Gateway's request id for this request (Lambda's will be `lambda-<it>`).
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }
    /// The client's address as API Gateway reports it (default 198.51.100.7).
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.to_owned();
        self
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }
    pub fn put(path: &str) -> Self {
        Self::new("PUT", path)
    }
    pub fn patch(path: &str) -> Self {
        Self::new("PATCH", path)
    }
    pub fn delete(path: &str) -> Self {
        Self::new("DELETE", path)
    }

    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(self, body: Value) -> Self {
        self.raw_body("application/json", &body.to_string())
    }

    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let encoded = serde_urlencoded::to_string(pairs).unwrap();
        self.raw_body("application/x-www-form-urlencoded", &encoded)
    }

    pub fn raw_body(mut self, content_type: &str, body: &str) -> Self {
        self.headers
            .insert("content-type".into(), content_type.into());
        self.body = Some(body.to_owned());
        self
    }

    /// The payload-2.0 event API Gateway sends for this request.
    pub fn to_event(&self) -> Value {
        let raw_query = serde_urlencoded::to_string(&self.query).unwrap();
        let mut query_params = serde_json::Map::new();
        for (k, v) in &self.query {
            // API Gateway joins repeated keys with commas.
            let joined = match query_params.get(k) {
                Some(Value::String(prev)) => format!("{prev},{v}"),
                _ => v.clone(),
            };
            query_params.insert(k.clone(), Value::String(joined));
        }
        let request_id = self
            .request_id
            .clone()
            .unwrap_or_else(|| format!("test-{}", uuid::Uuid::new_v4()));
        let mut event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": self.path,
            "rawQueryString": raw_query,
            "headers": self.headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "carevault",
                "domainName": "api.carevault.test",
                "domainPrefix": "api",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": self.source_ip,
                    "userAgent": self.headers.get("user-agent").cloned().unwrap_or_default(),
                },
                "requestId": request_id,
                "routeKey": "$default",
                "stage": "$default",
                "time": "27/Nov/2026:06:00:00 +0000",
                "timeEpoch": 1_795_932_000_000u64,
            },
            "isBase64Encoded": false,
        });
        if !query_params.is_empty() {
            event["queryStringParameters"] = Value::Object(query_params);
        }
        if let Some(body) = &self.body {
            event["body"] = Value::String(body.clone());
        }
        event
    }
}

/// What API Gateway would send back to the client.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl ApiResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `detail` of an error answer.
    pub fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
}

/// Runs one event through `router` as Lambda would: event JSON in, response JSON out.
pub async fn invoke_event(router: Router, event: Value) -> ApiResponse {
    let mut context = Context::default();
    context.request_id = format!(
        "lambda-{}",
        event["requestContext"]["requestId"]
            .as_str()
            .unwrap_or("none")
    );
    let payload: LambdaRequest = serde_json::from_value(event).expect("a valid API Gateway event");
    let mut adapter = lambda_http::Adapter::from(edge::http::service(router));
    let response = adapter
        .call(LambdaEvent::new(payload, context))
        .await
        .unwrap_or_else(|e| match e {});
    let response = serde_json::to_value(response).unwrap();
    let status = response["statusCode"].as_u64().expect("statusCode") as u16;
    let headers = response["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = match response.get("body") {
        Some(Value::String(text)) if response["isBase64Encoded"] == json!(true) => {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .expect("base64 body"),
            )
            .expect("UTF-8 body")
        }
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    ApiResponse {
        status,
        headers,
        body,
    }
}

pub async fn invoke(router: Router, request: ApiRequest) -> ApiResponse {
    invoke_event(router, request.to_event()).await
}

/// The repository's `events/` folder.
pub fn events_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// The sample event `events/<name>`, parsed.
pub fn event(name: &str) -> Value {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
