//! Passkeys (WebAuthn Level 2) by `webauthn-rs`. The ceremony state lives in PostgreSQL
//! between the options and the answer, and is used once: the library verifies an answer against
//! a state as often as it is asked, so a state row is taken (deleted) when used, and the
//! signature counter is checked again against the stored one under a row lock (the state holds
//! the counter of its own time).

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::trail::AuditEntry;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, Url, Webauthn, WebauthnBuilder,
    WebauthnError,
};

/// The browser's answers, as the routes parse them (`PublicKeyCredential.toJSON()` as is).
pub use webauthn_rs::prelude::{PublicKeyCredential as Assertion, RegisterPublicKeyCredential};

use super::{end_sessions_with_event, recovery, FactorError, PasskeySummary};
use crate::users::User;

/// How long a registration may take between options and answer.
const REGISTRATION_SECONDS: f64 = 300.0;

/// The relying party: its id and origin from `WEBAUTHN_RP_ID` and `WEBAUTHN_ORIGIN`
/// (`FRONTEND_HOST` by default, the id its host). Browsers refuse WebAuthn for an IP address
/// origin; with one, passkeys are unavailable and the routes say so.
pub struct RelyingParty {
    webauthn: Result<Webauthn, String>,
}

impl RelyingParty {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let (name, text) = match env.get("WEBAUTHN_ORIGIN") {
            Some(origin) => ("WEBAUTHN_ORIGIN", origin.to_owned()),
            None => (
                "FRONTEND_HOST",
                env.string_or("FRONTEND_HOST", "http://localhost:5173"),
            ),
        };
        let origin = Url::parse(text.trim_end_matches('/')).map_err(|e| ConfigError::Invalid {
            name,
            reason: format!("not a URL: {e}"),
        })?;
        let rp_id = env
            .get("WEBAUTHN_RP_ID")
            .map(str::to_owned)
            .or_else(|| origin.domain().map(str::to_owned));
        let Some(rp_id) = rp_id else {
            let reason = format!(
                "Passkeys are not available: the console's origin {origin} is not a domain name \
                 (set WEBAUTHN_ORIGIN, e.g. http://localhost:5173)"
            );
            tracing::warn!("{reason}");
            return Ok(Self {
                webauthn: Err(reason),
            });
        };
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|builder| builder.rp_name("CareVault").build())
            .map_err(|e| ConfigError::Invalid {
                name: "WEBAUTHN_RP_ID",
                reason: format!("{rp_id} cannot serve origin {origin}: {e}"),
            })?;
        Ok(Self {
            webauthn: Ok(webauthn),
        })
    }

    fn webauthn(&self) -> Result<&Webauthn, FactorError> {
        self.webauthn
            .as_ref()
            .map_err(|reason| FactorError::Unavailable(reason.clone()))
    }
}

/// The library's refusal of an answer, for the client; its own configuration failures are ours.
fn refused(error: WebauthnError) -> FactorError {
    match error {
        WebauthnError::CredentialPossibleCompromise => FactorError::CounterWentBack,
        WebauthnError::Configuration | WebauthnError::MissingAttestationCaList => {
            FactorError::Internal(format!("webauthn: {error}"))
        }
        other => FactorError::PasskeyRefused(other.to_string()),
    }
}

fn state_error(error: serde_json::Error) -> FactorError {
    FactorError::Internal(format!("a stored WebAuthn state does not parse: {error}"))
}

/// The counter a passkey holds (webauthn-rs keeps it inside its credential).
fn counter_of(passkey: &Value) -> i64 {
    passkey["cred"]["counter"].as_i64().unwrap_or(0)
}

/// Starts a registration: `PublicKeyCredentialCreationOptions` as JSON (`{"publicKey": ...}`),
/// excluding the user's passkeys; the state waits 5 minutes.
pub async fn begin_registration(
    pool: &DbPool,
    rp: &RelyingParty,
    user: &User,
) -> Result<Value, FactorError> {
    let webauthn = rp.webauthn()?;
    let client = pool.get().await?;
    let existing: Vec<Vec<u8>> = client
        .query(
            "SELECT credential_id FROM user_passkeys WHERE user_id = $1",
            &[&user.id],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let display = user.full_name.as_deref().unwrap_or(&user.email);
    let (options, state) = webauthn
        .start_passkey_registration(user.id, &user.email, display, Some(existing))
        .map_err(refused)?;
    let state = serde_json::to_value(&state).map_err(state_error)?;
    client
        .execute(
            "WITH expired AS (DELETE FROM passkey_registrations WHERE expires_at < now())
             INSERT INTO passkey_registrations (user_id, state, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state,
                 expires_at = EXCLUDED.expires_at",
            &[&user.id, &state, &REGISTRATION_SECONDS],
        )
        .await?;
    serde_json::to_value(&options).map_err(|e| FactorError::Internal(e.to_string()))
}

/// A registered passkey, the recovery codes made with the user's first factor (shown once),
/// and the epoch of the caller's fresh token.
pub struct Registered {
    pub passkey: PasskeySummary,
    pub recovery_codes: Option<Vec<String>>,
    pub session_epoch: i32,
}

/// Finishes the registration with the browser's answer: the passkey is stored, recovery codes
/// made if the user has none, and every session ends, with the event, in one transaction.
pub async fn register(
    pool: &DbPool,
    rp: &RelyingParty,
    audit: &AuditEntry,
    user: &User,
    name: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<Registered, FactorError> {
    let webauthn = rp.webauthn()?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    super::lock_user(&tx, user.id).await?;
    let state: Value = tx
        .query_opt(
            "DELETE FROM passkey_registrations WHERE user_id = $1 AND expires_at > now()
             RETURNING state",
            &[&user.id],
        )
        .await?
        .ok_or(FactorError::NoPendingPasskey)?
        .get(0);
    let state: PasskeyRegistration = serde_json::from_value(state).map_err(state_error)?;
    let passkey = webauthn
        .finish_passkey_registration(credential, &state)
        .map_err(refused)?;
    let stored = serde_json::to_value(&passkey).map_err(state_error)?;
    let id = Uuid::new_v4();
    let inserted = tx
        .query_one(
            "INSERT INTO user_passkeys (id, user_id, name, credential_id, credential, sign_count)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
            &[
                &id,
                &user.id,
                &name,
                &passkey.cred_id().as_slice(),
                &stored,
                &counter_of(&stored),
            ],
        )
        .await;
    let created_at: DateTime<Utc> = match inserted {
        Ok(row) => row.get(0),
        Err(e)
            if e.as_db_error()
                .is_some_and(|db| db.constraint() == Some("user_passkeys_credential_id_key")) =>
        {
            return Err(FactorError::PasskeyTaken)
        }
        Err(e) => return Err(e.into()),
    };
    let has_codes = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM user_recovery_codes WHERE user_id = $1 AND used_at IS NULL)",
            &[&user.id],
        )
        .await?
        .get::<_, bool>(0);
    let recovery_codes = if has_codes {
        None
    } else {
        Some(recovery::replace_in(&tx, user.id).await?)
    };
    audit.describe(|event| {
        event
            .resource(Some(user.id))
            .details(serde_json::json!({ "method": "passkey", "passkey_id": id }))
    });
    let session_epoch = end_sessions_with_event(&tx, audit, user.id).await?;
    tx.commit().await?;
    Ok(Registered {
        passkey: PasskeySummary {
            id,
            name: name.to_owned(),
            created_at,
            last_used_at: None,
        },
        recovery_codes,
        session_epoch,
    })
}

/// Removes passkey `id` of the user; the recovery codes go too when no factor remains; every
/// session ends, with the event, in one transaction.
pub async fn remove(
    pool: &DbPool,
    audit: &AuditEntry,
    user_id: Uuid,
    id: Uuid,
) -> Result<super::Removed, FactorError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    super::lock_user(&tx, user_id).await?;
    let removed = tx
        .execute(
            "DELETE FROM user_passkeys WHERE id = $1 AND user_id = $2",
            &[&id, &user_id],
        )
        .await?;
    if removed == 0 {
        return Err(FactorError::PasskeyNotFound);
    }
    let details = serde_json::json!({ "method": "passkey", "passkey_id": id });
    super::finish_removal(tx, audit, user_id, details).await
}

/// A sign-in challenge over the user's passkeys: `PublicKeyCredentialRequestOptions` as JSON
/// (`{"publicKey": ...}`) and the state to keep until the answer.
pub async fn challenge(
    pool: &DbPool,
    rp: &RelyingParty,
    user_id: Uuid,
) -> Result<(Value, Value), FactorError> {
    let webauthn = rp.webauthn()?;
    let passkeys = pool
        .get()
        .await?
        .query(
            "SELECT credential FROM user_passkeys WHERE user_id = $1",
            &[&user_id],
        )
        .await?
        .into_iter()
        .map(|row| serde_json::from_value::<Passkey>(row.get(0)).map_err(state_error))
        .collect::<Result<Vec<_>, _>>()?;
    if passkeys.is_empty() {
        return Err(FactorError::PasskeyNotFound);
    }
    let (options, state) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(refused)?;
    Ok((
        serde_json::to_value(&options).map_err(|e| FactorError::Internal(e.to_string()))?,
        serde_json::to_value(&state).map_err(state_error)?,
    ))
}

/// Verifies the browser's assertion against the challenge `state` and the stored passkey: a
/// signature counter that does not go up (unless both are zero, as synced passkeys keep them)
/// is a cloned authenticator and refused. The passkey's counter and last use are recorded.
pub async fn accept(
    pool: &DbPool,
    rp: &RelyingParty,
    user_id: Uuid,
    state: &Value,
    assertion: &Assertion,
) -> Result<(), FactorError> {
    let webauthn = rp.webauthn()?;
    let state: PasskeyAuthentication =
        serde_json::from_value(state.clone()).map_err(state_error)?;
    let result = webauthn
        .finish_passkey_authentication(assertion, &state)
        .map_err(refused)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT credential, sign_count FROM user_passkeys
             WHERE user_id = $1 AND credential_id = $2 FOR UPDATE",
            &[&user_id, &result.cred_id().as_slice()],
        )
        .await?
        .ok_or(FactorError::PasskeyNotFound)?;
    let stored_count: i64 = row.get(1);
    let count = i64::from(result.counter());
    if (count > 0 || stored_count > 0) && count <= stored_count {
        return Err(FactorError::CounterWentBack);
    }
    let mut passkey: Passkey = serde_json::from_value(row.get(0)).map_err(state_error)?;
    passkey.update_credential(&result);
    let credential = serde_json::to_value(&passkey).map_err(state_error)?;
    tx.execute(
        "UPDATE user_passkeys SET credential = $3, sign_count = $4, last_used_at = now()
         WHERE user_id = $1 AND credential_id = $2",
        &[&user_id, &result.cred_id().as_slice(), &credential, &count],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
