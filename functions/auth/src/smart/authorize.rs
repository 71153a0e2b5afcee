//! App Launch: the authorize endpoint checks the request and hands it to the console, where the
//! user signs in, reads what the app asks for in words, picks a patient when it needs one, and
//! approves or refuses; the console then sends the browser back to the app with a code or an
//! error. EHR launch: the console binds a patient to a launch value for an app.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use domain::smart::clients::{self, Client, GrantType};
use domain::smart::grants::{self, AuthorizationRequest, Launch};
use domain::smart::scopes::{Context, Perms, ResourceScope, Scope, Scopes};
use edge::auth::CurrentUser;
use edge::http::JsonBody;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::audit::Outcome;
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use super::oauth::Params;
use super::SmartServer;

/// An error the authorize endpoint cannot send back to the app (no client, or a redirect URI
/// or audience it must not trust): a page for the user, never a redirect.
fn error_page(status: StatusCode, text: &str) -> Response {
    let text = html_escape::encode_text(text);
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Authorization failed - CareVault</title></head><body><main>\
         <h1>This app's sign-in request cannot be accepted</h1><p role=\"alert\">{text}</p>\
         <p>Close this window and tell the app's maker.</p></main></body></html>"
    );
    let mut response = (status, Html(page)).into_response();
    super::oauth::no_store(response.headers_mut());
    response
}

/// `redirect_uri` with `pairs` added to its query.
fn with_query(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in pairs {
                    query.append_pair(name, value);
                }
            }
            url.to_string()
        }
        Err(_) => redirect_uri.to_owned(),
    }
}

fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    Redirect::to(&with_query(redirect_uri, &pairs)).into_response()
}

/// `GET|POST /api/v1/smart/authorize`.
pub async fn authorize(
    State(server): State<SmartServer>,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let params = if body.is_empty() {
        Params::of_query(query.as_deref())
    } else {
        Params::of_form(&headers, &body)
    };
    let params = match params {
        Ok(params) => params,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                e.description.as_deref().unwrap_or(""),
            )
        }
    };
    let refuse_page = |status: StatusCode, text: &str, reason: &str| {
        let reason = reason.to_owned();
        audit.describe(|event| event.details(json!({ "reason": reason })));
        error_page(status, text)
    };
    // Until client and redirect URI are known good, nothing is sent anywhere.
    let client = match params.get("client_id").map(Uuid::parse_str) {
        Some(Ok(id)) => match clients::find(&server.db, id).await {
            Ok(Some(client)) => client,
            Ok(None) => {
                return refuse_page(
                    StatusCode::BAD_REQUEST,
                    "Unknown client_id.",
                    "unknown client",
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "authorize: the store failed");
                return error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.");
            }
        },
        _ => {
            return refuse_page(
                StatusCode::BAD_REQUEST,
                "client_id is missing or malformed.",
                "no client",
            )
        }
    };
    audit.describe(|event| event.resource(Some(client.client_id)));
    let Some(redirect_uri) = params
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
        .map(str::to_owned)
    else {
        return refuse_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is missing or not registered for this app.",
            "redirect_uri not registered",
        );
    };
    let endpoints = server.endpoints(&headers, &uri);
    if params.get("aud") != Some(endpoints.fhir_base.as_str()) {
        return refuse_page(
            StatusCode::BAD_REQUEST,
            "aud must be this server's FHIR base URL.",
            "aud is not the FHIR base",
        );
    }
    let state = params.get("state").map(str::to_owned);
    let refuse = |error: &str, description: &str| {
        let (e, d) = (error.to_owned(), description.to_owned());
        audit.describe(|event| event.details(json!({ "error": e, "reason": d })));
        audit.outcome(Outcome::Invalid);
        error_redirect(&redirect_uri, state.as_deref(), error, description)
    };
    if params.get("response_type") != Some("code") {
        return refuse("unsupported_response_type", "response_type must be code");
    }
    if !client.allows(GrantType::AuthorizationCode) {
        return refuse(
            "unauthorized_client",
            "This client is not registered for authorization_code",
        );
    }
    if state.is_none() {
        return refuse("invalid_request", "state is required");
    }
    if params.get("code_challenge_method") != Some("S256") {
        return refuse("invalid_request", "code_challenge_method must be S256");
    }
    let Some(challenge) = params.get("code_challenge").filter(|c| {
        c.len() == 43
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) else {
        return refuse(
            "invalid_request",
            "code_challenge must be the S256 of a code_verifier (43 base64url characters)",
        );
    };
    let scope = Scopes::requested(params.get("scope").unwrap_or(""));
    if scope.is_empty() {
        return refuse("invalid_scope", "scope names nothing this server offers");
    }
    let launch = match params.get("launch") {
        None => None,
        Some(value) => match grants::take_launch(&server.db, client.client_id, value).await {
            Ok(Some(launch)) => Some(launch),
            Ok(None) => return refuse("invalid_request", "launch is unknown, used or expired"),
            Err(_) => return refuse("temporarily_unavailable", "Try again in a moment"),
        },
    };
    let request = AuthorizationRequest {
        client_id: client.client_id,
        redirect_uri: redirect_uri.clone(),
        scope,
        state: state.clone(),
        nonce: params.get("nonce").map(str::to_owned),
        code_challenge: challenge.to_owned(),
        launch,
    };
    match grants::begin(&server.db, &request).await {
        Ok(id) => {
            audit.describe(|event| event.details(json!({ "authorization": id })));
            Redirect::to(&format!("{}/authorize?request={id}", server.console)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "authorize: the store failed");
            refuse("temporarily_unavailable", "Try again in a moment")
        }
    }
}

/// What a scope lets the app do, in words for the consent page.
pub fn in_words(scope: &Scope) -> String {
    match scope {
        Scope::Launch => "Know the patient and user of the launch".into(),
        Scope::LaunchPatient => "Know which patient you pick".into(),
        Scope::OpenId => "Know who you are".into(),
        Scope::FhirUser => "Know your user record".into(),
        Scope::OfflineAccess => "Keep its access after you sign out, until you revoke it".into(),
        Scope::OnlineAccess => "Keep its access while you are signed in".into(),
        Scope::Resource(ResourceScope {
            context,
            resource,
            perms,
            ..
        }) => {
            let mut verbs = Vec::new();
            for (bit, verb) in [
                (Perms::C, "create"),
                (Perms::R, "read"),
                (Perms::U, "update"),
                (Perms::D, "delete"),
                (Perms::S, "search"),
            ] {
                if perms.contains(Perms::from_bits(bit)) {
                    verbs.push(verb);
                }
            }
            let what = match resource {
                None => "all records",
                Some(r) => match r.as_str() {
                    "Patient" => "patient records",
                    "DocumentReference" => "documents and files",
                    "Binary" => "file contents",
                    "AuditEvent" => "the audit trail",
                    _ => "user records",
                },
            };
            let whose = match context {
                Context::Patient => "of the selected patient",
                Context::User => "you can see",
                Context::System => "of every patient",
            };
            let mut text = verbs.join(", ");
            if let Some(first) = text.get(..1) {
                text = first.to_uppercase() + &text[1..];
            }
            format!("{text} {what} {whose}")
        }
    }
}

/// The pending request `id`, for `user` (a launch's request only for its own user).
async fn pending_for(
    server: &SmartServer,
    id: &str,
    user: &domain::users::User,
) -> ApiResult<grants::Pending> {
    let not_found =
        || ApiError::NotFound("This authorization request is unknown or expired".into());
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let pending = grants::pending(&server.db, id)
        .await?
        .ok_or_else(not_found)?;
    if pending.launch.is_some_and(|l| l.user_id != user.id) {
        return Err(ApiError::Forbidden(
            "This launch belongs to another user".into(),
        ));
    }
    Ok(pending)
}

/// What the user would grant: the request cut to the client's registration and the user's role.
fn grantable(pending: &grants::Pending, client: &Client, user: &domain::users::User) -> Scopes {
    pending
        .scope
        .retain(|s| !matches!(s, Scope::Resource(r) if r.context == Context::System))
        .grant(&client.scope, |resource| {
            edge::smart::role_perms(user, resource)
        })
}

fn needs_patient(granted: &Scopes, pending: &grants::Pending) -> bool {
    pending.launch.is_none()
        && (granted.contains(Scope::LaunchPatient) || granted.has_context(Context::Patient))
}

/// `GET /api/v1/smart/authorizations/{id}`: the consent page's content.
pub async fn show(
    State(server): State<SmartServer>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let pending = pending_for(&server, &id, &user).await?;
    let client = clients::find(&server.db, pending.client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("The app is no longer registered".into()))?;
    let granted = grantable(&pending, &client, &user);
    let redirect_origin = url::Url::parse(&pending.redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    Ok(Json(json!({
        "id": pending.id,
        "client_id": client.client_id,
        "client_name": client.client_name,
        "redirect_origin": redirect_origin,
        "requested_scope": pending.scope.to_string(),
        "scope": granted.to_string(),
        "access": granted.iter().map(|s| json!({ "scope": s.to_string(), "text": in_words(s) })).collect::<Vec<_>>(),
        "needs_patient": needs_patient(&granted, &pending),
        "launch_patient": pending.launch.map(|l| l.patient_id),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    approve: bool,
    #[serde(default)]
    patient_id: Option<Uuid>,
}

/// `POST /api/v1/smart/authorizations/{id}`: the user's answer; `{redirect_to}` is where the
/// console sends the browser (the app's redirect URI with a code, or `access_denied`).
pub async fn decide(
    State(server): State<SmartServer>,
    CurrentUser(user): CurrentUser,
    audit: AuditEntry,
    Path(id): Path<String>,
    JsonBody(decision): JsonBody<Decision>,
) -> ApiResult<Json<Value>> {
    let pending = pending_for(&server, &id, &user).await?;
    audit.describe(|event| event.resource(Some(pending.client_id)));
    let state_pair = |pairs: &mut Vec<(&str, String)>| {
        if let Some(state) = &pending.state {
            pairs.push(("state", state.clone()));
        }
    };
    if !decision.approve {
        grants::discard(&server.db, pending.id).await?;
        audit.outcome(Outcome::Denied);
        let mut pairs = vec![
            ("error", "access_denied".to_owned()),
            ("error_description", "The user refused".to_owned()),
        ];
        state_pair(&mut pairs);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        return Ok(Json(
            json!({ "redirect_to": with_query(&pending.redirect_uri, &pairs) }),
        ));
    }
    let client = clients::find(&server.db, pending.client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("The app is no longer registered".into()))?;
    let granted = grantable(&pending, &client, &user);
    let patient = match pending.launch {
        Some(Launch { patient_id, .. }) => Some(patient_id),
        None if needs_patient(&granted, &pending) => {
            let id = decision.patient_id.ok_or_else(|| {
                ApiError::validation(
                    &["body", "patient_id"],
                    "Pick the patient the app may see",
                    "missing",
                )
            })?;
            if !grants::patient_exists(&server.db, id).await? {
                return Err(ApiError::NotFound("Patient not found".into()));
            }
            Some(id)
        }
        None => None,
    };
    audit.describe(|event| {
        event
            .patient(patient)
            .details(json!({ "scope": granted.to_string() }))
    });
    let code = grants::approve(&server.db, &audit, pending.id, &user, &granted, patient)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("This authorization request is unknown or expired".into())
        })?;
    let mut pairs = vec![("code", code)];
    state_pair(&mut pairs);
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Ok(Json(
        json!({ "redirect_to": with_query(&pending.redirect_uri, &pairs) }),
    ))
}

/// `GET /api/v1/smart/apps`: the apps a signed-in user can open from a patient's page.
pub async fn launchable_apps(
    State(server): State<SmartServer>,
    _user: CurrentUser,
) -> ApiResult<Json<Value>> {
    let apps: Vec<Value> = clients::list(&server.db)
        .await?
        .iter()
        .filter(|c| c.launch_url.is_some())
        .map(|c| json!({ "client_id": c.client_id, "client_name": c.client_name, "launch_url": c.launch_url }))
        .collect();
    Ok(Json(json!({ "data": apps, "count": apps.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    client_id: Uuid,
    patient_id: Uuid,
}

/// `POST /api/v1/smart/launch`: an EHR launch of app `client_id` for `patient_id`; answers the
/// URL to open: `launch_url?iss=<FHIR base>&launch=<opaque>`.
pub async fn launch(
    State(server): State<SmartServer>,
    CurrentUser(user): CurrentUser,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    JsonBody(request): JsonBody<LaunchRequest>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| {
        event
            .resource(Some(request.client_id))
            .patient(Some(request.patient_id))
    });
    let client = clients::find(&server.db, request.client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("App not found".into()))?;
    let launch_url = client
        .launch_url
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("This app has no launch URL".into()))?;
    if !grants::patient_exists(&server.db, request.patient_id).await? {
        return Err(ApiError::NotFound("Patient not found".into()));
    }
    let value = grants::new_launch(
        &server.db,
        &audit,
        client.client_id,
        Launch {
            user_id: user.id,
            patient_id: request.patient_id,
        },
    )
    .await?;
    let endpoints = server.endpoints(&headers, &uri);
    let url = with_query(
        launch_url,
        &[("iss", &endpoints.fhir_base), ("launch", &value)],
    );
    Ok(Json(json!({ "url": url })))
}
