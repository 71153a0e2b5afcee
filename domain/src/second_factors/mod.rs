//! Second factors (issue 28): authenticator codes (TOTP, RFC 6238), recovery codes and passkeys
//! (WebAuthn), the policy that requires one for chosen roles, and the sign-in step between the
//! password and the factor. The JSON API's users function enrols and removes factors; the auth
//! function signs in with them.
//!
//! Enabling or removing a factor ends every session of the user (the session epoch moves on)
//! and writes its audit event in the same transaction; the route hands the caller a fresh
//! token, so only the *other* sessions end.

pub mod passkeys;
pub mod recovery;
pub mod sign_in;
pub mod totp;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::domain::Role;
use shared::sealing::SealingKeys;
use shared::secrets::SecretsClient;
use shared::trail::AuditEntry;
use shared::{ApiError, StoreError};
use uuid::Uuid;

use crate::users::User;

/// Why a second-factor operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error("Incorrect authentication code")]
    WrongCode,
    #[error("TOTP is already enabled")]
    TotpAlreadyEnabled,
    #[error("Start TOTP enrolment first")]
    NoPendingTotp,
    #[error("TOTP is not enabled")]
    TotpNotEnabled,
    #[error("Passkey not found")]
    PasskeyNotFound,
    #[error("Start passkey registration first")]
    NoPendingPasskey,
    /// The browser's or authenticator's answer does not verify (its reason, for the client).
    #[error("The passkey was not accepted: {0}")]
    PasskeyRefused(String),
    /// The authenticator's signature counter did not go up: a cloned authenticator.
    #[error("The passkey's signature counter went backwards; it may have been cloned")]
    CounterWentBack,
    #[error("This passkey is already registered")]
    PasskeyTaken,
    /// Passkeys cannot work with this deployment's settings (an IP address origin).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing, WebAuthn state or the random source failed: our bug, never the input's.
    #[error("{0}")]
    Internal(String),
}

store_errors!(FactorError);

impl From<FactorError> for ApiError {
    fn from(error: FactorError) -> Self {
        match error {
            FactorError::WrongCode
            | FactorError::NoPendingTotp
            | FactorError::NoPendingPasskey
            | FactorError::PasskeyRefused(_)
            | FactorError::CounterWentBack
            | FactorError::Unavailable(_) => ApiError::BadRequest(error.to_string()),
            FactorError::TotpAlreadyEnabled | FactorError::PasskeyTaken => {
                ApiError::Conflict(error.to_string())
            }
            FactorError::TotpNotEnabled | FactorError::PasskeyNotFound => {
                ApiError::NotFound(error.to_string())
            }
            FactorError::Store(error) => error.into(),
            FactorError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// The roles that must sign in with a second factor (`MFA_REQUIRED_ROLES`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequiredRoles {
    pub superuser: bool,
    pub clinician: bool,
    pub viewer: bool,
}

impl RequiredRoles {
    /// A comma list of `superuser`, `clinician`, `viewer`, or `none`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut roles = Self::default();
        let names: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names == ["none"] {
            return Ok(roles);
        }
        if names.is_empty() {
            return Err("name roles, or none".into());
        }
        for name in names {
            match name {
                "superuser" => roles.superuser = true,
                "clinician" => roles.clinician = true,
                "viewer" => roles.viewer = true,
                other => {
                    return Err(format!(
                        "{other:?} is not superuser, clinician, viewer or none"
                    ))
                }
            }
        }
        Ok(roles)
    }

    /// Must this user sign in with a second factor?
    pub fn require(&self, user: &User) -> bool {
        (self.superuser && user.is_superuser)
            || match user.role {
                Role::Clinician => self.clinician,
                Role::Viewer => self.viewer,
            }
    }
}

/// What both functions that touch second factors load at cold start.
#[derive(Clone)]
pub struct SecondFactors {
    pub sealing: Arc<SealingKeys>,
    pub passkeys: Arc<passkeys::RelyingParty>,
    pub required: RequiredRoles,
}

impl SecondFactors {
    pub async fn from_env(env: &Env, secrets: &SecretsClient) -> Result<Self, ConfigError> {
        let required = RequiredRoles::parse(&env.string_or("MFA_REQUIRED_ROLES", "none")).map_err(
            |reason| ConfigError::Invalid {
                name: "MFA_REQUIRED_ROLES",
                reason,
            },
        )?;
        Ok(Self {
            sealing: Arc::new(SealingKeys::from_env(env, secrets).await?),
            passkeys: Arc::new(passkeys::RelyingParty::from_env(env)?),
            required,
        })
    }
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeySummary {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `GET /users/me/mfa` without `required` (the policy's, added by the route).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub totp: bool,
    pub passkeys: Vec<PasskeySummary>,
    pub recovery_codes_left: i64,
}

pub async fn status(pool: &DbPool, user_id: Uuid) -> Result<Status, FactorError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL),
                    (SELECT count(*) FROM user_recovery_codes WHERE user_id = $1 AND used_at IS NULL)",
            &[&user_id],
        )
        .await?;
    let passkeys = client
        .query(
            "SELECT id, name, created_at, last_used_at FROM user_passkeys
             WHERE user_id = $1 ORDER BY created_at, id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| PasskeySummary {
            id: row.get(0),
            name: row.get(1),
            created_at: row.get(2),
            last_used_at: row.get(3),
        })
        .collect();
    Ok(Status {
        totp: row.get(0),
        passkeys,
        recovery_codes_left: row.get(1),
    })
}

/// The methods a user can sign in with, in the order the API names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Methods {
    pub totp: bool,
    pub recovery_code: bool,
    pub passkey: bool,
}

impl Methods {
    pub fn any_factor(&self) -> bool {
        self.totp || self.passkey
    }

    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.totp, Method::Totp),
            (self.recovery_code, Method::RecoveryCode),
            (self.passkey, Method::Passkey),
        ]
        .into_iter()
        .filter_map(|(has, method)| has.then_some(method.as_str()))
        .collect()
    }
}

/// One query: which factors the account has (read at every password sign-in).
pub async fn methods(pool: &DbPool, user_id: Uuid) -> Result<Methods, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL),
                    EXISTS (SELECT 1 FROM user_recovery_codes WHERE user_id = $1 AND used_at IS NULL),
                    EXISTS (SELECT 1 FROM user_passkeys WHERE user_id = $1)",
        )
        .await?;
    let row = client.query_one(&statement, &[&user_id]).await?;
    Ok(Methods {
        totp: row.get(0),
        recovery_code: row.get(1),
        passkey: row.get(2),
    })
}

/// The factor a sign-in or a confirmation used (the trail names it, never the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    RecoveryCode,
    Passkey,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::RecoveryCode => "recovery_code",
            Self::Passkey => "passkey",
        }
    }

    /// The kind of code typed: six digits are an authenticator's, anything else a recovery code.
    pub fn of_code(code: &str) -> Self {
        if totp::looks_like_code(code) {
            Self::Totp
        } else {
            Self::RecoveryCode
        }
    }
}

/// Accepts a TOTP code or a recovery code of `user_id`, each good once; the method it was, or
/// None when it is neither.
pub async fn accept_code(
    pool: &DbPool,
    sealing: &SealingKeys,
    user_id: Uuid,
    code: &str,
) -> Result<Option<Method>, FactorError> {
    let method = Method::of_code(code);
    let accepted = match method {
        Method::Totp => totp::accept(pool, sealing, user_id, code).await?,
        _ => recovery::accept(pool, user_id, code).await?,
    };
    Ok(accepted.then_some(method))
}

/// A factor removed: the epoch of the caller's fresh token, and whether a factor is left (with
/// none, a role that requires one limits the fresh session to enrolment).
pub struct Removed {
    pub session_epoch: i32,
    pub factor_left: bool,
}

/// The end of a factor's removal, in its transaction: the recovery codes go when no factor is
/// left, every session ends, the event (with `details`) is written, and it commits.
pub(crate) async fn finish_removal(
    tx: deadpool_postgres::Transaction<'_>,
    audit: &AuditEntry,
    user_id: Uuid,
    details: serde_json::Value,
) -> Result<Removed, FactorError> {
    drop_orphan_recovery_codes(&tx, user_id).await?;
    audit.describe(|event| event.resource(Some(user_id)).details(details));
    let factor_left = factor_left(&tx, user_id).await?;
    let session_epoch = end_sessions_with_event(&tx, audit, user_id).await?;
    tx.commit().await?;
    Ok(Removed {
        session_epoch,
        factor_left,
    })
}

/// Inside a factor change's transaction, first: the user's row locked, so two changes of one
/// user's factors (removing the last two at once) run one after the other.
pub(crate) async fn lock_user(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: Uuid,
) -> Result<(), FactorError> {
    tx.query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user_id])
        .await?
        .ok_or_else(|| FactorError::Internal("the user vanished during a factor change".into()))?;
    Ok(())
}

/// Inside a factor change's transaction: does the user still have a factor?
async fn factor_left(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: Uuid,
) -> Result<bool, FactorError> {
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)
                 OR EXISTS (SELECT 1 FROM user_passkeys WHERE user_id = $1)",
            &[&user_id],
        )
        .await?
        .get(0))
}

/// Inside a factor change's transaction: every session of the user ends (the epoch moves on),
/// the event is written, and the new epoch comes back for the caller's fresh token.
pub(crate) async fn end_sessions_with_event(
    tx: &tokio_postgres::Transaction<'_>,
    audit: &AuditEntry,
    user_id: Uuid,
) -> Result<i32, FactorError> {
    let row = tx
        .query_opt(
            "UPDATE users SET session_epoch = session_epoch + 1, updated_at = now()
             WHERE id = $1 RETURNING session_epoch",
            &[&user_id],
        )
        .await?
        .ok_or_else(|| FactorError::Internal("the user vanished during a factor change".into()))?;
    audit.insert(tx).await?;
    Ok(row.get(0))
}

/// When the last factor goes, its recovery codes go with it (they stand in for a factor).
async fn drop_orphan_recovery_codes(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: Uuid,
) -> Result<(), FactorError> {
    tx.execute(
        "DELETE FROM user_recovery_codes WHERE user_id = $1
           AND NOT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM user_passkeys WHERE user_id = $1)",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// A superuser's reset (a lost phone): every factor, recovery code, pending enrolment and
/// sign-in step of user `id` removed, and every session of theirs ended, with the event, in one
/// transaction. False when there is no such user.
pub async fn reset(pool: &DbPool, audit: &AuditEntry, id: Uuid) -> Result<bool, FactorError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let exists = tx
        .query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id])
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    let removed = tx
        .query_one(
            "WITH totp AS (DELETE FROM user_totp WHERE user_id = $1 RETURNING confirmed_at),
                  keys AS (DELETE FROM user_passkeys WHERE user_id = $1 RETURNING 1),
                  codes AS (DELETE FROM user_recovery_codes WHERE user_id = $1 RETURNING 1),
                  pending AS (DELETE FROM passkey_registrations WHERE user_id = $1 RETURNING 1),
                  steps AS (DELETE FROM mfa_logins WHERE user_id = $1 RETURNING 1)
             SELECT (SELECT count(*) FROM totp WHERE confirmed_at IS NOT NULL),
                    (SELECT count(*) FROM keys), (SELECT count(*) FROM codes)",
            &[&id],
        )
        .await?;
    let (totp, passkeys, codes): (i64, i64, i64) = (removed.get(0), removed.get(1), removed.get(2));
    audit.describe(|event| {
        event.resource(Some(id)).details(serde_json::json!({
            "removed": { "totp": totp > 0, "passkeys": passkeys, "recovery_codes": codes }
        }))
    });
    end_sessions_with_event(&tx, audit, id).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::RequiredRoles;

    #[test]
    fn required_roles_parse_a_comma_list_or_none() {
        assert_eq!(RequiredRoles::parse("none"), Ok(RequiredRoles::default()));
        let roles = RequiredRoles::parse("superuser, viewer").unwrap();
        assert!(roles.superuser && roles.viewer && !roles.clinician);
        assert!(RequiredRoles::parse("admin").is_err());
        assert!(RequiredRoles::parse("").is_err());
        assert!(RequiredRoles::parse("none,viewer").is_err());
    }
}
