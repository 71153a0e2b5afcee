//! /api/v1/login/access-token, /login/test-token, /password-recovery/{email},
//! /reset-password/, /password-recovery-html-content/{email}.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::audit::Outcome;
use shared::auth::{AuthContext, CurrentUser, Superuser};
use shared::config::{ConfigError, Env};
use shared::domain::{EmailAddress, Password};
use shared::email::Mailer;
use shared::http::{FormBody, JsonBody};
use shared::password::{self, Verified};
use shared::secrets::{AppSecret, SecretsClient};
use shared::tokens::password_fingerprint;
use shared::trail::{Audit, AuditTrail, RouteEvent};
use shared::users::{self, User};
use shared::{ApiError, ApiResult};

#[derive(Clone, FromRef)]
pub struct AuthState {
    pub auth: AuthContext,
    pub mailer: Arc<Mailer>,
    /// Every password-recovery answer takes at least this long, whether or not an email was
    /// sent, so response time does not reveal which addresses have accounts.
    pub recovery_min_response: Duration,
}

impl AuthState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = SecretsClient::from_env(env);
        let secret = AppSecret::load(env, &secrets).await?;
        let auth = AuthContext::with_secret(env, &secrets, &secret, "carevault-auth").await?;
        Ok(Self {
            auth,
            mailer: Arc::new(Mailer::from_env(env, &secret)?),
            recovery_min_response: env.millis_in(
                "PASSWORD_RECOVERY_MIN_RESPONSE_MS",
                1_500,
                0..=10_000,
            )?,
        })
    }
}

const USER: &str = "user";
const LOGIN: RouteEvent = RouteEvent::new("auth.login", USER);
const TEST_TOKEN: RouteEvent = RouteEvent::new("auth.test_token", USER);
const RESET_REQUEST: RouteEvent = RouteEvent::new("auth.password_reset_request", USER);
const RESET: RouteEvent = RouteEvent::new("auth.password_reset", USER);
const RESET_PREVIEW: RouteEvent = RouteEvent::new("auth.password_reset_preview", USER);

pub fn router(state: AuthState) -> Router {
    let trail = AuditTrail::new(state.auth.pool.clone());
    Router::new()
        .route(
            "/api/v1/login/access-token",
            post(login_access_token.layer(trail.on(LOGIN))),
        )
        .route(
            "/api/v1/login/test-token",
            post(test_token.layer(trail.on(TEST_TOKEN))),
        )
        .route(
            "/api/v1/password-recovery/{email}",
            post(recover_password.layer(trail.on(RESET_REQUEST))),
        )
        .route(
            "/api/v1/reset-password",
            post(reset_password.layer(trail.on(RESET))),
        )
        .route(
            "/api/v1/password-recovery-html-content/{email}",
            post(recover_password_html_content.layer(trail.on(RESET_PREVIEW))),
        )
        .with_state(state)
}

/// The OAuth2 password flow's form; its other fields (grant_type, scope, client_id) are ignored.
#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_access_token(
    State(state): State<AuthState>,
    audit: Audit,
    FormBody(form): FormBody<LoginForm>,
) -> ApiResult<Json<Value>> {
    // Success and failure alike are recorded before the token leaves; never the password.
    audit.attempted_account(&form.username);
    match login(&state, &form).await {
        Ok((user, token)) => {
            audit.actor(user.id, &user.email);
            audit.describe(|event| event.resource(Some(user.id)));
            Ok(Json(
                json!({ "access_token": token, "token_type": "bearer" }),
            ))
        }
        Err(error) => {
            // Wrong credentials or an inactive account: access denied.
            audit.outcome(Outcome::Denied);
            Err(error)
        }
    }
}

async fn login(state: &AuthState, form: &LoginForm) -> ApiResult<(User, String)> {
    let incorrect = || ApiError::BadRequest("Incorrect email or password".into());
    let found = users::find_with_hash_by_email(&state.auth.pool, form.username.trim()).await?;
    // An unknown email is verified against a dummy hash: same cost, same answer.
    let verified = password::verify(
        &form.password,
        found.as_ref().map(|(_, hash)| hash.as_str()),
    )
    .await?;
    let (user, stored_hash) = match (found, verified) {
        (Some(found), Verified::Yes | Verified::YesNeedsRehash) => found,
        _ => return Err(incorrect()),
    };
    if !user.is_active {
        return Err(ApiError::BadRequest("Inactive user".into()));
    }
    if verified == Verified::YesNeedsRehash {
        // A bcrypt hash from the system we replace (or weaker parameters): upgrade it now that
        // we know the password. Losing a race with a password change is fine.
        if let Ok(password) = Password::parse(form.password.clone()) {
            let new_hash = password::hash(&password).await?;
            users::replace_password_hash(&state.auth.pool, user.id, &stored_hash, &new_hash, None)
                .await?;
        }
    }
    let token = state.auth.tokens.issue_access(user.id)?;
    Ok((user, token))
}

async fn test_token(user: CurrentUser, audit: Audit) -> Json<User> {
    audit.describe(|event| event.resource(Some(user.0.id)));
    Json(user.0)
}

fn parse_email_path(raw: &str) -> ApiResult<EmailAddress> {
    EmailAddress::parse(raw.to_owned())
        .map_err(|msg| ApiError::validation(&["path", "email"], msg, "value_error"))
}

async fn recover_password(
    State(state): State<AuthState>,
    audit: Audit,
    Path(raw_email): Path<String>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    audit.attempted_account(&raw_email);
    let email = parse_email_path(&raw_email)?;
    let outcome = send_recovery_email(&state, &email).await;
    // The trail says whether an account was found; the answer never does.
    match &outcome {
        Ok(Some(user_id)) => audit.describe(|event| event.resource(Some(*user_id))),
        _ => audit.outcome(Outcome::NotFound),
    }
    tokio::time::sleep_until((started + state.recovery_min_response).into()).await;
    if let Err(error) = outcome {
        // Logged, not answered: the answer must not depend on whether the account exists.
        tracing::warn!(%error, "password recovery email not sent");
    }
    Ok(Json(json!({
        "message": "If that email is registered, we sent a password recovery link"
    })))
}

/// Sends the email to an active user with this address; their id, or None when there is none.
async fn send_recovery_email(
    state: &AuthState,
    email: &EmailAddress,
) -> ApiResult<Option<uuid::Uuid>> {
    let Some((user, hash)) =
        users::find_with_hash_by_email(&state.auth.pool, email.as_str()).await?
    else {
        return Ok(None);
    };
    if !user.is_active {
        return Ok(None);
    }
    let token = state.auth.tokens.issue_reset(user.id, &hash)?;
    let minutes = state.auth.tokens.reset_ttl.as_secs() / 60;
    let message = state
        .mailer
        .reset_password_email(&user.email, &token, minutes);
    state.mailer.send(&user.email, message).await?;
    Ok(Some(user.id))
}

#[derive(Deserialize)]
struct ResetPassword {
    token: String,
    new_password: Password,
}

async fn reset_password(
    State(state): State<AuthState>,
    audit: Audit,
    JsonBody(body): JsonBody<ResetPassword>,
) -> ApiResult<Json<Value>> {
    let invalid = || ApiError::BadRequest("Invalid token".into());
    let (user_id, fingerprint) = state
        .auth
        .tokens
        .verify_reset(&body.token)
        .ok_or_else(invalid)?;
    let (user, current_hash) = users::find_with_hash_by_id(&state.auth.pool, user_id)
        .await?
        .ok_or_else(invalid)?;
    // A valid token speaks for its user: they are the actor, of a refusal too.
    audit.actor(user.id, &user.email);
    audit.describe(|event| event.resource(Some(user.id)));
    // The token was issued against the hash of that time: once the password changed, it is spent.
    if password_fingerprint(&current_hash) != fingerprint {
        return Err(invalid());
    }
    if !user.is_active {
        return Err(ApiError::BadRequest("Inactive user".into()));
    }
    let new_hash = password::hash(&body.new_password).await?;
    let (who, event) = audit.for_statement();
    let replaced = users::replace_password_hash(
        &state.auth.pool,
        user.id,
        &current_hash,
        &new_hash,
        Some((&who, &event)),
    )
    .await?;
    if !replaced {
        return Err(invalid());
    }
    Ok(Json(json!({ "message": "Password updated successfully" })))
}

/// The recovery email's HTML for a user, as the template's superuser preview route answers it.
async fn recover_password_html_content(
    State(state): State<AuthState>,
    _superuser: Superuser,
    audit: Audit,
    Path(raw_email): Path<String>,
) -> ApiResult<Response> {
    let email = parse_email_path(&raw_email)?;
    let (user, hash) = users::find_with_hash_by_email(&state.auth.pool, email.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("The user with this username does not exist in the system.".into())
        })?;
    audit.describe(|event| event.resource(Some(user.id)));
    let token = state.auth.tokens.issue_reset(user.id, &hash)?;
    let minutes = state.auth.tokens.reset_ttl.as_secs() / 60;
    let message = state
        .mailer
        .reset_password_email(&user.email, &token, minutes);
    let mut response = Html(message.html).into_response();
    if let Ok(subject) = HeaderValue::from_str(&message.subject) {
        response.headers_mut().insert("subject", subject);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
