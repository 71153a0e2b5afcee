//! The public address the API is reached at: FHIR links, SMART's endpoints and token audiences
//! are built on it.

use std::sync::Arc;

use axum::http::{header, HeaderMap, Uri};
use shared::config::Env;

/// The base URL links and `fullUrl`s are built on: `FHIR_BASE_URL` (the API's public address
/// plus `/fhir/R4`, behind a custom domain or CloudFront), else the request's own host.
#[derive(Clone, Debug)]
pub struct PublicBase(Option<Arc<str>>);

/// Where the FHIR API lives below the API's origin.
pub const FHIR_PATH: &str = "/fhir/R4";

impl PublicBase {
    pub fn from_env(env: &Env) -> Self {
        Self(
            env.get("FHIR_BASE_URL")
                .map(|url| Arc::from(url.trim_end_matches('/'))),
        )
    }

    /// The API's own origin and path prefix: the FHIR base without `/fhir/R4`, where the
    /// authorization server's endpoints live (`/api/v1/smart/...`).
    pub fn api_root(&self, headers: &HeaderMap, uri: &Uri) -> String {
        let base = self.of(headers, uri);
        base.strip_suffix(FHIR_PATH).unwrap_or(&base).to_owned()
    }

    /// `https://host/fhir/R4`, without a trailing slash: the request's host (its Host header,
    /// else API Gateway's domain name in the URI). Never `X-Forwarded-Host`: API Gateway passes
    /// the client's own through, and links built on it would send an app's next request (with
    /// its token) wherever the client named; behind a proxy that changes the host, set
    /// `FHIR_BASE_URL`.
    pub fn of(&self, headers: &HeaderMap, uri: &Uri) -> String {
        if let Some(base) = &self.0 {
            return base.to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        let local = host.starts_with("127.0.0.1") || host.starts_with("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "http" || *p == "https")
            .unwrap_or(if local { "http" } else { "https" });
        format!("{scheme}://{host}/fhir/R4")
    }
}
