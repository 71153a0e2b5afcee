//! Opaque server-made values (client secrets, authorization codes, refresh tokens, launch
//! values): 256 random bits, base64url, stored only as their SHA-256. A slow hash protects
//! guessable passwords; a 256-bit random value cannot be guessed, so a fast digest that the
//! database can look up by is the right store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// A new value, 43 characters of base64url.
pub fn new_value() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of `value`.
pub fn digest(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_new_each_time_and_their_digests_differ() {
        let (a, b) = (super::new_value(), super::new_value());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(super::digest(&a), super::digest(&b));
    }
}
