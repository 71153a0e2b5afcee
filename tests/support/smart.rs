//! A SMART Backend Services client's key, for tests and benchmarks.

use base64::Engine;
use serde_json::{json, Value};

/// A SMART client's ES384 key pair (Backend Services): the PKCS#8 private key and its public
/// JWK (`kid`), and the client assertions it signs.
pub struct ClientKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    pub jwk: Value,
}

impl ClientKey {
    pub fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            kid: kid.to_owned(),
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384", "use": "sig",
                "x": b64(&point[1..49]), "y": b64(&point[49..97]),
            }),
        }
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// An assertion with these claims, signed ES384 under `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(kid.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// A valid assertion of `client_id` for `token_endpoint`, expiring in 4 minutes.
    pub fn assertion_for(&self, client_id: &str, token_endpoint: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.sign(
            &self.kid,
            &json!({
                "iss": client_id, "sub": client_id, "aud": token_endpoint,
                "exp": now + 240, "jti": uuid::Uuid::new_v4().to_string(),
            }),
        )
    }
}

/// A PKCE verifier and its S256 challenge (RFC 7636), as a client makes them.
pub fn pkce() -> (String, String) {
    use sha2::Digest;
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}
