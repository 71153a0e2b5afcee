//! The OAuth edge: RFC 6749's error answers, form bodies read as RFC 6749 reads them (each
//! parameter at most once), and the client authentication of the token, revocation and
//! introspection endpoints (none with PKCE, client_secret_basic, private_key_jwt).

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use domain::smart::clients::{self, AuthMethod, Client};
use serde_json::json;
use shared::trail::AuditEntry;
use shared::StoreError;
use uuid::Uuid;

use super::assertion;
use super::SmartServer;

/// An RFC 6749 error (section 5.2): `{"error": ...}`, never cached. `invalid_client` says
/// nothing of which check failed.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: Option<String>,
    /// For the trail: why, in words that hold no secret.
    pub reason: String,
    /// Answer `WWW-Authenticate: Basic` (the client tried HTTP Basic).
    pub basic_challenge: bool,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            reason: description.clone(),
            description: Some(description),
            basic_challenge: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub fn invalid_grant(reason: impl Into<String>) -> Self {
        let mut error = Self::new("invalid_grant", "The grant is invalid, expired or revoked");
        error.reason = reason.into();
        error
    }

    /// 401 `invalid_client`, its reason kept for the trail only.
    pub fn invalid_client(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: None,
            reason: reason.into(),
            basic_challenge: false,
        }
    }

    /// Records the refusal's reason on the request's audit event.
    pub fn audited(self, audit: &AuditEntry) -> Self {
        let (error, reason) = (self.error, self.reason.clone());
        audit.describe(|event| event.details(json!({ "error": error, "reason": reason })));
        self
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        let unavailable = matches!(error, StoreError::Unavailable(_));
        tracing::error!(%error, "the authorization server's store failed");
        Self {
            status: if unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            error: if unavailable {
                "temporarily_unavailable"
            } else {
                "server_error"
            },
            description: None,
            reason: "store".into(),
            basic_challenge: false,
        }
    }
}

impl From<shared::ApiError> for OAuthError {
    fn from(error: shared::ApiError) -> Self {
        tracing::error!(%error, "the authorization server failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: None,
            reason: "internal".into(),
            basic_challenge: false,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(description) = self.description {
            body["error_description"] = json!(description);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"carevault\""),
            );
        }
        response
    }
}

/// RFC 6749 5.1: token answers are never cached.
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A form body's parameters: `application/x-www-form-urlencoded`, each at most once (RFC 6749
/// 3.2), empty values as absent.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn of_form(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "Send the parameters as application/x-www-form-urlencoded",
            ));
        }
        Self::of_pairs(form_urlencoded::parse(body))
    }

    pub fn of_query(query: Option<&str>) -> Result<Self, OAuthError> {
        Self::of_pairs(form_urlencoded::parse(query.unwrap_or("").as_bytes()))
    }

    fn of_pairs<'a>(
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            if value.len() > 16 * 1024 {
                return Err(OAuthError::invalid_request(format!("{name} is too long")));
            }
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::invalid_request(format!(
                    "{name} appears more than once"
                )));
            }
        }
        Ok(Self(params))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Who the client proved to be, and how.
pub struct Authenticated {
    pub client: Client,
    pub method: AuthMethod,
}

async fn client_named(server: &SmartServer, raw: &str) -> Result<Option<Client>, OAuthError> {
    match Uuid::parse_str(raw) {
        Ok(id) => Ok(clients::find(&server.db, id).await?),
        Err(_) => Ok(None),
    }
}

/// The client of a token, revocation or introspection request, authenticated by the one
/// method it registered: HTTP Basic with its secret, a signed assertion, or (a public client)
/// its `client_id` alone. An assertion's `aud` names `endpoint` or the token endpoint.
pub async fn authenticate(
    server: &SmartServer,
    headers: &HeaderMap,
    params: &Params,
    endpoint: &str,
    token_endpoint: &str,
) -> Result<Authenticated, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim().to_owned());
    let named = params.get("client_id");
    // RFC 6749 2.3: one authentication method per request.
    if basic.is_some() && params.get("client_assertion_type").is_some() {
        return Err(OAuthError::invalid_request(
            "Authenticate with HTTP Basic or a client assertion, not both",
        ));
    }
    let authenticated = if let Some(credentials) = basic {
        let refuse = |reason: &str| OAuthError {
            basic_challenge: true,
            ..OAuthError::invalid_client(reason)
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| refuse("Basic credentials are not base64"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| refuse("Basic credentials without a colon"))?;
        // RFC 6749 2.3.1: both parts are form-encoded first.
        let decode = |text: &str| -> String {
            form_urlencoded::parse(format!("v={text}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let (id, secret) = (decode(id), decode(secret));
        let client = client_named(server, &id)
            .await?
            .ok_or_else(|| refuse("unknown client"))?;
        if client.auth_method != AuthMethod::ClientSecretBasic {
            return Err(refuse("the client does not authenticate with a secret"));
        }
        if !client.secret_matches(&secret) {
            return Err(refuse("wrong client secret"));
        }
        Authenticated {
            client,
            method: AuthMethod::ClientSecretBasic,
        }
    } else if let Some(kind) = params.get("client_assertion_type") {
        if kind != JWT_BEARER {
            return Err(OAuthError::invalid_client(
                "client_assertion_type is not jwt-bearer",
            ));
        }
        let assertion = params
            .get("client_assertion")
            .ok_or_else(|| OAuthError::invalid_client("no client_assertion"))?;
        let client = assertion::verify(server, assertion, &[endpoint, token_endpoint]).await?;
        Authenticated {
            client,
            method: AuthMethod::PrivateKeyJwt,
        }
    } else {
        let id = named.ok_or_else(|| OAuthError::invalid_client("no client authentication"))?;
        let client = client_named(server, id)
            .await?
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        if client.auth_method != AuthMethod::None {
            return Err(OAuthError::invalid_client(
                "a confidential client sent no credentials",
            ));
        }
        Authenticated {
            client,
            method: AuthMethod::None,
        }
    };
    if named.is_some_and(|id| id != authenticated.client.client_id.to_string()) {
        return Err(OAuthError::invalid_client(
            "client_id names another client than the credentials",
        ));
    }
    Ok(authenticated)
}
