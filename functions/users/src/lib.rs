//! /api/v1/users: the users' own account (me), user management for superusers, open signup.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, Authorized, CurrentUser, Superuser};
use edge::http::{JsonBody, QueryParams, RequestMeta};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::audit::LoggedRows;
use shared::config::{ConfigError, Env};
use shared::db::{DbPool, SqlParams};
use shared::domain::{EmailAddress, FullName, Password, Role};
use shared::email::Mailer;
use shared::input::{parse_uuid, present, Paging};
use shared::password::{self, Verified};
use shared::secrets::{AppSecret, SecretsClient};
use shared::throttle;
use shared::tokens::TokenRole;
use shared::trail::{Audit, RouteEvent};
use shared::users::{self, is_email_taken, Sessions, User, USER_COLUMNS};
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Clone, FromRef)]
pub struct UsersState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    pub mailer: Arc<Mailer>,
    /// USERS_OPEN_REGISTRATION: may strangers create accounts (POST /users/signup)? Off by default.
    pub open_registration: bool,
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
    audit: Audit,
    QueryParams(paging): QueryParams<Paging>,
) -> ApiResult<Json<UserList>> {
    let (skip, limit) = paging.checked()?;
    let client = state.db.get().await?;
    let page_sql = format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT $2"
    );
    let (count, rows) = shared::db::count_and_page(
        &client,
        "SELECT count(*) FROM users",
        &[],
        &page_sql,
        &[&skip, &limit],
    )
    .await?;
    let data: Vec<User> = rows.iter().map(User::from_row).collect();
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

struct NewUser<'a> {
    email: &'a EmailAddress,
    password: &'a Password,
    full_name: Option<&'a FullName>,
    is_active: bool,
    is_superuser: bool,
    role: Role,
}

/// Inserts a user with its audit event in one statement; None when the email is taken.
async fn insert_user(
    state: &UsersState,
    audit: &Audit,
    new: NewUser<'_>,
) -> ApiResult<Option<User>> {
    let hashed = password::hash(new.password).await?;
    let id = Uuid::new_v4();
    audit.describe(|event| event.resource(Some(id)));
    let mut params = SqlParams::new();
    let values = [
        params.push(id, Type::UUID),
        params.push(new.email.as_str().to_owned(), Type::VARCHAR),
        params.push(hashed, Type::TEXT),
        params.push(new.full_name.map(|n| n.as_str().to_owned()), Type::VARCHAR),
        params.push(new.is_active, Type::BOOL),
        params.push(new.is_superuser, Type::BOOL),
        params.push(new.role.as_str().to_owned(), Type::TEXT),
    ]
    .join(", ");
    let logged = audit.logged_cte(&mut params, &user_rows("created"));
    let client = state.db.get().await?;
    let inserted = client
        .query_typed_one(
            &format!(
                "WITH created AS (
                    INSERT INTO users (id, email, hashed_password, full_name, is_active, is_superuser, role)
                    VALUES ({values}) RETURNING {USER_COLUMNS}
                 ), {logged}
                 SELECT * FROM created"
            ),
            &params.typed(),
        )
        .await;
    match inserted {
        Ok(row) => Ok(Some(User::from_row(&row))),
        Err(e) if is_email_taken(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The changed rows of a statement whose CTE `source` returns users.
fn user_rows(source: &str) -> LoggedRows<'_> {
    LoggedRows {
        source,
        resource: "id",
        patient: "NULL::uuid",
        details: None,
    }
}

async fn create_user(
    State(state): State<UsersState>,
    _superuser: Superuser,
    audit: Audit,
    JsonBody(body): JsonBody<UserCreate>,
) -> ApiResult<Json<User>> {
    let role = body.role.unwrap_or(Role::Clinician);
    audit.describe(|event| {
        event.details(json!({ "role": role.as_str(), "is_superuser": body.is_superuser }))
    });
    let user = insert_user(
        &state,
        &audit,
        NewUser {
            email: &body.email,
            password: &body.password,
            full_name: body.full_name.as_ref(),
            is_active: body.is_active,
            is_superuser: body.is_superuser,
            role,
        },
    )
    .await?
    .ok_or_else(|| {
        ApiError::BadRequest("The user with this email already exists in the system.".into())
    })?;
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
    audit: Audit,
    JsonBody(body): JsonBody<UserRegister>,
) -> ApiResult<Json<User>> {
    audit.attempted_account(body.email.as_str());
    if !state.open_registration {
        return Err(ApiError::Forbidden(
            "Open user registration is forbidden on this server".into(),
        ));
    }
    let user = insert_user(
        &state,
        &audit,
        NewUser {
            email: &body.email,
            password: &body.password,
            full_name: body.full_name.as_ref(),
            // A stranger's account waits for a superuser to activate it.
            is_active: false,
            is_superuser: false,
            role: Role::Clinician,
        },
    )
    .await?
    .ok_or_else(|| {
        ApiError::BadRequest("The user with this email already exists in the system".into())
    })?;
    Ok(Json(user))
}

async fn read_me(current: CurrentUser, audit: Audit) -> Json<User> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    Json(current.0)
}

/// Changes to a user; `None` leaves a field as it is. `full_name: null` clears the name.
#[derive(Default, Deserialize)]
struct UserChanges {
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

/// Applies `changes` to user `id` with its audit event in one statement: Ok(None) when there
/// is no such user; 409 when the email is taken. A new password ends the user's sessions; a new
/// email is announced to the old address. (Long because it is one statement with its audit
/// event and the sessions it ends, plus the mail that must follow it.)
async fn apply_changes(
    state: &UsersState,
    audit: &Audit,
    id: Uuid,
    changes: UserChanges,
) -> ApiResult<Option<User>> {
    let old_email = match &changes.email {
        Some(_) => users::find_by_id(&state.db, id)
            .await?
            .map(|user| user.email),
        None => None,
    };
    let new_hash = match &changes.password {
        Some(password) => Some(password::hash(password).await?),
        None => None,
    };
    // Which fields changed, never their values.
    let fields: Vec<&str> = [
        ("email", changes.email.is_some()),
        ("full_name", changes.full_name.is_some()),
        ("password", changes.password.is_some()),
        ("is_active", changes.is_active.is_some()),
        ("is_superuser", changes.is_superuser.is_some()),
        ("role", changes.role.is_some()),
    ]
    .iter()
    .filter(|(_, sent)| *sent)
    .map(|(field, _)| *field)
    .collect();
    // An email change names both addresses by digest only: matchable, never in clear.
    let details = match (&old_email, &changes.email) {
        (Some(old), Some(new)) => json!({
            "fields": fields,
            "previous_email_sha256": email_digest(old),
            "email_sha256": email_digest(new.as_str()),
        }),
        _ => json!({ "fields": fields }),
    };
    audit.describe(|event| event.resource(Some(id)).details(details));
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let email = params.push(
        changes.email.as_ref().map(|e| e.as_str().to_owned()),
        Type::VARCHAR,
    );
    let name_sent = params.push(changes.full_name.is_some(), Type::BOOL);
    let name = params.push(
        changes
            .full_name
            .as_ref()
            .and_then(|n| n.as_ref().map(|n| n.as_str().to_owned())),
        Type::VARCHAR,
    );
    let hash = params.push(new_hash, Type::TEXT);
    let is_active = params.push(changes.is_active, Type::BOOL);
    let is_superuser = params.push(changes.is_superuser, Type::BOOL);
    let role = params.push(changes.role.map(|r| r.as_str().to_owned()), Type::TEXT);
    // The change and its audit event in one statement: the event exists exactly when a user changed.
    let logged = audit.logged_cte(&mut params, &user_rows("updated"));
    let client = state.db.get().await?;
    let updated = client
        .query_typed_opt(
            &format!(
                "WITH updated AS (
                    UPDATE users SET
                        email = COALESCE({email}, email),
                        full_name = CASE WHEN {name_sent} THEN {name} ELSE full_name END,
                        hashed_password = COALESCE({hash}, hashed_password),
                        session_epoch = session_epoch + CASE WHEN {hash}::text IS NULL THEN 0 ELSE 1 END,
                        is_active = COALESCE({is_active}, is_active),
                        is_superuser = COALESCE({is_superuser}, is_superuser),
                        role = COALESCE({role}, role),
                        updated_at = now()
                    WHERE id = {id} RETURNING {USER_COLUMNS}
                 ), {logged}
                 SELECT * FROM updated"
            ),
            &params.typed(),
        )
        .await;
    let updated = match updated {
        Ok(row) => row.as_ref().map(User::from_row),
        Err(e) if is_email_taken(&e) => {
            return Err(ApiError::Conflict(
                "User with this email already exists".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(old), Some(user)) = (&old_email, &updated) {
        if !old.eq_ignore_ascii_case(&user.email) {
            let notice = state.mailer.email_changed_email(old);
            if let Err(error) = state.mailer.send(old, notice).await {
                // The change stands; the log says the notice did not go.
                tracing::warn!(%error, user_id = %user.id, "email change notice not sent");
            }
        }
    }
    Ok(updated)
}

/// A SHA-256 of the folded address, for the trail.
fn email_digest(email: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(email.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    audit: Audit,
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
    let user = apply_changes(&state, &audit, current.0.id, changes)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
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
    throttle::succeeded(pool, &account, &source_ip).await?;
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
    audit: Audit,
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
    audit: Audit,
) -> ApiResult<Json<Value>> {
    audit.describe(|event| event.resource(Some(current.0.id)));
    if current.0.is_superuser {
        return Err(ApiError::Forbidden(
            "Super users are not allowed to delete themselves".into(),
        ));
    }
    delete_by_id(&state, &audit, current.0.id).await?;
    Ok(message("User deleted successfully"))
}

/// Deletes user `id` with its audit event, in one statement. False when absent.
async fn delete_by_id(state: &UsersState, audit: &Audit, id: Uuid) -> ApiResult<bool> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let logged = audit.logged_cte(&mut params, &user_rows("gone"));
    let client = state.db.get().await?;
    let gone = client
        .query_typed(
            &format!(
                "WITH gone AS (DELETE FROM users WHERE id = {id} RETURNING id), {logged}
                 SELECT id FROM gone"
            ),
            &params.typed(),
        )
        .await?;
    Ok(gone.len() == 1)
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
    audit: Audit,
    meta: RequestMeta,
    Path(raw_id): Path<String>,
    JsonBody(changes): JsonBody<UserChanges>,
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
    let user = apply_changes(&state, &audit, id, changes)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("The user with this id does not exist in the system".into())
        })?;
    Ok(Json(user))
}

async fn delete_user(
    State(state): State<UsersState>,
    Authorized { user: current, .. }: Superuser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid("user_id", &raw_id)?;
    if id == current.id {
        return Err(ApiError::Forbidden(
            "Super users are not allowed to delete themselves".into(),
        ));
    }
    if !delete_by_id(&state, &audit, id).await? {
        return Err(ApiError::NotFound("User not found".into()));
    }
    Ok(message("User deleted successfully"))
}
