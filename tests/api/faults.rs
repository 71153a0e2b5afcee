//! Infrastructure faults: the database going away and coming back, an exhausted pool, Secrets
//! Manager unreachable at cold start, a Lambda event of the wrong shape. Each answers quickly
//! and cleanly, and recovers without restarting the function. (S3 unreachable: attachments.rs.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_tests::{db_url, invoke, ApiRequest, TestApp, TestDb};
use serde_json::json;
use shared::config::Env;
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy in front of PostgreSQL that can be cut (every connection dropped, new ones
/// refused) and restored: what a database restart or failover looks like to the function.
struct CuttableProxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Makes the open connections silent: kept open, nothing forwarded either way.
    stall: Arc<tokio::sync::Notify>,
}

/// Sockets of stalled connections, never closed: what a connection through a NAT or proxy that
/// forgot it looks like (no reset, no answer).
type Stalled = Arc<Mutex<Vec<(TcpStream, TcpStream)>>>;

impl CuttableProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, conns) = (up.clone(), connections.clone());
        let stall = Arc::new(tokio::sync::Notify::new());
        let stalled: Stalled = Arc::default();
        let (stall_signal, held) = (stall.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (target, stall, held) = (target.clone(), stall_signal.clone(), held.clone());
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let stalled = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                            _ = stall.notified() => true,
                        };
                        if stalled {
                            held.lock().unwrap().push((client, server));
                        }
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            up,
            connections,
            stall,
        }
    }

    /// The open connections go silent; new ones are forwarded.
    fn stall(&self) {
        self.stall.notify_waiters();
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn server_address() -> String {
    let config = api_tests::database_config("postgres");
    format!("{}:{}", config.host, config.port)
}

fn env_through(proxy: &CuttableProxy, db: &TestDb, extra: &[(&str, &str)]) -> Env {
    let url = db_url(&db.name).replacen(&server_address(), &format!("127.0.0.1:{}", proxy.port), 1);
    let mut pairs: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), url),
        ("S3_BUCKET".into(), api_tests::stack_var("S3_BUCKET")),
        ("S3_FORCE_PATH_STYLE".into(), "true".into()),
        ("DB_CONNECT_TIMEOUT_MS".into(), "500".into()),
        ("DB_POOL_WAIT_TIMEOUT_MS".into(), "500".into()),
    ];
    pairs.extend(
        api_tests::token_settings()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Env::from_pairs(pairs)
}

/// The bound on any answer during a fault: the pool's wait plus connect timeouts, with room.
const BOUND: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_database_restart_answers_503_quickly_then_recovers_without_a_restart() {
    let db = TestDb::new().await;
    let proxy = CuttableProxy::start(server_address()).await;
    let env = env_through(&proxy, &db, &[]);
    let utils_state = utils::UtilsState::from_env(&env).await.unwrap();
    let patients_state = patients::PatientsState::from_env(&env).await.unwrap();
    let admin: uuid::Uuid = db
        .client()
        .await
        .query_one("SELECT id FROM users LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let token = api_tests::access_token_for(admin);
    let health = || {
        invoke(
            utils::router(utils_state.clone()),
            ApiRequest::get("/api/v1/utils/health-check/"),
        )
    };
    let search = || {
        invoke(
            patients::router(patients_state.clone()),
            ApiRequest::get("/api/v1/patients/").bearer(&token),
        )
    };

    assert_eq!(health().await.status, 200);
    assert_eq!(search().await.status, 200);

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let (h, s) = (health().await, search().await);
        let took = started.elapsed();
        assert_eq!(h.status, 503, "{}", h.body);
        assert_eq!(s.status, 503, "{}", s.body);
        assert!(took < BOUND * 2, "answered in {took:?}, not a hang");
        assert!(
            h.detail().is_string() && !h.body.contains("127.0.0.1"),
            "no internals: {}",
            h.body
        );
    }

    proxy.restore();
    assert_eq!(
        health().await.status,
        200,
        "the same function instance recovers"
    );
    assert_eq!(search().await.status, 200);
}

#[tokio::test]
async fn a_pooled_connection_the_network_dropped_silently_is_replaced_not_waited_on() {
    // Lambda freezes the function between invocations; meanwhile a NAT or proxy may forget the
    // connection, so its socket neither answers nor closes. The pool verifies a connection idle
    // for over a second before handing it out, within the connect timeout.
    let db = TestDb::new().await;
    let proxy = CuttableProxy::start(server_address()).await;
    let env = env_through(&proxy, &db, &[]);
    let state = utils::UtilsState::from_env(&env).await.unwrap();
    let health = || {
        invoke(
            utils::router(state.clone()),
            ApiRequest::get("/api/v1/utils/health-check/"),
        )
    };
    assert_eq!(health().await.status, 200);

    proxy.stall();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(BOUND * 2, health())
        .await
        .expect("the silent connection was waited on");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_after_the_wait_timeout_and_never_hangs() {
    let db = TestDb::new().await;
    let proxy = CuttableProxy::start(server_address()).await;
    let env = env_through(
        &proxy,
        &db,
        &[
            ("DB_POOL_MAX_SIZE", "1"),
            ("DB_POOL_WAIT_TIMEOUT_MS", "300"),
        ],
    );
    let state = utils::UtilsState::from_env(&env).await.unwrap();
    let health = || {
        invoke(
            utils::router(state.clone()),
            ApiRequest::get("/api/v1/utils/health-check/"),
        )
    };

    let held = state.pool.get().await.unwrap();
    let started = Instant::now();
    let waited = health().await;
    assert_eq!(waited.status, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(250) && started.elapsed() < BOUND,
        "{:?}",
        started.elapsed()
    );
    drop(held);
    assert_eq!(health().await.status, 200);

    // More concurrent requests than connections: served in turn within the wait, or 503; none hang.
    let patient = utils::UtilsState::from_env(&env_through(
        &proxy,
        &db,
        &[
            ("DB_POOL_MAX_SIZE", "1"),
            ("DB_POOL_WAIT_TIMEOUT_MS", "2000"),
        ],
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..8).map(|_| {
        invoke(
            utils::router(patient.clone()),
            ApiRequest::get("/api/v1/utils/health-check/"),
        )
    }))
    .await;
    assert!(started.elapsed() < BOUND * 2);
    for answer in answers {
        assert!(
            answer.status == 200 || answer.status == 503,
            "{}",
            answer.status
        );
    }
}

#[tokio::test]
async fn secrets_manager_unreachable_fails_the_cold_start_clearly_then_the_next_one_works() {
    let db = TestDb::new().await;
    api_tests::stack_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let client = aws_sdk_secretsmanager::Client::new(&shared::aws::sdk_config().await);
    let name = format!("carevault/test/{}", uuid::Uuid::new_v4());
    client
        .create_secret()
        .name(&name)
        .secret_string(
            json!({"username": db.config.user, "password": "x", "host": db.config.host, "port": db.config.port, "dbname": db.name})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let down = Env::from_pairs([
        ("DATABASE_SECRET_ARN", name.as_str()),
        ("DATABASE_TLS", "disable"),
        ("SECRETS_MANAGER_ENDPOINT_URL", "http://127.0.0.1:1"),
    ]);
    let started = Instant::now();
    let err = utils::UtilsState::from_env(&down)
        .await
        .err()
        .expect("cold start fails");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(
        message.contains("DATABASE_SECRET_ARN") && message.contains("Secrets Manager"),
        "{message}"
    );

    let up = Env::from_pairs([
        ("DATABASE_SECRET_ARN", name.as_str()),
        ("DATABASE_TLS", "disable"),
    ]);
    let state = utils::UtilsState::from_env(&up)
        .await
        .expect("the next cold start works");
    let response = invoke(
        utils::router(state),
        ApiRequest::get("/api/v1/utils/health-check/"),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn an_event_of_the_wrong_shape_is_a_clean_error() {
    let s3_event: serde_json::Value = api_tests::event("attachment-events/s3-object-created.json");
    // What lambda_http does with the payload before any of our code: refuse it, no panic.
    let parsed = serde_json::from_value::<lambda_http::request::LambdaRequest>(s3_event.clone());
    assert!(parsed.is_err(), "an S3 event is not an API Gateway request");

    let app = api_tests::TestApp::new().await;
    let api_event = ApiRequest::get("/api/v1/patients/").to_event();
    let refused = attachment_events::handle(&app.events, api_event).await;
    assert!(
        refused.is_err(),
        "an API Gateway event is not an S3 notification"
    );
    let garbage = attachment_events::handle(&app.events, json!({"Records": "not a list"})).await;
    assert!(garbage.unwrap_err().contains("malformed S3 event"));
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_a_client_error() {
    use base64::Engine;
    let app = api_tests::TestApp::new().await;
    let token = app.clinician().await.token;
    // API Gateway hands a non-text body over base64-encoded.
    let mut event = ApiRequest::post("/api/v1/patients/")
        .bearer(&token)
        .raw_body("application/json", "x")
        .to_event();
    event["body"] =
        json!(base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x7b, 0x00]));
    event["isBase64Encoded"] = json!(true);
    let response = api_tests::invoke_event(patients::router(app.patients.clone()), event).await;
    assert_eq!(response.status, 422, "{}", response.body);
}

/// A router as every function builds its own, with one audited route and one unaudited route
/// whose handlers panic, and an audited route that answers: the edge's layers (audit, catch,
/// the Lambda adapter) are the real ones; only the handlers are this test's.
fn panicking_router(app: &TestApp) -> axum::Router {
    use axum::handler::Handler;
    use axum::routing::get;
    const PANICKED: shared::trail::RouteEvent =
        shared::trail::RouteEvent::new("test.panicked", "patient");
    const ANSWERED: shared::trail::RouteEvent =
        shared::trail::RouteEvent::new("test.answered", "patient");
    let trail = edge::audit_layer::AuditTrail::new(app.patients.db.clone());
    let crafted = || async {
        // What the FHIR date parser once did with a multi-byte character near a byte offset.
        let text = String::from("2024-01-01\u{3000}T00:00Z");
        text[..11].len().to_string()
    };
    axum::Router::new()
        .route("/audited", get(crafted.layer(trail.on(PANICKED))))
        .route("/unaudited", get(crafted))
        .route(
            "/answers",
            get((|| async { "fine" }).layer(trail.on(ANSWERED))),
        )
}

#[tokio::test]
async fn a_panicking_handler_answers_500_in_the_api_shape_and_is_audited() {
    let app = TestApp::new().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = invoke(
        panicking_router(&app),
        ApiRequest::get("/audited").request_id(&request_id),
    )
    .await;
    assert_eq!(response.status, 500);
    assert_eq!(response.json(), json!({"detail": "Internal server error"}));
    let outcome = app
        .db
        .client()
        .await
        .query_one(
            "SELECT outcome FROM audit_events WHERE action = 'test.panicked' AND request_id = $1",
            &[&format!("lambda-{request_id}")],
        )
        .await
        .expect("the panicked request's event")
        .get::<_, String>(0);
    assert_eq!(outcome, "error");
}

#[tokio::test]
async fn a_panic_outside_audited_routes_answers_500_too() {
    let app = TestApp::new().await;
    let response = invoke(panicking_router(&app), ApiRequest::get("/unaudited")).await;
    assert_eq!(response.status, 500);
    assert_eq!(response.json(), json!({"detail": "Internal server error"}));
}

#[tokio::test]
async fn the_same_service_goes_on_serving_after_a_panic() {
    use lambda_http::Service;
    let app = TestApp::new().await;
    let mut adapter = lambda_http::Adapter::from(edge::http::service(panicking_router(&app)));
    for (path, status) in [
        ("/audited", 500),
        ("/answers", 200),
        ("/unaudited", 500),
        ("/answers", 200),
    ] {
        let event: lambda_http::request::LambdaRequest =
            serde_json::from_value(ApiRequest::get(path).to_event()).unwrap();
        let response = adapter
            .call(lambda_http::LambdaEvent::new(
                event,
                lambda_http::Context::default(),
            ))
            .await
            .unwrap_or_else(|e| match e {});
        let response = serde_json::to_value(response).unwrap();
        assert_eq!(response["statusCode"], status, "{path}");
    }
}

#[tokio::test]
async fn a_database_cut_during_a_bulk_export_is_retried_and_the_export_completes_exactly_once() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let created = app
            .call(
                ApiRequest::post("/api/v1/patients/")
                    .bearer(&admin)
                    .json(json!({ "name": format!("Cut Export{n}") })),
            )
            .await;
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    // The worker reaches the database through a proxy the test cuts; small chunks, so the
    // export is several steps.
    let proxy = CuttableProxy::start(server_address()).await;
    let through_proxy = api_tests::function_db_url(&app.db.name, "bulk_export")
        .replacen(
            &format!("port={}", api_tests::database_config("postgres").port),
            &format!("port={}", proxy.port),
            1,
        )
        .replacen(
            &format!("host={}", api_tests::database_config("postgres").host),
            "host=127.0.0.1",
            1,
        );
    let env = app.env_with(&[
        ("DATABASE_URL", through_proxy.as_str()),
        ("DB_CONNECT_TIMEOUT_MS", "500"),
        ("DB_POOL_WAIT_TIMEOUT_MS", "500"),
        ("EXPORT_CHUNK_ROWS", "5"),
    ]);
    let worker = bulk_export::WorkerState::from_env(&env).await.unwrap();
    let step = |event: serde_json::Value| {
        let worker = &worker;
        async move {
            let event: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_value(event).unwrap();
            serde_json::to_value(bulk_export::handle(worker, event).await).unwrap()
        }
    };
    let kicked = app
        .call(
            ApiRequest::get("/fhir/R4/Patient/$export")
                .bearer(&admin)
                .header("prefer", "respond-async")
                .query("_type", "Patient"),
        )
        .await;
    assert_eq!(kicked.status, 202, "{}", kicked.body);
    let status = reqwest::Url::parse(kicked.header("content-location").unwrap())
        .unwrap()
        .path()
        .to_owned();
    let plan = api_tests::receive_event(&app.export_queue).await.unwrap();
    let answer = step(plan.clone()).await;
    api_tests::delete_done(&app.export_queue, &plan, &answer).await;

    // The database goes away under the chunks: each step fails and its message stays.
    let chunk = api_tests::receive_event(&app.export_queue).await.unwrap();
    proxy.cut();
    let started = Instant::now();
    let answer = step(chunk.clone()).await;
    assert!(started.elapsed() < BOUND * 2, "no hang");
    assert_eq!(
        answer["batchItemFailures"].as_array().unwrap().len(),
        chunk["Records"].as_array().unwrap().len(),
        "every step failed: {answer}"
    );
    api_tests::delete_done(&app.export_queue, &chunk, &answer).await;

    // Back: every step, the failed one again after its visibility timeout, completes the job.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = app.call(ApiRequest::get(&status).bearer(&admin)).await;
        if done.status == 200 {
            let mut exported = Vec::new();
            for file in done.json()["output"].as_array().unwrap() {
                let text = api_tests::http_client()
                    .get(file["url"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                for line in text.lines() {
                    let resource: serde_json::Value = serde_json::from_str(line).unwrap();
                    exported.push(resource["id"].as_str().unwrap().to_owned());
                }
            }
            exported.sort();
            ids.sort();
            assert_eq!(exported, ids, "every patient exactly once");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the export never completed: {}",
            done.body
        );
        match api_tests::receive_event(&app.export_queue).await {
            Some(event) => {
                let answer = step(event.clone()).await;
                api_tests::delete_done(&app.export_queue, &event, &answer).await;
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
