use api_tests::{
    mail_to, sign_as_the_api, token_in, unique_email, ApiRequest, TestApp, FIRST_SUPERUSER,
    FIRST_SUPERUSER_PASSWORD,
};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

#[tokio::test]
async fn login_answers_a_bearer_token_that_test_token_accepts() {
    let app = TestApp::new().await;
    let response = app.login(FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["token_type"], "bearer");
    let token = body["access_token"].as_str().unwrap();

    let me = app
        .call(ApiRequest::post("/api/v1/login/test-token").bearer(token))
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    let user = me.json();
    assert_eq!(user["email"], FIRST_SUPERUSER);
    assert_eq!(user["is_superuser"], true);
    assert_eq!(user["role"], "clinician");
    for field in ["id", "full_name", "is_active", "created_at"] {
        assert!(user.get(field).is_some(), "{field} missing: {user}");
    }
    assert!(user.get("hashed_password").is_none());
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = TestApp::new().await;
    let response = app
        .login(&FIRST_SUPERUSER.to_uppercase(), FIRST_SUPERUSER_PASSWORD)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = TestApp::new().await;
    let wrong = app.login(FIRST_SUPERUSER, "not-the-password").await;
    let unknown = app
        .login(&unique_email("nobody"), "whatever-password")
        .await;
    for response in [&wrong, &unknown] {
        assert_eq!(response.status, 400);
        assert_eq!(response.detail(), "Incorrect email or password");
    }
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn inactive_user_cannot_log_in_and_their_token_stops_working() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let admin = app.superuser_token().await;
    let deactivate = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
                .bearer(&admin)
                .json(json!({"is_active": false})),
        )
        .await;
    assert_eq!(deactivate.status, 200, "{}", deactivate.body);

    let login = app.login(&user.email, &user.password).await;
    assert_eq!(login.status, 400);
    assert_eq!(login.detail(), "Inactive user");

    let me = app
        .call(ApiRequest::get("/api/v1/users/me").bearer(&user.token))
        .await;
    assert_eq!(me.status, 403);
    assert_eq!(me.detail(), "Inactive user");
}

#[tokio::test]
async fn login_bad_input_is_a_clear_4xx() {
    let app = TestApp::new().await;
    let missing = app
        .call(ApiRequest::post("/api/v1/login/access-token").form(&[("username", FIRST_SUPERUSER)]))
        .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.detail()[0]["loc"], json!(["body", "password"]));
    assert_eq!(missing.detail()[0]["type"], "missing");

    let json_body = app
        .call(
            ApiRequest::post("/api/v1/login/access-token")
                .json(json!({"username": FIRST_SUPERUSER, "password": FIRST_SUPERUSER_PASSWORD})),
        )
        .await;
    assert_eq!(json_body.status, 415, "{}", json_body.body);
    assert!(json_body.detail().is_string());

    let empty = app
        .call(ApiRequest::post("/api/v1/login/access-token"))
        .await;
    assert_eq!(empty.status, 422, "{}", empty.body);
}

/// Every kind of bad token: 401 with `WWW-Authenticate: Bearer` and a `detail`.
#[tokio::test]
async fn bad_tokens_are_401_with_www_authenticate() {
    let app = TestApp::new().await;
    let good = app.superuser_token().await;
    let user_id = app
        .call(ApiRequest::post("/api/v1/login/test-token").bearer(&good))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = |exp: u64| json!({"sub": user_id, "aud": "carevault:access", "iat": now() - 10, "exp": exp, "sep": 0});
    let hs256 = |claims: &serde_json::Value, key: &str| {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    // The signature of `good`, with one character of the payload changed.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    let tampered = parts.join(".");
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(now() + 600))
    );
    let wrong_key = hs256(
        &claims(now() + 600),
        "another-key-entirely-0123456789-abcdef",
    );
    let expired = sign_as_the_api(&claims(now() - 120));
    let no_exp = sign_as_the_api(
        &json!({"sub": user_id, "aud": "carevault:access", "iat": now(), "sep": 0}),
    );
    let reset_audience = sign_as_the_api(
        &json!({"sub": user_id, "aud": "carevault:password-reset", "iat": now(), "exp": now() + 600, "pwd": "x"}),
    );
    let unknown_user = sign_as_the_api(
        &json!({"sub": uuid::Uuid::new_v4(), "aud": "carevault:access", "iat": now(), "exp": now() + 600, "sep": 0}),
    );

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("wrong scheme", Some(format!("Basic {good}"))),
        ("malformed", Some("Bearer not-a-jwt".into())),
        ("tampered", Some(format!("Bearer {tampered}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("wrong key", Some(format!("Bearer {wrong_key}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("no exp", Some(format!("Bearer {no_exp}"))),
        (
            "reset token as access token",
            Some(format!("Bearer {reset_audience}")),
        ),
        ("deleted user", Some(format!("Bearer {unknown_user}"))),
    ];
    for (name, header) in cases {
        let mut request = ApiRequest::post("/api/v1/login/test-token");
        if let Some(value) = header {
            request = request.header("authorization", &value);
        }
        let response = app.call(request).await;
        assert_eq!(response.status, 401, "{name}: {}", response.body);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer"),
            "{name}"
        );
        assert!(response.detail().is_string(), "{name}");
    }
}

#[tokio::test]
async fn full_password_recovery_flow_through_the_smtp_sink() {
    let app = TestApp::new().await;
    let user = app.clinician().await;

    let response = app
        .call(ApiRequest::post(&format!(
            "/api/v1/password-recovery/{}",
            user.email
        )))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let message = response.json()["message"].clone();

    let mails = mail_to(&user.email);
    let (subject, text) = mails
        .iter()
        .find(|(subject, _)| subject.contains("Password recovery"))
        .expect("a recovery email in the sink");
    assert!(subject.contains(&user.email));
    assert!(
        text.contains("http://console.carevault.test/reset-password?token="),
        "{text}"
    );
    let token = token_in(text);

    let reset = app
        .call(
            ApiRequest::post("/api/v1/reset-password/")
                .json(json!({"token": token, "new_password": "brand-new-pass-1"})),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(reset.json()["message"], "Password updated successfully");

    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        400,
        "old password gone"
    );
    assert_eq!(app.login(&user.email, "brand-new-pass-1").await.status, 200);

    // Single use: the same token again.
    let again = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": token, "new_password": "another-pass-22"})),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.detail(), "Invalid token");

    // Unknown email: the same answer, and no email.
    let stranger = unique_email("stranger");
    let unknown = app
        .call(ApiRequest::post(&format!(
            "/api/v1/password-recovery/{stranger}"
        )))
        .await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json()["message"], message);
    assert!(mail_to(&stranger).is_empty());
}

#[tokio::test]
async fn expired_or_forged_reset_tokens_fail() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let forged_claims = |exp: u64| json!({"sub": user.id, "aud": "carevault:password-reset", "iat": now() - 7200, "exp": exp, "pwd": "0"});
    let hs256 = |claims: &serde_json::Value, key: &str| {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    // A real token, then expired: issue one and check an expired copy with the right fingerprint.
    app.call(ApiRequest::post(&format!(
        "/api/v1/password-recovery/{}",
        user.email
    )))
    .await;
    let real = token_in(&mail_to(&user.email).last().unwrap().1);
    let real_claims: serde_json::Value = {
        use base64::Engine;
        let payload = real.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let mut expired_claims = real_claims.clone();
    expired_claims["exp"] = json!(now() - 60);
    let expired = sign_as_the_api(&expired_claims);

    for (name, token) in [
        ("expired", expired),
        (
            "wrong fingerprint",
            sign_as_the_api(&forged_claims(now() + 600)),
        ),
        (
            "wrong key",
            hs256(
                &forged_claims(now() + 600),
                "some-other-key-0123456789-abcdefghijkl",
            ),
        ),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let response = app
            .call(
                ApiRequest::post("/api/v1/reset-password")
                    .json(json!({"token": token, "new_password": "brand-new-pass-1"})),
            )
            .await;
        assert_eq!(response.status, 400, "{name}: {}", response.body);
        assert_eq!(response.detail(), "Invalid token", "{name}");
    }
    // The real one still works: the failures above changed nothing.
    let ok = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": real, "new_password": "brand-new-pass-1"})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn reset_password_validates_its_input() {
    let app = TestApp::new().await;
    let short = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": "x", "new_password": "short"})),
        )
        .await;
    assert_eq!(short.status, 422);
    assert_eq!(short.detail()[0]["loc"], json!(["body", "new_password"]));

    let malformed = app
        .call(
            ApiRequest::post("/api/v1/reset-password").raw_body("application/json", "{\"token\": "),
        )
        .await;
    assert_eq!(malformed.status, 422);
    assert_eq!(malformed.detail()[0]["type"], "json_invalid");

    let bad_email = app
        .call(ApiRequest::post("/api/v1/password-recovery/not-an-email"))
        .await;
    assert_eq!(bad_email.status, 422);
    assert_eq!(bad_email.detail()[0]["loc"], json!(["path", "email"]));
}

#[tokio::test]
async fn password_recovery_html_content_is_for_superusers() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let admin = app.superuser_token().await;
    let path = format!("/api/v1/password-recovery-html-content/{}", user.email);

    let html = app.call(ApiRequest::post(&path).bearer(&admin)).await;
    assert_eq!(html.status, 200, "{}", html.body);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.body.contains("/reset-password?token="));
    assert!(html.header("subject").unwrap().contains(&user.email));

    assert_eq!(
        app.call(ApiRequest::post(&path).bearer(&user.token))
            .await
            .status,
        403
    );
    assert_eq!(app.call(ApiRequest::post(&path)).await.status, 401);
    let unknown = app
        .call(
            ApiRequest::post(&format!(
                "/api/v1/password-recovery-html-content/{}",
                unique_email("x")
            ))
            .bearer(&admin),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn bcrypt_hash_from_the_old_system_logs_in_and_is_rehashed_to_argon2id() {
    let app = TestApp::new().await;
    let email = unique_email("imported");
    let legacy = bcrypt::hash("legacy-password-1", 4).unwrap();
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO users (id, email, hashed_password, full_name) VALUES ($1, $2, $3, 'Imported User')",
            &[&uuid::Uuid::new_v4(), &email, &legacy],
        )
        .await
        .unwrap();

    assert_eq!(app.login(&email, "wrong-password-1").await.status, 400);
    assert_eq!(app.login(&email, "legacy-password-1").await.status, 200);
    let stored: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT hashed_password FROM users WHERE email = $1",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert_eq!(
        app.login(&email, "legacy-password-1").await.status,
        200,
        "still logs in after the rehash"
    );
}
