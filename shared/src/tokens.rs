//! Bearer tokens: access tokens and password-reset tokens, signed with ES256 (ECDSA P-256) and
//! a `kid` naming the key. Only the functions that issue tokens (auth, users) hold a private key;
//! every function verifies with the public keys, published as a JWK Set. A token with any other
//! algorithm, no `kid` or an unknown one is refused; `exp`/`iat`/`sub`/`aud` are required.
//!
//! Rotation: a new key is added and made active while the previous one stays published, so the
//! tokens it signed verify until they expire; a verifier that meets a `kid` it does not know
//! re-reads the public keys (at most once a minute), so warm functions learn new keys without a
//! redeploy.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{ConfigError, Env, Environment};
use crate::error::ApiError;
use crate::secrets::SecretsClient;

const ACCESS_AUDIENCE: &str = "carevault:access";
const RESET_AUDIENCE: &str = "carevault:password-reset";
/// A verifier re-reads the public keys for an unknown `kid` at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// The private keys, as the signing secret holds them: every key kept for rotation, and which
/// one signs.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SigningKeys {
    #[serde(default)]
    pub active_kid: String,
    #[serde(default)]
    pub keys: Vec<PrivateKey>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PrivateKey {
    pub kid: String,
    /// PKCS#8, PEM.
    pub private_key_pem: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys(active {}, <redacted>)", self.active_kid)
    }
}

impl SigningKeys {
    /// A fresh key set of one new key, active.
    pub fn generate(kid: &str) -> Result<Self, String> {
        Ok(Self {
            active_kid: kid.to_owned(),
            keys: vec![PrivateKey::generate(kid)?],
        })
    }

    /// Adds a new key and makes it the one that signs; the others stay, so what they signed
    /// still verifies.
    pub fn rotate(&mut self, kid: &str) -> Result<(), String> {
        self.keys.push(PrivateKey::generate(kid)?);
        self.active_kid = kid.to_owned();
        Ok(())
    }

    /// Drops every key but the active one (once what they signed has expired).
    pub fn retire_inactive(&mut self) {
        let active = self.active_kid.clone();
        self.keys.retain(|k| k.kid == active);
    }

    pub fn is_usable(&self) -> bool {
        self.keys.iter().any(|k| k.kid == self.active_kid)
    }

    /// The public half of every key, as a JWK Set.
    pub fn public_jwks(&self) -> Result<serde_json::Value, String> {
        let keys = self
            .keys
            .iter()
            .map(PrivateKey::public_jwk)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::json!({ "keys": keys }))
    }
}

impl PrivateKey {
    fn generate(kid: &str) -> Result<Self, String> {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|_| "generating a P-256 key failed".to_owned())?;
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        Ok(Self {
            kid: kid.to_owned(),
            private_key_pem: format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
        })
    }

    fn der(&self) -> Result<Vec<u8>, String> {
        let body: String = self
            .private_key_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| format!("key {}: not a PEM key", self.kid))
    }

    /// `{kty: EC, crv: P-256, x, y, kid, alg: ES256, use: sig}` (RFC 7517, RFC 7518).
    fn public_jwk(&self) -> Result<serde_json::Value, String> {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.der()?)
            .map_err(|_| format!("key {}: not a P-256 PKCS#8 key", self.kid))?;
        // The uncompressed point: 0x04, then X and Y of 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(format!("key {}: unexpected public key encoding", self.kid));
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok(serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        }))
    }
}

/// Where the public keys come from: re-read from their secret when an unknown `kid` appears.
enum PublicKeySource {
    Fixed,
    Secret {
        secrets: Arc<SecretsClient>,
        secret_id: String,
    },
}

struct Verifying {
    keys: HashMap<String, DecodingKey>,
    /// What `GET /.well-known/jwks.json` answers: only the public members of each key.
    jwks: serde_json::Value,
    read_at: Instant,
}

impl Verifying {
    fn from_jwks(jwks: &serde_json::Value, setting: &'static str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: setting,
            reason,
        };
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| invalid(format!("not a JWK Set: {e}")))?;
        let mut keys = HashMap::new();
        let mut public = Vec::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| invalid("a key without kid".into()))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {kid}: {e}")))?;
            keys.insert(kid, key);
            public.push(serde_json::to_value(jwk).map_err(|e| invalid(e.to_string()))?);
        }
        if keys.is_empty() {
            return Err(invalid("the JWK Set holds no key".into()));
        }
        Ok(Self {
            keys,
            jwks: serde_json::json!({ "keys": public }),
            read_at: Instant::now(),
        })
    }
}

struct Signing {
    kid: String,
    key: EncodingKey,
}

/// Signs (in the functions that issue tokens) and checks tokens. Made once per cold start.
pub struct Tokens {
    signing: Option<Signing>,
    verifying: RwLock<Verifying>,
    source: PublicKeySource,
    pub access_ttl: Duration,
    pub reset_ttl: Duration,
}

/// What a function does with tokens: only issuers load a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    Verify,
    IssueAndVerify,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    /// Access tokens: the user's session epoch when issued; a password change or a logout
    /// moves it on, and every token issued before answers 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sep: Option<i32>,
    /// Reset tokens: a fingerprint of the password hash and email they were issued against, so
    /// a token is spent once either changes (single use without server state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pwd: Option<String>,
    /// A session that may only enrol a second factor (its role requires one, it has none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    enr: bool,
}

/// What a session may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionScope {
    /// Everything the user's role allows.
    Full,
    /// Only the user's own account, second-factor enrolment and logout: the user's role
    /// requires a second factor and the account has none yet.
    EnrolmentOnly,
}

/// A verified access token: whose session, under which epoch, reaching what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    pub epoch: i32,
    pub scope: SessionScope,
}

impl Tokens {
    /// From explicit keys (tests, benchmarks): `signing` for an issuer, the public JWK Set.
    pub fn new(
        signing: Option<&SigningKeys>,
        jwks: &serde_json::Value,
        access_ttl: Duration,
        reset_ttl: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            signing: signing
                .map(|keys| Self::signing_key(keys, "TOKEN_SIGNING_KEYS"))
                .transpose()?,
            verifying: RwLock::new(Verifying::from_jwks(jwks, "TOKEN_PUBLIC_KEYS")?),
            source: PublicKeySource::Fixed,
            access_ttl,
            reset_ttl,
        })
    }

    fn signing_key(keys: &SigningKeys, setting: &'static str) -> Result<Signing, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: setting,
            reason,
        };
        let active = keys
            .keys
            .iter()
            .find(|k| k.kid == keys.active_kid)
            .ok_or_else(|| invalid("no key with the active kid".into()))?;
        Ok(Signing {
            kid: active.kid.clone(),
            key: EncodingKey::from_ec_der(&active.der().map_err(invalid)?),
        })
    }

    /// TOKEN_PUBLIC_KEYS_SECRET_ARN (a secret holding the JWK Set) or TOKEN_PUBLIC_KEYS (the
    /// JWK Set itself); issuers also TOKEN_SIGNING_SECRET_ARN or TOKEN_SIGNING_KEYS.
    /// ACCESS_TOKEN_EXPIRE_MINUTES (default 60) and PASSWORD_RESET_TOKEN_EXPIRE_MINUTES (60).
    pub async fn from_env(
        env: &Env,
        secrets: Arc<SecretsClient>,
        role: TokenRole,
    ) -> Result<Self, ConfigError> {
        Environment::from_env(env)?;
        let access = env.number_in("ACCESS_TOKEN_EXPIRE_MINUTES", 60u64, 1..=24 * 60)?;
        let reset = env.number_in("PASSWORD_RESET_TOKEN_EXPIRE_MINUTES", 60u64, 5..=48 * 60)?;
        let signing = match role {
            TokenRole::Verify => None,
            TokenRole::IssueAndVerify => Some(match env.get("TOKEN_SIGNING_SECRET_ARN") {
                Some(id) => {
                    let keys: SigningKeys = secrets.json("TOKEN_SIGNING_SECRET_ARN", id).await?;
                    Self::signing_key(&keys, "TOKEN_SIGNING_SECRET_ARN")?
                }
                None => {
                    let raw =
                        env.required("TOKEN_SIGNING_KEYS")
                            .map_err(|_| ConfigError::Missing {
                                name: "TOKEN_SIGNING_SECRET_ARN",
                            })?;
                    let keys: SigningKeys =
                        serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                            name: "TOKEN_SIGNING_KEYS",
                            reason: e.to_string(),
                        })?;
                    Self::signing_key(&keys, "TOKEN_SIGNING_KEYS")?
                }
            }),
        };
        let (verifying, source) = match env.get("TOKEN_PUBLIC_KEYS_SECRET_ARN") {
            Some(id) => {
                let jwks: serde_json::Value =
                    secrets.json("TOKEN_PUBLIC_KEYS_SECRET_ARN", id).await?;
                (
                    Verifying::from_jwks(&jwks, "TOKEN_PUBLIC_KEYS_SECRET_ARN")?,
                    PublicKeySource::Secret {
                        secrets,
                        secret_id: id.to_owned(),
                    },
                )
            }
            None => {
                let raw = env
                    .required("TOKEN_PUBLIC_KEYS")
                    .map_err(|_| ConfigError::Missing {
                        name: "TOKEN_PUBLIC_KEYS_SECRET_ARN",
                    })?;
                let jwks: serde_json::Value =
                    serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                        name: "TOKEN_PUBLIC_KEYS",
                        reason: e.to_string(),
                    })?;
                (
                    Verifying::from_jwks(&jwks, "TOKEN_PUBLIC_KEYS")?,
                    PublicKeySource::Fixed,
                )
            }
        };
        Ok(Self {
            signing,
            verifying: RwLock::new(verifying),
            source,
            access_ttl: Duration::from_secs(access * 60),
            reset_ttl: Duration::from_secs(reset * 60),
        })
    }

    /// The public keys as an RFC 7517 JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.read().jwks.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Verifying> {
        self.verifying
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sign<C: Serialize>(&self, claims: &C) -> Result<String, ApiError> {
        let signing = self
            .signing
            .as_ref()
            .ok_or_else(|| ApiError::internal("this function holds no signing key"))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &signing.key)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))
    }

    async fn check<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Option<C> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 {
            return None;
        }
        let kid = header.kid?;
        if !self.read().keys.contains_key(&kid) {
            self.refresh().await;
        }
        // Only ES256: a token whose header says `none`, HS256 or anything else is refused.
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud"]);
        validation.leeway = 5;
        let verifying = self.read();
        let key = verifying.keys.get(&kid)?;
        jsonwebtoken::decode::<C>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    }

    /// Re-reads the public keys from their secret (a key was added since the cold start), at
    /// most once per `REFRESH_AT_MOST_EVERY`; a failure keeps the keys known.
    async fn refresh(&self) {
        let PublicKeySource::Secret { secrets, secret_id } = &self.source else {
            return;
        };
        if self.read().read_at.elapsed() < REFRESH_AT_MOST_EVERY {
            return;
        }
        // Whatever happens next, not again for a while.
        if let Ok(mut verifying) = self.verifying.write() {
            verifying.read_at = Instant::now();
        }
        let jwks = secrets
            .json::<serde_json::Value>("TOKEN_PUBLIC_KEYS_SECRET_ARN", secret_id)
            .await
            .and_then(|jwks| Verifying::from_jwks(&jwks, "TOKEN_PUBLIC_KEYS_SECRET_ARN"));
        match jwks {
            Ok(fresh) => {
                if let Ok(mut verifying) = self.verifying.write() {
                    *verifying = fresh;
                }
                tracing::info!("token public keys re-read");
            }
            Err(error) => tracing::warn!(%error, "token public keys could not be re-read"),
        }
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_epoch: i32,
        scope: SessionScope,
    ) -> Result<String, ApiError> {
        let now = now_secs();
        self.sign(&Claims {
            sub: user_id.to_string(),
            aud: ACCESS_AUDIENCE.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            sep: Some(session_epoch),
            pwd: None,
            enr: scope == SessionScope::EnrolmentOnly,
        })
    }

    /// The session of a valid access token; None for anything else.
    pub async fn verify_access(&self, token: &str) -> Option<Session> {
        let claims: Claims = self.check(token, ACCESS_AUDIENCE).await?;
        Some(Session {
            user_id: Uuid::parse_str(&claims.sub).ok()?,
            epoch: claims.sep?,
            scope: if claims.enr {
                SessionScope::EnrolmentOnly
            } else {
                SessionScope::Full
            },
        })
    }

    /// A reset token for the account as it is now: spent once its password or email changes.
    pub fn issue_reset(
        &self,
        user_id: Uuid,
        hashed_password: &str,
        email: &str,
    ) -> Result<String, ApiError> {
        let now = now_secs();
        self.sign(&Claims {
            sub: user_id.to_string(),
            aud: RESET_AUDIENCE.into(),
            iat: now,
            exp: now + self.reset_ttl.as_secs(),
            sep: None,
            pwd: Some(account_fingerprint(hashed_password, email)),
            enr: false,
        })
    }

    /// The user id of a valid reset token, with the fingerprint it must still match.
    pub async fn verify_reset(&self, token: &str) -> Option<(Uuid, String)> {
        let claims: Claims = self.check(token, RESET_AUDIENCE).await?;
        Some((Uuid::parse_str(&claims.sub).ok()?, claims.pwd?))
    }
}

/// A SMART access token's claims: `aud` is the FHIR base, `sub` the user (or, for a back-end
/// system, the client), `gid` the grant every request reads back (revoked, client deleted, user
/// signed out: the token stops at once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmartClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub gid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Uuid>,
}

/// What a SMART access token is issued for: the FHIR base (its issuer and audience), the user
/// or (Backend Services) the client, the client, the grant, its scope and patient.
pub struct SmartGrantOf<'a> {
    pub fhir_base: &'a str,
    pub subject: &'a str,
    pub client_id: Uuid,
    pub grant: Uuid,
    pub scope: &'a str,
    pub patient: Option<Uuid>,
}

impl Tokens {
    /// A SMART access token of `grant` living `ttl` (at most the grant's own end).
    pub fn issue_smart(
        &self,
        grant: &SmartGrantOf<'_>,
        ttl: Duration,
    ) -> Result<(String, SmartClaims), ApiError> {
        let now = now_secs();
        let claims = SmartClaims {
            iss: grant.fhir_base.to_owned(),
            sub: grant.subject.to_owned(),
            aud: grant.fhir_base.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            jti: Uuid::new_v4().to_string(),
            client_id: grant.client_id.to_string(),
            scope: grant.scope.to_owned(),
            gid: grant.grant,
            patient: grant.patient,
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// The claims of a valid SMART access token for the FHIR base `audience`.
    pub async fn verify_smart(&self, token: &str, audience: &str) -> Option<SmartClaims> {
        self.check(token, audience).await
    }

    /// An OpenID Connect ID token: `claims` as given, signed with the server's key.
    pub fn sign_id_token(&self, claims: &serde_json::Value) -> Result<String, ApiError> {
        self.sign(claims)
    }
}

/// Which audience a token names, read without verifying anything: only to choose which check
/// to run (a session's or a SMART token's), so a request pays for one signature verification.
pub fn claimed_audience(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Audience {
        aud: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Audience>(token)
        .ok()
        .map(|claims| claims.aud)
}

/// Whether `token` claims to be a CareVault session's access token (unverified; see
/// [`claimed_audience`]).
pub fn claims_session(token: &str) -> bool {
    claimed_audience(token).as_deref() == Some(ACCESS_AUDIENCE)
}

/// A digest of the stored hash (which includes its random salt) and the email: reveals nothing
/// usable, and changes whenever the password or the email does.
pub fn account_fingerprint(hashed_password: &str, email: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(hashed_password.as_bytes());
    digest.update([0]);
    digest.update(email.to_lowercase().as_bytes());
    digest.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(keys: &SigningKeys) -> Tokens {
        Tokens::new(
            Some(keys),
            &keys.public_jwks().unwrap(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_rotated_key_signs_while_the_old_one_still_verifies() {
        let mut keys = SigningKeys::generate("one").unwrap();
        let old = tokens(&keys)
            .issue_access(Uuid::nil(), 3, SessionScope::Full)
            .unwrap();
        keys.rotate("two").unwrap();
        let rotated = tokens(&keys);
        let new = rotated
            .issue_access(Uuid::nil(), 3, SessionScope::Full)
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some("two")
        );
        let session = Some(Session {
            user_id: Uuid::nil(),
            epoch: 3,
            scope: SessionScope::Full,
        });
        assert_eq!(rotated.verify_access(&old).await, session);
        assert_eq!(rotated.verify_access(&new).await, session);
        keys.retire_inactive();
        assert_eq!(tokens(&keys).verify_access(&old).await, None, "retired");
    }

    #[test]
    fn the_fingerprint_changes_with_the_password_or_the_email() {
        let base = account_fingerprint("hash", "a@example.com");
        assert_eq!(base, account_fingerprint("hash", "A@example.com"));
        assert_ne!(base, account_fingerprint("hash2", "a@example.com"));
        assert_ne!(base, account_fingerprint("hash", "b@example.com"));
    }
}
