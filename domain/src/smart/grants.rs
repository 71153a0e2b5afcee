//! What SMART clients were granted, from the authorize endpoint's request to the last refresh:
//! pending authorizations and their codes, grants (one per authorization; every access token
//! names one, and a refresh token's family is its grant), refresh tokens, EHR launches, and the
//! client assertions' ids already seen.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use shared::db::DbPool;
use shared::opaque;
use shared::trail::AuditEntry;
use shared::StoreError;
use uuid::Uuid;

use super::scopes::Scopes;
use crate::users::{User, USER_COLUMNS};

/// How long a code lives once issued.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long the user has to sign in and consent.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long an EHR launch value waits for its app.
pub const LAUNCH_LIFETIME: Duration = Duration::from_secs(5 * 60);

fn interval(d: Duration) -> String {
    format!("{} seconds", d.as_secs())
}

/// An authorization request as the authorize endpoint accepted it.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: Uuid,
    pub redirect_uri: String,
    pub scope: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    /// The EHR launch it named: its user and patient.
    pub launch: Option<Launch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub user_id: Uuid,
    pub patient_id: Uuid,
}

/// A pending request, as the console's consent page shows it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: Uuid,
    pub client_id: Uuid,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: Scopes,
    pub state: Option<String>,
    pub launch: Option<Launch>,
}

/// Stores the request until the user consents; answers its id.
pub async fn begin(pool: &DbPool, request: &AuthorizationRequest) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    let client = pool.get().await?;
    client
        .execute(
            &format!(
                "INSERT INTO smart_authorizations (id, client_id, redirect_uri, scope, state, nonce,
                    code_challenge, launch_user_id, launch_patient_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + interval '{}')",
                interval(PENDING_LIFETIME)
            ),
            &[
                &id,
                &request.client_id,
                &request.redirect_uri,
                &request.scope.to_string(),
                &request.state,
                &request.nonce,
                &request.code_challenge,
                &request.launch.map(|l| l.user_id),
                &request.launch.map(|l| l.patient_id),
            ],
        )
        .await?;
    // Requests nobody finished: gone once expired (bounded: at most a page per call).
    client
        .execute(
            "DELETE FROM smart_authorizations WHERE id IN (
                SELECT id FROM smart_authorizations
                WHERE (expires_at < now() - interval '1 hour' AND exchanged_at IS NULL)
                   OR exchanged_at < now() - interval '1 day' LIMIT 100)",
            &[],
        )
        .await?;
    Ok(id)
}

/// A request still waiting for consent (not expired, no code issued yet).
pub async fn pending(pool: &DbPool, id: Uuid) -> Result<Option<Pending>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT a.id, a.client_id, c.client_name, a.redirect_uri, a.scope, a.state,
                    a.launch_user_id, a.launch_patient_id
             FROM smart_authorizations a JOIN smart_clients c USING (client_id)
             WHERE a.id = $1 AND a.expires_at > now() AND a.code_hash IS NULL",
            &[&id],
        )
        .await?;
    Ok(row.map(|row| Pending {
        id: row.get(0),
        client_id: row.get(1),
        client_name: row.get(2),
        redirect_uri: row.get(3),
        scope: Scopes::requested(row.get(4)),
        state: row.get(5),
        launch: match (row.get(6), row.get(7)) {
            (Some(user_id), Some(patient_id)) => Some(Launch {
                user_id,
                patient_id,
            }),
            _ => None,
        },
    }))
}

/// The user consented: the request gets a code (answered once, stored as its digest), what
/// was granted and the patient in context. None when the request is no longer pending.
pub async fn approve(
    pool: &DbPool,
    audit: &AuditEntry,
    id: Uuid,
    user: &User,
    granted: &Scopes,
    patient: Option<Uuid>,
) -> Result<Option<String>, StoreError> {
    let code = opaque::new_value();
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    let updated = tx
        .execute(
            &format!(
                "UPDATE smart_authorizations
                 SET user_id = $2, patient_id = $3, granted_scope = $4, code_hash = $5,
                     session_epoch = $6, code_expires_at = now() + interval '{}'
                 WHERE id = $1 AND expires_at > now() AND code_hash IS NULL",
                interval(CODE_LIFETIME)
            ),
            &[
                &id,
                &user.id,
                &patient,
                &granted.to_string(),
                &opaque::digest(&code),
                &user.session_epoch,
            ],
        )
        .await?;
    if updated == 0 {
        return Ok(None);
    }
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(Some(code))
}

/// The user refused, or the request was bad: it is gone.
pub async fn discard(pool: &DbPool, id: Uuid) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM smart_authorizations WHERE id = $1 AND code_hash IS NULL",
            &[&id],
        )
        .await?;
    Ok(())
}

/// What the token endpoint checks of a code before it is spent: the client that presents it,
/// the redirect URI it names, and its PKCE verifier (against the stored challenge).
pub struct CodeCheck<'a> {
    pub client_id: Uuid,
    pub redirect_uri: &'a str,
    pub verifier_matches: &'a (dyn Fn(&str) -> bool + Sync),
}

/// What a code exchange issued, or why not.
#[derive(Debug)]
pub enum Exchange {
    Granted {
        grant_id: Uuid,
        refresh_token: Option<String>,
        user: User,
        granted: Scopes,
        patient: Option<Uuid>,
        nonce: Option<String>,
    },
    /// Exchanged before: whatever it issued is revoked now.
    Reused,
    Unknown,
    /// A check failed (the code stays unspent for its own client): the reason, for the trail.
    Refused(&'static str),
}

/// Exchanges `code` once, in one transaction that locks its row: every check, then the grant
/// (and its first refresh token) and the code marked spent. A second exchange, even a
/// concurrent one, waits for the first and then revokes what it issued. `terms` gives the
/// grant's lifetime and whether it is refreshable, from what was granted.
pub async fn exchange(
    pool: &DbPool,
    audit: &AuditEntry,
    code: &str,
    check: CodeCheck<'_>,
    terms: impl FnOnce(&Scopes) -> (Duration, bool),
) -> Result<Exchange, StoreError> {
    let hash = opaque::digest(code);
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT id, client_id, redirect_uri, code_challenge, nonce, user_id, patient_id,
                    granted_scope, code_expires_at <= now(), exchanged_at IS NOT NULL, grant_id,
                    session_epoch
             FROM smart_authorizations WHERE code_hash = $1 FOR UPDATE",
            &[&hash],
        )
        .await?
    else {
        return Ok(Exchange::Unknown);
    };
    let authorization: Uuid = row.get(0);
    if row.get::<_, bool>(9) {
        let issued: Option<Uuid> = row.get(10);
        tx.execute(
            "UPDATE smart_grants SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
            &[&issued],
        )
        .await?;
        audit.insert(&tx).await?;
        tx.commit().await?;
        return Ok(Exchange::Reused);
    }
    let client_id: Uuid = row.get(1);
    let redirect_uri: String = row.get(2);
    let challenge: String = row.get(3);
    if client_id != check.client_id {
        return Ok(Exchange::Refused("the code belongs to another client"));
    }
    if row.get::<_, bool>(8) {
        return Ok(Exchange::Refused("the code expired"));
    }
    if redirect_uri != check.redirect_uri {
        return Ok(Exchange::Refused(
            "redirect_uri differs from the authorization request's",
        ));
    }
    if !(check.verifier_matches)(&challenge) {
        return Ok(Exchange::Refused(
            "code_verifier is missing or does not match",
        ));
    }
    let user_id: Uuid = row.get(5);
    let epoch: Option<i32> = row.get(11);
    let user = tx
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            &[&user_id],
        )
        .await?
        .as_ref()
        .map(User::from_row)
        .filter(|u| u.is_active && Some(u.session_epoch) == epoch);
    let Some(user) = user else {
        return Ok(Exchange::Refused(
            "the user signed out, changed password or was deactivated since consenting",
        ));
    };
    let granted = Scopes::requested(row.get::<_, Option<&str>>(7).unwrap_or(""));
    let patient: Option<Uuid> = row.get(6);
    let nonce: Option<String> = row.get(4);
    let (lifetime, refreshable) = terms(&granted);
    let grant_id = Uuid::new_v4();
    insert_grant(
        &tx,
        grant_id,
        &NewGrant {
            client_id,
            user: Some(&user),
            scope: &granted,
            patient,
            lifetime,
            refreshable,
        },
    )
    .await?;
    tx.execute(
        "UPDATE smart_authorizations SET exchanged_at = now(), grant_id = $2 WHERE id = $1",
        &[&authorization, &grant_id],
    )
    .await?;
    let refresh_token = if refreshable {
        Some(new_refresh_token(&tx, grant_id).await?)
    } else {
        None
    };
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(Exchange::Granted {
        grant_id,
        refresh_token,
        user,
        granted,
        patient,
        nonce,
    })
}

/// A grant as a new token is issued under it.
#[derive(Debug, Clone)]
pub struct NewGrant<'a> {
    pub client_id: Uuid,
    pub user: Option<&'a User>,
    pub scope: &'a Scopes,
    pub patient: Option<Uuid>,
    /// How long the grant lives: its access token's lifetime without a refresh token, the
    /// refresh tokens' with one.
    pub lifetime: Duration,
    /// Issue a refresh token.
    pub refreshable: bool,
}

async fn insert_grant(
    client: &impl GenericClient,
    id: Uuid,
    new: &NewGrant<'_>,
) -> Result<(), StoreError> {
    client
        .execute(
            &format!(
                "INSERT INTO smart_grants (id, client_id, user_id, session_epoch, scope, patient_id,
                    expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + interval '{}')",
                interval(new.lifetime)
            ),
            &[
                &id,
                &new.client_id,
                &new.user.map(|u| u.id),
                &new.user.map(|u| u.session_epoch),
                &new.scope.to_string(),
                &new.patient,
            ],
        )
        .await?;
    // Grants a day past their end are gone (their refresh tokens with them), a page at a time.
    client
        .execute(
            "DELETE FROM smart_grants WHERE id IN (
                SELECT id FROM smart_grants WHERE expires_at < now() - interval '1 day' LIMIT 100)",
            &[],
        )
        .await?;
    Ok(())
}

/// Creates a grant without a user (Backend Services): answers its id.
pub async fn create(
    pool: &DbPool,
    audit: &AuditEntry,
    new: NewGrant<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    insert_grant(&tx, id, &new).await?;
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(id)
}

async fn new_refresh_token(client: &impl GenericClient, grant: Uuid) -> Result<String, StoreError> {
    let token = opaque::new_value();
    client
        .execute(
            "INSERT INTO smart_refresh_tokens (token_hash, grant_id) VALUES ($1, $2)",
            &[&opaque::digest(&token), &grant],
        )
        .await?;
    Ok(token)
}

/// A grant that still stands: not revoked nor expired, its client registered, and its user (if
/// any) active in the same session epoch.
#[derive(Debug, Clone)]
pub struct LiveGrant {
    pub id: Uuid,
    pub client_id: Uuid,
    pub user: Option<User>,
    pub scope: Scopes,
    pub patient: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

const LIVE_GRANT_SQL: &str = "SELECT g.id, g.client_id, g.scope, g.patient_id, g.expires_at, \
    g.session_epoch, u.id IS NOT NULL, {USER_COLUMNS_U} \
    FROM smart_grants g LEFT JOIN users u ON u.id = g.user_id \
    WHERE g.id = $1 AND g.revoked_at IS NULL AND g.expires_at > now()";

fn live_grant_sql() -> String {
    let user_columns: Vec<String> = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
    LIVE_GRANT_SQL.replace("{USER_COLUMNS_U}", &user_columns.join(", "))
}

fn live_from_row(row: &tokio_postgres::Row) -> Option<LiveGrant> {
    let epoch: Option<i32> = row.get(5);
    let has_user: bool = row.get(6);
    let user = match epoch {
        None => None,
        Some(_) if !has_user => return None,
        Some(epoch) => {
            let user = User::from_row_at(row, 7);
            if user.session_epoch != epoch || !user.is_active {
                return None;
            }
            Some(user)
        }
    };
    Some(LiveGrant {
        id: row.get(0),
        client_id: row.get(1),
        scope: Scopes::requested(row.get(2)),
        patient: row.get(3),
        expires_at: row.get(4),
        user,
    })
}

/// The grant `id`, if it still stands (one primary-key read, joined to its user).
pub async fn live(pool: &DbPool, id: Uuid) -> Result<Option<LiveGrant>, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&live_grant_sql()).await?;
    Ok(client
        .query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .and_then(live_from_row))
}

#[derive(Debug)]
pub enum Refresh {
    /// The token was spent and replaced by `refresh_token`.
    Rotated {
        grant: LiveGrant,
        refresh_token: String,
    },
    /// A spent token came back: its whole family is revoked.
    Reused,
    /// Unknown, of another client, or its grant no longer stands.
    Invalid,
}

/// Spends `token` of `client_id` and issues its successor.
pub async fn refresh(
    pool: &DbPool,
    audit: &AuditEntry,
    client_id: Uuid,
    token: &str,
) -> Result<Refresh, StoreError> {
    let hash = opaque::digest(token);
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT r.grant_id, r.used_at IS NOT NULL FROM smart_refresh_tokens r
             JOIN smart_grants g ON g.id = r.grant_id
             WHERE r.token_hash = $1 AND g.client_id = $2 FOR UPDATE OF r",
            &[&hash, &client_id],
        )
        .await?
    else {
        return Ok(Refresh::Invalid);
    };
    let grant_id: Uuid = row.get(0);
    if row.get::<_, bool>(1) {
        tx.execute(
            "UPDATE smart_grants SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
            &[&grant_id],
        )
        .await?;
        audit.insert(&tx).await?;
        tx.commit().await?;
        return Ok(Refresh::Reused);
    }
    let live = tx
        .query_opt(&live_grant_sql(), &[&grant_id])
        .await?
        .as_ref()
        .and_then(live_from_row);
    let Some(grant) = live else {
        return Ok(Refresh::Invalid);
    };
    tx.execute(
        "UPDATE smart_refresh_tokens SET used_at = now() WHERE token_hash = $1",
        &[&hash],
    )
    .await?;
    let refresh_token = new_refresh_token(&tx, grant_id).await?;
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(Refresh::Rotated {
        grant,
        refresh_token,
    })
}

/// The grant a refresh token of `client_id` belongs to, if it still stands and the token is
/// unspent (introspection).
pub async fn by_refresh_token(pool: &DbPool, token: &str) -> Result<Option<LiveGrant>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT grant_id FROM smart_refresh_tokens WHERE token_hash = $1 AND used_at IS NULL",
            &[&opaque::digest(token)],
        )
        .await?;
    match row {
        Some(row) => live(pool, row.get(0)).await,
        None => Ok(None),
    }
}

/// Revokes the grant a refresh token of `client_id` belongs to; true if there was one.
pub async fn revoke_by_refresh_token(
    pool: &DbPool,
    client_id: Uuid,
    token: &str,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let revoked = client
        .execute(
            "UPDATE smart_grants SET revoked_at = coalesce(revoked_at, now())
             WHERE client_id = $2 AND id = (
                SELECT grant_id FROM smart_refresh_tokens WHERE token_hash = $1)",
            &[&opaque::digest(token), &client_id],
        )
        .await?;
    Ok(revoked > 0)
}

/// Revokes grant `id` of `client_id`; true if there was one.
pub async fn revoke(pool: &DbPool, client_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let revoked = client
        .execute(
            "UPDATE smart_grants SET revoked_at = coalesce(revoked_at, now())
             WHERE id = $1 AND client_id = $2",
            &[&id, &client_id],
        )
        .await?;
    Ok(revoked > 0)
}

/// Records a client assertion's `jti` until well after `expires_at` (the token endpoint's
/// leeway included); false when it was seen before (a replay).
pub async fn first_use_of_assertion(
    pool: &DbPool,
    client_id: Uuid,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM smart_assertion_jtis WHERE client_id = $1 AND expires_at < now()",
            &[&client_id],
        )
        .await?;
    let inserted = client
        .execute(
            "INSERT INTO smart_assertion_jtis (client_id, jti, expires_at)
             VALUES ($1, $2, $3::timestamptz + interval '5 minutes')
             ON CONFLICT DO NOTHING",
            &[&client_id, &jti, &expires_at],
        )
        .await?;
    Ok(inserted == 1)
}

/// An EHR launch: the console binds its user and patient to a value the app carries back.
pub async fn new_launch(
    pool: &DbPool,
    audit: &AuditEntry,
    client_id: Uuid,
    launch: Launch,
) -> Result<String, StoreError> {
    let value = opaque::new_value();
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    tx.execute(
        &format!(
            "INSERT INTO smart_launches (value_hash, client_id, user_id, patient_id, expires_at)
             VALUES ($1, $2, $3, $4, now() + interval '{}')",
            interval(LAUNCH_LIFETIME)
        ),
        &[
            &opaque::digest(&value),
            &client_id,
            &launch.user_id,
            &launch.patient_id,
        ],
    )
    .await?;
    tx.execute("DELETE FROM smart_launches WHERE expires_at < now()", &[])
        .await?;
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// The launch `value` of `client_id`, spent (a launch value opens one authorization).
pub async fn take_launch(
    pool: &DbPool,
    client_id: Uuid,
    value: &str,
) -> Result<Option<Launch>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "DELETE FROM smart_launches
             WHERE value_hash = $1 AND client_id = $2 AND expires_at > now()
             RETURNING user_id, patient_id",
            &[&opaque::digest(value), &client_id],
        )
        .await?;
    Ok(row.map(|row| Launch {
        user_id: row.get(0),
        patient_id: row.get(1),
    }))
}

/// Whether patient `id` exists.
pub async fn patient_exists(pool: &DbPool, id: Uuid) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&id])
        .await?
        .is_some())
}
