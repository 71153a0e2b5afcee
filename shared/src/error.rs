//! One error type for every handler, answered in FastAPI's shape: `{"detail": "..."}`,
//! or `{"detail": [{loc, msg, type}]}` with 422 for validation errors.

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

/// One entry of a 422 answer, as FastAPI writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// `loc` is the path to the value: `["body", "email"]`, `["query", "limit"]`, `["path", "id"]`.
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| json!(s)).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    /// A query parameter refused as such (FHIR names it in its OperationOutcome's location).
    #[error("{detail}")]
    BadParameter { parameter: String, detail: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Throttled: the client may try again after `retry_after`.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after: std::time::Duration,
    },
    /// A dependency (database, S3) cannot be reached: the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged with its cause, answered without it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![FieldError::new(loc, msg, kind)])
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) | Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told, apart from validation errors' list: the message, never the
    /// cause of our own failure.
    pub fn client_text(&self) -> String {
        match self {
            Self::Internal(_) => "Internal server error".into(),
            Self::Unavailable(_) => "Service temporarily unavailable, please retry".into(),
            other => other.to_string(),
        }
    }
}

/// The answer of an error (here, not in the HTTP edge, because the orphan rule puts a trait's
/// impl with its type or its trait; the domain builds this crate without axum).
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    /// FastAPI's `{"detail": ...}`. The error itself rides along in the response's extensions,
    /// so an interface with another error shape (FHIR's OperationOutcome) renders it from the
    /// typed error, not from these bytes.
    fn into_response(self) -> axum::response::Response {
        use axum::http::{header, HeaderValue};
        let status = self.status();
        let body = match &self {
            Self::Validation(errors) => json!({ "detail": errors }),
            Self::Internal(cause) => {
                // The cause goes to the log (inside the invocation's span, so with its request id),
                // never to the client.
                tracing::error!(error = %cause, "internal error");
                json!({ "detail": self.client_text() })
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                json!({ "detail": self.client_text() })
            }
            other => json!({ "detail": other.client_text() }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::TooManyRequests { retry_after, .. } = &self {
            if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// The database's own failures, classified by what they mean to the caller (the domain's
/// operations return them inside their typed errors; each interface answers them).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot serve us now (pool exhausted, connection lost, statement timeout,
    /// server shutting down or out of resources): the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Text PostgreSQL cannot store (NUL, invalid sequences): the client's input, not our bug.
    #[error("text contains characters that cannot be stored")]
    Unstorable,
    /// Anything else: a bug or a broken invariant, logged with its cause.
    #[error("{0}")]
    Failed(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // Every pool failure (wait timeout, connect timeout, refused connection) means the database
        // cannot serve us now: 503, so clients retry instead of reporting a bug.
        Self::Unavailable(format!("database pool: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && is_io(&e) {
            return Self::Unavailable(format!("database connection: {e}"));
        }
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if matches!(code, "22021" | "22P05") {
                return Self::Unstorable;
            }
            // The statement timeout (57014): the database is too busy to answer in time. Server
            // shutting down, a failover in progress (57P, 08), out of disk, memory or
            // connections (53): it cannot serve us now.
            // A deadlock or serialization failure (class 40) was rolled back: a retry succeeds.
            if code == "57014"
                || code.starts_with("40")
                || code.starts_with("57P")
                || code.starts_with("08")
                || code.starts_with("53")
            {
                return Self::Unavailable(format!("database: {e}"));
            }
        }
        let detail = e
            .as_db_error()
            .map(|db| format!("{} ({})", db.message(), db.code().code()));
        Self::Failed(format!(
            "database: {}",
            detail.unwrap_or_else(|| e.to_string())
        ))
    }
}

/// The JSON API's answer to a store failure (FHIR maps `ApiError` to an OperationOutcome).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::Unstorable => Self::validation(
                &["body"],
                "Text contains characters that cannot be stored",
                "string_unicode",
            ),
            StoreError::Failed(cause) => Self::Internal(cause),
        }
    }
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

pub type ApiResult<T> = Result<T, ApiError>;
