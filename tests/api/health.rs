use api_tests::{invoke, ApiRequest, TestDb};
use shared::config::Env;
use utils::{router, UtilsState};

fn state(db: &TestDb) -> UtilsState {
    UtilsState {
        pool: db.pool.clone(),
    }
}

#[tokio::test]
async fn health_check_answers_true_with_and_without_trailing_slash() {
    let db = TestDb::new().await;
    for path in ["/api/v1/utils/health-check/", "/api/v1/utils/health-check"] {
        let response = invoke(router(state(&db)), ApiRequest::get(path)).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(response.json(), serde_json::json!(true));
        assert_eq!(response.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn health_check_answers_503_when_the_database_is_unreachable() {
    // Nothing listens on port 1: every connection attempt is refused.
    let env = Env::from_pairs([
        (
            "DATABASE_URL",
            "postgresql://postgres@127.0.0.1:1/carevault",
        ),
        ("DB_CONNECT_TIMEOUT_MS", "500"),
        ("DB_POOL_WAIT_TIMEOUT_MS", "500"),
    ]);
    let state = UtilsState::from_env(&env).await.expect("config is valid");
    let response = invoke(
        router(state),
        ApiRequest::get("/api/v1/utils/health-check/"),
    )
    .await;
    assert_eq!(response.status, 503, "{}", response.body);
    let detail = response.detail();
    assert!(detail.is_string(), "{detail}");
    // No internals (addresses, driver messages) reach the client.
    assert!(!response.body.contains("127.0.0.1"), "{}", response.body);
}

#[tokio::test]
async fn unknown_route_and_method_answer_fastapi_errors() {
    let db = TestDb::new().await;
    let response = invoke(
        router(state(&db)),
        ApiRequest::get("/api/v1/utils/nothing-here"),
    )
    .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.detail(), "Not Found");

    let response = invoke(
        router(state(&db)),
        ApiRequest::post("/api/v1/utils/health-check/"),
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.detail(), "Method Not Allowed");
}
