//! Bearer tokens and the current user. Every endpoint group authenticates through here: HS256
//! with the key from the application secret, algorithm pinned, `exp`/`iat`/`sub`/`aud` required,
//! then one primary-key query loads the user, so a deleted or deactivated user's token stops
//! working at once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{ConfigError, Env, Environment};
use crate::db::DbPool;
use crate::error::ApiError;
use crate::secrets::SecretsClient;
use crate::users::User;

const ACCESS_AUDIENCE: &str = "carevault:access";
const RESET_AUDIENCE: &str = "carevault:password-reset";

/// The application secret: the JWT signing key and SMTP credentials.
#[derive(Clone, Deserialize)]
pub struct AppSecret {
    pub secret_key: String,
    #[serde(default)]
    pub smtp_user: String,
    #[serde(default)]
    pub smtp_password: String,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

impl AppSecret {
    /// From APP_SECRET_ARN (AWS) or SECRET_KEY, SMTP_USER and SMTP_PASSWORD (local).
    pub async fn load(env: &Env, secrets: &SecretsClient) -> Result<Self, ConfigError> {
        let environment = Environment::from_env(env)?;
        let (secret, setting) = match env.get("APP_SECRET_ARN") {
            Some(id) => (
                secrets.json::<AppSecret>("APP_SECRET_ARN", id).await?,
                "APP_SECRET_ARN",
            ),
            None => (
                AppSecret {
                    secret_key: env.string_or("SECRET_KEY", crate::config::DEFAULT_SECRET),
                    smtp_user: env.string_or("SMTP_USER", ""),
                    smtp_password: env.string_or("SMTP_PASSWORD", ""),
                },
                "SECRET_KEY",
            ),
        };
        environment.check_not_default(setting, &secret.secret_key)?;
        if environment != Environment::Local && secret.secret_key.len() < 32 {
            return Err(ConfigError::Invalid {
                name: setting,
                reason: "the JWT signing key must be at least 32 characters".into(),
            });
        }
        Ok(secret)
    }
}

/// Signs and checks tokens. Made once per cold start.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl: Duration,
    pub reset_ttl: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    /// Reset tokens only: a fingerprint of the password hash they were issued against, so a
    /// token stops working once the password has changed (single use without server state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pwd: Option<String>,
}

impl Tokens {
    pub fn new(secret_key: &str, access_ttl: Duration, reset_ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret_key.as_bytes()),
            decoding: DecodingKey::from_secret(secret_key.as_bytes()),
            access_ttl,
            reset_ttl,
        }
    }

    /// ACCESS_TOKEN_EXPIRE_MINUTES (default 60) and PASSWORD_RESET_TOKEN_EXPIRE_MINUTES (default 60).
    pub fn from_env(env: &Env, secret: &AppSecret) -> Result<Self, ConfigError> {
        let access = env.number_in("ACCESS_TOKEN_EXPIRE_MINUTES", 60u64, 1..=24 * 60)?;
        let reset = env.number_in("PASSWORD_RESET_TOKEN_EXPIRE_MINUTES", 60u64, 5..=48 * 60)?;
        Ok(Self::new(
            &secret.secret_key,
            Duration::from_secs(access * 60),
            Duration::from_secs(reset * 60),
        ))
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))
    }

    fn check(&self, token: &str, audience: &str) -> Option<Claims> {
        // Only HS256: a token whose header says `none` or another algorithm is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }

    pub fn issue_access(&self, user_id: Uuid) -> Result<String, ApiError> {
        let now = now_secs();
        self.sign(&Claims {
            sub: user_id.to_string(),
            aud: ACCESS_AUDIENCE.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            pwd: None,
        })
    }

    /// The user id of a valid access token; None for anything else.
    pub fn verify_access(&self, token: &str) -> Option<Uuid> {
        let claims = self.check(token, ACCESS_AUDIENCE)?;
        Uuid::parse_str(&claims.sub).ok()
    }

    pub fn issue_reset(&self, user_id: Uuid, hashed_password: &str) -> Result<String, ApiError> {
        let now = now_secs();
        self.sign(&Claims {
            sub: user_id.to_string(),
            aud: RESET_AUDIENCE.into(),
            iat: now,
            exp: now + self.reset_ttl.as_secs(),
            pwd: Some(password_fingerprint(hashed_password)),
        })
    }

    /// The user id of a valid reset token, with the fingerprint it must still match.
    pub fn verify_reset(&self, token: &str) -> Option<(Uuid, String)> {
        let claims = self.check(token, RESET_AUDIENCE)?;
        Some((Uuid::parse_str(&claims.sub).ok()?, claims.pwd?))
    }
}

/// A digest of the stored hash (which includes its random salt): reveals nothing usable about
/// the password, and changes whenever the password does.
pub fn password_fingerprint(hashed_password: &str) -> String {
    let digest = Sha256::digest(hashed_password.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What every authenticated endpoint group needs: the pool and the token keys.
#[derive(Clone)]
pub struct AuthContext {
    pub pool: DbPool,
    pub tokens: Arc<Tokens>,
}

impl AuthContext {
    /// The cold start of an endpoint group: application secret, token keys, database pool.
    pub async fn from_env(
        env: &Env,
        secrets: &SecretsClient,
        function_name: &str,
    ) -> Result<Self, ConfigError> {
        let secret = AppSecret::load(env, secrets).await?;
        Self::with_secret(env, secrets, &secret, function_name).await
    }

    /// For a function that uses the application secret for more (SMTP credentials).
    pub async fn with_secret(
        env: &Env,
        secrets: &SecretsClient,
        secret: &AppSecret,
        function_name: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            tokens: Arc::new(Tokens::from_env(env, secret)?),
            pool: crate::db::pool_from_env(env, secrets, function_name).await?,
        })
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
        if self.0.is_superuser || self.0.role == crate::domain::Role::Clinician {
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
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("Not authenticated".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("Not authenticated".into()))?;
        let invalid = || ApiError::Unauthorized("Could not validate credentials".into());
        let user_id = context.tokens.verify_access(token).ok_or_else(invalid)?;
        let user = crate::users::find_by_id(&context.pool, user_id)
            .await?
            .ok_or_else(invalid)?;
        if !user.is_active {
            return Err(ApiError::Forbidden("Inactive user".into()));
        }
        Ok(CurrentUser(user))
    }
}
