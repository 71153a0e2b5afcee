//! `bench [auth]`: timings through the real handlers (API Gateway event in, response out)
//! against the real database, next to the bare cost of the same work. Prints a Markdown report.
//! Run by scripts/bench, which starts the services and builds in release mode.

use std::time::{Duration, Instant};

use api_tests::{ApiRequest, TestApp, FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD};
use shared::domain::Password;
use shared::users::USER_COLUMNS;

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    runs: usize,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
        runs: samples.len(),
    }
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f().await);
        samples.push(start.elapsed());
    }
    stats(samples)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, s: &Stats) {
    println!(
        "| {what} | {} | {} | {} | {} |",
        s.runs,
        ms(s.p50),
        ms(s.p99),
        ms(s.mean)
    );
}

async fn auth() {
    let app = TestApp::new().await;
    let password = Password::parse("benchmark-password-1".into()).unwrap();
    let stored = shared::password::hash(&password).await.unwrap();

    println!(
        "## Auth (argon2id m={} KiB, t={}, p={})\n",
        shared::password::MEMORY_KIB,
        shared::password::ITERATIONS,
        shared::password::LANES
    );
    println!("| measurement | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    row(
        "argon2id hash (new password)",
        &time(20, || shared::password::hash(&password)).await,
    );
    row(
        "argon2id verify (login's main cost)",
        &time(20, || {
            shared::password::verify("benchmark-password-1", Some(&stored))
        })
        .await,
    );
    row(
        "POST /login/access-token through the handler",
        &time(20, || app.login(FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD)).await,
    );
    row(
        "POST /login/access-token, unknown email (dummy hash)",
        &time(20, || {
            app.login("nobody@example.com", FIRST_SUPERUSER_PASSWORD)
        })
        .await,
    );

    let token = app.superuser_token().await;
    let user_id = app.auth.auth.tokens.verify_access(&token).unwrap();
    row(
        "token verification alone (HS256, claims)",
        &time(100_000, || async {
            app.auth.auth.tokens.verify_access(&token)
        })
        .await,
    );
    let client = app.db.client().await;
    let statement = client
        .prepare(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .await
        .unwrap();
    row(
        "bare SQL: user lookup by id (tokio-postgres)",
        &time(5_000, || async {
            client.query_one(&statement, &[&user_id]).await.unwrap()
        })
        .await,
    );
    row(
        "verification + user lookup (CurrentUser, pooled)",
        &time(5_000, || async {
            let id = app.auth.auth.tokens.verify_access(&token).unwrap();
            shared::users::find_by_id(&app.auth.auth.pool, id).await
        })
        .await,
    );
    row(
        "POST /login/test-token through the handler",
        &time(5_000, || {
            app.call(ApiRequest::post("/api/v1/login/test-token").bearer(&token))
        })
        .await,
    );
    println!();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if matches!(which.as_str(), "all" | "auth") {
        auth().await;
    }
}
