//! /api/v1/login/access-token, /login/test-token, /password-recovery/{email},
//! /reset-password/, /password-recovery-html-content/{email}.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::audit::{Audit, Event, Outcome};
use shared::auth::{password_fingerprint, AuthContext, CurrentUser};
use shared::config::{ConfigError, Env};
use shared::domain::{EmailAddress, Password};
use shared::email::Mailer;
use shared::http::{FormBody, JsonBody};
use shared::password::{self, Verified};
use shared::secrets::SecretsClient;
use shared::users::{self, User};
use shared::{ApiError, ApiResult};

#[derive(Clone)]
pub struct AuthState {
    pub auth: AuthContext,
    pub mailer: Arc<Mailer>,
    /// Every password-recovery answer takes at least this long, whether or not an email was
    /// sent, so response time does not reveal which addresses have accounts.
    pub recovery_min_response: Duration,
}

impl FromRef<AuthState> for AuthContext {
    fn from_ref(state: &AuthState) -> Self {
        state.auth.clone()
    }
}

impl AuthState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = SecretsClient::from_env(env);
        let secret = shared::auth::AppSecret::load(env, &secrets).await?;
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

pub fn router(state: AuthState) -> Router {
    Router::new()
        .route("/api/v1/login/access-token", post(login_access_token))
        .route("/api/v1/login/test-token", post(test_token))
        .route("/api/v1/password-recovery/{email}", post(recover_password))
        .route("/api/v1/reset-password", post(reset_password))
        .route(
            "/api/v1/password-recovery-html-content/{email}",
            post(recover_password_html_content),
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
    let audit = audit.claiming(form.username.trim());
    let result = login(&state, &form).await;
    // Success and failure alike, before the token leaves; never the password.
    let event = Event::new("auth.login", "user");
    let (audit, event) = match &result {
        Ok((user, _)) => (
            Audit {
                actor_id: Some(user.id),
                ..audit
            },
            event.resource(Some(user.id)),
        ),
        // Wrong credentials or an inactive account: access denied.
        Err(_) => (audit, event.outcome(Outcome::Denied)),
    };
    if !matches!(
        result,
        Err(ApiError::Unavailable(_) | ApiError::Internal(_))
    ) {
        audit.record(&state.auth.pool, &event).await?;
    }
    result.map(|(_, token)| Json(json!({ "access_token": token, "token_type": "bearer" })))
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

async fn test_token(user: CurrentUser) -> Json<User> {
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
    let audit = audit.claiming(&raw_email);
    let event = Event::new("auth.password_reset_request", "user");
    let email = match parse_email_path(&raw_email) {
        Ok(email) => email,
        Err(error) => return audit.refused(&state.auth.pool, event, Err(error)).await,
    };
    let outcome = send_recovery_email(&state, &email).await;
    // The trail says whether an account was found; the answer never does.
    let event = match &outcome {
        Ok(Some(user_id)) => event.resource(Some(*user_id)),
        _ => event.outcome(Outcome::NotFound),
    };
    audit.record(&state.auth.pool, &event).await?;
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
    let subject = state
        .auth
        .tokens
        .verify_reset(&body.token)
        .map(|(id, _)| id);
    let audit = Audit {
        actor_id: subject,
        ..audit
    };
    let event = Event::new("auth.password_reset", "user").resource(subject);
    let result = reset(&state, &audit, &event, body).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn reset(
    state: &AuthState,
    audit: &Audit,
    event: &Event,
    body: ResetPassword,
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
    // The token was issued against the hash of that time: once the password changed, it is spent.
    if password_fingerprint(&current_hash) != fingerprint {
        return Err(invalid());
    }
    if !user.is_active {
        return Err(ApiError::BadRequest("Inactive user".into()));
    }
    let new_hash = password::hash(&body.new_password).await?;
    let replaced = users::replace_password_hash(
        &state.auth.pool,
        user.id,
        &current_hash,
        &new_hash,
        Some((audit, event)),
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
    current: CurrentUser,
    Path(raw_email): Path<String>,
) -> ApiResult<Response> {
    current.require_superuser()?;
    let email = parse_email_path(&raw_email)?;
    let (user, hash) = users::find_with_hash_by_email(&state.auth.pool, email.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("The user with this username does not exist in the system.".into())
        })?;
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
