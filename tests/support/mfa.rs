//! Second factors as a user's devices make them, by implementations that are not ours: TOTP
//! codes by `totp-lite` (the API uses `totp-rs`), passkeys by kanidm's software authenticator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softtoken::SoftToken;

/// The console's origin in the tests, and so the passkeys' relying party.
pub const ORIGIN: &str = "https://console.carevault.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code an authenticator app shows for `secret` (base32, as the API hands it out), `steps`
/// time steps of 30 s from now (negative: a clock running behind).
pub fn totp_code(secret: &str, steps: i64) -> String {
    let key = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret)
        .expect("the secret is base32");
    let at = now() as i64 + steps * 30;
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, at as u64)
}

/// Waits, when needed, until the current 30 s step has at least 5 s left, so a code made now
/// is checked within the step it was made for.
pub async fn away_from_step_edge() {
    let left = 30 - now() % 30;
    if left < 5 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// A software authenticator (a security key in software, with user verification): its state
/// can be copied, as a cloned authenticator's would be.
pub struct Authenticator(SoftToken);

impl Authenticator {
    pub fn new() -> Self {
        Self(SoftToken::new(true).expect("a software authenticator").0)
    }

    /// An exact copy of the authenticator as it is now, signature counter included.
    pub fn clone_device(&self) -> Self {
        Self(SoftToken::from_cbor(&self.0.to_cbor().unwrap()).unwrap())
    }

    /// The browser's answer to the API's `PublicKeyCredentialCreationOptions`, as JSON.
    pub fn register(&mut self, options: &Value) -> Value {
        let options: CreationChallengeResponse =
            serde_json::from_value(options.clone()).expect("creation options as WebAuthn has them");
        let credential = self
            .0
            .do_registration(Url::parse(ORIGIN).unwrap(), options)
            .expect("the authenticator registers");
        serde_json::to_value(credential).unwrap()
    }

    /// The browser's answer to the API's `PublicKeyCredentialRequestOptions`, as JSON.
    pub fn assert(&mut self, options: &Value) -> Value {
        let options: RequestChallengeResponse =
            serde_json::from_value(options.clone()).expect("request options as WebAuthn has them");
        let assertion = self
            .0
            .do_authentication(Url::parse(ORIGIN).unwrap(), options)
            .expect("the authenticator signs");
        serde_json::to_value(assertion).unwrap()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}
