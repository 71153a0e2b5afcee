//! `bench smart`: SMART on FHIR's token issuance through the auth function's handler (client
//! credentials, authorization code, refresh), and what scope enforcement adds to a FHIR read and
//! search over a session token's, on the uniform data set (1M patients).

use std::time::Duration;

use api_tests::{pkce, ApiRequest, ClientKey, TestApp};
use serde_json::json;

use crate::{ms, row, stats, time, BenchData, Stats};

const TOKEN_ENDPOINT: &str = "https://api.carevault.test/api/v1/smart/token";
const FHIR_BASE: &str = "https://api.carevault.test/fhir/R4";
const REDIRECT: &str = "https://charts.example/callback";

/// A code of `client_id` approved by `user_token`'s user; (code, verifier).
async fn code(app: &TestApp, user_token: &str, client_id: &str, scope: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let mut request = ApiRequest::get("/api/v1/smart/authorize");
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s"),
        ("aud", FHIR_BASE),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ] {
        request = request.query(k, v);
    }
    let location = app
        .call(request)
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let id = location.rsplit_once("request=").unwrap().1.to_owned();
    let decided = app
        .call(
            ApiRequest::post(&format!("/api/v1/smart/authorizations/{id}"))
                .bearer(user_token)
                .json(json!({"approve": true})),
        )
        .await
        .json();
    let redirect = decided["redirect_to"].as_str().unwrap();
    let code = redirect
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    (code, verifier)
}

async fn issuance() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let key = ClientKey::new("k1");
    let register = |body: serde_json::Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let created = app
                .call(
                    ApiRequest::post("/api/v1/smart-clients/")
                        .bearer(&admin)
                        .json(body),
                )
                .await;
            created.json()["client_id"].as_str().unwrap().to_owned()
        }
    };
    let backend = register(json!({
        "client_name": "bench backend", "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt", "jwks": key.jwks(), "scope": "system/*.rs",
    }))
    .await;
    let public = register(json!({
        "client_name": "bench app", "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none", "scope": "user/*.rs offline_access",
    }))
    .await;
    const RUNS: usize = 200;
    println!("## SMART on FHIR: token issuance through the auth handler\n");
    println!("Fresh test database; each request alone, assertions and codes made before the clock starts.\n");
    println!("| request | runs | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|");
    let assertions: Vec<String> = (0..RUNS)
        .map(|_| key.assertion_for(&backend, TOKEN_ENDPOINT))
        .collect();
    let mut next = assertions.into_iter();
    let stats = time(RUNS, || {
        let assertion = next.next().unwrap();
        let app = &app;
        async move {
            let response = app
                .call(ApiRequest::post("/api/v1/smart/token").form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Patient.rs"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ]))
                .await;
            assert_eq!(response.status, 200, "{}", response.body);
        }
    })
    .await;
    row("client_credentials (ES384 assertion, inline JWKS)", &stats);
    let mut codes = Vec::new();
    for _ in 0..RUNS {
        codes.push(code(&app, &admin, &public, "user/*.rs offline_access").await);
    }
    let mut next = codes.into_iter();
    let refresh_token = std::cell::RefCell::new(String::new());
    let stats = time(RUNS, || {
        let (code, verifier) = next.next().unwrap();
        let (app, public) = (&app, &public);
        let refresh_token = &refresh_token;
        async move {
            let response = app
                .call(ApiRequest::post("/api/v1/smart/token").form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                    ("client_id", public),
                ]))
                .await;
            assert_eq!(response.status, 200, "{}", response.body);
            *refresh_token.borrow_mut() = response.json()["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    })
    .await;
    row(
        "authorization_code (PKCE, public client, with a refresh token)",
        &stats,
    );
    let stats = time(RUNS, || {
        let (app, public) = (&app, &public);
        let refresh_token = &refresh_token;
        async move {
            let current = refresh_token.borrow().clone();
            let response = app
                .call(ApiRequest::post("/api/v1/smart/token").form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.as_str()),
                    ("client_id", public),
                ]))
                .await;
            assert_eq!(response.status, 200, "{}", response.body);
            *refresh_token.borrow_mut() = response.json()["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    })
    .await;
    row("refresh_token (rotation: spent, replaced)", &stats);
    println!();
}

/// A SMART token of `scope` (and `patient`) under a grant written as the token endpoint writes
/// it, signed with the test keys the FHIR router verifies with.
async fn smart_token(
    client: &shared::db::Connection,
    tokens: &shared::tokens::Tokens,
    client_id: uuid::Uuid,
    user: uuid::Uuid,
    scope: &str,
    patient: Option<uuid::Uuid>,
) -> String {
    let grant = uuid::Uuid::new_v4();
    client
        .execute(
            "INSERT INTO smart_grants (id, client_id, user_id, session_epoch, scope, patient_id, expires_at)
             SELECT $1, $2, id, session_epoch, $4, $5, now() + interval '1 day' FROM users WHERE id = $3",
            &[&grant, &client_id, &user, &scope, &patient],
        )
        .await
        .unwrap();
    tokens
        .issue_smart(
            &shared::tokens::SmartGrantOf {
                fhir_base: "https://api.clinic.example/fhir/R4",
                subject: &user.to_string(),
                client_id,
                grant,
                scope,
                patient,
            },
            Duration::from_secs(3600),
        )
        .unwrap()
        .0
}

/// A measured request: its label, path and query.
type Shape<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

async fn enforcement() {
    let data = BenchData::open(crate::dataset::DataSet::Uniform).await;
    let (client, admin) = (&data.client, data.admin);
    let [signing, public] = api_tests::token_settings();
    let env = shared::config::Env::from_pairs([
        ("DATABASE_URL", api_tests::db_url(&data.dbname)),
        signing,
        public,
        ("S3_BUCKET", "carevault-bench".to_owned()),
        (
            "FHIR_BASE_URL",
            "https://api.clinic.example/fhir/R4".to_owned(),
        ),
        (
            "EXPORT_QUEUE_URL",
            api_tests::create_queue("carevault-bench-fhir-exports", 900).await,
        ),
    ]);
    let fhir = fhir::router(fhir::FhirState::from_env(&env).await.unwrap());
    let keys = api_tests::test_keys();
    let tokens = shared::tokens::Tokens::new(
        Some(&keys.signing),
        &keys.jwks,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    )
    .unwrap();
    let client_id = uuid::Uuid::new_v4();
    client
        .execute(
            "INSERT INTO smart_clients (client_id, client_name, redirect_uris, grant_types,
                token_endpoint_auth_method, scope)
             VALUES ($1, 'bench', ARRAY['https://charts.example/cb'], ARRAY['authorization_code'],
                'none', 'user/*.rs patient/*.rs launch/patient')",
            &[&client_id],
        )
        .await
        .unwrap();
    let patient: uuid::Uuid = client
        .query_one(
            "SELECT patient_id FROM attachments GROUP BY patient_id ORDER BY count(*) DESC, patient_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let session = api_tests::access_token_for(admin);
    let user = smart_token(client, &tokens, client_id, admin, "user/*.rs", None).await;
    let scoped = smart_token(
        client,
        &tokens,
        client_id,
        admin,
        "patient/*.rs",
        Some(patient),
    )
    .await;
    println!("## SMART on FHIR: what scope enforcement adds (uniform data set, 1M patients)\n");
    println!("The same FHIR request with a session token, a SMART `user/*.rs` token and a SMART `patient/*.rs` token (the patient with the most files); 5 rounds of 200 each, alternating, p50 and p99 over all.\n");
    println!("| FHIR request | token | runs | p50 ms | p99 ms | p50 over the session token's |\n|---|---|---|---|---|---|");
    let read = format!("/fhir/R4/Patient/{patient}");
    let documents = format!("Patient/{patient}");
    let shapes: Vec<Shape> = vec![
        ("read Patient/{id}", read, vec![]),
        (
            "search Patient?name=dvořák ígor&_count=20",
            "/fhir/R4/Patient".into(),
            vec![("name", "dvořák ígor"), ("_count", "20")],
        ),
        (
            "search DocumentReference?patient=...",
            "/fhir/R4/DocumentReference".into(),
            vec![("patient", documents.as_str())],
        ),
    ];
    for (label, path, query) in &shapes {
        let request = |token: &str| {
            let mut request = ApiRequest::get(path).bearer(token);
            for (k, v) in query {
                request = request.query(k, v);
            }
            request
        };
        let variants = [
            ("session", &session),
            ("SMART user/*.rs", &user),
            ("SMART patient/*.rs", &scoped),
        ];
        for (_, token) in &variants {
            let response = api_tests::invoke(fhir.clone(), request(token)).await;
            assert_eq!(response.status, 200, "{label}: {}", response.body);
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        for _ in 0..5 {
            for (i, (_, token)) in variants.iter().enumerate() {
                for _ in 0..200 {
                    let start = std::time::Instant::now();
                    std::hint::black_box(api_tests::invoke(fhir.clone(), request(token)).await);
                    samples[i].push(start.elapsed());
                }
            }
        }
        let all: Vec<Stats> = samples.into_iter().map(stats).collect();
        for (i, (name, _)) in variants.iter().enumerate() {
            let over = all[i].p50.as_secs_f64() * 1000.0 - all[0].p50.as_secs_f64() * 1000.0;
            println!(
                "| {label} | {name} | {} | {} | {} | {} |",
                all[i].runs,
                ms(all[i].p50),
                ms(all[i].p99),
                if i == 0 {
                    "".to_owned()
                } else {
                    format!("{over:+.3}")
                }
            );
        }
    }
    client
        .execute(
            "DELETE FROM smart_clients WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
    println!();
}

pub async fn smart() {
    issuance().await;
    enforcement().await;
}
