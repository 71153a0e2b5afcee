//! Bearer tokens: access tokens and password-reset tokens, signed and checked. HS256 with the
//! key from the application secret, algorithm pinned, `exp`/`iat`/`sub`/`aud` required.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{ConfigError, Env};
use crate::error::ApiError;
use crate::secrets::AppSecret;

const ACCESS_AUDIENCE: &str = "carevault:access";
const RESET_AUDIENCE: &str = "carevault:password-reset";

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
