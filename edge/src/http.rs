//! The HTTP edge shared by every endpoint group: the Lambda adapter, trailing-slash handling,
//! the check that a request came through the stack's CloudFront (`OriginCheck`), the body, form
//! and query extractors (parsing through `shared::input`, FastAPI's 422s), and what the API
//! Gateway request context (or, behind CloudFront, the viewer's address) tells about the caller.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::Router;
use lambda_http::RequestExt;
use serde::de::DeserializeOwned;
use tower::Layer;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use shared::config::{ConfigError, Env, Environment};
use shared::input::{json_body, urlencoded};
use shared::secrets::SecretsClient;
use shared::ApiError;

/// Largest request body accepted; API Gateway's own limit is 10 MB, and no route needs more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The service a function runs: its router with FastAPI's 404/405 answers, where `/x` and `/x/`
/// are the same route (the original redirected one to the other; clients call both), and where
/// a panic anywhere is that request's 500. No origin check: local runs and the tests.
pub fn service(router: Router) -> NormalizePath<Router> {
    service_with(router, &OriginCheck::Off)
}

/// [`service`] behind `origin`: with a secret configured, every request (fallbacks included)
/// must carry it, or it is refused before any router sees it.
pub fn service_with(router: Router, origin: &OriginCheck) -> NormalizePath<Router> {
    let router = router
        .fallback(|| async { ApiError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("Method Not Allowed".into())
        })
        .layer(catch_panics());
    // Layered after the fallbacks are set, so they are behind the check too.
    let router = match origin {
        OriginCheck::Off => router,
        OriginCheck::Secret(secret) => router.layer(axum::middleware::from_fn_with_state(
            secret.clone(),
            admit_through_origin,
        )),
    };
    NormalizePathLayer::trim_trailing_slash()
        .layer(router.layer(axum::middleware::map_response(protect_answer)))
}

/// The header CloudFront adds to every request it sends the API (`template.yaml`, the API
/// distribution's origin), holding the secret only it and the functions know.
pub const ORIGIN_SECRET_HEADER: &str = "x-origin-verify";

/// The header CloudFront puts the viewer's address and port in (`198.51.100.7:46532`), through
/// the origin request policy. Trusted only on a request that carried the origin secret.
pub const VIEWER_ADDRESS_HEADER: &str = "cloudfront-viewer-address";

/// The header CloudFront's viewer-request function (`ApiViewerHost` in template.yaml) puts the
/// host the viewer asked for in: execute-api needs its own name in `Host`, and FHIR's links must
/// carry the public one. Made the request's `Host` only on a request that carried the secret.
pub const VIEWER_HOST_HEADER: &str = "x-viewer-host";

/// Whether a request must prove it came through the stack's CloudFront. API Gateway's own
/// address (execute-api) stays public whatever the template does, so without this check anyone
/// could go around CloudFront and its per-address limits (AWS WAF); behind CloudFront,
/// API Gateway's `sourceIp` is CloudFront's, so the viewer's address comes from CloudFront's
/// header, which only a request that passed this check may set.
#[derive(Clone)]
pub enum OriginCheck {
    /// Every request is served (local runs and tests: there is no CloudFront).
    Off,
    /// A request without this value in [`ORIGIN_SECRET_HEADER`] is 403.
    Secret(std::sync::Arc<str>),
}

// Written by hand so the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for OriginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "OriginCheck::Off",
            Self::Secret(_) => "OriginCheck::Secret(<redacted>)",
        })
    }
}

/// The secret of the origin check, as Secrets Manager holds it (`OriginSecret` in template.yaml).
#[derive(serde::Deserialize)]
struct OriginSecret {
    value: String,
}

/// Shorter values could be guessed; the template generates 48 characters.
const MIN_ORIGIN_SECRET_CHARS: usize = 32;

impl OriginCheck {
    /// From `ORIGIN_SECRET_ARN` (a secret `{"value": ...}`, read once at cold start), or
    /// `ORIGIN_SECRET` (the value itself, for local runs only); neither: off.
    pub async fn from_env(env: &Env, secrets: &SecretsClient) -> Result<Self, ConfigError> {
        let (name, value) = match (env.get("ORIGIN_SECRET_ARN"), env.get("ORIGIN_SECRET")) {
            (Some(arn), _) => (
                "ORIGIN_SECRET_ARN",
                secrets
                    .json::<OriginSecret>("ORIGIN_SECRET_ARN", arn)
                    .await?
                    .value,
            ),
            (None, Some(value)) => {
                if Environment::from_env(env)? != Environment::Local {
                    return Err(ConfigError::Invalid {
                        name: "ORIGIN_SECRET",
                        reason: "a plain setting is for local runs; use ORIGIN_SECRET_ARN".into(),
                    });
                }
                ("ORIGIN_SECRET", value.to_owned())
            }
            (None, None) => return Ok(Self::Off),
        };
        let value = value.trim();
        if value.chars().count() < MIN_ORIGIN_SECRET_CHARS
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            return Err(ConfigError::Invalid {
                name,
                reason: format!(
                    "the origin secret must be at least {MIN_ORIGIN_SECRET_CHARS} characters a header can carry"
                ),
            });
        }
        Ok(Self::Secret(value.into()))
    }
}

/// The viewer's address as CloudFront saw it, put in the request's extensions by the origin
/// check alone (its field is private to this module): [`RequestMeta`] prefers it to
/// API Gateway's `sourceIp`, which is CloudFront's own address behind CloudFront.
#[derive(Debug, Clone)]
pub struct ViewerAddress(String);

/// A request that carries the origin secret goes on, without it (no handler or log sees it),
/// with the viewer's address in its extensions and the viewer's host as its `Host`; any other
/// is 403.
async fn admit_through_origin(
    axum::extract::State(secret): axum::extract::State<std::sync::Arc<str>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let sent = request.headers_mut().remove(ORIGIN_SECRET_HEADER);
    if !sent.is_some_and(|sent| same_secret(sent.as_bytes(), secret.as_bytes())) {
        return axum::response::IntoResponse::into_response(ApiError::Forbidden(
            "Requests reach this API through its public address only".into(),
        ));
    }
    let viewer = request
        .headers()
        .get(VIEWER_ADDRESS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(viewer_ip);
    if let Some(ip) = viewer {
        request.extensions_mut().insert(ViewerAddress(ip));
    }
    if let Some(host) = request.headers_mut().remove(VIEWER_HOST_HEADER) {
        request.headers_mut().insert(header::HOST, host);
    }
    next.run(request).await
}

/// Compares in time that depends on the length only, so the answer's timing tells nothing of
/// how much of a guess was right.
fn same_secret(sent: &[u8], expected: &[u8]) -> bool {
    sent.len() == expected.len()
        && sent
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The address in a `CloudFront-Viewer-Address` value: `198.51.100.7:46532`,
/// `2001:db8::1:46532` (IPv6 without brackets) or `[2001:db8::1]:46532`; the port is dropped.
/// None for anything that is not an address.
fn viewer_ip(value: &str) -> Option<String> {
    let value = value.trim();
    let host = match value.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']')?.0,
        None => value.rsplit_once(':').map_or(value, |(host, _port)| host),
    };
    host.parse::<std::net::IpAddr>()
        .or_else(|_| value.parse::<std::net::IpAddr>())
        .ok()
        .map(|ip| ip.to_string())
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

/// Serves `router` behind `origin` on the Lambda Runtime API until the process is stopped.
pub async fn run(router: Router, origin: &OriginCheck) -> Result<(), lambda_http::Error> {
    lambda_http::run(service_with(router, origin)).await
}

/// Who asked, from the Lambda and API Gateway contexts: for logs, the audit trail and the
/// login throttle. The address is the viewer's behind CloudFront (see [`ViewerAddress`]).
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
        // Set by the origin check alone, never from a header a client could send directly.
        if let Some(ViewerAddress(ip)) = extensions.get::<ViewerAddress>() {
            meta.source_ip = Some(ip.clone());
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

/// A function's whole life: logging, the cold start (the origin check and `init`, which builds
/// the state, both from the environment, once), then serving `router` behind the check until
/// the process ends. A failed cold start ends the process with one log line naming the problem.
pub async fn start<S, Init, Fut>(
    init: Init,
    router: impl FnOnce(S) -> Router,
) -> Result<(), lambda_http::Error>
where
    Init: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = Result<S, ConfigError>>,
{
    shared::logging::init();
    shared::logging::log_panics_without_their_message();
    let started = std::time::Instant::now();
    let env = Env::from_process();
    let origin = shared::logging::exit_on_init_error(
        OriginCheck::from_env(&env, &SecretsClient::from_env(&env)).await,
    );
    let state = shared::logging::exit_on_init_error(init(env).await);
    shared::logging::cold_start_complete(started);
    run(router(state), &origin).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_viewer_address_is_read_without_its_port() {
        for (header, ip) in [
            ("198.51.100.7:46532", Some("198.51.100.7")),
            ("2001:db8::1:46532", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            (
                "2001:0db8:0000:0000:0000:0000:0000:0001:80",
                Some("2001:db8::1"),
            ),
            ("198.51.100.7", Some("198.51.100.7")),
            ("not-an-address:1", None),
            ("", None),
        ] {
            assert_eq!(viewer_ip(header).as_deref(), ip, "{header:?}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
