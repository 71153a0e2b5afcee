//! Second factors (issue 28): TOTP with recovery codes, passkeys, the sign-in step between
//! password and factor, the policy that requires a factor, and the superuser's reset. Codes
//! come from `totp-lite` and passkeys from kanidm's software authenticator, not from our code.

use api_tests::mfa::{
    away_from_step_edge, begin_totp, confirm_totp, enable_totp, register_passkey, totp_code,
    Authenticator,
};
use api_tests::{ApiRequest, ApiResponse, TestApp, TestUser};
use serde_json::{json, Value};

const ME_MFA: &str = "/api/v1/users/me/mfa";

async fn login_with_code(app: &TestApp, user: &TestUser, code: &str) -> ApiResponse {
    app.call(ApiRequest::post("/api/v1/login/access-token").form(&[
        ("username", &user.email),
        ("password", &user.password),
        ("mfa_code", code),
    ]))
    .await
}

/// The sign-in step's token of a right password.
async fn mfa_token(app: &TestApp, user: &TestUser) -> String {
    let first = app.login(&user.email, &user.password).await;
    assert_eq!(first.status, 401, "{}", first.body);
    first.json()["mfa_token"].as_str().unwrap().to_owned()
}

/// A second step refused because its token is dead (used, expired, or its session ended).
fn assert_step_refused(response: &ApiResponse) {
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(
        response.detail(),
        "The sign-in step is invalid or expired; sign in again"
    );
}

async fn second_step(app: &TestApp, body: Value) -> ApiResponse {
    app.call(ApiRequest::post("/api/v1/login/mfa").json(body))
        .await
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.call(ApiRequest::get("/api/v1/users/me").bearer(token))
        .await
        .status
}

async fn status(app: &TestApp, token: &str) -> Value {
    let answer = app.call(ApiRequest::get(ME_MFA).bearer(token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[tokio::test]
async fn totp_enrolment_hands_out_a_secret_an_app_accepts_and_ten_recovery_codes() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    assert_eq!(
        status(&app, &user.token).await,
        json!({"totp": false, "passkeys": [], "recovery_codes_left": 0, "required": false})
    );
    let begun = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/totp"))
                .bearer(&user.token)
                .json(json!({ "current_password": user.password })),
        )
        .await;
    assert_eq!(begun.status, 200, "{}", begun.body);
    let uri = begun.json()["otpauth_uri"].as_str().unwrap().to_owned();
    let secret = begun.json()["secret"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("otpauth://totp/CareVault:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=CareVault"), "{uri}");
    assert_eq!(secret.len(), 32, "160 bits in base32");
    // Pending: not enabled until confirmed, and the secret is never stored in clear.
    assert_eq!(status(&app, &user.token).await["totp"], false);
    let stored: Vec<u8> = app
        .db
        .client()
        .await
        .query_one("SELECT sealed_secret FROM user_totp", &[])
        .await
        .unwrap()
        .get(0);
    let raw = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &secret).unwrap();
    assert!(!stored.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()));

    away_from_step_edge().await;
    let confirmed = confirm_totp(&app, &user.token, &totp_code(&secret, 0)).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let codes = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(codes.len(), 10);
    let token = confirmed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = status(&app, &token).await;
    assert_eq!(now["totp"], true);
    assert_eq!(now["recovery_codes_left"], 10);
}

#[tokio::test]
async fn a_code_more_than_one_step_away_is_refused_and_one_step_behind_is_accepted() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let secret = begin_totp(&app, &user).await;
    away_from_step_edge().await;
    for steps in [-2, 2, 10] {
        let refused = confirm_totp(&app, &user.token, &totp_code(&secret, steps)).await;
        assert_eq!(refused.status, 400, "{steps} steps: {}", refused.body);
        assert_eq!(refused.detail(), "Incorrect authentication code");
    }
    let behind = confirm_totp(&app, &user.token, &totp_code(&secret, -1)).await;
    assert_eq!(behind.status, 200, "{}", behind.body);
}

#[tokio::test]
async fn a_password_alone_answers_401_with_a_step_token_and_the_accounts_methods() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let first = app.login(&user.email, &user.password).await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert_eq!(first.header("www-authenticate"), Some("Bearer"));
    let body = first.json();
    assert_eq!(body["detail"], "A second factor is required");
    assert_eq!(body["mfa_methods"], json!(["totp", "recovery_code"]));
    assert!(body.get("access_token").is_none());
    let signed_in = second_step(
        &app,
        json!({ "mfa_token": body["mfa_token"], "code": totp_code(&enrolled.secret, 1) }),
    )
    .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let token = signed_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &token).await, 200);
}

#[tokio::test]
async fn mfa_code_in_the_login_form_answers_the_token_in_one_request() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let answer = login_with_code(&app, &user, &totp_code(&enrolled.secret, 1)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["token_type"], "bearer");
}

#[tokio::test]
async fn a_totp_code_is_accepted_only_once() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let code = totp_code(&enrolled.secret, 1);
    assert_eq!(login_with_code(&app, &user, &code).await.status, 200);
    let replayed = login_with_code(&app, &user, &code).await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert_eq!(replayed.detail(), "Incorrect authentication code");
    // The code the confirmation used is spent too.
    let confirmation_code = totp_code(&enrolled.secret, 0);
    assert_eq!(
        login_with_code(&app, &user, &confirmation_code)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_recovery_code_works_once_in_any_case_and_spacing() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let code = &enrolled.recovery_codes[3];
    let typed = code.to_uppercase().replace('-', " ");
    let first = second_step(
        &app,
        json!({"mfa_token": mfa_token(&app, &user).await, "code": typed}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = second_step(
        &app,
        json!({"mfa_token": mfa_token(&app, &user).await, "code": code}),
    )
    .await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(
        status(&app, &enrolled.token).await["recovery_codes_left"],
        9
    );
}

#[tokio::test]
async fn the_step_token_works_once() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    let used = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(used.status, 200, "{}", used.body);
    let reused = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[1]}),
    )
    .await;
    assert_step_refused(&reused);
}

#[tokio::test]
async fn the_step_token_dies_after_five_wrong_codes() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    for _ in 0..5 {
        let wrong = second_step(&app, json!({"mfa_token": step, "code": "000000"})).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
        assert_eq!(wrong.detail(), "Incorrect authentication code");
    }
    let right_too_late = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_step_refused(&right_too_late);
}

#[tokio::test]
async fn an_expired_step_token_is_refused() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    // Five minutes pass.
    app.db
        .client()
        .await
        .execute(
            "UPDATE mfa_logins SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let late = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(late.status, 401, "{}", late.body);
}

#[tokio::test]
async fn a_step_token_is_bound_to_its_user() {
    let app = TestApp::new().await;
    let alice = app.clinician().await;
    let bob = app.clinician().await;
    enable_totp(&app, &alice).await;
    let bobs = enable_totp(&app, &bob).await;
    // Bob's recovery code against Alice's step: not Alice's code, refused.
    let step = mfa_token(&app, &alice).await;
    let crossed = second_step(
        &app,
        json!({"mfa_token": step, "code": bobs.recovery_codes[0]}),
    )
    .await;
    assert_eq!(crossed.status, 401, "{}", crossed.body);
    assert_eq!(status(&app, &bobs.token).await["recovery_codes_left"], 10);
}

#[tokio::test]
async fn a_wrong_password_answers_alike_whether_or_not_the_account_has_a_second_factor() {
    let app = TestApp::new().await;
    let with_factor = app.clinician().await;
    enable_totp(&app, &with_factor).await;
    let without = app.clinician().await;
    let mut answers = Vec::new();
    for email in [
        &with_factor.email,
        &without.email,
        &"nobody@example.com".to_owned(),
    ] {
        let answer = app.login(email, "a-wrong-password").await;
        answers.push((answer.status, answer.body.clone()));
    }
    assert_eq!(
        answers[0],
        (
            400,
            r#"{"detail":"Incorrect email or password"}"#.to_owned()
        )
    );
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
}

#[tokio::test]
async fn wrong_codes_count_in_the_login_throttle() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    // The right password each time: only the codes are wrong, and the password does not clear
    // the count.
    for _ in 0..5 {
        assert_eq!(login_with_code(&app, &user, "999999").await.status, 401);
    }
    let throttled = login_with_code(&app, &user, &totp_code(&enrolled.secret, 1)).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.header("retry-after").is_some());
}

#[tokio::test]
async fn a_required_role_without_a_factor_reaches_only_its_account_enrolment_and_logout() {
    let app = TestApp::with_settings(&[("MFA_REQUIRED_ROLES", "viewer")]).await;
    let user = app.viewer().await;
    assert_eq!(me(&app, &user.token).await, 200);
    assert_eq!(status(&app, &user.token).await["required"], true);
    for request in [
        ApiRequest::get("/api/v1/patients/"),
        ApiRequest::get("/api/v1/users/"),
        ApiRequest::get("/api/v1/attachments/"),
        ApiRequest::get("/fhir/R4/Patient"),
        ApiRequest::patch("/api/v1/users/me/password")
            .json(json!({"current_password": user.password, "new_password": "another-pass-1"})),
    ] {
        let refused = app.call(request.bearer(&user.token)).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        let text = refused.body.clone();
        assert!(text.contains("Enroll a second factor first"), "{text}");
    }
    // Enrolling gives a full session; the policy no longer limits it.
    let enrolled = enable_totp(&app, &user).await;
    let patients = app
        .call(ApiRequest::get("/api/v1/patients/").bearer(&enrolled.token))
        .await;
    assert_eq!(patients.status, 200, "{}", patients.body);
    // Roles the policy does not name sign in as before.
    let admin = app.superuser_token().await;
    assert_eq!(
        app.call(ApiRequest::get("/api/v1/patients/").bearer(&admin))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_enrolment_only_session_can_log_out() {
    let app = TestApp::with_settings(&[("MFA_REQUIRED_ROLES", "viewer")]).await;
    let user = app.viewer().await;
    let out = app
        .call(ApiRequest::post("/api/v1/logout").bearer(&user.token))
        .await;
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(me(&app, &user.token).await, 401);
}

#[tokio::test]
async fn enabling_and_removing_a_factor_end_every_other_session() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let other = app.token_for(&user.email, &user.password).await;
    let enrolled = enable_totp(&app, &user).await;
    assert_eq!(
        me(&app, &other).await,
        401,
        "a session from before enabling"
    );
    assert_eq!(me(&app, &user.token).await, 401, "the enrolling token too");
    assert_eq!(me(&app, &enrolled.token).await, 200, "the fresh token");
    let second = login_with_code(&app, &user, &totp_code(&enrolled.secret, 1)).await;
    let second = second.json()["access_token"].as_str().unwrap().to_owned();

    let removed = app
        .call(
            ApiRequest::delete(&format!("{ME_MFA}/totp"))
                .bearer(&enrolled.token)
                .json(
                    json!({"current_password": user.password, "code": enrolled.recovery_codes[0]}),
                ),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(
        me(&app, &second).await,
        401,
        "a session from before removing"
    );
    let fresh = removed.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &fresh).await, 200);
    // No factor left: the codes went with it, and a password signs in again.
    assert_eq!(
        status(&app, &fresh).await,
        json!({"totp": false, "passkeys": [], "recovery_codes_left": 0, "required": false})
    );
    assert_eq!(app.login(&user.email, &user.password).await.status, 200);
}

#[tokio::test]
async fn removing_totp_needs_the_password_and_a_code() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let remove = |body: Value| {
        ApiRequest::delete(&format!("{ME_MFA}/totp"))
            .bearer(&enrolled.token)
            .json(body)
    };
    let wrong_password = app
        .call(remove(
            json!({"current_password": "not-it-at-all", "code": enrolled.recovery_codes[0]}),
        ))
        .await;
    assert_eq!(wrong_password.status, 400, "{}", wrong_password.body);
    assert_eq!(wrong_password.detail(), "Incorrect password");
    let wrong_code = app
        .call(remove(
            json!({"current_password": user.password, "code": "123456"}),
        ))
        .await;
    assert_eq!(wrong_code.status, 400, "{}", wrong_code.body);
    let no_code = app
        .call(remove(json!({"current_password": user.password})))
        .await;
    assert_eq!(no_code.status, 422, "{}", no_code.body);
    assert_eq!(status(&app, &enrolled.token).await["totp"], true);
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let replaced = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/recovery-codes"))
                .bearer(&enrolled.token)
                .json(json!({"current_password": user.password, "code": totp_code(&enrolled.secret, 1)})),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let new_codes = replaced.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(new_codes.len(), 10);
    let old = second_step(
        &app,
        json!({"mfa_token": mfa_token(&app, &user).await, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(old.status, 401, "an old code is void");
    let new = second_step(
        &app,
        json!({"mfa_token": mfa_token(&app, &user).await, "code": new_codes[0]}),
    )
    .await;
    assert_eq!(new.status, 200, "{}", new.body);
}

#[tokio::test]
async fn mfa_routes_refuse_a_missing_token_a_wrong_password_and_a_bad_body() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let no_token = app.call(ApiRequest::get(ME_MFA)).await;
    assert_eq!(no_token.status, 401);
    let bad_token = app
        .call(ApiRequest::get(ME_MFA).bearer("not-a-token"))
        .await;
    assert_eq!(bad_token.status, 401);
    let wrong_password = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/totp"))
                .bearer(&user.token)
                .json(json!({"current_password": "wrong-password-1"})),
        )
        .await;
    assert_eq!(wrong_password.status, 400);
    assert_eq!(wrong_password.detail(), "Incorrect password");
    let unknown_field = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/totp"))
                .bearer(&user.token)
                .json(json!({"current_password": user.password, "secret": "mine"})),
        )
        .await;
    assert_eq!(unknown_field.status, 422);
    let nothing_pending = confirm_totp(&app, &user.token, "123456").await;
    assert_eq!(nothing_pending.status, 400);
    assert_eq!(nothing_pending.detail(), "Start TOTP enrolment first");
    let not_enabled = app
        .call(
            ApiRequest::delete(&format!("{ME_MFA}/totp"))
                .bearer(&user.token)
                .json(json!({"current_password": user.password, "code": "123456"})),
        )
        .await;
    assert_eq!(not_enabled.status, 404);
    let bad_id = app
        .call(
            ApiRequest::delete(&format!("{ME_MFA}/passkeys/not-a-uuid"))
                .bearer(&user.token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(bad_id.status, 422);
    let unknown = app
        .call(
            ApiRequest::delete(&format!("{ME_MFA}/passkeys/{}", uuid::Uuid::new_v4()))
                .bearer(&user.token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.detail(), "Passkey not found");
    let bad_step = second_step(&app, json!({"mfa_token": "forged", "code": "123456"})).await;
    assert_eq!(bad_step.status, 401);
    let both = second_step(
        &app,
        json!({"mfa_token": "forged", "code": "1", "extra": 1}),
    )
    .await;
    assert_eq!(both.status, 422);
}

#[tokio::test]
async fn a_superuser_resets_a_users_factors_and_ends_their_sessions() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let path = format!("/api/v1/users/{}/mfa", user.id);

    let by_clinician = app
        .call(ApiRequest::delete(&path).bearer(&enrolled.token))
        .await;
    assert_eq!(by_clinician.status, 403);
    let unknown = app
        .call(
            ApiRequest::delete(&format!("/api/v1/users/{}/mfa", uuid::Uuid::new_v4()))
                .bearer(&admin),
        )
        .await;
    assert_eq!(unknown.status, 404);
    let malformed = app
        .call(ApiRequest::delete("/api/v1/users/nope/mfa").bearer(&admin))
        .await;
    assert_eq!(malformed.status, 422);
    assert_eq!(app.call(ApiRequest::delete(&path)).await.status, 401);

    let reset = app.call(ApiRequest::delete(&path).bearer(&admin)).await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(me(&app, &enrolled.token).await, 401, "their session ended");
    let fresh = app.token_for(&user.email, &user.password).await;
    assert_eq!(status(&app, &fresh).await["totp"], false);
    let logged = app.audit_events("user.mfa_reset").await;
    let success = logged.iter().find(|e| e["outcome"] == "success").unwrap();
    assert_eq!(success["resource_id"], json!(user.id));
    assert_eq!(success["details"]["removed"]["totp"], true);
    assert_eq!(success["details"]["removed"]["recovery_codes"], 10);
}

#[tokio::test]
async fn second_factor_events_name_the_method_and_never_the_code() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    second_step(&app, json!({"mfa_token": step, "code": "000000"})).await;
    let code = enrolled.recovery_codes[0].clone();
    assert_eq!(
        second_step(&app, json!({"mfa_token": step, "code": code}))
            .await
            .status,
        200
    );
    let logged = app.audit_events("auth.login_second_factor").await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[0]["outcome"], "denied");
    assert_eq!(logged[0]["details"]["mfa_method"], "totp");
    assert_eq!(logged[1]["outcome"], "success");
    assert_eq!(logged[1]["details"]["mfa_method"], "recovery_code");
    assert_eq!(logged[1]["actor_id"], json!(user.id));
    let enabled = app.audit_events("user.mfa_totp_enable").await;
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0]["details"]["method"], "totp");
    let all: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT string_agg(details::text, ' ') FROM audit_events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for secret in [enrolled.secret.as_str(), code.as_str(), "000000"] {
        assert!(!all.contains(secret), "the trail holds {secret}");
    }
}

/// A passkey sign-in: password, options, the authenticator's assertion.
async fn passkey_login(
    app: &TestApp,
    user: &TestUser,
    authenticator: &mut Authenticator,
) -> ApiResponse {
    let step = mfa_token(app, user).await;
    let options = app
        .call(
            ApiRequest::post("/api/v1/login/mfa/passkey-options").json(json!({"mfa_token": step})),
        )
        .await;
    assert_eq!(options.status, 200, "{}", options.body);
    let assertion = authenticator.assert(&options.json());
    second_step(app, json!({"mfa_token": step, "passkey": assertion})).await
}

#[tokio::test]
async fn a_passkey_registered_through_the_api_signs_in() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mut key = Authenticator::new();
    let registered = register_passkey(&app, &user, &user.token, &mut key).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let body = registered.json();
    assert_eq!(body["passkey"]["name"], "Desk key");
    assert_eq!(
        body["recovery_codes"].as_array().unwrap().len(),
        10,
        "the first factor's codes"
    );
    let token = body["access_token"].as_str().unwrap().to_owned();
    let now = status(&app, &token).await;
    assert_eq!(now["passkeys"][0]["name"], "Desk key");
    assert_eq!(now["passkeys"][0]["last_used_at"], Value::Null);

    let first = app.login(&user.email, &user.password).await;
    assert_eq!(
        first.json()["mfa_methods"],
        json!(["recovery_code", "passkey"])
    );
    let signed_in = passkey_login(&app, &user, &mut key).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let token = signed_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(status(&app, &token).await["passkeys"][0]["last_used_at"].is_string());
    let logged = app.audit_events("auth.login_second_factor").await;
    assert_eq!(logged.last().unwrap()["details"]["mfa_method"], "passkey");
}

#[tokio::test]
async fn a_cloned_authenticator_whose_counter_goes_backwards_is_refused() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mut key = Authenticator::new();
    assert_eq!(
        register_passkey(&app, &user, &user.token, &mut key)
            .await
            .status,
        200
    );
    let mut clone = key.clone_device();
    // The original signs twice (counters 1 and 2); the copy's next signature is counter 1.
    assert_eq!(passkey_login(&app, &user, &mut key).await.status, 200);
    assert_eq!(passkey_login(&app, &user, &mut key).await.status, 200);
    let cloned = passkey_login(&app, &user, &mut clone).await;
    assert_eq!(cloned.status, 401, "{}", cloned.body);
    assert_eq!(cloned.detail(), "The passkey was not accepted");
    let logged = app.audit_events("auth.login_second_factor").await;
    assert_eq!(
        logged.last().unwrap()["details"]["failure"],
        "signature counter went backwards"
    );
    // The genuine key goes on working.
    assert_eq!(passkey_login(&app, &user, &mut key).await.status, 200);
}

#[tokio::test]
async fn a_passkey_assertion_without_its_options_or_for_another_step_is_refused() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mut key = Authenticator::new();
    assert_eq!(
        register_passkey(&app, &user, &user.token, &mut key)
            .await
            .status,
        200
    );
    let first_step = mfa_token(&app, &user).await;
    let options = app
        .call(
            ApiRequest::post("/api/v1/login/mfa/passkey-options")
                .json(json!({"mfa_token": first_step})),
        )
        .await;
    let assertion = key.assert(&options.json());
    // Another step never asked for options: nothing to check the assertion against.
    let other_step = mfa_token(&app, &user).await;
    let unasked = second_step(&app, json!({"mfa_token": other_step, "passkey": assertion})).await;
    assert_eq!(unasked.status, 400, "{}", unasked.body);
    // Used with its own step, it signs in once.
    let used = second_step(&app, json!({"mfa_token": first_step, "passkey": assertion})).await;
    assert_eq!(used.status, 200, "{}", used.body);
    let replayed = second_step(&app, json!({"mfa_token": first_step, "passkey": assertion})).await;
    assert_eq!(replayed.status, 401);
}

#[tokio::test]
async fn removing_a_passkey_needs_the_password_and_ends_other_sessions() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mut key = Authenticator::new();
    let registered = register_passkey(&app, &user, &user.token, &mut key).await;
    let token = registered.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = registered.json()["passkey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = passkey_login(&app, &user, &mut key).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{ME_MFA}/passkeys/{id}");
    let wrong = app
        .call(
            ApiRequest::delete(&path)
                .bearer(&token)
                .json(json!({"current_password": "nope-nope-1"})),
        )
        .await;
    assert_eq!(wrong.status, 400);
    let removed = app
        .call(
            ApiRequest::delete(&path)
                .bearer(&token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(me(&app, &other).await, 401);
    let fresh = removed.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status(&app, &fresh).await["passkeys"], json!([]));
    // Someone else's passkey is not found, not removed.
    let stranger = app.clinician().await;
    let mut stranger_key = Authenticator::new();
    let theirs = register_passkey(&app, &stranger, &stranger.token, &mut stranger_key).await;
    let their_id = theirs.json()["passkey"]["id"].as_str().unwrap().to_owned();
    let not_mine = app
        .call(
            ApiRequest::delete(&format!("{ME_MFA}/passkeys/{their_id}"))
                .bearer(&fresh)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(not_mine.status, 404);
}

#[tokio::test]
async fn a_registration_answer_is_used_once() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mut key = Authenticator::new();
    let options = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys/options"))
                .bearer(&user.token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    let credential = key.register(&options.json());
    let body = json!({"name": "Key", "credential": credential});
    let first = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys"))
                .bearer(&user.token)
                .json(body.clone()),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let token = first.json()["access_token"].as_str().unwrap().to_owned();
    let again = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys"))
                .bearer(&token)
                .json(body),
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.detail(), "Start passkey registration first");
    let bad_name = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys"))
                .bearer(&token)
                .json(json!({"name": "", "credential": credential})),
        )
        .await;
    assert_eq!(bad_name.status, 422);
}

#[tokio::test]
async fn a_password_change_ends_a_pending_sign_in_step() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    let changed = app
        .call(
            ApiRequest::patch("/api/v1/users/me/password")
                .bearer(&enrolled.token)
                .json(
                    json!({"current_password": user.password, "new_password": "a-new-password-1"}),
                ),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let late = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_step_refused(&late);
}

#[tokio::test]
async fn wrong_codes_at_the_account_routes_are_throttled_though_the_password_is_right() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let renew = |code: &str| {
        ApiRequest::post(&format!("{ME_MFA}/recovery-codes"))
            .bearer(&enrolled.token)
            .json(json!({"current_password": user.password, "code": code}))
    };
    for _ in 0..5 {
        let wrong = app.call(renew("000000")).await;
        assert_eq!(wrong.status, 400, "{}", wrong.body);
    }
    let throttled = app.call(renew(&enrolled.recovery_codes[0])).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert_eq!(
        status(&app, &enrolled.token).await["recovery_codes_left"],
        10
    );
}

#[tokio::test]
async fn parallel_guesses_on_one_step_get_at_most_five_checks() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    let guesses = (0..12).map(|n| {
        let body = json!({"mfa_token": step, "code": format!("{:06}", 100_000 + n)});
        app.call(ApiRequest::post("/api/v1/login/mfa").json(body))
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|a| a.status == 401 && a.detail() == "Incorrect authentication code")
        .count();
    assert!(checked <= 5, "{checked} guesses were checked");
    assert!(answers.iter().all(|a| a.status == 401 || a.status == 429));
}

#[tokio::test]
async fn an_enrolment_only_session_reaches_no_smart_route() {
    let app = TestApp::with_settings(&[("MFA_REQUIRED_ROLES", "viewer")]).await;
    let user = app.viewer().await;
    for request in [
        ApiRequest::get("/api/v1/smart/apps"),
        ApiRequest::get(&format!(
            "/api/v1/smart/authorizations/{}",
            uuid::Uuid::new_v4()
        )),
        ApiRequest::get("/fhir/R4/metadata"),
    ] {
        let answer = app.call(request.bearer(&user.token)).await;
        if answer.status != 200 {
            assert_eq!(answer.status, 403, "{}", answer.body);
            assert!(
                answer.body.contains("Enroll a second factor first"),
                "{}",
                answer.body
            );
        } else {
            // The CapabilityStatement is public: it asks for no token at all.
            assert!(
                answer.body.contains("CapabilityStatement"),
                "{}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn an_email_with_a_colon_can_enrol_totp() {
    let app = TestApp::new().await;
    let user = app
        .user_with(json!({"email": "\"a:b\"@example.com", "password": "colon-pass-12", "role": "clinician"}))
        .await;
    let enrolled = enable_totp(&app, &user).await;
    assert_eq!(status(&app, &enrolled.token).await["totp"], true);
}

#[tokio::test]
async fn a_new_role_ends_the_users_sessions_so_the_policy_judges_the_next_sign_in() {
    let app = TestApp::with_settings(&[("MFA_REQUIRED_ROLES", "viewer")]).await;
    let user = app.clinician().await;
    let patients = || ApiRequest::get("/api/v1/patients/").bearer(&user.token);
    assert_eq!(app.call(patients()).await.status, 200);
    let admin = app.superuser_token().await;
    let changed = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
                .bearer(&admin)
                .json(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        app.call(patients()).await.status,
        401,
        "the old session ended"
    );
    let again = app.token_for(&user.email, &user.password).await;
    let limited = app
        .call(ApiRequest::get("/api/v1/patients/").bearer(&again))
        .await;
    assert_eq!(limited.status, 403, "{}", limited.body);
    assert_eq!(limited.detail(), "Enroll a second factor first");
    // The same role sent again changes nothing and ends nothing.
    let same = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
                .bearer(&admin)
                .json(json!({"role": "viewer", "full_name": "Vera Viewer"})),
        )
        .await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(me(&app, &again).await, 200);
}

#[tokio::test]
async fn a_second_step_that_is_neither_code_nor_passkey_costs_no_attempt() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let enrolled = enable_totp(&app, &user).await;
    let step = mfa_token(&app, &user).await;
    // More malformed bodies than the step has attempts, and than the throttle lets through.
    for body in [
        json!({"mfa_token": step}),
        json!({"mfa_token": step, "code": "1", "passkey": {}}),
    ]
    .iter()
    .cycle()
    .take(6)
    {
        let refused = second_step(&app, body.clone()).await;
        assert_eq!(refused.status, 422, "{}", refused.body);
    }
    let signed_in = second_step(
        &app,
        json!({"mfa_token": step, "code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
}

#[tokio::test]
async fn passkey_answers_that_are_not_webauthn_json_are_422() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let add = |body: Value| {
        ApiRequest::post(&format!("{ME_MFA}/passkeys"))
            .bearer(&user.token)
            .json(body)
    };
    for body in [
        json!({"name": "Key", "credential": {"id": "not-a-credential"}}),
        json!({"name": "k".repeat(101), "credential": {}}),
        json!({"name": "Tab\there", "credential": {}}),
    ] {
        let refused = app.call(add(body)).await;
        assert_eq!(refused.status, 422, "{}", refused.body);
    }
    let step = second_step(
        &app,
        json!({"mfa_token": "any", "passkey": {"id": "not-an-assertion"}}),
    )
    .await;
    assert_eq!(step.status, 422, "{}", step.body);
}

#[tokio::test]
async fn passkeys_on_an_ip_address_origin_say_why_they_are_unavailable() {
    let app = TestApp::with_settings(&[("WEBAUTHN_ORIGIN", "http://127.0.0.1:5173")]).await;
    let user = app.clinician().await;
    let options = app
        .call(
            ApiRequest::post(&format!("{ME_MFA}/passkeys/options"))
                .bearer(&user.token)
                .json(json!({"current_password": user.password})),
        )
        .await;
    assert_eq!(options.status, 400, "{}", options.body);
    let text = options.detail().as_str().unwrap().to_owned();
    assert!(text.contains("not a domain name"), "{text}");
    // Everything else works: TOTP enrols as usual.
    enable_totp(&app, &user).await;
}
