//! /api/v1/login/access-token, /login/test-token, /password-recovery/{email},
//! /reset-password/, /password-recovery-html-content/{email}.

mod smart;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::second_factors::{
    self, passkeys, sign_in, FactorError, Method, Methods, SecondFactors,
};
use domain::users::{self, Sessions, User};
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, CurrentUser, Superuser};
use edge::http::{FormBody, JsonBody, RequestMeta};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::audit::Outcome;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::domain::{EmailAddress, Password};
use shared::email::Mailer;
use shared::password::{self, Verified};
use shared::secrets::{AppSecret, SecretsClient};
use shared::throttle;
use shared::tokens::{account_fingerprint, SessionScope, TokenRole};
use shared::trail::{AuditEntry, RouteEvent};
use shared::{ApiError, ApiResult};

#[derive(Clone, FromRef)]
pub struct AuthState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    pub mailer: Arc<Mailer>,
    /// Every password-recovery answer takes at least this long, whether or not an email was
    /// sent, so response time does not reveal which addresses have accounts.
    pub recovery_min_response: Duration,
    /// The SMART on FHIR authorization server.
    pub smart: smart::SmartServer,
    /// Second factors: the TOTP secrets' key, the passkey relying party, the policy.
    pub factors: SecondFactors,
}

impl AuthState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = Arc::new(SecretsClient::from_env(env));
        let secret = AppSecret::load(env, &secrets).await?;
        let auth =
            AuthContext::from_env(env, &secrets, "carevault-auth", TokenRole::IssueAndVerify)
                .await?;
        Ok(Self {
            db: auth.pool.clone(),
            smart: smart::SmartServer::from_env(env, &auth)?,
            factors: SecondFactors::from_env(env, &secrets).await?,
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
const LOGOUT: RouteEvent = RouteEvent::new("auth.logout", USER);
const LOGIN_MFA: RouteEvent = RouteEvent::new("auth.login_second_factor", USER);
const LOGIN_PASSKEY_OPTIONS: RouteEvent = RouteEvent::new("auth.login_passkey_options", USER);

pub fn router(state: AuthState) -> Router {
    let trail = AuditTrail::new(state.db.clone());
    let smart = smart::router(state.smart.clone());
    Router::new()
        .route(
            "/api/v1/login/access-token",
            post(login_access_token.layer(trail.on(LOGIN))),
        )
        .route(
            "/api/v1/login/mfa",
            post(login_second_factor.layer(trail.on(LOGIN_MFA))),
        )
        .route(
            "/api/v1/login/mfa/passkey-options",
            post(login_passkey_options.layer(trail.on(LOGIN_PASSKEY_OPTIONS))),
        )
        .route("/api/v1/logout", post(logout.layer(trail.on(LOGOUT))))
        .route("/api/v1/.well-known/jwks.json", get(jwks))
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
        .merge(smart)
}

/// The OAuth2 password flow's form; its other fields (grant_type, scope, client_id) are ignored.
#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    /// A TOTP or recovery code, for an account with a second factor: the token in one request.
    #[serde(default)]
    mfa_code: Option<String>,
}

/// How a right password ends.
enum SignIn {
    /// The token (a second factor passed, or none was needed).
    Token(String),
    /// The account has a second factor and none (or a wrong one) came: the step to continue.
    SecondFactor {
        detail: &'static str,
        mfa_token: String,
        methods: Methods,
    },
}

fn token_answer(token: &str) -> Response {
    let mut response =
        Json(json!({ "access_token": token, "token_type": "bearer" })).into_response();
    smart::no_store(response.headers_mut());
    response
}

/// 401 with the step's token and the account's methods, `WWW-Authenticate: Bearer`.
fn second_factor_answer(detail: &str, mfa_token: &str, methods: &Methods) -> Response {
    let body = json!({ "detail": detail, "mfa_token": mfa_token, "mfa_methods": methods.names() });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    smart::no_store(response.headers_mut());
    response
}

async fn login_access_token(
    State(state): State<AuthState>,
    audit: AuditEntry,
    meta: RequestMeta,
    FormBody(form): FormBody<LoginForm>,
) -> ApiResult<Response> {
    // Success and failure alike are recorded before the token leaves; never the password.
    audit.attempted_account(&form.username);
    let account = throttle::account_key(&form.username);
    let source_ip = meta.source_ip.unwrap_or_default();
    match login(&state, &audit, &form, &account, &source_ip).await {
        Ok(SignIn::Token(token)) => Ok(token_answer(&token)),
        Ok(SignIn::SecondFactor {
            detail,
            mfa_token,
            methods,
        }) => {
            audit.outcome(Outcome::Denied);
            Ok(second_factor_answer(detail, &mfa_token, &methods))
        }
        Err(error) => {
            // Wrong credentials, an inactive account or a throttled pair: access denied.
            audit.outcome(Outcome::Denied);
            Err(error)
        }
    }
}

async fn login(
    state: &AuthState,
    audit: &AuditEntry,
    form: &LoginForm,
    account: &str,
    source_ip: &str,
) -> ApiResult<SignIn> {
    let pool = &state.db;
    // Refused before the password is even looked at, the right one included.
    throttle::check(pool, account, source_ip).await?;
    let found = users::find_with_hash_by_email(pool, form.username.trim()).await?;
    // An unknown email is verified against a dummy hash: same cost, same answer. Whether the
    // account has a second factor is read only after the right password.
    let verified = password::verify(
        &form.password,
        found.as_ref().map(|(_, hash)| hash.as_str()),
    )
    .await?;
    let (user, stored_hash) = match (found, verified) {
        (Some(found), Verified::Yes | Verified::YesNeedsRehash) => found,
        _ => {
            throttle::failed(pool, account, source_ip).await?;
            return Err(ApiError::BadRequest("Incorrect email or password".into()));
        }
    };
    audit.actor(user.id, &user.email);
    audit.describe(|event| event.resource(Some(user.id)));
    if !user.is_active {
        throttle::succeeded(pool, account, source_ip).await?;
        return Err(ApiError::BadRequest("Inactive user".into()));
    }
    if verified == Verified::YesNeedsRehash {
        // A bcrypt hash from the system we replace (or weaker parameters): upgrade it now that
        // we know the password. Losing a race with a password change is fine.
        if let Ok(password) = Password::parse(form.password.clone()) {
            let new_hash = password::hash(&password).await?;
            users::replace_password_hash(
                pool,
                user.id,
                &stored_hash,
                &new_hash,
                Sessions::Keep,
                None,
            )
            .await?;
        }
    }
    let methods = second_factors::methods(pool, user.id).await?;
    if !methods.any_factor() {
        throttle::succeeded(pool, account, source_ip).await?;
        let scope = if state.factors.required.require(&user) {
            audit.describe(|event| event.details(json!({ "enrolment_only": true })));
            SessionScope::EnrolmentOnly
        } else {
            SessionScope::Full
        };
        let token = state
            .auth
            .tokens
            .issue_access(user.id, user.session_epoch, scope)?;
        return Ok(SignIn::Token(token));
    }
    // The throttle pair is cleared only once the factor passes: a known password must not
    // reset the count of wrong codes.
    let Some(code) = form.mfa_code.as_deref().filter(|c| !c.trim().is_empty()) else {
        audit.describe(|event| event.details(json!({ "second_factor": "required" })));
        let mfa_token = sign_in::begin(pool, user.id, user.session_epoch).await?;
        return Ok(SignIn::SecondFactor {
            detail: "A second factor is required",
            mfa_token,
            methods,
        });
    };
    throttle::claim_code_attempt(pool, account, source_ip).await?;
    let accepted = second_factors::accept_code(pool, &state.factors.sealing, user.id, code).await?;
    let Some(method) = accepted else {
        throttle::code_failed(pool, account, source_ip).await?;
        let method = Method::of_code(code);
        audit.describe(|event| {
            event.details(json!({ "mfa_method": method.as_str(), "second_factor": "failed" }))
        });
        let mfa_token = sign_in::begin(pool, user.id, user.session_epoch).await?;
        return Ok(SignIn::SecondFactor {
            detail: "Incorrect authentication code",
            mfa_token,
            methods,
        });
    };
    throttle::succeeded(pool, account, source_ip).await?;
    audit.describe(|event| event.details(json!({ "mfa_method": method.as_str() })));
    let token = state
        .auth
        .tokens
        .issue_access(user.id, user.session_epoch, SessionScope::Full)?;
    Ok(SignIn::Token(token))
}

/// `POST /login/mfa`'s body: the step's token and a code, or a passkey's assertion.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondStep {
    mfa_token: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    passkey: Option<Box<passkeys::Assertion>>,
}

/// What a second step brings.
enum StepFactor<'a> {
    Code(&'a str),
    Passkey(&'a passkeys::Assertion),
}

fn step_expired() -> ApiError {
    ApiError::Unauthorized("The sign-in step is invalid or expired; sign in again".into())
}

/// The user of a live step, still active and in the session of the step's time (a password
/// change or a factor reset in between ends the step); the user is the actor.
async fn user_of_step(
    state: &AuthState,
    audit: &AuditEntry,
    pending: Option<sign_in::Pending>,
) -> ApiResult<(sign_in::Pending, User)> {
    let pending = pending.ok_or_else(step_expired)?;
    let user = users::find_by_id(&state.db, pending.user_id)
        .await?
        .filter(|u| u.is_active && u.session_epoch == pending.session_epoch)
        .ok_or_else(step_expired)?;
    audit.actor(user.id, &user.email);
    audit.describe(|event| event.resource(Some(user.id)));
    Ok((pending, user))
}

/// `POST /api/v1/login/mfa`: the second step of a sign-in; answers the token.
async fn login_second_factor(
    State(state): State<AuthState>,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<SecondStep>,
) -> ApiResult<Response> {
    let pool = &state.db;
    // A body that is neither a code nor a passkey is refused before it costs an attempt.
    let factor = match (&body.code, &body.passkey) {
        (Some(code), None) => StepFactor::Code(code),
        (None, Some(assertion)) => StepFactor::Passkey(assertion),
        _ => {
            return Err(ApiError::validation(
                &["body"],
                "Send either code or passkey",
                "value_error",
            ))
        }
    };
    // The attempt is claimed (counted) before anything is checked: parallel guesses each count.
    let claimed = sign_in::claim_attempt(pool, &body.mfa_token).await?;
    let (pending, user) = user_of_step(&state, &audit, claimed).await?;
    let account = throttle::account_key(&user.email);
    let source_ip = meta.source_ip.unwrap_or_default();
    throttle::claim_code_attempt(pool, &account, &source_ip).await?;
    let (method, outcome) = match factor {
        StepFactor::Code(code) => {
            let accepted =
                second_factors::accept_code(pool, &state.factors.sealing, user.id, code).await?;
            (
                Method::of_code(code),
                accepted.is_some().then_some(()).ok_or("wrong code"),
            )
        }
        StepFactor::Passkey(assertion) => {
            let Some(challenge) = &pending.passkey_state else {
                return Err(ApiError::BadRequest(
                    "Ask for the passkey options of this sign-in first".into(),
                ));
            };
            let verified =
                passkeys::accept(pool, &state.factors.passkeys, user.id, challenge, assertion)
                    .await;
            let outcome = match verified {
                Ok(()) => Ok(()),
                Err(FactorError::CounterWentBack) => Err("signature counter went backwards"),
                Err(FactorError::PasskeyRefused(_) | FactorError::PasskeyNotFound) => {
                    Err("assertion refused")
                }
                Err(other) => return Err(other.into()),
            };
            (Method::Passkey, outcome)
        }
    };
    if let Err(reason) = outcome {
        throttle::code_failed(pool, &account, &source_ip).await?;
        audit.outcome(Outcome::Denied);
        audit.describe(|event| {
            event.details(json!({ "mfa_method": method.as_str(), "failure": reason }))
        });
        let detail = match method {
            Method::Passkey => "The passkey was not accepted",
            _ => "Incorrect authentication code",
        };
        return Err(ApiError::Unauthorized(detail.into()));
    }
    // Of two requests with one step, one signs in.
    if !sign_in::consume(pool, &body.mfa_token).await? {
        return Err(step_expired());
    }
    throttle::succeeded(pool, &account, &source_ip).await?;
    audit.describe(|event| event.details(json!({ "mfa_method": method.as_str() })));
    let token =
        state
            .auth
            .tokens
            .issue_access(user.id, pending.session_epoch, SessionScope::Full)?;
    Ok(token_answer(&token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToken {
    mfa_token: String,
}

/// `POST /api/v1/login/mfa/passkey-options`: `PublicKeyCredentialRequestOptions` for the step's
/// user; the challenge is kept with the step until the answer.
async fn login_passkey_options(
    State(state): State<AuthState>,
    audit: AuditEntry,
    JsonBody(body): JsonBody<StepToken>,
) -> ApiResult<Response> {
    let live = sign_in::find(&state.db, &body.mfa_token).await?;
    let (_, user) = user_of_step(&state, &audit, live).await?;
    let (options, challenge) =
        passkeys::challenge(&state.db, &state.factors.passkeys, user.id).await?;
    if !sign_in::keep_passkey_state(&state.db, &body.mfa_token, &challenge).await? {
        return Err(step_expired());
    }
    let mut response = Json(options).into_response();
    smart::no_store(response.headers_mut());
    Ok(response)
}

/// Ends every session of the caller: every token issued before answers 401.
async fn logout(
    State(state): State<AuthState>,
    current: CurrentUser,
    audit: AuditEntry,
) -> ApiResult<StatusCode> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    users::end_sessions(&state.auth.pool, &audit, current.0.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify our tokens, as an RFC 7517 JWK Set, for other services.
async fn jwks(State(state): State<AuthState>) -> Response {
    (
        // Keys change only by rotation, which keeps the previous key published for a while.
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.auth.tokens.jwks()),
    )
        .into_response()
}

async fn test_token(user: CurrentUser, audit: AuditEntry) -> Json<User> {
    audit.describe(|event| event.resource(Some(user.0.id)));
    Json(user.0)
}

fn parse_email_path(raw: &str) -> ApiResult<EmailAddress> {
    EmailAddress::parse(raw.to_owned())
        .map_err(|msg| ApiError::validation(&["path", "email"], msg, "value_error"))
}

async fn recover_password(
    State(state): State<AuthState>,
    audit: AuditEntry,
    Path(raw_email): Path<String>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    audit.attempted_account(&raw_email);
    let email = parse_email_path(&raw_email)?;
    let outcome = send_recovery_email(&state, &email).await;
    // The trail says whether an account was found and an email sent; the answer never does.
    match &outcome {
        Ok(Recovery::Sent(user_id)) => audit.describe(|event| event.resource(Some(*user_id))),
        Ok(Recovery::AlreadySent(user_id)) => {
            audit.outcome(Outcome::Denied);
            audit.describe(|event| {
                event
                    .resource(Some(*user_id))
                    .details(json!({ "throttled": true }))
            });
        }
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

/// What a recovery request did.
enum Recovery {
    Sent(uuid::Uuid),
    /// One went to this account within the window: nothing sent now.
    AlreadySent(uuid::Uuid),
    NoAccount,
}

/// Sends the email to an active user with this address, at most once per window.
async fn send_recovery_email(state: &AuthState, email: &EmailAddress) -> ApiResult<Recovery> {
    let Some((user, hash)) = users::find_with_hash_by_email(&state.db, email.as_str()).await?
    else {
        return Ok(Recovery::NoAccount);
    };
    if !user.is_active {
        return Ok(Recovery::NoAccount);
    }
    if !throttle::claim_recovery_email(&state.db, &throttle::account_key(&user.email)).await? {
        return Ok(Recovery::AlreadySent(user.id));
    }
    let token = state.auth.tokens.issue_reset(user.id, &hash, &user.email)?;
    let minutes = state.auth.tokens.reset_ttl.as_secs() / 60;
    let message = state
        .mailer
        .reset_password_email(&user.email, &token, minutes);
    state.mailer.send(&user.email, message).await?;
    Ok(Recovery::Sent(user.id))
}

#[derive(Deserialize)]
struct ResetPassword {
    token: String,
    new_password: Password,
}

async fn reset_password(
    State(state): State<AuthState>,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<ResetPassword>,
) -> ApiResult<Json<Value>> {
    // Invalid tokens are counted per address, like wrong passwords.
    let source_ip = meta.source_ip.unwrap_or_default();
    let counted_as = format!("reset-token@{source_ip}");
    let pool = &state.db;
    throttle::check(pool, &counted_as, &source_ip).await?;
    let signed_for = match state.auth.tokens.verify_reset(&body.token).await {
        Some((user_id, fingerprint)) => users::find_with_hash_by_id(pool, user_id)
            .await?
            .map(|found| (found, fingerprint)),
        None => None,
    };
    if let Some(((user, _), _)) = &signed_for {
        // A token we signed speaks for its user: they are the actor, of a refusal too.
        audit.actor(user.id, &user.email);
        audit.describe(|event| event.resource(Some(user.id)));
    }
    // The token was issued against the hash and email of that time: once either changed, it
    // is spent.
    let Some(((user, current_hash), _)) = signed_for.filter(|((user, hash), fingerprint)| {
        account_fingerprint(hash, &user.email) == *fingerprint
    }) else {
        throttle::failed(pool, &counted_as, &source_ip).await?;
        return Err(ApiError::BadRequest("Invalid token".into()));
    };
    throttle::succeeded(pool, &counted_as, &source_ip).await?;
    if !user.is_active {
        return Err(ApiError::BadRequest("Inactive user".into()));
    }
    let new_hash = password::hash(&body.new_password).await?;
    let (who, event) = audit.for_statement();
    let replaced = users::replace_password_hash(
        pool,
        user.id,
        &current_hash,
        &new_hash,
        Sessions::End,
        Some((&who, &event)),
    )
    .await?;
    if !replaced {
        return Err(ApiError::BadRequest("Invalid token".into()));
    }
    Ok(Json(json!({ "message": "Password updated successfully" })))
}

/// What the superuser preview puts where the reset token goes: shows the email as it is sent,
/// and resets nothing.
pub const PREVIEW_TOKEN: &str = "preview-token-not-valid";

/// The recovery email's HTML for a user, as the template's superuser preview route answers it.
async fn recover_password_html_content(
    State(state): State<AuthState>,
    _superuser: Superuser,
    audit: AuditEntry,
    Path(raw_email): Path<String>,
) -> ApiResult<Response> {
    let email = parse_email_path(&raw_email)?;
    let user = users::find_with_hash_by_email(&state.db, email.as_str())
        .await?
        .map(|(user, _)| user)
        .ok_or_else(|| {
            ApiError::NotFound("The user with this username does not exist in the system.".into())
        })?;
    audit.describe(|event| event.resource(Some(user.id)));
    let minutes = state.auth.tokens.reset_ttl.as_secs() / 60;
    let message = state
        .mailer
        .reset_password_email(&user.email, PREVIEW_TOKEN, minutes);
    let mut response = Html(message.html).into_response();
    if let Ok(subject) = HeaderValue::from_str(&message.subject) {
        response.headers_mut().insert("subject", subject);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
