//! Errors are OperationOutcomes: a missing, forged or inactive user's token, an unknown id or
//! resource type, malformed search parameters, and crafted dates that must never crash the
//! function. Errors of one resource's rules are with that resource.

use api_tests::{ApiRequest, TestApp};
use serde_json::json;

use super::{outcome, search};

fn unknown_patient() -> String {
    format!("/fhir/R4/Patient/{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn no_token_is_401_login_with_a_bearer_challenge() {
    let app = TestApp::new().await;
    let missing = app.call(ApiRequest::get(&unknown_patient())).await;
    outcome(&missing, 401, "login");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn a_forged_token_is_401_login() {
    let app = TestApp::new().await;
    outcome(
        &app.call(ApiRequest::get(&unknown_patient()).bearer("forged.token.here"))
            .await,
        401,
        "login",
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_id_is_404_not_found() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(ApiRequest::get(&unknown_patient()).bearer(&viewer))
            .await,
        404,
        "not-found",
    );
    outcome(
        &app.call(ApiRequest::get("/fhir/R4/Patient/not-a-uuid").bearer(&viewer))
            .await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn a_resource_type_not_served_is_404_not_found() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(ApiRequest::get("/fhir/R4/Observation").bearer(&viewer))
            .await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn malformed_search_parameters_are_400_invalid() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    for query in [
        ("birthdate", "1980-13"),
        ("_sort", "colour"),
        ("_total", "some"),
        ("_cursor", "nonsense"),
        ("_count", "many"),
    ] {
        outcome(&app.call(search(&viewer, &[query])).await, 400, "invalid");
    }
}

#[tokio::test]
async fn an_inactive_users_token_is_403_forbidden() {
    let app = TestApp::new().await;
    // An inactive user's token is refused as in the JSON API.
    let inactive = app.viewer().await;
    let admin = app.superuser_token().await;
    app.call(
        ApiRequest::patch(&format!("/api/v1/users/{}", inactive.id))
            .bearer(&admin)
            .json(json!({"is_active": false})),
    )
    .await;
    outcome(
        &app.call(search(&inactive.token, &[])).await,
        403,
        "forbidden",
    );
}

/// Every parser of dates and instants (Patient `_lastUpdated`, DocumentReference and
/// AuditEvent `date`, `If-None-Exist`) refuses multi-byte text around the `T` with a 400;
/// slicing it at a byte offset once panicked, which kills the Lambda execution environment.
#[tokio::test]
async fn dates_with_multibyte_text_are_refused_not_a_crash() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let crafted = [
        "2024-01-01\u{3000}\u{3000}\u{3000}\u{3000}T00:00Z",
        "ge2024-01-01\u{3000}T00:00Z",
        "2024-01-01T\u{3000}:00Z",
        "2024-01-01\u{0301}T00:00:00Z",
    ];
    for value in crafted {
        for (path, param) in [
            ("/fhir/R4/Patient", "_lastUpdated"),
            ("/fhir/R4/DocumentReference", "date"),
            ("/fhir/R4/AuditEvent", "date"),
        ] {
            let response = app
                .call(ApiRequest::get(path).bearer(&admin).query(param, value))
                .await;
            outcome(&response, 400, "invalid");
        }
        let conditional = app
            .call(
                ApiRequest::post("/fhir/R4/Patient")
                    .bearer(&admin)
                    .header(
                        "if-none-exist",
                        &serde_urlencoded::to_string([("_lastUpdated", value)]).unwrap(),
                    )
                    .json(json!({"resourceType": "Patient", "name": [{"text": "Never Made"}]})),
            )
            .await;
        outcome(&conditional, 400, "invalid");
    }
    // The function goes on serving.
    let after = app
        .call(search(&admin, &[("_lastUpdated", "2024-01-01")]))
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
}
