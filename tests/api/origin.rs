//! The origin check (`edge::http::OriginCheck`): behind CloudFront, a request without the origin
//! secret CloudFront adds is refused, whatever it asks for; with it, it is served, and the
//! viewer's address CloudFront reports is the caller's address for the trail and the login
//! throttle. Without the check (local runs, a request that went around CloudFront), a client's
//! own `CloudFront-Viewer-Address` means nothing.

use api_tests::{function_for, stack_var, ApiRequest, ApiResponse, TestApp};
use base64::Engine;
use edge::http::{OriginCheck, ORIGIN_SECRET_HEADER, VIEWER_ADDRESS_HEADER};
use lambda_http::Service;
use serde_json::{json, Value};
use shared::config::{ConfigError, Env};
use shared::secrets::SecretsClient;

const SECRET: &str = "origin-secret-0123456789abcdefghijklmnopqrstuv";

/// The address API Gateway reports for every request CloudFront sends (one of its edges).
const CLOUDFRONT_EDGE: &str = "130.176.0.20";

/// The check as a function's cold start builds it, from a secret in the local Secrets Manager.
async fn origin_check(app: &TestApp) -> OriginCheck {
    stack_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let client = aws_sdk_secretsmanager::Client::new(&shared::aws::sdk_config().await);
    let created = client
        .create_secret()
        .name(format!("carevault/test/origin-{}", uuid::Uuid::new_v4()))
        .secret_string(json!({ "value": SECRET }).to_string())
        .send()
        .await
        .expect("create the origin secret in the local Secrets Manager");
    let env = app.env_with(&[("ORIGIN_SECRET_ARN", created.arn().unwrap())]);
    let check = OriginCheck::from_env(&env, &SecretsClient::from_env(&env))
        .await
        .expect("the origin check from its secret");
    assert!(matches!(check, OriginCheck::Secret(_)), "{check:?}");
    check
}

/// `request` through the function template.yaml routes it to, run by Lambda's adapter behind
/// `origin`, as `edge::http::start` serves it.
async fn behind(app: &TestApp, origin: &OriginCheck, request: ApiRequest) -> ApiResponse {
    let method = request.to_event()["requestContext"]["http"]["method"]
        .as_str()
        .unwrap()
        .to_owned();
    let function = function_for(&method, &request.path).expect("a routed path");
    let service = edge::http::service_with(app.router_of(function), origin);
    let mut adapter = lambda_http::Adapter::from(service);
    let event = request.to_event();
    let mut context = lambda_http::Context::default();
    context.request_id = format!(
        "lambda-{}",
        event["requestContext"]["requestId"].as_str().unwrap()
    );
    let payload: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let response = adapter
        .call(lambda_http::LambdaEvent::new(payload, context))
        .await
        .unwrap_or_else(|e| match e {});
    let response = serde_json::to_value(response).unwrap();
    let body = match &response["body"] {
        Value::String(text) if response["isBase64Encoded"] == json!(true) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap(),
        Value::String(text) => text.clone(),
        _ => String::new(),
    };
    ApiResponse {
        status: response["statusCode"].as_u64().unwrap() as u16,
        headers: response["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        body,
    }
}

/// A request as CloudFront sends it: from one of its edges, with the secret and the viewer.
fn via_cloudfront(request: ApiRequest, viewer: &str) -> ApiRequest {
    request
        .source_ip(CLOUDFRONT_EDGE)
        .header(ORIGIN_SECRET_HEADER, SECRET)
        .header(VIEWER_ADDRESS_HEADER, viewer)
}

fn login(email: &str, password: &str) -> ApiRequest {
    ApiRequest::post("/api/v1/login/access-token")
        .request_id(&uuid::Uuid::new_v4().to_string())
        .form(&[("username", email), ("password", password)])
}

/// The address the trail recorded for the request `request`.
async fn recorded_address(app: &TestApp, request: &ApiRequest) -> String {
    let request_id = request.to_event()["requestContext"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.db
        .client()
        .await
        .query_one(
            "SELECT source_ip FROM audit_events WHERE request_id = $1",
            &[&format!("lambda-{request_id}")],
        )
        .await
        .expect("the request's audit event")
        .get(0)
}

#[tokio::test]
async fn a_request_around_cloudfront_is_refused_and_one_through_it_served() {
    let app = TestApp::new().await;
    let origin = origin_check(&app).await;
    let clinician = app.clinician().await;
    let requests = [
        ApiRequest::get("/api/v1/utils/health-check/"),
        ApiRequest::get("/api/v1/patients/").bearer(&clinician.token),
        ApiRequest::get("/fhir/R4/metadata"),
        // A path no function route serves: the fallback is behind the check too.
        ApiRequest::get("/api/v1/patients/not-a-route/at-all").bearer(&clinician.token),
    ];
    for request in &requests {
        for sent in [None, Some("a-guess"), Some(&SECRET[..SECRET.len() - 1])] {
            let request = match sent {
                Some(value) => request.clone().header(ORIGIN_SECRET_HEADER, value),
                None => request.clone(),
            };
            let refused = behind(&app, &origin, request).await;
            assert_eq!(refused.status, 403, "{}: {}", refused.body, sent.is_some());
            assert_eq!(
                refused.json(),
                json!({"detail": "Requests reach this API through its public address only"})
            );
            assert_eq!(refused.header("cache-control"), Some("no-store"));
        }
    }
    let served = [200, 200, 200, 404];
    for (request, status) in requests.into_iter().zip(served) {
        let path = request.path.clone();
        let answer = behind(&app, &origin, via_cloudfront(request, "198.51.100.20:1234")).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
    }
}

#[tokio::test]
async fn the_viewer_address_counts_only_behind_the_origin_check() {
    let app = TestApp::new().await;
    let origin = origin_check(&app).await;
    let user = app.clinician().await;

    // Through CloudFront: the trail records the viewer, not CloudFront's edge.
    let request = via_cloudfront(login(&user.email, "wrong-guess"), "203.0.113.9:4711");
    assert_eq!(behind(&app, &origin, request.clone()).await.status, 400);
    assert_eq!(recorded_address(&app, &request).await, "203.0.113.9");
    let request = via_cloudfront(login(&user.email, "wrong-guess"), "[2001:db8::9]:443");
    assert_eq!(behind(&app, &origin, request.clone()).await.status, 400);
    assert_eq!(recorded_address(&app, &request).await, "2001:db8::9");

    // Without the check, a client's own header is ignored: API Gateway's address counts.
    let spoofed = login(&user.email, "wrong-guess").header(VIEWER_ADDRESS_HEADER, "192.0.2.1:1");
    assert_eq!(app.call(spoofed.clone()).await.status, 400);
    assert_eq!(recorded_address(&app, &spoofed).await, "198.51.100.7");
}

#[tokio::test]
async fn the_login_throttle_counts_each_viewer_behind_one_cloudfront_edge() {
    let app = TestApp::new().await;
    let origin = origin_check(&app).await;
    let user = app.clinician().await;
    let attacker = "203.0.113.66:5000";
    for attempt in 1..=5 {
        let wrong = behind(
            &app,
            &origin,
            via_cloudfront(login(&user.email, "wrong-guess"), attacker),
        )
        .await;
        assert_eq!(wrong.status, 400, "attempt {attempt}: {}", wrong.body);
    }
    // The attacker's pair is blocked; the user, arriving through the same edge, is not.
    let blocked = behind(
        &app,
        &origin,
        via_cloudfront(login(&user.email, &user.password), attacker),
    )
    .await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    let own = behind(
        &app,
        &origin,
        via_cloudfront(login(&user.email, &user.password), "198.51.100.30:6000"),
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.body);
}

#[tokio::test]
async fn without_the_check_a_spoofed_viewer_address_does_not_escape_the_throttle() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    // One client (one API Gateway source address) naming a new "viewer" on every try.
    for attempt in 1..=5 {
        let wrong = app
            .call(
                login(&user.email, "wrong-guess")
                    .header(VIEWER_ADDRESS_HEADER, &format!("192.0.2.{attempt}:1")),
            )
            .await;
        assert_eq!(wrong.status, 400, "attempt {attempt}: {}", wrong.body);
    }
    let blocked = app
        .call(login(&user.email, "wrong-guess").header(VIEWER_ADDRESS_HEADER, "192.0.2.99:1"))
        .await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
}

#[tokio::test]
async fn the_origin_check_is_off_unless_configured_and_refuses_weak_or_plain_secrets() {
    let secrets = SecretsClient::new();
    let check = |pairs: Vec<(&'static str, &'static str)>| {
        let env = Env::from_pairs(pairs);
        let secrets = &secrets;
        async move { OriginCheck::from_env(&env, secrets).await }
    };
    assert!(matches!(check(vec![]).await, Ok(OriginCheck::Off)));
    assert!(matches!(
        check(vec![("ORIGIN_SECRET", SECRET)]).await,
        Ok(OriginCheck::Secret(_))
    ));
    // Guessable.
    assert!(matches!(
        check(vec![("ORIGIN_SECRET", "short")]).await,
        Err(ConfigError::Invalid {
            name: "ORIGIN_SECRET",
            ..
        })
    ));
    // In AWS the value comes from Secrets Manager, never from a plain setting.
    let err = check(vec![
        ("ORIGIN_SECRET", SECRET),
        ("ENVIRONMENT", "production"),
    ])
    .await
    .unwrap_err();
    assert!(err.to_string().contains("ORIGIN_SECRET_ARN"), "{err}");
    // And the debug form never shows it.
    let shown = format!(
        "{:?}",
        check(vec![("ORIGIN_SECRET", SECRET)]).await.unwrap()
    );
    assert!(!shown.contains(SECRET), "{shown}");
}

#[tokio::test]
async fn fhir_links_name_the_host_the_viewer_asked_cloudfront_for_only_behind_the_check() {
    let app = TestApp::new().await;
    let origin = origin_check(&app).await;
    let token = app.clinician().await.token;
    let self_link = |bundle: Value| {
        bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "self")
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let search = || {
        ApiRequest::get("/fhir/R4/Patient")
            .bearer(&token)
            .header("x-viewer-host", "api.clinic.example")
    };
    let through = behind(&app, &origin, via_cloudfront(search(), "198.51.100.20:1")).await;
    assert_eq!(through.status, 200, "{}", through.body);
    let url = self_link(through.json());
    assert!(
        url.starts_with("https://api.clinic.example/fhir/R4/Patient"),
        "{url}"
    );
    // From anyone else the header is nothing: links name the request's own host.
    let around = app.call(search()).await;
    assert_eq!(around.status, 200, "{}", around.body);
    let url = self_link(around.json());
    assert!(!url.contains("api.clinic.example"), "{url}");
}
