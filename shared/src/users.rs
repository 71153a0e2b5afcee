//! Users as stored and as answered (`{id, email, full_name, is_active, is_superuser, role, created_at}`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use tokio_postgres::types::Type;

use crate::audit::{Attribution, Event, LoggedRows};
use crate::db::{DbPool, SqlParams};
use crate::domain::Role;
use crate::error::ApiResult;

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
        Self {
            id: row.get(0),
            email: row.get(1),
            full_name: row.get(2),
            is_active: row.get(3),
            is_superuser: row.get(4),
            role: Role::from_db(row.get(5)),
            created_at: row.get(6),
            session_epoch: row.get(7),
        }
    }
}

pub async fn find_by_id(pool: &DbPool, id: Uuid) -> ApiResult<Option<User>> {
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
) -> ApiResult<Option<(User, String)>> {
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

pub async fn find_with_hash_by_id(pool: &DbPool, id: Uuid) -> ApiResult<Option<(User, String)>> {
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
) -> ApiResult<bool> {
    let epoch_step = i32::from(sessions == Sessions::End);
    let mut params = SqlParams::new();
    let id = params.push(id, Type::UUID);
    let expected_hash = params.push(expected_hash.to_owned(), Type::TEXT);
    let new_hash = params.push(new_hash.to_owned(), Type::TEXT);
    let epoch_step = params.push(epoch_step, Type::INT4);
    let logged = match audit {
        Some((who, event)) => {
            let cte = crate::audit::logged_cte(
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
pub fn is_email_taken(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.constraint() == Some("users_email_lower_key"))
}
