//! /api/v1/users: the users' own account (me), user management for superusers, open signup.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use domain::second_factors::{self, passkeys, recovery, totp, FactorError, SecondFactors};
use domain::users::{self, NewUser, Sessions, User, UserChanges, UserError};
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, Authorized, CurrentUser, Superuser};
use edge::http::{JsonBody, QueryParams, RequestMeta};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::domain::{EmailAddress, FullName, Password, Role};
use shared::email::Mailer;
use shared::input::{parse_uuid, present, Paging};
use shared::password::{self, Verified};
use shared::secrets::{AppSecret, SecretsClient};
use shared::throttle;
use shared::tokens::{SessionScope, TokenRole};
use shared::trail::{AuditEntry, RouteEvent};
use shared::{ApiError, ApiResult};
use uuid::Uuid;

#[derive(Clone, FromRef)]
pub struct UsersState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    pub mailer: Arc<Mailer>,
    /// USERS_OPEN_REGISTRATION: may strangers create accounts (POST /users/signup)? Off by default.
    pub open_registration: bool,
    /// Second factors: the TOTP secrets' key, the passkey relying party, the policy.
    pub factors: SecondFactors,
}

impl UsersState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = Arc::new(SecretsClient::from_env(env));
        let secret = AppSecret::load(env, &secrets).await?;
        // Issues the set-your-password link of a new account.
        let auth =
            AuthContext::from_env(env, &secrets, "carevault-users", TokenRole::IssueAndVerify)
                .await?;
        Ok(Self {
            db: auth.pool.clone(),
            auth,
            mailer: Arc::new(Mailer::from_env(env, &secret)?),
            open_registration: env.bool_or("USERS_OPEN_REGISTRATION", false)?,
            factors: SecondFactors::from_env(env, &secrets).await?,
        })
    }
}

const USER: &str = "user";
const USER_LIST: RouteEvent = RouteEvent::new("user.list", USER);
const USER_CREATE: RouteEvent = RouteEvent::new("user.create", USER);
const USER_SIGNUP: RouteEvent = RouteEvent::new("user.signup", USER);
/// The `me` routes: the resource is the caller, known once the token is.
const ME_READ: RouteEvent = RouteEvent::new("user.read", USER);
const ME_UPDATE: RouteEvent = RouteEvent::new("user.update", USER);
const ME_DELETE: RouteEvent = RouteEvent::new("user.delete", USER);
const ME_PASSWORD: RouteEvent = RouteEvent::new("user.password_change", USER);
const USER_READ: RouteEvent = RouteEvent::new("user.read", USER).resource_from("id");
const USER_UPDATE: RouteEvent = RouteEvent::new("user.update", USER).resource_from("id");
const USER_DELETE: RouteEvent = RouteEvent::new("user.delete", USER).resource_from("id");
const MFA_READ: RouteEvent = RouteEvent::new("user.mfa_read", USER);
const TOTP_BEGIN: RouteEvent = RouteEvent::new("user.mfa_totp_begin", USER);
const TOTP_ENABLE: RouteEvent = RouteEvent::new("user.mfa_totp_enable", USER);
const TOTP_REMOVE: RouteEvent = RouteEvent::new("user.mfa_totp_remove", USER);
const RECOVERY_CODES: RouteEvent = RouteEvent::new("user.mfa_recovery_codes", USER);
const PASSKEY_OPTIONS: RouteEvent = RouteEvent::new("user.mfa_passkey_options", USER);
const PASSKEY_ADD: RouteEvent = RouteEvent::new("user.mfa_passkey_add", USER);
const PASSKEY_REMOVE: RouteEvent = RouteEvent::new("user.mfa_passkey_remove", USER);
const MFA_RESET: RouteEvent = RouteEvent::new("user.mfa_reset", USER).resource_from("id");

pub fn router(state: UsersState) -> Router {
    let trail = AuditTrail::new(state.db.clone());
    Router::new()
        .route(
            "/api/v1/users",
            get(list_users.layer(trail.on(USER_LIST)))
                .post(create_user.layer(trail.on(USER_CREATE))),
        )
        .route(
            "/api/v1/users/me",
            get(read_me.layer(trail.on(ME_READ)))
                .patch(update_me.layer(trail.on(ME_UPDATE)))
                .delete(delete_me.layer(trail.on(ME_DELETE))),
        )
        .route(
            "/api/v1/users/me/password",
            patch(update_my_password.layer(trail.on(ME_PASSWORD))),
        )
        .route(
            "/api/v1/users/me/mfa",
            get(mfa_status.layer(trail.on(MFA_READ))),
        )
        .route(
            "/api/v1/users/me/mfa/totp",
            post(totp_begin.layer(trail.on(TOTP_BEGIN)))
                .delete(totp_remove.layer(trail.on(TOTP_REMOVE))),
        )
        .route(
            "/api/v1/users/me/mfa/totp/confirm",
            post(totp_confirm.layer(trail.on(TOTP_ENABLE))),
        )
        .route(
            "/api/v1/users/me/mfa/recovery-codes",
            post(recovery_codes.layer(trail.on(RECOVERY_CODES))),
        )
        .route(
            "/api/v1/users/me/mfa/passkeys/options",
            post(passkey_options.layer(trail.on(PASSKEY_OPTIONS))),
        )
        .route(
            "/api/v1/users/me/mfa/passkeys",
            post(passkey_add.layer(trail.on(PASSKEY_ADD))),
        )
        .route(
            "/api/v1/users/me/mfa/passkeys/{id}",
            delete(passkey_remove.layer(trail.on(PASSKEY_REMOVE))),
        )
        .route(
            "/api/v1/users/{id}/mfa",
            delete(mfa_reset.layer(trail.on(MFA_RESET))),
        )
        .route(
            "/api/v1/users/signup",
            post(signup.layer(trail.on(USER_SIGNUP))),
        )
        .route(
            "/api/v1/users/{id}",
            get(read_user.layer(trail.on(USER_READ)))
                .patch(update_user.layer(trail.on(USER_UPDATE)))
                .delete(delete_user.layer(trail.on(USER_DELETE))),
        )
        .with_state(state)
}

#[derive(Serialize)]
struct UserList {
    data: Vec<User>,
    count: i64,
}

fn message(text: &str) -> Json<Value> {
    Json(json!({ "message": text }))
}

async fn list_users(
    State(state): State<UsersState>,
    _superuser: Superuser,
    audit: AuditEntry,
    QueryParams(paging): QueryParams<Paging>,
) -> ApiResult<Json<UserList>> {
    let (skip, limit) = paging.checked()?;
    let (data, count) = users::list(&state.db, skip, limit).await?;
    // Which accounts were shown.
    audit.describe(|event| {
        event.details(json!({ "user_ids": data.iter().map(|u| u.id).collect::<Vec<_>>() }))
    });
    Ok(Json(UserList { data, count }))
}

#[derive(Deserialize)]
struct UserCreate {
    email: EmailAddress,
    password: Password,
    #[serde(default)]
    full_name: Option<FullName>,
    #[serde(default = "yes")]
    is_active: bool,
    #[serde(default)]
    is_superuser: bool,
    #[serde(default)]
    role: Option<Role>,
}

fn yes() -> bool {
    true
}

async fn create_user(
    State(state): State<UsersState>,
    _superuser: Superuser,
    audit: AuditEntry,
    JsonBody(body): JsonBody<UserCreate>,
) -> ApiResult<Json<User>> {
    let role = body.role.unwrap_or(Role::Clinician);
    audit.describe(|event| {
        event.details(json!({ "role": role.as_str(), "is_superuser": body.is_superuser }))
    });
    let new = NewUser {
        email: &body.email,
        password: &body.password,
        full_name: body.full_name.as_ref(),
        is_active: body.is_active,
        is_superuser: body.is_superuser,
        role,
    };
    let user = users::create(&state.db, &audit, new)
        .await
        .map_err(|e| taken_as(e, "The user with this email already exists in the system."))?;
    if state.mailer.enabled() {
        if let Err(error) = send_new_account_email(&state, &user).await {
            // The account exists; the superuser can trigger password recovery later.
            tracing::warn!(%error, user_id = %user.id, "new account email not sent");
        }
    }
    Ok(Json(user))
}

async fn send_new_account_email(state: &UsersState, user: &User) -> ApiResult<()> {
    let (_, hash) = users::find_with_hash_by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished after insert"))?;
    let token = state.auth.tokens.issue_reset(user.id, &hash, &user.email)?;
    let minutes = state.auth.tokens.reset_ttl.as_secs() / 60;
    let email = state.mailer.new_account_email(&user.email, &token, minutes);
    state.mailer.send(&user.email, email).await
}

#[derive(Deserialize)]
struct UserRegister {
    email: EmailAddress,
    password: Password,
    #[serde(default)]
    full_name: Option<FullName>,
}

async fn signup(
    State(state): State<UsersState>,
    audit: AuditEntry,
    JsonBody(body): JsonBody<UserRegister>,
) -> ApiResult<Json<User>> {
    audit.attempted_account(body.email.as_str());
    if !state.open_registration {
        return Err(ApiError::Forbidden(
            "Open user registration is forbidden on this server".into(),
        ));
    }
    let new = NewUser {
        email: &body.email,
        password: &body.password,
        full_name: body.full_name.as_ref(),
        // A stranger's account waits for a superuser to activate it.
        is_active: false,
        is_superuser: false,
        role: Role::Clinician,
    };
    let user = users::create(&state.db, &audit, new)
        .await
        .map_err(|e| taken_as(e, "The user with this email already exists in the system"))?;
    Ok(Json(user))
}

async fn read_me(current: CurrentUser, audit: AuditEntry) -> Json<User> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    Json(current.0)
}

/// A superuser's changes to an account; `None` leaves a field as it is, `full_name: null`
/// clears the name.
#[derive(Deserialize)]
struct UserUpdate {
    #[serde(default)]
    email: Option<EmailAddress>,
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<FullName>>,
    #[serde(default)]
    password: Option<Password>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    is_superuser: Option<bool>,
    #[serde(default)]
    role: Option<Role>,
    /// Required when a superuser changes their own email or password here, as at
    /// `/users/me`: a stolen session must not take the account over.
    #[serde(default)]
    current_password: Option<String>,
}

impl From<UserUpdate> for UserChanges {
    fn from(update: UserUpdate) -> Self {
        Self {
            email: update.email,
            full_name: update.full_name,
            password: update.password,
            is_active: update.is_active,
            is_superuser: update.is_superuser,
            role: update.role,
        }
    }
}

/// Applies `changes` to account `id` (`users::update`); a moved email is announced to the
/// old address.
async fn apply_changes(
    state: &UsersState,
    audit: &AuditEntry,
    id: Uuid,
    changes: UserChanges,
) -> Result<User, UserError> {
    let changed = users::update(&state.db, audit, id, changes).await?;
    if let Some(old) = &changed.previous_email {
        let notice = state.mailer.email_changed_email(old);
        if let Err(error) = state.mailer.send(old, notice).await {
            // The change stands; the log says the notice did not go.
            tracing::warn!(%error, user_id = %changed.user.id, "email change notice not sent");
        }
    }
    Ok(changed.user)
}

/// The JSON API's words for a taken email at this route (the replaced system's differ
/// between routes); the rest as `UserError` answers.
fn taken_as(error: UserError, text: &str) -> ApiError {
    match error {
        UserError::EmailTaken => ApiError::BadRequest(text.into()),
        other => other.into(),
    }
}

#[derive(Deserialize)]
struct UserUpdateMe {
    #[serde(default)]
    email: Option<EmailAddress>,
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<FullName>>,
    /// Required with `email`: a stolen session must not move the account to another address.
    #[serde(default)]
    current_password: Option<String>,
}

async fn update_me(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<UserUpdateMe>,
) -> ApiResult<Json<User>> {
    if body.email.is_some() {
        let Some(password) = &body.current_password else {
            return Err(ApiError::validation(
                &["body", "current_password"],
                "Field required to change the email",
                "missing",
            ));
        };
        check_current_password(&state, &current.0, password, &meta).await?;
    }
    // Only the name and the email: a user cannot change their own role or powers.
    let changes = UserChanges {
        email: body.email,
        full_name: body.full_name,
        ..Default::default()
    };
    let user = apply_changes(&state, &audit, current.0.id, changes).await?;
    Ok(Json(user))
}

/// The caller's password, checked and throttled like a login (a stolen session guessing it
/// meets the same limits); 400 when wrong. Returns the stored hash.
async fn check_current_password(
    state: &UsersState,
    current: &User,
    password: &str,
    meta: &RequestMeta,
) -> ApiResult<String> {
    let stored_hash = verify_current_password(state, current, password, meta).await?;
    let source_ip = meta.source_ip.clone().unwrap_or_default();
    throttle::succeeded(
        &state.db,
        &throttle::account_key(&current.email),
        &source_ip,
    )
    .await?;
    Ok(stored_hash)
}

/// `check_current_password` without clearing the throttle's count on success: a code is
/// checked next, and only both passing clears it.
async fn verify_current_password(
    state: &UsersState,
    current: &User,
    password: &str,
    meta: &RequestMeta,
) -> ApiResult<String> {
    let pool = &state.db;
    let account = throttle::account_key(&current.email);
    let source_ip = meta.source_ip.clone().unwrap_or_default();
    throttle::check(pool, &account, &source_ip).await?;
    let (_, stored_hash) = users::find_with_hash_by_id(pool, current.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    if password::verify(password, Some(&stored_hash)).await? == Verified::No {
        throttle::failed(pool, &account, &source_ip).await?;
        return Err(ApiError::BadRequest("Incorrect password".into()));
    }
    Ok(stored_hash)
}

#[derive(Deserialize)]
struct UpdatePassword {
    current_password: String,
    new_password: Password,
}

async fn update_my_password(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<UpdatePassword>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    let stored_hash =
        check_current_password(&state, &current.0, &body.current_password, &meta).await?;
    if body.current_password == body.new_password.expose() {
        return Err(ApiError::BadRequest(
            "New password cannot be the same as the current one".into(),
        ));
    }
    let new_hash = password::hash(&body.new_password).await?;
    let (who, event) = audit.for_statement();
    let replaced = users::replace_password_hash(
        &state.db,
        current.0.id,
        &stored_hash,
        &new_hash,
        Sessions::End,
        Some((&who, &event)),
    )
    .await?;
    if !replaced {
        return Err(ApiError::Conflict(
            "The password was changed meanwhile; try again".into(),
        ));
    }
    Ok(message("Password updated successfully"))
}

async fn delete_me(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    if current.0.is_superuser {
        return Err(ApiError::Forbidden(
            "Super users are not allowed to delete themselves".into(),
        ));
    }
    match users::delete(&state.db, &audit, current.0.id).await {
        // Gone meanwhile (another request deleted it): deleted all the same.
        Ok(()) | Err(UserError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(message("User deleted successfully"))
}

async fn read_user(
    State(state): State<UsersState>,
    current: CurrentUser,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<User>> {
    let id = parse_uuid("user_id", &raw_id)?;
    if id == current.0.id {
        return Ok(Json(current.0));
    }
    current.require_superuser()?;
    let user = users::find_by_id(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    Ok(Json(user))
}

async fn update_user(
    State(state): State<UsersState>,
    Authorized { user: current, .. }: Superuser,
    audit: AuditEntry,
    meta: RequestMeta,
    Path(raw_id): Path<String>,
    JsonBody(changes): JsonBody<UserUpdate>,
) -> ApiResult<Json<User>> {
    let id = parse_uuid("user_id", &raw_id)?;
    // The last administrator must not lock everyone out by a slip of their own.
    if id == current.id && (changes.is_active == Some(false) || changes.is_superuser == Some(false))
    {
        return Err(ApiError::Forbidden(
            "Super users are not allowed to deactivate or demote themselves".into(),
        ));
    }
    if id == current.id && (changes.email.is_some() || changes.password.is_some()) {
        let Some(password) = &changes.current_password else {
            return Err(ApiError::validation(
                &["body", "current_password"],
                "Field required to change your own email or password",
                "missing",
            ));
        };
        check_current_password(&state, &current, password, &meta).await?;
    }
    let user = apply_changes(&state, &audit, id, changes.into())
        .await
        .map_err(|e| match e {
            UserError::NotFound => {
                ApiError::NotFound("The user with this id does not exist in the system".into())
            }
            other => other.into(),
        })?;
    Ok(Json(user))
}

async fn delete_user(
    State(state): State<UsersState>,
    Authorized { user: current, .. }: Superuser,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid("user_id", &raw_id)?;
    if id == current.id {
        return Err(ApiError::Forbidden(
            "Super users are not allowed to delete themselves".into(),
        ));
    }
    users::delete(&state.db, &audit, id).await?;
    Ok(message("User deleted successfully"))
}

/// A fresh token for the caller after a factor change ended every session of theirs: full, or
/// limited to enrolment when their role requires a factor and none is left.
fn fresh_session(
    state: &UsersState,
    user: &User,
    epoch: i32,
    factor_left: bool,
) -> ApiResult<Value> {
    let scope = if state.factors.required.require(user) && !factor_left {
        SessionScope::EnrolmentOnly
    } else {
        SessionScope::Full
    };
    let token = state.auth.tokens.issue_access(user.id, epoch, scope)?;
    Ok(json!({ "access_token": token, "token_type": "bearer" }))
}

/// The answer to a factor's removal: the caller's fresh session and `message`.
fn removal_answer(
    state: &UsersState,
    user: &User,
    removed: second_factors::Removed,
    message: &str,
) -> ApiResult<Json<Value>> {
    let mut answer = fresh_session(state, user, removed.session_epoch, removed.factor_left)?;
    answer["message"] = json!(message);
    Ok(Json(answer))
}

/// `GET /users/me/mfa`.
async fn mfa_status(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    let status = second_factors::status(&state.db, current.0.id).await?;
    let mut body = serde_json::to_value(&status).map_err(ApiError::internal)?;
    body["required"] = json!(state.factors.required.require(&current.0));
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordOnly {
    current_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordAndCode {
    current_password: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeOnly {
    code: String,
}

/// The caller's password, then one of their codes (TOTP or recovery), each throttled like a
/// login; 400 when either is wrong.
async fn check_password_and_code(
    state: &UsersState,
    user: &User,
    body: &PasswordAndCode,
    meta: &RequestMeta,
    audit: &AuditEntry,
) -> ApiResult<()> {
    verify_current_password(state, user, &body.current_password, meta).await?;
    let account = throttle::account_key(&user.email);
    let source_ip = meta.source_ip.clone().unwrap_or_default();
    throttle::claim_code_attempt(&state.db, &account, &source_ip).await?;
    let accepted =
        second_factors::accept_code(&state.db, &state.factors.sealing, user.id, &body.code).await?;
    let method = second_factors::Method::of_code(&body.code);
    audit.describe(|event| event.details(json!({ "mfa_method": method.as_str() })));
    if accepted.is_none() {
        throttle::code_failed(&state.db, &account, &source_ip).await?;
        return Err(FactorError::WrongCode.into());
    }
    throttle::succeeded(&state.db, &account, &source_ip).await?;
    Ok(())
}

/// `POST /users/me/mfa/totp`: a new secret, pending until confirmed.
async fn totp_begin(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<PasswordOnly>,
) -> ApiResult<Json<totp::Enrolment>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    check_current_password(&state, &current.0, &body.current_password, &meta).await?;
    let enrolment = totp::begin(&state.db, &state.factors.sealing, &current.0).await?;
    Ok(Json(enrolment))
}

/// `POST /users/me/mfa/totp/confirm`: enables TOTP; answers the recovery codes (shown this
/// once) and the caller's fresh token (every other session ended).
async fn totp_confirm(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<CodeOnly>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| {
        event
            .resource(Some(current.0.id))
            .details(json!({ "method": "totp" }))
    });
    let account = throttle::account_key(&current.0.email);
    let source_ip = meta.source_ip.clone().unwrap_or_default();
    throttle::claim_code_attempt(&state.db, &account, &source_ip).await?;
    let enabled = match totp::confirm(
        &state.db,
        &state.factors.sealing,
        &audit,
        &current.0,
        &body.code,
    )
    .await
    {
        Err(FactorError::WrongCode) => {
            throttle::code_failed(&state.db, &account, &source_ip).await?;
            return Err(FactorError::WrongCode.into());
        }
        other => other?,
    };
    throttle::succeeded(&state.db, &account, &source_ip).await?;
    let mut answer = fresh_session(&state, &current.0, enabled.session_epoch, true)?;
    answer["recovery_codes"] = json!(enabled.recovery_codes);
    Ok(Json(answer))
}

/// `DELETE /users/me/mfa/totp`: with the password and a code.
async fn totp_remove(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<PasswordAndCode>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    if !second_factors::methods(&state.db, current.0.id).await?.totp {
        return Err(FactorError::TotpNotEnabled.into());
    }
    check_password_and_code(&state, &current.0, &body, &meta, &audit).await?;
    let removed = totp::remove(&state.db, &audit, current.0.id).await?;
    removal_answer(&state, &current.0, removed, "TOTP removed")
}

/// `POST /users/me/mfa/recovery-codes`: ten new codes replace the old ones.
async fn recovery_codes(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<PasswordAndCode>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    if !second_factors::methods(&state.db, current.0.id)
        .await?
        .any_factor()
    {
        return Err(ApiError::BadRequest(
            "Enable a second factor before recovery codes".into(),
        ));
    }
    check_password_and_code(&state, &current.0, &body, &meta, &audit).await?;
    let codes = recovery::regenerate(&state.db, &audit, current.0.id).await?;
    Ok(Json(json!({ "recovery_codes": codes })))
}

/// `POST /users/me/mfa/passkeys/options`: `PublicKeyCredentialCreationOptions`.
async fn passkey_options(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    JsonBody(body): JsonBody<PasswordOnly>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    check_current_password(&state, &current.0, &body.current_password, &meta).await?;
    let options =
        passkeys::begin_registration(&state.db, &state.factors.passkeys, &current.0).await?;
    Ok(Json(options))
}

/// A passkey's name as its owner gives it: 1 to 100 characters, no control characters.
struct PasskeyName(String);

impl<'de> Deserialize<'de> for PasskeyName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 100 {
            return Err(serde::de::Error::custom(
                "a passkey's name is 1 to 100 characters",
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(
                "a passkey's name holds no control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPasskey {
    name: PasskeyName,
    credential: Box<passkeys::RegisterPublicKeyCredential>,
}

/// `POST /users/me/mfa/passkeys`: registers the browser's answer to the options.
async fn passkey_add(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    JsonBody(body): JsonBody<NewPasskey>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| {
        event
            .resource(Some(current.0.id))
            .details(json!({ "method": "passkey" }))
    });
    let registered = passkeys::register(
        &state.db,
        &state.factors.passkeys,
        &audit,
        &current.0,
        &body.name.0,
        &body.credential,
    )
    .await?;
    let mut answer = fresh_session(&state, &current.0, registered.session_epoch, true)?;
    answer["passkey"] = serde_json::to_value(&registered.passkey).map_err(ApiError::internal)?;
    if let Some(codes) = registered.recovery_codes {
        answer["recovery_codes"] = json!(codes);
    }
    Ok(Json(answer))
}

/// `DELETE /users/me/mfa/passkeys/{id}`: with the password.
async fn passkey_remove(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: AuditEntry,
    meta: RequestMeta,
    Path(raw_id): Path<String>,
    JsonBody(body): JsonBody<PasswordOnly>,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    let id = parse_uuid("passkey_id", &raw_id)?;
    check_current_password(&state, &current.0, &body.current_password, &meta).await?;
    let removed = passkeys::remove(&state.db, &audit, current.0.id, id).await?;
    removal_answer(&state, &current.0, removed, "Passkey removed")
}

/// `DELETE /users/{id}/mfa`: a superuser removes another user's factors (a lost phone) and
/// ends that user's sessions.
async fn mfa_reset(
    State(state): State<UsersState>,
    Authorized { user: current, .. }: Superuser,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid("user_id", &raw_id)?;
    if id == current.id {
        return Err(ApiError::Forbidden(
            "Remove your own factors from your account page".into(),
        ));
    }
    if !second_factors::reset(&state.db, &audit, id).await? {
        return Err(ApiError::NotFound(
            "The user with this id does not exist in the system".into(),
        ));
    }
    Ok(message(
        "Second factors removed; the user's sessions have ended",
    ))
}
