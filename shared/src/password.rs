//! Password hashing: argon2id with OWASP's minimum parameters, on the blocking pool so a hash
//! never stalls the async runtime. bcrypt hashes imported from the system we replace still verify
//! and are flagged for rehashing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;
use crate::error::ApiError;

/// OWASP Password Storage Cheat Sheet minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
pub const MEMORY_KIB: u32 = 19_456;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// An argon2id hash (with the parameters above) of a random password nobody knows: verifying
/// against it makes a login for an unknown email cost the same as for a known one.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRmb3JkdW1teQ$4pv4nb3R5m7cZ9WBnZ9b7XpZ7wG0yIhpJQGJtWRIRvc";

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` as a PHC string (`$argon2id$...`).
pub async fn hash(password: &Password) -> Result<String, ApiError> {
    let password = password.expose().to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("password hashing: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("password hashing task: {e}")))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored in an old format or with weaker parameters: store a fresh hash.
    YesNeedsRehash,
}

/// Checks `candidate` against a stored hash; `None` (unknown user) verifies against a dummy
/// hash so that the answer takes as long as for a real user, and always fails.
pub async fn verify(candidate: &str, stored: Option<&str>) -> Result<Verified, ApiError> {
    let candidate = candidate.to_owned();
    let (stored, is_real) = match stored {
        Some(s) => (s.to_owned(), true),
        None => (DUMMY_HASH.to_owned(), false),
    };
    let outcome = tokio::task::spawn_blocking(move || verify_blocking(&candidate, &stored))
        .await
        .map_err(|e| ApiError::internal(format!("password verification task: {e}")))?;
    Ok(if is_real { outcome } else { Verified::No })
}

fn verify_blocking(candidate: &str, stored: &str) -> Verified {
    if stored.starts_with("$2") {
        // bcrypt, as the system we replace stored it.
        return match bcrypt::verify(candidate, stored) {
            Ok(true) => Verified::YesNeedsRehash,
            _ => Verified::No,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    // Verification uses the parameters stored in the hash itself.
    if Argon2::default()
        .verify_password(candidate.as_bytes(), &parsed)
        .is_err()
    {
        return Verified::No;
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && parsed.params.get_decimal("m") == Some(MEMORY_KIB)
        && parsed.params.get_decimal("t") == Some(ITERATIONS)
        && parsed.params.get_decimal("p") == Some(LANES);
    if current {
        Verified::Yes
    } else {
        Verified::YesNeedsRehash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_a_valid_argon2id_hash_with_current_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.params.get_decimal("m"), Some(MEMORY_KIB));
        assert_eq!(verify_blocking("anything", DUMMY_HASH), Verified::No);
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let password = Password::parse("correct horse battery".into()).unwrap();
        let stored = hash(&password).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            verify("correct horse battery", Some(&stored))
                .await
                .unwrap(),
            Verified::Yes
        );
        assert_eq!(
            verify("wrong horse battery", Some(&stored)).await.unwrap(),
            Verified::No
        );
        assert_eq!(
            verify("correct horse battery", None).await.unwrap(),
            Verified::No
        );
    }

    #[test]
    fn bcrypt_hash_verifies_and_needs_rehash() {
        let stored = bcrypt::hash("legacy-password", 4).unwrap();
        assert_eq!(
            verify_blocking("legacy-password", &stored),
            Verified::YesNeedsRehash
        );
        assert_eq!(verify_blocking("other-password", &stored), Verified::No);
    }
}
