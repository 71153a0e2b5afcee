//! Second factors as a user's devices make them, by implementations that are not ours: TOTP
//! codes by `totp-lite` (the API uses `totp-rs`), passkeys by kanidm's software authenticator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::{ApiRequest, ApiResponse, TestApp, TestUser};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softtoken::SoftToken;

const ME_MFA: &str = "/api/v1/users/me/mfa";

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

/// A user with TOTP enabled: its secret, recovery codes and fresh token. The confirmation used
/// the current step's code, so the next code a sign-in may use is the next step's.
pub struct Enrolled {
    pub secret: String,
    pub recovery_codes: Vec<String>,
    pub token: String,
}

pub async fn begin_totp(app: &TestApp, user: &TestUser) -> String {
    let begun = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/totp"))
                .bearer(&user.token)
                .json(json!({ "current_password": user.password })),
        )
        .await;
    assert_eq!(begun.status, 200, "{}", begun.body);
    begun.json()["secret"].as_str().unwrap().to_owned()
}

pub async fn confirm_totp(app: &TestApp, token: &str, code: &str) -> ApiResponse {
    app.call(
        ApiRequest::post(&format!("{ME_MFA}/totp/confirm"))
            .bearer(token)
            .json(json!({ "code": code })),
    )
    .await
}

pub async fn enable_totp(app: &TestApp, user: &TestUser) -> Enrolled {
    let secret = begin_totp(app, user).await;
    away_from_step_edge().await;
    let confirmed = confirm_totp(app, &user.token, &totp_code(&secret, 0)).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let body = confirmed.json();
    Enrolled {
        secret,
        recovery_codes: body["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Registers a passkey through the API; answers the registration's answer.
pub async fn register_passkey(
    app: &TestApp,
    user: &TestUser,
    token: &str,
    authenticator: &mut Authenticator,
) -> ApiResponse {
    let options = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys/options"))
                .bearer(token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(options.status, 200, "{}", options.body);
    let credential = authenticator.register(&options.json());
    app.call(
        ApiRequest::post(&format!("{ME_MFA}/passkeys"))
            .bearer(token)
            .json(json!({"name": "Desk key", "credential": credential})),
    )
    .await
}
