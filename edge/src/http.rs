//! The HTTP edge shared by every endpoint group: the Lambda adapter, trailing-slash handling,
//! the body, form and query extractors (parsing through `shared::input`, FastAPI's 422s), and
//! what the API Gateway request context tells about the caller.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::Router;
use lambda_http::RequestExt;
use serde::de::DeserializeOwned;
use tower::Layer;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use shared::input::{json_body, urlencoded};
use shared::ApiError;

/// Largest request body accepted; API Gateway's own limit is 10 MB, and no route needs more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The service a function runs: its router with FastAPI's 404/405 answers, where `/x` and `/x/`
/// are the same route (the original redirected one to the other; clients call both), and where
/// a panic anywhere is that request's 500.
pub fn service(router: Router) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(
        router
            .fallback(|| async { ApiError::NotFound("Not Found".into()) })
            .method_not_allowed_fallback(|| async {
                ApiError::MethodNotAllowed("Method Not Allowed".into())
            })
            .layer(catch_panics())
            .layer(axum::middleware::map_response(protect_answer)),
    )
}

/// The answer to a request whose handler panicked: a 500 like any other internal error (an
/// interface with its own error shape renders it from the `ApiError` the answer carries). The
/// panic's message is not logged: it may quote the request (a slice of the text sent). Where
/// it happened is, by the panic hook (`shared::logging::log_panics_without_their_message`),
/// with the request id.
pub fn panic_answer() -> axum::response::Response {
    axum::response::IntoResponse::into_response(ApiError::Internal(
        "a handler panicked (location in the log line before)".into(),
    ))
}

/// Turns a panic while serving a request into [`panic_answer`]: the process goes on serving
/// (the release profile unwinds). The audit layer catches its own routes' panics first, so
/// that they are audited; this catches the rest (fallbacks, unaudited routes).
pub fn catch_panics() -> CatchPanicLayer<PanicAnswer> {
    CatchPanicLayer::custom(PanicAnswer)
}

/// [`catch_panics`]' answer.
#[derive(Debug, Clone, Copy)]
pub struct PanicAnswer;

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(
        &mut self,
        _payload: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Self::ResponseBody> {
        panic_answer()
    }
}

/// Patient data must not stay in a shared workstation's browser cache, nor be sniffed into
/// another type: every answer is `no-store` unless its route chose a policy, and `nosniff`.
async fn protect_answer(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `router` on the Lambda Runtime API until the process is stopped.
pub async fn run(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(service(router)).await
}

/// Who asked, from the Lambda and API Gateway contexts: for logs and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn of(extensions: &axum::http::Extensions, headers: &axum::http::HeaderMap) -> Self {
        let mut meta = RequestMeta {
            request_id: extensions
                .lambda_context_ref()
                .map(|c| c.request_id.clone())
                .filter(|id| !id.is_empty()),
            ..Default::default()
        };
        if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) =
            extensions.request_context_ref()
        {
            meta.source_ip = ctx.http.source_ip.clone();
            meta.user_agent = ctx.http.user_agent.clone();
            if meta.request_id.is_none() {
                meta.request_id = ctx.request_id.clone();
            }
        }
        if meta.user_agent.is_none() {
            meta.user_agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        // Any client can send a megabyte of user agent; the trail keeps what identifies it.
        meta.user_agent = meta.user_agent.map(|ua| {
            ua.chars()
                .take(shared::audit::MAX_USER_AGENT_CHARS)
                .collect()
        });
        meta
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions, &parts.headers))
    }
}

/// A JSON request body, with serde's errors turned into FastAPI's 422 list.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        <Self as OptionalFromRequest<S>>::from_request(req, state)
            .await?
            .ok_or_else(|| ApiError::validation(&["body"], "Field required", "missing"))
    }
}

/// `Option<JsonBody<T>>`: an optional body; no body at all is None.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            });
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        if is_json == Some(false) {
            return Err(ApiError::UnsupportedMediaType(
                "Request body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        json_body(&bytes).map(|body| Some(JsonBody(body)))
    }
}

/// A form-urlencoded request body (the OAuth2 password flow of login).
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for FormBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let bytes = read_body(req, state).await?;
        if !is_form && !bytes.is_empty() {
            return Err(ApiError::UnsupportedMediaType(
                "Request body must be a form (Content-Type: application/x-www-form-urlencoded)"
                    .into(),
            ));
        }
        urlencoded("body", &bytes).map(FormBody)
    }
}

/// Query-string parameters, with errors as FastAPI's 422 list (`loc: ["query", name]`).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        urlencoded("query", query.as_bytes()).map(QueryParams)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    let limited =
        req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, MAX_BODY_BYTES)));
    axum::body::Bytes::from_request(limited, state)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "Request body is larger than {MAX_BODY_BYTES} bytes"
            ))
        })
}

/// The version `If-Match` requires: None without the header or with `*` (any version).
/// A header naming no version this record could have fails every comparison (412).
pub fn required_version(headers: &axum::http::HeaderMap) -> Option<i64> {
    let value = headers
        .get(axum::http::header::IF_MATCH)?
        .to_str()
        .unwrap_or("")
        .trim();
    if value == "*" {
        return None;
    }
    let version = value
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .find_map(|tag| tag.parse::<i64>().ok());
    Some(version.unwrap_or(-1))
}

/// A function's whole life: logging, the cold start (`init` builds the state from the
/// environment, once), then serving `router` until the process ends. A failed cold start ends
/// the process with one log line naming the problem.
pub async fn start<S, Init, Fut>(
    init: Init,
    router: impl FnOnce(S) -> Router,
) -> Result<(), lambda_http::Error>
where
    Init: FnOnce(shared::config::Env) -> Fut,
    Fut: std::future::Future<Output = Result<S, shared::config::ConfigError>>,
{
    shared::logging::init();
    shared::logging::log_panics_without_their_message();
    let started = std::time::Instant::now();
    let state =
        shared::logging::exit_on_init_error(init(shared::config::Env::from_process()).await);
    shared::logging::cold_start_complete(started);
    run(router(state)).await
}
