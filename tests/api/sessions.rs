//! Sessions and identity: tokens die with the session, asymmetric keys with a JWK Set,
//! takeover-proof email changes, throttled logins and recovery, and the smaller holes.

use api_tests::{mail_to, token_in, unique_email, ApiRequest, TestApp, FIRST_SUPERUSER};
use serde_json::{json, Value};

fn me(token: &str) -> ApiRequest {
    ApiRequest::get("/api/v1/users/me").bearer(token)
}

#[tokio::test]
async fn a_token_dies_with_every_kind_of_password_change_and_with_logout() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;

    // Changed by its owner: the token of the change and every other one die; a new login works.
    let user = app.clinician().await;
    let other_session = app.token_for(&user.email, &user.password).await;
    let changed = app
        .call(
            ApiRequest::patch("/api/v1/users/me/password")
                .bearer(&user.token)
                .json(
                    json!({"current_password": user.password, "new_password": "a-new-password-1"}),
                ),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    for token in [&user.token, &other_session] {
        let refused = app.call(me(token)).await;
        assert_eq!(refused.status, 401, "a token from before the change");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    let fresh = app.token_for(&user.email, "a-new-password-1").await;
    assert_eq!(app.call(me(&fresh)).await.status, 200);

    // Reset through the emailed link.
    let user = app.clinician().await;
    app.call(ApiRequest::post(&format!(
        "/api/v1/password-recovery/{}",
        user.email
    )))
    .await;
    let link_token = token_in(&mail_to(&user.email).last().unwrap().1);
    let reset = app
        .call(
            ApiRequest::post("/api/v1/reset-password/")
                .json(json!({"token": link_token, "new_password": "reset-password-2"})),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(app.call(me(&user.token)).await.status, 401);

    // Set by a superuser.
    let user = app.clinician().await;
    let set = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
                .bearer(&admin)
                .json(json!({"password": "set-by-admin-3"})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(app.call(me(&user.token)).await.status, 401);
    // A change of name keeps the sessions.
    let user = app.clinician().await;
    app.call(
        ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
            .bearer(&admin)
            .json(json!({"full_name": "Still Signed In"})),
    )
    .await;
    assert_eq!(app.call(me(&user.token)).await.status, 200);

    // Logout ends every session of the caller, and only theirs.
    let user = app.clinician().await;
    let second = app.token_for(&user.email, &user.password).await;
    let bystander = app.viewer().await;
    let logout = app
        .call(ApiRequest::post("/api/v1/logout").bearer(&user.token))
        .await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    assert!(logout.body.is_empty());
    assert_eq!(app.call(me(&user.token)).await.status, 401);
    assert_eq!(app.call(me(&second)).await.status, 401);
    assert_eq!(app.call(me(&bystander.token)).await.status, 200);
    let again = app
        .call(ApiRequest::post("/api/v1/logout/").bearer(&user.token))
        .await;
    assert_eq!(again.status, 401, "a dead session cannot log out again");
    let events = app.audit_events("auth.logout").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[0]["actor_id"].as_str(), Some(user.id.as_str()));
    // The dead session's refusal names nobody: counted, not an event of its own.
    let refused = app
        .db
        .number("SELECT coalesce(sum(refusals), 0)::int8 FROM audit_refusals WHERE action = 'auth.logout'")
        .await;
    assert_eq!(refused, 1);
    let relogin = app.token_for(&user.email, &user.password).await;
    assert_eq!(app.call(me(&relogin)).await.status, 200);
}

#[tokio::test]
async fn the_jwks_verifies_real_tokens_and_only_es256_with_a_known_kid_passes() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let jwks = app
        .call(ApiRequest::get("/api/v1/.well-known/jwks.json"))
        .await;
    assert_eq!(jwks.status, 200);
    assert!(jwks
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks.body).unwrap();
    assert!(!set.keys.is_empty());
    let body = jwks.json();
    for key in body["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert!(key["kid"].is_string());
        assert!(key.get("d").is_none(), "no private member: {key}");
    }

    // Another service verifies our token with nothing but the published keys.
    let header = jsonwebtoken::decode_header(&user.token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let jwk = set.find(&kid).expect("the token's key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["carevault:access"]);
    let claims = jsonwebtoken::decode::<Value>(
        &user.token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the token verifies with the JWK Set")
    .claims;
    assert_eq!(claims["sub"], user.id.as_str());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({"sub": user.id, "aud": "carevault:access", "iat": now, "exp": now + 600, "sep": 0});
    // HS256 keyed with what an attacker can read: the public key, as JSON and as its x.
    let hs256 = |secret: &[u8], kid: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let key_json = serde_json::to_vec(&body["keys"][0]).unwrap();
    // The API's own key, under another header.
    let es256 = |kid: Option<&str>| {
        let pem = &api_tests::test_keys().signing.keys[0].private_key_pem;
        let der = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(
                    pem.lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .unwrap()
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&der),
        )
        .unwrap()
    };
    assert_eq!(
        app.call(me(&es256(Some(&kid)))).await.status,
        200,
        "the control: ES256 with the right kid passes"
    );
    for (what, token) in [
        (
            "HS256 keyed with the public JWK",
            hs256(&key_json, Some(&kid)),
        ),
        (
            "HS256 keyed with x",
            hs256(
                body["keys"][0]["x"].as_str().unwrap().as_bytes(),
                Some(&kid),
            ),
        ),
        ("ES256 without a kid", es256(None)),
        (
            "ES256 with an unknown kid",
            es256(Some("someone-elses-key")),
        ),
    ] {
        let refused = app.call(me(&token)).await;
        assert_eq!(refused.status, 401, "{what}: {}", refused.body);
    }
}

#[tokio::test]
async fn an_email_change_needs_the_password_and_tells_the_old_address() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let new_email = unique_email("moved");
    let change = |body: Value| {
        ApiRequest::patch("/api/v1/users/me")
            .bearer(&user.token)
            .json(body)
    };
    let missing = app.call(change(json!({"email": new_email}))).await;
    assert_eq!(missing.status, 422);
    assert_eq!(
        missing.detail()[0]["loc"],
        json!(["body", "current_password"])
    );
    let wrong = app
        .call(change(
            json!({"email": new_email, "current_password": "not-it-at-all"}),
        ))
        .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.detail(), "Incorrect password");
    // The name alone needs no password.
    let named = app.call(change(json!({"full_name": "New Name"}))).await;
    assert_eq!(named.status, 200);

    // A reset link issued before the change is spent by it.
    app.call(ApiRequest::post(&format!(
        "/api/v1/password-recovery/{}",
        user.email
    )))
    .await;
    let old_link = token_in(&mail_to(&user.email).last().unwrap().1);

    let moved = app
        .call(change(
            json!({"email": new_email, "current_password": user.password}),
        ))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.json()["email"], new_email.as_str());
    let notice = mail_to(&user.email);
    let (subject, text) = notice.last().unwrap();
    assert!(
        subject.contains("email address of your account changed"),
        "{subject}"
    );
    assert!(
        !text.contains(&new_email),
        "the new address is not sent to the old one"
    );
    let spent = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": old_link, "new_password": "taken-over-pass"})),
        )
        .await;
    assert_eq!(spent.status, 400, "{}", spent.body);

    // A superuser moves another account: no password, audited by digest, old address told.
    let admin = app.superuser_token().await;
    let other = app.clinician().await;
    let elsewhere = unique_email("elsewhere");
    let by_admin = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", other.id))
                .bearer(&admin)
                .json(json!({"email": elsewhere})),
        )
        .await;
    assert_eq!(by_admin.status, 200, "{}", by_admin.body);
    assert!(mail_to(&other.email)
        .last()
        .unwrap()
        .0
        .contains("email address of your account changed"));
    let events = app.audit_events("user.update").await;
    let event = events
        .iter()
        .rev()
        .find(|e| e["resource_id"] == other.id.as_str())
        .unwrap();
    let details = event["details"].to_string();
    assert!(
        !details.contains(&other.email) && !details.contains(&elsewhere),
        "{details}"
    );
    assert_eq!(
        event["details"]["previous_email_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(event["details"]["email_sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn the_recovery_preview_cannot_reset_anything_and_is_audited() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let user = app.clinician().await;
    let preview = app
        .call(
            ApiRequest::post(&format!(
                "/api/v1/password-recovery-html-content/{}",
                user.email
            ))
            .bearer(&admin),
        )
        .await;
    assert_eq!(preview.status, 200);
    let token = token_in(&preview.body);
    assert_eq!(token, auth::PREVIEW_TOKEN);
    let used = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": token, "new_password": "stolen-password-1"})),
        )
        .await;
    assert_eq!(used.status, 400);
    assert_eq!(app.login(&user.email, &user.password).await.status, 200);
    let events = app.audit_events("auth.password_reset_preview").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["resource_id"], user.id.as_str());
    assert!(events[0]["actor_id"].is_string());
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_address() {
    let app = TestApp::new().await;
    let target = app.clinician().await;
    let neighbour = app.clinician().await;
    let login = |email: &str, password: &str, ip: &str| {
        ApiRequest::post("/api/v1/login/access-token")
            .source_ip(ip)
            .form(&[("username", email), ("password", password)])
    };
    let attacker = "203.0.113.66";
    for attempt in 1..=5 {
        let wrong = app
            .call(login(&target.email, "wrong-guess-x", attacker))
            .await;
        assert_eq!(wrong.status, 400, "attempt {attempt}: {}", wrong.body);
    }
    // The pair is blocked now, the right password included, with when to come back.
    for password in ["wrong-guess-x", target.password.as_str()] {
        let blocked = app.call(login(&target.email, password, attacker)).await;
        assert_eq!(blocked.status, 429, "{}", blocked.body);
        let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=60).contains(&retry),
            "the first window is a minute: {retry}"
        );
    }
    // The trailing-slash route is the same route.
    let slash = app
        .call(
            ApiRequest::post("/api/v1/login/access-token/")
                .source_ip(attacker)
                .form(&[("username", target.email.as_str()), ("password", "x")]),
        )
        .await;
    assert_eq!(slash.status, 429);
    // Another account from that address, and the account from another address, go on.
    assert_eq!(
        app.call(login(&neighbour.email, &neighbour.password, attacker))
            .await
            .status,
        200
    );
    assert_eq!(
        app.call(login(&target.email, &target.password, "198.51.100.20"))
            .await
            .status,
        200,
        "nobody locks an account out from elsewhere"
    );
    // Each refusal is audited as denied.
    let denied = app
        .audit_events("auth.login")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied" && e["actor_email"] == target.email.as_str())
        .count();
    assert_eq!(denied, 5 + 3);

    // The window doubles with each further failure once it has passed.
    app.db
        .client()
        .await
        .execute(
            "UPDATE login_throttle SET blocked_until = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let sixth = app
        .call(login(&target.email, "wrong-guess-x", attacker))
        .await;
    assert_eq!(sixth.status, 400);
    let blocked = app
        .call(login(&target.email, "wrong-guess-x", attacker))
        .await;
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((61..=120).contains(&retry), "two minutes now: {retry}");
}

/// 100 failures an hour on one account (from many addresses) cap every address that failed
/// against it, never one that has not: the right password from elsewhere gets through.
#[tokio::test]
async fn the_hourly_cap_on_an_account_never_locks_out_an_address_that_has_not_failed() {
    let app = TestApp::new().await;
    let admin = app
        .user_with(json!({
            "email": api_tests::unique_email("admin"),
            "password": "admin-pass-12345",
            "is_superuser": true,
        }))
        .await;
    let login = |password: &str, ip: &str| {
        ApiRequest::post("/api/v1/login/access-token")
            .source_ip(ip)
            .form(&[("username", admin.email.as_str()), ("password", password)])
    };
    // Twenty addresses, five wrong guesses each, the hour's cap reached.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO login_failures (account, source_ip, failed_at)
             SELECT $1, '203.0.113.' || (i % 20), now() - interval '10 minutes'
             FROM generate_series(1, 100) AS i",
            &[&admin.email.to_lowercase()],
        )
        .await
        .unwrap();
    assert_eq!(
        app.call(login(&admin.password, "192.0.2.99")).await.status,
        200,
        "nobody can lock an administrator out"
    );
    // An address that fails now is capped at once, the right password included, until the
    // oldest failure leaves the hour.
    assert_eq!(
        app.call(login("wrong-guess-x", "192.0.2.98")).await.status,
        400
    );
    let capped = app.call(login(&admin.password, "192.0.2.98")).await;
    assert_eq!(capped.status, 429, "{}", capped.body);
    let retry: u64 = capped.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (2_900..=3_000).contains(&retry),
        "when the oldest leaves the hour: {retry}"
    );
}

/// One address guessing a few passwords on many accounts (spraying) is refused once it failed
/// against 20 accounts in the hour; other addresses go on, and so does an address whose many
/// failures are on few accounts (people behind one address mistyping their own).
#[tokio::test]
async fn an_address_spraying_passwords_over_many_accounts_is_capped() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let sprayer = "198.51.100.77";
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO login_failures (account, source_ip, failed_at)
             SELECT 'user' || (i % 50) || '@example.com', $1, now() - interval '5 minutes'
             FROM generate_series(1, 100) AS i",
            &[&sprayer],
        )
        .await
        .unwrap();
    let login = |ip: &str| {
        ApiRequest::post("/api/v1/login/access-token")
            .source_ip(ip)
            .form(&[
                ("username", user.email.as_str()),
                ("password", user.password.as_str()),
            ])
    };
    let capped = app.call(login(sprayer)).await;
    assert_eq!(capped.status, 429, "{}", capped.body);
    let retry: u64 = capped.header("retry-after").unwrap().parse().unwrap();
    assert!((3_200..=3_300).contains(&retry), "{retry}");
    assert_eq!(app.call(login("192.0.2.10")).await.status, 200);
    // 100 failures on 4 accounts from one office address: not spraying.
    let office = "198.51.100.80";
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO login_failures (account, source_ip, failed_at)
             SELECT 'staff' || (i % 4) || '@example.com', $1, now() - interval '5 minutes'
             FROM generate_series(1, 100) AS i",
            &[&office],
        )
        .await
        .unwrap();
    assert_eq!(app.call(login(office)).await.status, 200);
    // An IPv6 sprayer counts as its /64: another address in it is refused too.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO login_failures (account, source_ip, failed_at)
             SELECT 'user' || i || '@example.com', '2001:db8:7:7::/64', now() - interval '5 minutes'
             FROM generate_series(1, 20) AS i",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app.call(login("2001:db8:7:7:abcd::42")).await.status, 429);
}

#[tokio::test]
async fn a_wrong_current_password_counts_like_a_failed_login() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let change = ApiRequest::patch("/api/v1/users/me/password")
        .bearer(&user.token)
        .json(json!({"current_password": "guessing-1234", "new_password": "whatever-1234"}));
    for _ in 0..5 {
        assert_eq!(app.call(change.clone()).await.status, 400);
    }
    let blocked = app.call(change).await;
    assert_eq!(blocked.status, 429);
    assert!(blocked.header("retry-after").is_some());
    // The same pair is blocked at the login too.
    assert_eq!(app.login(&user.email, &user.password).await.status, 429);
}

#[tokio::test]
async fn recovery_sends_one_email_per_window_and_answers_the_same() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let ask = || ApiRequest::post(&format!("/api/v1/password-recovery/{}", user.email));
    let first = app.call(ask()).await;
    let second = app.call(ask()).await;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body, "nothing is revealed");
    let recovery_mails = mail_to(&user.email)
        .iter()
        .filter(|(subject, _)| subject.contains("Password recovery"))
        .count();
    assert_eq!(recovery_mails, 1);
    // After the window, another.
    app.db
        .client()
        .await
        .execute(
            "UPDATE recovery_emails SET sent_at = now() - interval '16 minutes'",
            &[],
        )
        .await
        .unwrap();
    app.call(ask()).await;
    let recovery_mails = mail_to(&user.email)
        .iter()
        .filter(|(subject, _)| subject.contains("Password recovery"))
        .count();
    assert_eq!(recovery_mails, 2);
}

#[tokio::test]
async fn every_answer_is_no_store_and_nosniff() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    for (method, path, _, _) in crate::audit::routes_with_a_token() {
        let request = ApiRequest::new(method, &path).bearer(&admin);
        let request = if matches!(method, "POST" | "PUT" | "PATCH") {
            request.json(json!({}))
        } else {
            request
        };
        let answer = app.call(request).await;
        assert!(answer.status < 500, "{method} {path}: {}", answer.body);
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{method} {path}"
        );
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{method} {path}"
        );
    }
    let login = app
        .login(FIRST_SUPERUSER, api_tests::FIRST_SUPERUSER_PASSWORD)
        .await;
    assert_eq!(login.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn no_statement_outlives_the_timeout() {
    let app = TestApp::with_settings(&[("DB_STATEMENT_TIMEOUT_MS", "300")]).await;
    let t = app.clinician().await.token;
    let created = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({"name": "Waiting"})),
        )
        .await
        .json();
    // Another session holds the table: the read would wait forever without a timeout.
    let mut holder = app.db.client().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE patients IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let read = app
        .call(
            ApiRequest::get(&format!(
                "/api/v1/patients/{}",
                created["id"].as_str().unwrap()
            ))
            .bearer(&t),
        )
        .await;
    let waited = started.elapsed();
    lock.rollback().await.unwrap();
    assert_eq!(read.status, 503, "{}", read.body);
    assert!(
        waited < std::time::Duration::from_secs(3),
        "cancelled by the statement timeout: {waited:?}"
    );
}
