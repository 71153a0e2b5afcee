//! The sign-in step between the right password and the second factor: an `mfa_token` (opaque,
//! 256 random bits, stored as its SHA-256), bound to its user and to the session epoch of its
//! time, good once, for 5 minutes and at most 5 attempts (each claimed before it is checked).

use serde_json::Value;
use shared::db::DbPool;
use shared::StoreError;
use uuid::Uuid;

/// How long the step waits for the factor.
pub const LIFETIME_SECONDS: f64 = 300.0;
/// Wrong codes after which the step is dead (the throttle counts them too).
pub const MAX_FAILURES: i32 = 5;

/// A step in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    pub user_id: Uuid,
    pub session_epoch: i32,
    /// The passkey challenge, once the client asked for one.
    pub passkey_state: Option<Value>,
}

fn pending(row: &tokio_postgres::Row) -> Pending {
    Pending {
        user_id: row.get(0),
        session_epoch: row.get(1),
        passkey_state: row.get(2),
    }
}

/// A new step for `user_id` under `session_epoch`; answers its token. Expired steps go as new
/// ones come (an index range from the oldest).
pub async fn begin(pool: &DbPool, user_id: Uuid, session_epoch: i32) -> Result<String, StoreError> {
    let token = shared::opaque::new_value();
    pool.get()
        .await?
        .execute(
            "WITH expired AS (DELETE FROM mfa_logins WHERE expires_at < now())
             INSERT INTO mfa_logins (token_digest, user_id, session_epoch, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[
                &shared::opaque::digest(&token),
                &user_id,
                &session_epoch,
                &LIFETIME_SECONDS,
            ],
        )
        .await?;
    Ok(token)
}

/// The live step of `token`: not expired, not used, fewer than 5 wrong codes.
pub async fn find(pool: &DbPool, token: &str) -> Result<Option<Pending>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_opt(
            "SELECT user_id, session_epoch, passkey_state FROM mfa_logins
             WHERE token_digest = $1 AND expires_at > now() AND failures < $2",
            &[&shared::opaque::digest(token), &MAX_FAILURES],
        )
        .await?
        .as_ref()
        .map(pending))
}

/// Keeps the passkey challenge the client was sent; false when the step is no longer live.
pub async fn keep_passkey_state(
    pool: &DbPool,
    token: &str,
    state: &Value,
) -> Result<bool, StoreError> {
    let kept = pool
        .get()
        .await?
        .execute(
            "UPDATE mfa_logins SET passkey_state = $2
             WHERE token_digest = $1 AND expires_at > now() AND failures < $3",
            &[&shared::opaque::digest(token), state, &MAX_FAILURES],
        )
        .await?;
    Ok(kept == 1)
}

/// Claims one attempt of the step before its code or passkey is checked: of many parallel
/// attempts each takes its own number, and none past the fifth gets through. The passkey
/// challenge goes with the attempt (each challenge answers once). None when the step is not
/// live.
pub async fn claim_attempt(pool: &DbPool, token: &str) -> Result<Option<Pending>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_opt(
            "UPDATE mfa_logins AS step SET failures = step.failures + 1, passkey_state = NULL
             FROM mfa_logins AS before
             WHERE step.token_digest = $1 AND before.token_digest = step.token_digest
               AND step.expires_at > now() AND step.failures < $2
             RETURNING step.user_id, step.session_epoch, before.passkey_state",
            &[&shared::opaque::digest(token), &MAX_FAILURES],
        )
        .await?
        .as_ref()
        .map(pending))
}

/// Uses the step up after a claimed attempt passed: of two requests with one token, exactly
/// one gets it.
pub async fn consume(pool: &DbPool, token: &str) -> Result<bool, StoreError> {
    let used = pool
        .get()
        .await?
        .execute(
            "DELETE FROM mfa_logins
             WHERE token_digest = $1 AND expires_at > now() AND failures <= $2",
            &[&shared::opaque::digest(token), &MAX_FAILURES],
        )
        .await?;
    Ok(used == 1)
}
