//! What a second factor adds to a sign-in (issue 28): the password step of an account with a
//! factor (argon2id as before, then the factor lookup and the step token), and each second
//! step through its handler. A TOTP code is good once, so each run's account forgets the step
//! it used and gets a new sign-in step first, neither of them timed.

use std::time::{Duration, Instant};

use api_tests::mfa::{enable_totp, register_passkey, totp_code, Authenticator};
use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::json;

use crate::{row, stats, time};

const RUNS: usize = 20;

async fn step_token(app: &TestApp, user_id: uuid::Uuid) -> String {
    let epoch: i32 = app
        .db
        .client()
        .await
        .query_one("SELECT session_epoch FROM users WHERE id = $1", &[&user_id])
        .await
        .unwrap()
        .get(0);
    domain::second_factors::sign_in::begin(&app.auth.db, user_id, epoch)
        .await
        .unwrap()
}

fn second_step(body: serde_json::Value) -> ApiRequest {
    ApiRequest::post("/api/v1/login/mfa").json(body)
}

/// One request through its handler, timed; it must succeed.
async fn timed_ok(app: &TestApp, request: ApiRequest) -> (Duration, ApiResponse) {
    let started = Instant::now();
    let answer = app.call(request).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.body);
    (took, answer)
}

async fn forget_used_step(app: &TestApp) {
    app.db
        .client()
        .await
        .execute("UPDATE user_totp SET last_used_step = NULL", &[])
        .await
        .unwrap();
}

pub async fn second_factors() {
    let app = TestApp::new().await;
    println!("## Second factors (what the second step adds to a sign-in)\n");
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    let plain = app.clinician().await;
    row(
        "POST /login/access-token, no second factor (as before)",
        &time(RUNS, || app.login(&plain.email, &plain.password)).await,
    );

    let user = app.clinician().await;
    let user_id: uuid::Uuid = user.id.parse().unwrap();
    let enrolled = enable_totp(&app, &user).await;
    row(
        "POST /login/access-token, account with TOTP: password step (401 + mfa_token)",
        &time(RUNS, || app.login(&user.email, &user.password)).await,
    );

    let mut samples = Vec::new();
    for _ in 0..RUNS {
        forget_used_step(&app).await;
        let code = totp_code(&enrolled.secret, 0);
        let login = ApiRequest::post("/api/v1/login/access-token").form(&[
            ("username", &user.email),
            ("password", &user.password),
            ("mfa_code", &code),
        ]);
        samples.push(timed_ok(&app, login).await.0);
    }
    row(
        "POST /login/access-token with mfa_code (TOTP): one request",
        &stats(samples),
    );

    let mut samples = Vec::new();
    for _ in 0..RUNS {
        forget_used_step(&app).await;
        let step = step_token(&app, user_id).await;
        let body = json!({ "mfa_token": step, "code": totp_code(&enrolled.secret, 0) });
        samples.push(timed_ok(&app, second_step(body)).await.0);
    }
    row("POST /login/mfa with a TOTP code", &stats(samples));

    let mut samples = Vec::new();
    for code in &enrolled.recovery_codes {
        let step = step_token(&app, user_id).await;
        let body = json!({ "mfa_token": step, "code": code });
        samples.push(timed_ok(&app, second_step(body)).await.0);
    }
    row("POST /login/mfa with a recovery code", &stats(samples));

    let holder = app.clinician().await;
    let holder_id: uuid::Uuid = holder.id.parse().unwrap();
    let mut key = Authenticator::new();
    let registered = register_passkey(&app, &holder, &holder.token, &mut key).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let (mut options_samples, mut assertion_samples) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let step = step_token(&app, holder_id).await;
        let ask = ApiRequest::post("/api/v1/login/mfa/passkey-options")
            .json(json!({ "mfa_token": step }));
        let (took, options) = timed_ok(&app, ask).await;
        options_samples.push(took);
        // The authenticator's signature is the user's device's time, not the server's.
        let assertion = key.assert(&options.json());
        let body = json!({ "mfa_token": step, "passkey": assertion });
        assertion_samples.push(timed_ok(&app, second_step(body)).await.0);
    }
    row("POST /login/mfa/passkey-options", &stats(options_samples));
    row(
        "POST /login/mfa with a passkey assertion (ES256)",
        &stats(assertion_samples),
    );
    println!();
}
