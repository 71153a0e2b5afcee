//! The caller: the bearer token checked, then one primary-key query loads the user, so a
//! deleted or deactivated user's token stops working at once. The user is the actor of the
//! request's audit event from then on.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use domain::users::User;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::secrets::SecretsClient;
use shared::tokens::{Session, SessionScope, TokenRole, Tokens};
use shared::trail::AuditEntry;
use shared::ApiError;

/// What every authenticated endpoint group needs: the pool and the token keys.
#[derive(Clone)]
pub struct AuthContext {
    pub pool: DbPool,
    pub tokens: Arc<Tokens>,
}

impl AuthContext {
    /// The cold start of an endpoint group: token keys (a private one only for `role`
    /// IssueAndVerify), database pool.
    pub async fn from_env(
        env: &Env,
        secrets: &Arc<SecretsClient>,
        function_name: &str,
        role: TokenRole,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            tokens: Arc::new(Tokens::from_env(env, secrets.clone(), role).await?),
            pool: shared::db::pool_from_env(env, secrets, function_name).await?,
        })
    }

    /// The cold start of a group that only verifies tokens, with a Secrets Manager client of
    /// its own.
    pub async fn verifying(env: &Env, function_name: &str) -> Result<Self, ConfigError> {
        let secrets = Arc::new(SecretsClient::from_env(env));
        Self::from_env(env, &secrets, function_name, TokenRole::Verify).await
    }
}

/// The user the bearer token belongs to, active. Missing, malformed, tampered, expired or
/// wrongly signed tokens, and tokens of deleted users, are 401; a deactivated user is 403.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl CurrentUser {
    pub fn require_superuser(&self) -> Result<(), ApiError> {
        if self.0.is_superuser {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "The user doesn't have enough privileges".into(),
            ))
        }
    }

    /// Clinicians and superusers change patient data; viewers only read.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        if self.0.is_superuser || self.0.role == shared::domain::Role::Clinician {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "The user doesn't have enough privileges".into(),
            ))
        }
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    AuthContext: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let context = AuthContext::from_ref(state);
        let token = bearer_token(parts)?;
        let session = context.tokens.verify_access(token).await;
        Self::of_session(&context, parts, session.ok_or_else(invalid_credentials)?).await
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized("Could not validate credentials".into())
}

/// The bearer token of the request's Authorization header; 401 without one.
pub fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    bearer_of(&parts.headers).ok_or_else(|| ApiError::Unauthorized("Not authenticated".into()))
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
}

impl CurrentUser {
    /// The user of a verified session token, loaded (one primary-key query) and checked.
    pub async fn of_session(
        context: &AuthContext,
        parts: &Parts,
        session: Session,
    ) -> Result<Self, ApiError> {
        let user = domain::users::find_by_id(&context.pool, session.user_id)
            .await?
            .ok_or_else(invalid_credentials)?;
        // A password change, a logout or a second factor's change since the token was issued
        // ended its session.
        if user.session_epoch != session.epoch {
            return Err(invalid_credentials());
        }
        // A valid token names the actor, even of a request refused below.
        if let Some(audit) = parts.extensions.get::<AuditEntry>() {
            audit.actor(user.id, &user.email);
        }
        if !user.is_active {
            return Err(ApiError::Forbidden("Inactive user".into()));
        }
        if session.scope == SessionScope::EnrolmentOnly && !reachable_while_enrolling(parts) {
            return Err(ApiError::Forbidden("Enroll a second factor first".into()));
        }
        Ok(CurrentUser(user))
    }
}

/// What a session limited to enrolment reaches: the user's own account, its second factors and
/// logout. Matched on the path as the gateway routed it (no trailing slash rewriting games:
/// anything else is refused).
fn reachable_while_enrolling(parts: &Parts) -> bool {
    let path = parts.uri.path().trim_end_matches('/');
    path == "/api/v1/users/me"
        || path == "/api/v1/logout"
        || path == "/api/v1/users/me/mfa"
        || path.starts_with("/api/v1/users/me/mfa/")
}

/// A privilege a route requires beyond a valid token.
pub trait Privilege {
    fn require(user: &CurrentUser) -> Result<(), ApiError>;
}

/// Clinicians and superusers: may change patient data.
pub struct MayWrite;

impl Privilege for MayWrite {
    fn require(user: &CurrentUser) -> Result<(), ApiError> {
        user.require_writer()
    }
}

/// Superusers: manage users, read the audit trail.
pub struct IsSuperuser;

impl Privilege for IsSuperuser {
    fn require(user: &CurrentUser) -> Result<(), ApiError> {
        user.require_superuser()
    }
}

/// The caller, when they hold privilege `P`; 403 otherwise. Placed before the body among a
/// handler's arguments, so the role is checked (and a refusal recorded) before the body is read.
pub struct Authorized<P> {
    pub user: User,
    privilege: std::marker::PhantomData<P>,
}

pub type Writer = Authorized<MayWrite>;
pub type Superuser = Authorized<IsSuperuser>;

impl<S, P: Privilege> FromRequestParts<S> for Authorized<P>
where
    AuthContext: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        P::require(&current)?;
        Ok(Self {
            user: current.0,
            privilege: std::marker::PhantomData,
        })
    }
}
