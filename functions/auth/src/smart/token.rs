//! The token endpoint (authorization code with PKCE, refresh with rotation, client credentials
//! for SMART Backend Services), revocation (RFC 7009) and introspection (RFC 7662).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use domain::smart::clients::{AuthMethod, Client, GrantType};
use domain::smart::grants::{self, CodeCheck, Exchange, NewGrant, Refresh};
use domain::smart::scopes::{Context, Perms, Scope, Scopes};
use domain::users::{self, User};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::audit::Outcome;
use shared::tokens::SmartGrantOf;
use shared::trail::AuditEntry;
use uuid::Uuid;

use super::oauth::{self, Authenticated, OAuthError, Params};
use super::SmartServer;

/// A Backend Services token lives at most 5 minutes.
const SYSTEM_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// How long refresh tokens keep a grant alive: `offline_access` until revoked or this long,
/// `online_access` for a working day.
const OFFLINE_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
const ONLINE_LIFETIME: Duration = Duration::from_secs(12 * 3600);

fn answer(body: Value) -> Response {
    let mut response = Json(body).into_response();
    oauth::no_store(response.headers_mut());
    response
}

/// `POST /api/v1/smart/token`.
pub async fn token(
    State(server): State<SmartServer>,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let result = issue(&server, &audit, &headers, &uri, &body).await;
    result.map_err(|e| e.audited(&audit))
}

async fn issue(
    server: &SmartServer,
    audit: &AuditEntry,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let params = Params::of_form(headers, body)?;
    let endpoints = server.endpoints(headers, uri);
    let grant_type = params.required("grant_type")?.to_owned();
    audit.describe(|event| event.details(json!({ "grant_type": grant_type })));
    let Authenticated { client, method } =
        oauth::authenticate(server, headers, &params, &endpoints.token, &endpoints.token).await?;
    audit.describe(|event| {
        event
            .resource(Some(client.client_id))
            .details(json!({ "client_id": client.client_id, "auth_method": method.as_str() }))
    });
    let grant = GrantType::parse(&grant_type).ok_or_else(|| {
        OAuthError::new(
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or client_credentials",
        )
    })?;
    if !client.allows(grant) {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!("This client is not registered for {grant_type}"),
        ));
    }
    let issued = match grant {
        GrantType::AuthorizationCode => {
            exchange_code(server, audit, &endpoints, &client, &params).await?
        }
        GrantType::RefreshToken => refresh(server, audit, &endpoints, &client, &params).await?,
        GrantType::ClientCredentials => {
            if method != AuthMethod::PrivateKeyJwt {
                return Err(OAuthError::invalid_client(
                    "client_credentials without an assertion",
                ));
            }
            client_credentials(server, audit, &endpoints, &client, &params).await?
        }
    };
    Ok(answer(issued))
}

/// RFC 7636's S256: BASE64URL(SHA256(verifier)) == challenge, the verifier 43 to 128
/// unreserved characters.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed
        && base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier))
            == challenge
}

async fn exchange_code(
    server: &SmartServer,
    audit: &AuditEntry,
    endpoints: &super::Endpoints,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let code = params.required("code")?;
    let redirect_uri = params.required("redirect_uri")?;
    let verifier = params.get("code_verifier");
    let verifier_matches = |challenge: &str| verifier.is_some_and(|v| pkce_matches(v, challenge));
    let refreshable = client.allows(GrantType::RefreshToken);
    let access_ttl = server.access_ttl;
    let exchanged = grants::exchange(
        &server.db,
        audit,
        code,
        CodeCheck {
            client_id: client.client_id,
            redirect_uri,
            verifier_matches: &verifier_matches,
        },
        |granted| {
            let offline = granted.contains(Scope::OfflineAccess);
            let online = granted.contains(Scope::OnlineAccess);
            match (refreshable, offline, online) {
                (true, true, _) => (OFFLINE_LIFETIME, true),
                (true, false, true) => (ONLINE_LIFETIME, true),
                _ => (access_ttl, false),
            }
        },
    )
    .await?;
    let (grant_id, refresh_token, user, granted, patient, nonce) = match exchanged {
        Exchange::Granted {
            grant_id,
            refresh_token,
            user,
            granted,
            patient,
            nonce,
        } => (grant_id, refresh_token, user, granted, patient, nonce),
        Exchange::Reused => {
            return Err(OAuthError::invalid_grant(
                "the code was used before: what it issued is revoked",
            ))
        }
        Exchange::Unknown => return Err(OAuthError::invalid_grant("unknown code")),
        Exchange::Refused(reason) => return Err(OAuthError::invalid_grant(reason)),
    };
    audit.actor(user.id, &user.email);
    audit.describe(|event| {
        event
            .patient(patient)
            .details(json!({ "scope": granted.to_string() }))
    });
    let mut body = user_tokens(
        server,
        endpoints,
        client,
        &user,
        UserGrant {
            id: grant_id,
            scope: &granted,
            patient,
            nonce: nonce.as_deref(),
        },
    )?;
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    Ok(body)
}

/// A user's grant as its tokens are issued: the scope may be narrower than the grant's.
struct UserGrant<'a> {
    id: Uuid,
    scope: &'a Scopes,
    patient: Option<Uuid>,
    nonce: Option<&'a str>,
}

/// The access token (and ID token, for `openid`) of a user's grant.
fn user_tokens(
    server: &SmartServer,
    endpoints: &super::Endpoints,
    client: &Client,
    user: &User,
    grant: UserGrant<'_>,
) -> Result<Value, OAuthError> {
    let ttl = server.access_ttl;
    let granted = grant.scope;
    let (access_token, claims) = server.tokens.issue_smart(
        &SmartGrantOf {
            fhir_base: &endpoints.fhir_base,
            subject: &user.id.to_string(),
            client_id: client.client_id,
            grant: grant.id,
            scope: &grant.scope.to_string(),
            patient: grant.patient,
        },
        ttl,
    )?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": granted.to_string(),
    });
    if let Some(patient) = grant.patient {
        body["patient"] = json!(patient);
        body["need_patient_banner"] = json!(true);
    }
    if granted.contains(Scope::OpenId) {
        let mut id_claims = json!({
            "iss": endpoints.fhir_base,
            "sub": user.id,
            "aud": client.client_id,
            "iat": claims.iat,
            "exp": claims.exp,
        });
        if granted.contains(Scope::FhirUser) {
            id_claims["fhirUser"] =
                json!(format!("{}/Practitioner/{}", endpoints.fhir_base, user.id));
        }
        if let Some(nonce) = grant.nonce {
            id_claims["nonce"] = json!(nonce);
        }
        body["id_token"] = json!(server.tokens.sign_id_token(&id_claims)?);
    }
    Ok(body)
}

async fn refresh(
    server: &SmartServer,
    audit: &AuditEntry,
    endpoints: &super::Endpoints,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let token = params.required("refresh_token")?;
    let (grant, refresh_token) =
        match grants::refresh(&server.db, audit, client.client_id, token).await? {
            Refresh::Rotated {
                grant,
                refresh_token,
            } => (grant, refresh_token),
            Refresh::Reused => {
                audit.outcome(Outcome::Denied);
                return Err(OAuthError::invalid_grant(
                    "a spent refresh token came back: its whole family is revoked",
                ));
            }
            Refresh::Invalid => {
                return Err(OAuthError::invalid_grant(
                    "unknown or revoked refresh token",
                ))
            }
        };
    let user = grant
        .user
        .as_ref()
        .ok_or_else(|| OAuthError::invalid_grant("a system grant has no refresh token"))?;
    audit.actor(user.id, &user.email);
    // A narrower scope may be asked for; never a wider one.
    let scope = match params.get("scope") {
        None => grant.scope.clone(),
        Some(asked) => {
            let asked = Scopes::requested(asked);
            if asked.iter().any(|s| !grant.scope.contains(*s)) {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "A refresh may narrow the grant, never widen it",
                ));
            }
            asked
        }
    };
    audit.describe(|event| {
        event
            .details(json!({ "scope": scope.to_string() }))
            .patient(grant.patient)
    });
    let mut body = user_tokens(
        server,
        endpoints,
        client,
        user,
        UserGrant {
            id: grant.id,
            scope: &scope,
            patient: grant.patient,
            nonce: None,
        },
    )?;
    body["refresh_token"] = json!(refresh_token);
    Ok(body)
}

async fn client_credentials(
    server: &SmartServer,
    audit: &AuditEntry,
    endpoints: &super::Endpoints,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let asked =
        Scopes::requested(params.required("scope").map_err(|_| {
            OAuthError::new("invalid_scope", "scope is required: system/<Type>.rs")
        })?);
    // system/ scopes only, read and search only.
    let granted = asked
        .retain(|s| matches!(s, Scope::Resource(r) if r.context == Context::System))
        .grant(&client.scope, |_| Perms::READ);
    if granted.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "None of the requested scopes is registered for this client",
        ));
    }
    let ttl = SYSTEM_TOKEN_LIFETIME.min(server.access_ttl);
    audit.describe(|event| event.details(json!({ "scope": granted.to_string() })));
    let grant_id = grants::create(
        &server.db,
        audit,
        NewGrant {
            client_id: client.client_id,
            user: None,
            scope: &granted,
            patient: None,
            lifetime: ttl,
            refreshable: false,
        },
    )
    .await?;
    let (access_token, _) = server.tokens.issue_smart(
        &SmartGrantOf {
            fhir_base: &endpoints.fhir_base,
            subject: &client.client_id.to_string(),
            client_id: client.client_id,
            grant: grant_id,
            scope: &granted.to_string(),
            patient: None,
        },
        ttl,
    )?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": granted.to_string(),
    }))
}

/// `POST /api/v1/smart/revoke` (RFC 7009): the grant behind a refresh or access token of the
/// authenticated client is revoked, every token of it with it. 200 whatever the token was.
pub async fn revoke(
    State(server): State<SmartServer>,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let result = async {
        let params = Params::of_form(&headers, &body)?;
        let endpoints = server.endpoints(&headers, &uri);
        let Authenticated { client, .. } = oauth::authenticate(
            &server,
            &headers,
            &params,
            &endpoints.revocation,
            &endpoints.token,
        )
        .await?;
        audit.describe(|event| event.resource(Some(client.client_id)));
        let token = params.required("token")?;
        let mut revoked =
            grants::revoke_by_refresh_token(&server.db, client.client_id, token).await?;
        if !revoked {
            if let Some(claims) = server
                .tokens
                .verify_smart(token, &endpoints.fhir_base)
                .await
            {
                if claims.client_id == client.client_id.to_string() {
                    revoked = grants::revoke(&server.db, client.client_id, claims.gid).await?;
                }
            }
        }
        audit.describe(|event| event.details(json!({ "revoked": revoked })));
        Ok(answer(json!({})))
    }
    .await;
    result.map_err(|e: OAuthError| e.audited(&audit))
}

/// `POST /api/v1/smart/introspect` (RFC 7662): for a confidential client (its own tokens) or a
/// superuser's bearer token (any).
pub async fn introspect(
    State(server): State<SmartServer>,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let result = async {
        let params = Params::of_form(&headers, &body)?;
        let endpoints = server.endpoints(&headers, &uri);
        let own_client = match bearer_superuser(&server, &headers, &audit).await? {
            Some(()) => None,
            None => {
                let authenticated = oauth::authenticate(
                    &server,
                    &headers,
                    &params,
                    &endpoints.introspection,
                    &endpoints.token,
                )
                .await?;
                if authenticated.method == AuthMethod::None {
                    return Err(OAuthError::invalid_client(
                        "a public client cannot introspect",
                    ));
                }
                Some(authenticated.client.client_id)
            }
        };
        let token = params.required("token")?;
        let inactive = || answer(json!({ "active": false }));
        let mine = |client_id: Uuid| own_client.is_none_or(|own| own == client_id);
        if let Some(claims) = server
            .tokens
            .verify_smart(token, &endpoints.fhir_base)
            .await
        {
            let live = grants::live(&server.db, claims.gid).await?;
            let client_id = Uuid::parse_str(&claims.client_id).unwrap_or_default();
            return Ok(match live {
                Some(grant) if grant.client_id == client_id && mine(client_id) => {
                    let mut body = json!({
                        "active": true,
                        "token_type": "Bearer",
                        "scope": claims.scope,
                        "client_id": claims.client_id,
                        "sub": claims.sub,
                        "aud": claims.aud,
                        "iss": claims.iss,
                        "exp": claims.exp,
                        "iat": claims.iat,
                        "jti": claims.jti,
                    });
                    if let Some(patient) = claims.patient {
                        body["patient"] = json!(patient);
                    }
                    answer(body)
                }
                _ => inactive(),
            });
        }
        Ok(match grants::by_refresh_token(&server.db, token).await? {
            Some(grant) if mine(grant.client_id) => {
                let mut body = json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": grant.scope.to_string(),
                    "client_id": grant.client_id,
                    "exp": grant.expires_at.timestamp(),
                });
                if let Some(user) = &grant.user {
                    body["sub"] = json!(user.id);
                }
                if let Some(patient) = grant.patient {
                    body["patient"] = json!(patient);
                }
                answer(body)
            }
            _ => inactive(),
        })
    }
    .await;
    result.map_err(|e: OAuthError| e.audited(&audit))
}

/// A superuser's session token in `Authorization: Bearer` (introspection): Some when it is
/// one, None without a bearer token, `invalid_client` for any other bearer.
async fn bearer_superuser(
    server: &SmartServer,
    headers: &HeaderMap,
    audit: &AuditEntry,
) -> Result<Option<()>, OAuthError> {
    let Some(token) = edge::auth::bearer_of(headers) else {
        return Ok(None);
    };
    let refuse = || OAuthError::invalid_client("the bearer token is not a superuser's session");
    let session = server
        .tokens
        .verify_access(token)
        .await
        .filter(|s| s.scope == shared::tokens::SessionScope::Full)
        .ok_or_else(refuse)?;
    let user = users::find_by_id(&server.db, session.user_id)
        .await?
        .filter(|u| u.session_epoch == session.epoch && u.is_active)
        .ok_or_else(refuse)?;
    audit.actor(user.id, &user.email);
    if !user.is_superuser {
        return Err(refuse());
    }
    Ok(Some(()))
}
