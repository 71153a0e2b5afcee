//! Authenticator codes (RFC 6238 as authenticator apps expect: SHA-1, 6 digits, 30 s), by the
//! `totp-rs` crate. A code is accepted within one step of clock skew, and only once: the step
//! it matched is recorded, and no code of that step or an earlier one is accepted again.

use std::time::{SystemTime, UNIX_EPOCH};

use shared::db::DbPool;
use shared::sealing::SealingKeys;
use shared::trail::AuditEntry;
use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

use super::{end_sessions_with_event, recovery, FactorError};
use crate::users::User;

const STEP_SECONDS: u64 = 30;
const DIGITS: usize = 6;
/// 160 bits, RFC 4226's recommended secret length.
const SECRET_BYTES: usize = 20;
const ISSUER: &str = "CareVault";

/// A pending enrolment: the secret for the authenticator app, as text and as its URI.
#[derive(Debug, serde::Serialize)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// What enabling TOTP made: the new recovery codes (shown this once) and the session epoch
/// the caller's fresh token is to carry.
pub struct Enabled {
    pub recovery_codes: Vec<String>,
    pub session_epoch: i32,
}

fn totp(secret: Vec<u8>, account: &str) -> Result<TOTP, FactorError> {
    // The label `Issuer:account` allows no other colon; a quoted email's is shown as `_`.
    let account = account.replace(':', "_");
    // Skew 0: `matching_step` tries the neighbouring steps itself, to learn which one matched.
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECONDS,
        secret,
        Some(ISSUER.into()),
        account,
    )
    .map_err(|e| FactorError::Internal(format!("TOTP parameters: {e}")))
}

fn now_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        / STEP_SECONDS
}

/// The time step (previous, current or next) whose code `code` is, if any.
fn matching_step(totp: &TOTP, code: &str) -> Option<u64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now_step();
    // Every candidate compared (in constant time each), so timing tells nothing of which.
    let mut matched = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        if totp.check(code, step * STEP_SECONDS) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// Is `code` six digits (spaces ignored), as an authenticator shows it?
pub fn looks_like_code(code: &str) -> bool {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Starts (or restarts) enrolment: a new secret, sealed, pending until confirmed.
pub async fn begin(
    pool: &DbPool,
    sealing: &SealingKeys,
    user: &User,
) -> Result<Enrolment, FactorError> {
    let mut secret = vec![0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| FactorError::Internal("the system's random source failed".into()))?;
    let (key_id, sealed) = sealing
        .seal(user.id.as_bytes(), &secret)
        .map_err(|e| FactorError::Internal(e.to_string()))?;
    let totp = totp(secret, &user.email)?;
    let stored = pool
        .get()
        .await?
        .execute(
            "INSERT INTO user_totp (user_id, key_id, sealed_secret) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id,
                 sealed_secret = EXCLUDED.sealed_secret, created_at = now(), last_used_step = NULL
             WHERE user_totp.confirmed_at IS NULL",
            &[&user.id, &key_id, &sealed],
        )
        .await?;
    if stored == 0 {
        return Err(FactorError::TotpAlreadyEnabled);
    }
    Ok(Enrolment {
        secret: totp.get_secret_base32(),
        otpauth_uri: totp.get_url(),
    })
}

/// The TOTP secret of the row read for `user_id`, opened.
fn open_secret(
    sealing: &SealingKeys,
    user_id: Uuid,
    row: &tokio_postgres::Row,
) -> Result<Vec<u8>, FactorError> {
    let key_id: String = row.get("key_id");
    let sealed: Vec<u8> = row.get("sealed_secret");
    sealing
        .open(&key_id, user_id.as_bytes(), &sealed)
        .map_err(|e| FactorError::Internal(format!("opening a TOTP secret: {e}")))
}

/// Confirms the pending enrolment with a code from the app: TOTP is enabled, ten new recovery
/// codes replace any earlier ones, and every session of the user ends, with the event, in one
/// transaction.
pub async fn confirm(
    pool: &DbPool,
    sealing: &SealingKeys,
    audit: &AuditEntry,
    user: &User,
    code: &str,
) -> Result<Enabled, FactorError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    super::lock_user(&tx, user.id).await?;
    let row = tx
        .query_opt(
            "SELECT key_id, sealed_secret, confirmed_at IS NOT NULL AS enabled
             FROM user_totp WHERE user_id = $1 FOR UPDATE",
            &[&user.id],
        )
        .await?
        .ok_or(FactorError::NoPendingTotp)?;
    if row.get::<_, bool>("enabled") {
        return Err(FactorError::TotpAlreadyEnabled);
    }
    let totp = totp(open_secret(sealing, user.id, &row)?, &user.email)?;
    let step = matching_step(&totp, &code).ok_or(FactorError::WrongCode)?;
    tx.execute(
        "UPDATE user_totp SET confirmed_at = now(), last_used_step = $2 WHERE user_id = $1",
        &[&user.id, &(step as i64)],
    )
    .await?;
    let recovery_codes = recovery::replace_in(&tx, user.id).await?;
    audit.describe(|event| {
        event
            .resource(Some(user.id))
            .details(serde_json::json!({ "method": "totp" }))
    });
    let session_epoch = end_sessions_with_event(&tx, audit, user.id).await?;
    tx.commit().await?;
    Ok(Enabled {
        recovery_codes,
        session_epoch,
    })
}

/// Accepts `code` for the enabled TOTP of `user_id` if it is the code of a step within one of
/// now and later than any accepted before (a code is good once). False otherwise, or without
/// TOTP.
pub async fn accept(
    pool: &DbPool,
    sealing: &SealingKeys,
    user_id: Uuid,
    code: &str,
) -> Result<bool, FactorError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT key_id, sealed_secret FROM user_totp
             WHERE user_id = $1 AND confirmed_at IS NOT NULL",
            &[&user_id],
        )
        .await?
    else {
        return Ok(false);
    };
    // The account name is not part of the code.
    let totp = totp(open_secret(sealing, user_id, &row)?, "-")?;
    let Some(step) = matching_step(&totp, &code) else {
        return Ok(false);
    };
    // Two requests with one code: exactly one moves the step on.
    let recorded = client
        .execute(
            "UPDATE user_totp SET last_used_step = $2
             WHERE user_id = $1 AND confirmed_at IS NOT NULL
               AND (last_used_step IS NULL OR last_used_step < $2)",
            &[&user_id, &(step as i64)],
        )
        .await?;
    Ok(recorded == 1)
}

/// Removes TOTP (enabled or pending); the recovery codes go too when no passkey remains; every
/// session ends, with the event, in one transaction. The caller checked password and code.
pub async fn remove(
    pool: &DbPool,
    audit: &AuditEntry,
    user_id: Uuid,
) -> Result<super::Removed, FactorError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    super::lock_user(&tx, user_id).await?;
    let removed = tx
        .execute("DELETE FROM user_totp WHERE user_id = $1", &[&user_id])
        .await?;
    if removed == 0 {
        return Err(FactorError::TotpNotEnabled);
    }
    let details = serde_json::json!({ "method": "totp" });
    super::finish_removal(tx, audit, user_id, details).await
}
