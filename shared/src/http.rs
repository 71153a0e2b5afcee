//! The HTTP edge shared by every endpoint group: the Lambda adapter, trailing-slash handling,
//! FastAPI-shaped input errors, and what the API Gateway request context tells about the caller.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::Router;
use lambda_http::RequestExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// Largest request body accepted; API Gateway's own limit is 10 MB, and no route needs more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The service a function runs: its router with FastAPI's 404/405 answers, where `/x` and `/x/`
/// are the same route (the original redirected one to the other; clients call both).
pub fn service(router: Router) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(
        router
            .fallback(|| async { ApiError::NotFound("Not Found".into()) })
            .method_not_allowed_fallback(|| async {
                ApiError::MethodNotAllowed("Method Not Allowed".into())
            })
            .layer(axum::middleware::map_response(protect_answer)),
    )
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
                .take(crate::audit::MAX_USER_AGENT_CHARS)
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
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let document: serde_json::Value = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| json_error("body", e))?;
        // Every body is an object; serde would also read a struct from an array, positionally.
        if !document.is_object() {
            return Err(ApiError::validation(
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
            ));
        }
        Ok(Some(JsonBody(body_value(document)?)))
    }
}

/// A parsed JSON body as `T`: 422 in FastAPI's shape, `loc` the path of the field that breaks
/// a rule (`["body", "identifiers", 0, "system"]`); text holding NUL is refused (PostgreSQL
/// cannot store it).
fn body_value<T: DeserializeOwned>(document: serde_json::Value) -> Result<T, ApiError> {
    value_as(document, &["body".into()]).map_err(|error| ApiError::Validation(vec![error]))
}

/// One value as the domain type `T` (its own rules, as its `Deserialize` checks them), the
/// refusal located under `at` (a FHIR element: `["Patient", "birthDate"]`); text holding NUL is
/// refused. How every interface reads a value it hands to the domain.
pub fn value_as<T: DeserializeOwned>(
    value: serde_json::Value,
    at: &[serde_json::Value],
) -> Result<T, FieldError> {
    if let Some(loc) = find_nul(&value, at.to_vec()) {
        return Err(FieldError {
            loc,
            ..nul_field_error()
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (section, within) = at.split_first().map_or(("", &[][..]), |(first, rest)| {
            (first.as_str().unwrap_or(""), rest)
        });
        let mut path = within.to_vec();
        path.extend(path_segments(e.path()));
        field_error_from_message(section, path, &e.inner().to_string())
    })
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
        parse_urlencoded("body", &bytes).map(FormBody)
    }
}

/// Query-string parameters, with errors as FastAPI's 422 list (`loc: ["query", name]`).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        parse_urlencoded("query", query.as_bytes()).map(QueryParams)
    }
}

fn parse_urlencoded<T: DeserializeOwned>(section: &str, bytes: &[u8]) -> Result<T, ApiError> {
    // PostgreSQL text cannot hold NUL: refuse it here, naming the parameter, not as a 500 later.
    if let Some((key, _)) =
        form_urlencoded::parse(bytes).find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(nul_error(&[section, &key]));
    }
    // A repeated key is a 422 ("duplicate field"), not a silent pick of one value.
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = path_segments(e.path());
        let message = e.inner().to_string();
        ApiError::Validation(vec![field_error_from_message(section, path, &message)])
    })
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

fn nul_field_error() -> FieldError {
    FieldError {
        loc: Vec::new(),
        msg: "Text must not contain NUL (\\u0000) characters".into(),
        kind: "string_unicode".into(),
    }
}

fn nul_error(loc: &[&str]) -> ApiError {
    ApiError::Validation(vec![FieldError {
        loc: loc.iter().map(|s| serde_json::Value::from(*s)).collect(),
        ..nul_field_error()
    }])
}

/// The location of the first string (or key) holding a NUL character.
fn find_nul(
    value: &serde_json::Value,
    at: Vec<serde_json::Value>,
) -> Option<Vec<serde_json::Value>> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(at),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let mut loc = at.clone();
            loc.push(i.into());
            find_nul(item, loc)
        }),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            let mut loc = at.clone();
            loc.push(key.clone().into());
            if key.contains('\0') {
                Some(loc)
            } else {
                find_nul(item, loc)
            }
        }),
        _ => None,
    }
}

fn json_error(section: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::Validation(vec![FieldError {
            loc: vec![section.into(), inner.column().into()],
            msg: "JSON decode error".into(),
            kind: "json_invalid".into(),
        }]);
    }
    let path = path_segments(e.path());
    // serde_json appends " at line 1 column 42"; the location is already in `loc`.
    let message = inner.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    ApiError::Validation(vec![field_error_from_message(section, path, message)])
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some((*index).into()),
            Segment::Map { key } => Some(key.clone().into()),
            Segment::Enum { variant } => Some(variant.clone().into()),
            Segment::Unknown => None,
        })
        .collect()
}

/// Maps serde's messages onto FastAPI's error types; our own newtypes' messages pass through.
fn field_error_from_message(
    section: &str,
    mut path: Vec<serde_json::Value>,
    message: &str,
) -> FieldError {
    let mut loc = vec![serde_json::Value::from(section)];
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path.push(field.into());
        loc.extend(path);
        return FieldError {
            loc,
            msg: "Field required".into(),
            kind: "missing".into(),
        };
    }
    loc.extend(path);
    let kind = if message.starts_with("invalid type") {
        "type_error"
    } else if message.starts_with("unknown variant") || message.starts_with("invalid value") {
        "enum"
    } else if message.contains("invalid digit") || message.contains("invalid float") {
        "int_parsing"
    } else {
        "value_error"
    };
    FieldError {
        loc,
        msg: message.to_owned(),
        kind: kind.into(),
    }
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

/// Parses a UUID path parameter: a malformed one is 422 as in FastAPI, not 404.
pub fn parse_uuid(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::validation(
            &["path", name],
            "Input should be a valid UUID",
            "uuid_parsing",
        )
    })
}

/// For PATCH bodies: a field that is absent stays `None`, a field sent as `null` becomes
/// `Some(None)` (clear it), a value becomes `Some(Some(v))`. Use with `#[serde(default)]`.
pub fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `skip` and `limit` of every list, with FastAPI's 422 for values out of range.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub skip: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

impl Paging {
    /// (offset, limit), checked: skip >= 0, 1 <= limit <= 1000 (default 100).
    pub fn checked(self) -> Result<(i64, i64), ApiError> {
        let skip = self.skip.unwrap_or(0);
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let mut errors = Vec::new();
        if skip < 0 {
            errors.push(FieldError::new(
                &["query", "skip"],
                "Input should be greater than or equal to 0",
                "greater_than_equal",
            ));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.push(FieldError::new(
                &["query", "limit"],
                format!("Input should be between 1 and {MAX_LIMIT}"),
                "less_than_equal",
            ));
        }
        if errors.is_empty() {
            Ok((skip, limit))
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// A function's whole life: logging, the cold start (`init` builds the state from the
/// environment, once), then serving `router` until the process ends. A failed cold start ends
/// the process with one log line naming the problem.
pub async fn start<S, Init, Fut>(
    init: Init,
    router: impl FnOnce(S) -> Router,
) -> Result<(), lambda_http::Error>
where
    Init: FnOnce(crate::config::Env) -> Fut,
    Fut: std::future::Future<Output = Result<S, crate::config::ConfigError>>,
{
    crate::logging::init();
    let started = std::time::Instant::now();
    let state = crate::logging::exit_on_init_error(init(crate::config::Env::from_process()).await);
    crate::logging::cold_start_complete(started);
    run(router(state)).await
}
