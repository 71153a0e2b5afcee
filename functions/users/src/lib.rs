//! /api/v1/users: the users' own account (me), user management for superusers, open signup.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::audit::{Audit, Event};
use shared::auth::{AppSecret, AuthContext, CurrentUser};
use shared::config::{ConfigError, Env};
use shared::db::{param, typed};
use shared::domain::{EmailAddress, FullName, Password, Role};
use shared::email::Mailer;
use shared::http::{parse_uuid, present, JsonBody, Paging, QueryParams};
use shared::password::{self, Verified};
use shared::secrets::SecretsClient;
use shared::users::{self, is_email_taken, User, USER_COLUMNS};
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Clone)]
pub struct UsersState {
    pub auth: AuthContext,
    pub mailer: Arc<Mailer>,
    /// USERS_OPEN_REGISTRATION: may strangers create accounts (POST /users/signup)? Off by default.
    pub open_registration: bool,
}

impl FromRef<UsersState> for AuthContext {
    fn from_ref(state: &UsersState) -> Self {
        state.auth.clone()
    }
}

impl UsersState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = SecretsClient::from_env(env);
        let secret = AppSecret::load(env, &secrets).await?;
        Ok(Self {
            auth: AuthContext::with_secret(env, &secrets, &secret, "carevault-users").await?,
            mailer: Arc::new(Mailer::from_env(env, &secret)?),
            open_registration: env.bool_or("USERS_OPEN_REGISTRATION", false)?,
        })
    }
}

pub fn router(state: UsersState) -> Router {
    Router::new()
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/me",
            get(read_me).patch(update_me).delete(delete_me),
        )
        .route("/api/v1/users/me/password", patch(update_my_password))
        .route("/api/v1/users/signup", post(signup))
        .route(
            "/api/v1/users/{id}",
            get(read_user).patch(update_user).delete(delete_user),
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
    current: CurrentUser,
    QueryParams(paging): QueryParams<Paging>,
) -> ApiResult<Json<UserList>> {
    current.require_superuser()?;
    let (skip, limit) = paging.checked()?;
    let client = state.auth.pool.get().await?;
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
    Ok(Json(UserList {
        data: rows.iter().map(User::from_row).collect(),
        count,
    }))
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

/// Inserts a user with its audit event in one transaction; None when the email is taken.
async fn insert_user(
    state: &UsersState,
    audit: &Audit,
    event: &Event,
    new: NewUser<'_>,
) -> ApiResult<Option<User>> {
    let hashed = password::hash(new.password).await?;
    // The user and the audit event in one statement.
    let (logged, audit_params) = audit.logged_cte(event, "created", "created.id", "NULL::uuid", 8);
    let mut params = vec![
        param(event.resource_id, Type::UUID),
        param(new.email.as_str().to_owned(), Type::VARCHAR),
        param(hashed, Type::TEXT),
        param(new.full_name.map(|n| n.as_str().to_owned()), Type::VARCHAR),
        param(new.is_active, Type::BOOL),
        param(new.is_superuser, Type::BOOL),
        param(new.role.as_str().to_owned(), Type::TEXT),
    ];
    params.extend(audit_params);
    let client = state.auth.pool.get().await?;
    let inserted = client
        .query_typed_one(
            &format!(
                "WITH created AS (
                    INSERT INTO users (id, email, hashed_password, full_name, is_active, is_superuser, role)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {USER_COLUMNS}
                 ), {logged}
                 SELECT * FROM created"
            ),
            &typed(&params),
        )
        .await;
    match inserted {
        Ok(row) => Ok(Some(User::from_row(&row))),
        Err(e) if is_email_taken(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn create_user(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: Audit,
    body: Result<JsonBody<UserCreate>, ApiError>,
) -> ApiResult<Json<User>> {
    let audit = audit.by(&current);
    let event = Event::new("user.create", "user").resource(Some(Uuid::new_v4()));
    let result = create(&state, &current, &audit, &event, body).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn create(
    state: &UsersState,
    current: &CurrentUser,
    audit: &Audit,
    event: &Event,
    body: Result<JsonBody<UserCreate>, ApiError>,
) -> ApiResult<Json<User>> {
    current.require_superuser()?;
    let JsonBody(body) = body?;
    let event = &event.clone().details(json!({
        "role": body.role.unwrap_or(Role::Clinician).as_str(),
        "is_superuser": body.is_superuser,
    }));
    let user = insert_user(
        state,
        audit,
        event,
        NewUser {
            email: &body.email,
            password: &body.password,
            full_name: body.full_name.as_ref(),
            is_active: body.is_active,
            is_superuser: body.is_superuser,
            role: body.role.unwrap_or(Role::Clinician),
        },
    )
    .await?
    .ok_or_else(|| {
        ApiError::BadRequest("The user with this email already exists in the system.".into())
    })?;
    if state.mailer.enabled() {
        if let Err(error) = send_new_account_email(state, &user).await {
            // The account exists; the superuser can trigger password recovery later.
            tracing::warn!(%error, user_id = %user.id, "new account email not sent");
        }
    }
    Ok(Json(user))
}

async fn send_new_account_email(state: &UsersState, user: &User) -> ApiResult<()> {
    let (_, hash) = users::find_with_hash_by_id(&state.auth.pool, user.id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished after insert"))?;
    let token = state.auth.tokens.issue_reset(user.id, &hash)?;
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
    let audit = audit.claiming(body.email.as_str());
    let event = Event::new("user.signup", "user").resource(Some(Uuid::new_v4()));
    let result = register(&state, &audit, &event, body).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn register(
    state: &UsersState,
    audit: &Audit,
    event: &Event,
    body: UserRegister,
) -> ApiResult<Json<User>> {
    if !state.open_registration {
        return Err(ApiError::Forbidden(
            "Open user registration is forbidden on this server".into(),
        ));
    }
    let user = insert_user(
        state,
        audit,
        event,
        NewUser {
            email: &body.email,
            password: &body.password,
            full_name: body.full_name.as_ref(),
            is_active: true,
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

async fn read_me(current: CurrentUser) -> Json<User> {
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
}

/// Applies `changes` to user `id` with its audit event in one transaction: Ok(None) when there
/// is no such user; 409 when the email is taken.
async fn apply_changes(
    state: &UsersState,
    audit: &Audit,
    id: Uuid,
    changes: UserChanges,
) -> ApiResult<Option<User>> {
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
    let event = Event::new("user.update", "user")
        .resource(Some(id))
        .details(json!({ "fields": fields }));
    // The change and its audit event in one statement: the event exists exactly when a user changed.
    let (logged, audit_params) = audit.logged_cte(&event, "updated", "updated.id", "NULL::uuid", 9);
    let mut params = vec![
        param(id, Type::UUID),
        param(
            changes.email.as_ref().map(|e| e.as_str().to_owned()),
            Type::VARCHAR,
        ),
        param(changes.full_name.is_some(), Type::BOOL),
        param(
            changes
                .full_name
                .as_ref()
                .and_then(|n| n.as_ref().map(|n| n.as_str().to_owned())),
            Type::VARCHAR,
        ),
        param(new_hash, Type::TEXT),
        param(changes.is_active, Type::BOOL),
        param(changes.is_superuser, Type::BOOL),
        param(changes.role.map(|r| r.as_str().to_owned()), Type::TEXT),
    ];
    params.extend(audit_params);
    let client = state.auth.pool.get().await?;
    let updated = client
        .query_typed_opt(
            &format!(
                "WITH updated AS (
                    UPDATE users SET
                        email = COALESCE($2, email),
                        full_name = CASE WHEN $3 THEN $4 ELSE full_name END,
                        hashed_password = COALESCE($5, hashed_password),
                        is_active = COALESCE($6, is_active),
                        is_superuser = COALESCE($7, is_superuser),
                        role = COALESCE($8, role),
                        updated_at = now()
                    WHERE id = $1 RETURNING {USER_COLUMNS}
                 ), {logged}
                 SELECT * FROM updated"
            ),
            &typed(&params),
        )
        .await;
    match updated {
        Ok(row) => Ok(row.as_ref().map(User::from_row)),
        Err(e) if is_email_taken(&e) => Err(ApiError::Conflict(
            "User with this email already exists".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct UserUpdateMe {
    #[serde(default)]
    email: Option<EmailAddress>,
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<FullName>>,
}

async fn update_me(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: Audit,
    JsonBody(body): JsonBody<UserUpdateMe>,
) -> ApiResult<Json<User>> {
    let audit = audit.by(&current);
    // Only the name and the email: a user cannot change their own role or powers.
    let changes = UserChanges {
        email: body.email,
        full_name: body.full_name,
        ..Default::default()
    };
    let result = apply_changes(&state, &audit, current.0.id, changes).await;
    let event = Event::new("user.update", "user").resource(Some(current.0.id));
    let user = audit
        .refused(&state.auth.pool, event, result)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    Ok(Json(user))
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
    JsonBody(body): JsonBody<UpdatePassword>,
) -> ApiResult<Json<Value>> {
    let audit = audit.by(&current);
    let event = Event::new("user.password_change", "user").resource(Some(current.0.id));
    let result = change_password(&state, &current, &audit, &event, body).await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn change_password(
    state: &UsersState,
    current: &CurrentUser,
    audit: &Audit,
    event: &Event,
    body: UpdatePassword,
) -> ApiResult<Json<Value>> {
    let (_, stored_hash) = users::find_with_hash_by_id(&state.auth.pool, current.0.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    if password::verify(&body.current_password, Some(&stored_hash)).await? == Verified::No {
        return Err(ApiError::BadRequest("Incorrect password".into()));
    }
    if body.current_password == body.new_password.expose() {
        return Err(ApiError::BadRequest(
            "New password cannot be the same as the current one".into(),
        ));
    }
    let new_hash = password::hash(&body.new_password).await?;
    let replaced = users::replace_password_hash(
        &state.auth.pool,
        current.0.id,
        &stored_hash,
        &new_hash,
        Some((audit, event)),
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
    let audit = audit.by(&current);
    let event = Event::new("user.delete", "user").resource(Some(current.0.id));
    let result = async {
        if current.0.is_superuser {
            return Err(ApiError::Forbidden(
                "Super users are not allowed to delete themselves".into(),
            ));
        }
        delete_by_id(&state, &audit, &event).await?;
        Ok(message("User deleted successfully"))
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}

/// Deletes the user `event` is about, with its audit event, in one statement. False when absent.
async fn delete_by_id(state: &UsersState, audit: &Audit, event: &Event) -> ApiResult<bool> {
    let (logged, audit_params) = audit.logged_cte(event, "gone", "gone.id", "NULL::uuid", 2);
    let mut params = vec![param(event.resource_id, Type::UUID)];
    params.extend(audit_params);
    let client = state.auth.pool.get().await?;
    let gone = client
        .query_typed(
            &format!(
                "WITH gone AS (DELETE FROM users WHERE id = $1 RETURNING id), {logged}
                 SELECT id FROM gone"
            ),
            &typed(&params),
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
    let user = users::find_by_id(&state.auth.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    Ok(Json(user))
}

async fn update_user(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    changes: Result<JsonBody<UserChanges>, ApiError>,
) -> ApiResult<Json<User>> {
    let audit = audit.by(&current);
    let event = Event::new("user.update", "user").resource(Uuid::parse_str(&raw_id).ok());
    let result = async {
        current.require_superuser()?;
        let id = parse_uuid("user_id", &raw_id)?;
        let JsonBody(changes) = changes?;
        // The last administrator must not lock everyone out by a slip of their own.
        if id == current.0.id
            && (changes.is_active == Some(false) || changes.is_superuser == Some(false))
        {
            return Err(ApiError::Forbidden(
                "Super users are not allowed to deactivate or demote themselves".into(),
            ));
        }
        let user = apply_changes(&state, &audit, id, changes)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound("The user with this id does not exist in the system".into())
            })?;
        Ok(Json(user))
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn delete_user(
    State(state): State<UsersState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let audit = audit.by(&current);
    let event = Event::new("user.delete", "user").resource(Uuid::parse_str(&raw_id).ok());
    let result = async {
        current.require_superuser()?;
        let id = parse_uuid("user_id", &raw_id)?;
        if id == current.0.id {
            return Err(ApiError::Forbidden(
                "Super users are not allowed to delete themselves".into(),
            ));
        }
        if !delete_by_id(&state, &audit, &event).await? {
            return Err(ApiError::NotFound("User not found".into()));
        }
        Ok(message("User deleted successfully"))
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}
