//! The token keys: what the functions sign with, and tokens a test signs itself.

use base64::Engine;
use serde_json::{json, Value};

/// The token keys of every test app: one ES256 key pair per test process (tests sign tokens of
/// their own with it, and with others).
pub struct TestKeys {
    pub signing: shared::tokens::SigningKeys,
    pub jwks: Value,
}

pub const TEST_KID: &str = "test-key";

pub fn test_keys() -> &'static TestKeys {
    static KEYS: std::sync::OnceLock<TestKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let signing = shared::tokens::SigningKeys::generate(TEST_KID).expect("a test key");
        let jwks = signing.public_jwks().expect("its public half");
        TestKeys { signing, jwks }
    })
}

/// The settings that hand a function the test keys, as the local secrets would.
pub fn token_settings() -> [(&'static str, String); 2] {
    let keys = test_keys();
    [
        (
            "TOKEN_SIGNING_KEYS",
            serde_json::to_string(&keys.signing).unwrap(),
        ),
        ("TOKEN_PUBLIC_KEYS", keys.jwks.to_string()),
    ]
}

/// An access token for `user_id` (in its first session), as a login would issue it.
pub fn access_token_for(user_id: uuid::Uuid) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sign_as_the_api(&json!({
        "sub": user_id, "aud": "carevault:access", "iat": now, "exp": now + 3600, "sep": 0,
    }))
}

/// `claims` signed as the API signs (ES256 with the test key and its kid): for tokens whose
/// claims a test chooses (expired, another audience...).
pub fn sign_as_the_api(claims: &Value) -> String {
    let pem = &test_keys().signing.keys[0].private_key_pem;
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(TEST_KID.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
    )
    .unwrap()
}
