//! Users and their sessions: the account as stored and as answered (`{id, email, full_name,
//! is_active, is_superuser, role, created_at}`), its password hash and session epoch, and the
//! writes (create, change, delete, a password replaced), each with its audit event in its own
//! statement. The JSON API's users and auth functions and the token check of every request
//! call these; none of them sends SQL on the users table itself.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use shared::audit::{Attribution, Event, LoggedRows};
use shared::db::{DbPool, SqlParams};
use shared::domain::{EmailAddress, FullName, Password, Role};
use shared::trail::AuditEntry;
use shared::{password, ApiError, StoreError};
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::paging::{self, Count};

/// Why a user operation did not happen; each route words it as the replaced system did.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no such user")]
    NotFound,
    /// Another account has this email (in any case).
    #[error("the email belongs to another account")]
    EmailTaken,
    /// The database's or the trail's own failure, classified as the edge answers it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing the new password failed (its blocking task): our bug, never the input's.
    #[error("{0}")]
    Hashing(String),
}

store_errors!(UserError);

impl UserError {
    /// A hashing failure, its cause without the `ApiError` wrapping it.
    fn hashing(error: ApiError) -> Self {
        match error {
            ApiError::Internal(cause) => Self::Hashing(cause),
            other => Self::Hashing(other.to_string()),
        }
    }
}

/// The JSON API's answer, as the replaced system worded it where the route does not word it
/// otherwise.
impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound => ApiError::NotFound("User not found".into()),
            UserError::EmailTaken => {
                ApiError::Conflict("User with this email already exists".into())
            }
            UserError::Store(error) => error.into(),
            UserError::Hashing(cause) => ApiError::Internal(cause),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub full_name: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Moves on with every password change and logout; access tokens carry the value they
    /// were issued under, so older ones stop working.
    #[serde(skip)]
    pub session_epoch: i32,
}

/// The columns `User::from_row` reads, in order; `hashed_password` follows where asked for.
pub const USER_COLUMNS: &str =
    "id, email, full_name, is_active, is_superuser, role, created_at, session_epoch";

impl User {
    pub fn from_row(row: &Row) -> Self {
        Self::from_row_at(row, 0)
    }

    /// The user from `USER_COLUMNS` starting at column `at` (after a join's own columns).
    pub fn from_row_at(row: &Row, at: usize) -> Self {
        Self {
            id: row.get(at),
            email: row.get(at + 1),
            full_name: row.get(at + 2),
            is_active: row.get(at + 3),
            is_superuser: row.get(at + 4),
            role: Role::from_db(row.get(at + 5)),
            created_at: row.get(at + 6),
            session_epoch: row.get(at + 7),
        }
    }
}

pub async fn find_by_id(pool: &DbPool, id: Uuid) -> Result<Option<User>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .await?;
    Ok(client
        .query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(User::from_row))
}

/// The user with this email (any case) and their stored password hash.
pub async fn find_with_hash_by_email(
    pool: &DbPool,
    email: &str,
) -> Result<Option<(User, String)>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, hashed_password FROM users WHERE lower(email) = lower($1)"
        ))
        .await?;
    Ok(client
        .query_opt(&statement, &[&email])
        .await?
        .map(|row| (User::from_row(&row), row.get("hashed_password"))))
}

pub async fn find_with_hash_by_id(
    pool: &DbPool,
    id: Uuid,
) -> Result<Option<(User, String)>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, hashed_password FROM users WHERE id = $1"
        ))
        .await?;
    Ok(client
        .query_opt(&statement, &[&id])
        .await?
        .map(|row| (User::from_row(&row), row.get("hashed_password"))))
}

/// Whether replacing a password hash ends the user's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    /// A new password: every token issued before answers 401.
    End,
    /// The same password, hashed anew (an upgrade of the hash at login).
    Keep,
}

/// Replaces the hash only if it is still `expected_hash`: of two concurrent changes (or a reset
/// token used twice at once) exactly one wins. True when this one did. With `audit`, the event is
/// written by the same statement, exactly when the hash changed.
pub async fn replace_password_hash(
    pool: &DbPool,
    id: Uuid,
    expected_hash: &str,
    new_hash: &str,
    sessions: Sessions,
    audit: Option<(&Attribution, &Event)>,
) -> Result<bool, StoreError> {
    let epoch_step = i32::from(sessions == Sessions::End);
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let expected_hash = params.push(expected_hash.to_owned(), Type::TEXT);
    let new_hash = params.push(new_hash.to_owned(), Type::TEXT);
    let epoch_step = params.push(epoch_step, Type::INT4);
    let logged = match audit {
        Some((who, event)) => {
            let cte = shared::audit::logged_cte(
                who,
                event,
                &mut params,
                &LoggedRows {
                    source: "changed",
                    resource: "changed.id",
                    patient: "NULL::uuid",
                    details: None,
                },
            );
            format!(", {cte}")
        }
        None => String::new(),
    };
    let client = pool.get().await?;
    let changed = client
        .query_typed(
            &format!(
                "WITH changed AS (
                    UPDATE users SET hashed_password = {new_hash}, updated_at = now(),
                        session_epoch = session_epoch + {epoch_step}
                    WHERE id = {id} AND hashed_password = {expected_hash} RETURNING id
                 ){logged}
                 SELECT id FROM changed"
            ),
            &params.typed(),
        )
        .await?;
    Ok(changed.len() == 1)
}

/// Is this database error the unique index on lower(email)?
fn is_email_taken(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.constraint() == Some("users_email_lower_key"))
}

/// One page of every account, newest first, and how many there are.
pub async fn list(pool: &DbPool, offset: i64, limit: i64) -> Result<(Vec<User>, i64), StoreError> {
    let mut params = SqlParams::new();
    let (offset, limit) = (
        params.push(offset, Type::INT8),
        params.push(limit, Type::INT8),
    );
    let from_where = "FROM users";
    let page_sql = format!(
        "SELECT {USER_COLUMNS} {from_where} ORDER BY created_at DESC, id DESC OFFSET {offset} LIMIT {limit}"
    );
    let (rows, count) =
        paging::page_and_count(pool, &page_sql, from_where, &params, Count::Exact).await?;
    Ok((
        rows.iter().map(User::from_row).collect(),
        count.unwrap_or(0),
    ))
}

/// An account to create.
pub struct NewUser<'a> {
    pub email: &'a EmailAddress,
    pub password: &'a Password,
    pub full_name: Option<&'a FullName>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub role: Role,
}

/// Creates the account with its audit event in one statement.
pub async fn create(
    pool: &DbPool,
    audit: &AuditEntry,
    new: NewUser<'_>,
) -> Result<User, UserError> {
    let hashed = password::hash(new.password)
        .await
        .map_err(UserError::hashing)?;
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
    let client = pool.get().await?;
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
        Ok(row) => Ok(User::from_row(&row)),
        Err(e) if is_email_taken(&e) => Err(UserError::EmailTaken),
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

/// Changes to an account; `None` leaves a field as it is, `full_name: Some(None)` clears it.
#[derive(Default)]
pub struct UserChanges {
    pub email: Option<EmailAddress>,
    pub full_name: Option<Option<FullName>>,
    pub password: Option<Password>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub role: Option<Role>,
}

/// A change made: the account as it is now, and the address it had when the change moved it
/// to another (to be told of the change).
pub struct Changed {
    pub user: User,
    pub previous_email: Option<String>,
}

/// Applies `changes` to account `id` with its audit event in one statement (which fields
/// changed, never their values; a new email named by digests only). A new password ends the
/// account's sessions, and so does a new role or superuser flag: the next sign-in is judged by
/// the new role (its second-factor policy included). (Long because it is one statement with its audit event and the
/// sessions it ends.)
pub async fn update(
    pool: &DbPool,
    audit: &AuditEntry,
    id: Uuid,
    changes: UserChanges,
) -> Result<Changed, UserError> {
    let old_email = match &changes.email {
        Some(_) => find_by_id(pool, id).await?.map(|user| user.email),
        None => None,
    };
    let new_hash = match &changes.password {
        Some(password) => Some(password::hash(password).await.map_err(UserError::hashing)?),
        None => None,
    };
    let fields = shared::audit::sent_fields(&[
        ("email", changes.email.is_some()),
        ("full_name", changes.full_name.is_some()),
        ("password", changes.password.is_some()),
        ("is_active", changes.is_active.is_some()),
        ("is_superuser", changes.is_superuser.is_some()),
        ("role", changes.role.is_some()),
    ]);
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
    let client = pool.get().await?;
    let updated = client
        .query_typed_opt(
            &format!(
                "WITH updated AS (
                    UPDATE users SET
                        email = COALESCE({email}, email),
                        full_name = CASE WHEN {name_sent} THEN {name} ELSE full_name END,
                        hashed_password = COALESCE({hash}, hashed_password),
                        session_epoch = session_epoch + CASE
                            WHEN {hash}::text IS NOT NULL
                              OR {is_superuser}::bool IS DISTINCT FROM NULL AND {is_superuser} IS DISTINCT FROM is_superuser
                              OR {role}::text IS DISTINCT FROM NULL AND {role} IS DISTINCT FROM role
                            THEN 1 ELSE 0 END,
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
    let user = match updated {
        Ok(Some(row)) => User::from_row(&row),
        Ok(None) => return Err(UserError::NotFound),
        Err(e) if is_email_taken(&e) => return Err(UserError::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    let previous_email = old_email.filter(|old| !old.eq_ignore_ascii_case(&user.email));
    Ok(Changed {
        user,
        previous_email,
    })
}

/// A SHA-256 of the folded address, for the trail.
fn email_digest(email: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(email.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Ends every session of account `id` (every token issued before answers 401), with its audit
/// event, in one statement.
pub async fn end_sessions(pool: &DbPool, audit: &AuditEntry, id: Uuid) -> Result<(), StoreError> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let logged = audit.logged_cte(&mut params, &user_rows("ended"));
    pool.get()
        .await?
        .query_typed(
            &format!(
                "WITH ended AS (
                    UPDATE users SET session_epoch = session_epoch + 1 WHERE id = {id} RETURNING id
                 ), {logged}
                 SELECT id FROM ended"
            ),
            &params.typed(),
        )
        .await?;
    Ok(())
}

/// Deletes account `id` with its audit event, in one statement.
pub async fn delete(pool: &DbPool, audit: &AuditEntry, id: Uuid) -> Result<(), UserError> {
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let logged = audit.logged_cte(&mut params, &user_rows("gone"));
    let client = pool.get().await?;
    let gone = client
        .query_typed(
            &format!(
                "WITH gone AS (DELETE FROM users WHERE id = {id} RETURNING id), {logged}
                 SELECT id FROM gone"
            ),
            &params.typed(),
        )
        .await?;
    if gone.len() == 1 {
        Ok(())
    } else {
        Err(UserError::NotFound)
    }
}
