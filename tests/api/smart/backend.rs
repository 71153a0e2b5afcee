//! Backend Services: client_credentials with a signed client assertion.

use super::*;

#[tokio::test]
async fn a_backend_client_gets_a_short_system_token_that_reads_fhir() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let patient_id = patient(&app, &admin, "Bulk Reader").await;
    let (client_id, key) =
        backend_client(&app, "system/Patient.rs system/DocumentReference.rs").await;
    let response = client_credentials(&app, &key.assertion(&client_id), "system/Patient.rs").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "system/Patient.rs");
    assert!(body["expires_in"].as_u64().unwrap() <= 300);
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let read = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{patient_id}")).bearer(token))
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    let search = app
        .call(ApiRequest::get("/fhir/R4/Patient").bearer(token))
        .await;
    assert_eq!(search.json()["total"], 1);
    // Only what was granted: no documents, no writes, no trail.
    for request in [
        ApiRequest::get("/fhir/R4/DocumentReference"),
        ApiRequest::get("/fhir/R4/AuditEvent"),
        ApiRequest::post("/fhir/R4/Patient")
            .json(json!({"resourceType": "Patient", "name": [{"text": "X Y"}]})),
        ApiRequest::delete(&format!("/fhir/R4/Patient/{patient_id}")),
    ] {
        let response = app.call(request.bearer(token)).await;
        assert_eq!(response.status, 403, "{}", response.body);
        assert_eq!(response.json()["resourceType"], "OperationOutcome");
    }
    // The trail records the client and the granted scope of each FHIR request.
    let details: Value = app
        .db
        .client()
        .await
        .query_one(
            "SELECT details FROM audit_events WHERE action = 'patient.read' ORDER BY occurred_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(details["smart_client_id"], client_id);
    assert_eq!(details["smart_scope"], "system/Patient.rs");
}

#[tokio::test]
async fn a_smart_token_is_refused_by_the_json_api() {
    let app = TestApp::new().await;
    let token = system_token(&app, "system/Patient.rs").await;
    let response = app
        .call(ApiRequest::get("/api/v1/patients/").bearer(&token))
        .await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn a_scope_beyond_the_registration_is_invalid_scope() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let response =
        client_credentials(&app, &key.assertion(&client_id), "system/AuditEvent.rs").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_scope");
}

/// Every failed check answers the same `invalid_client`, without a hint.
async fn assert_invalid_client(response: ApiResponse) {
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(response.json(), json!({ "error": "invalid_client" }));
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion = key.assertion(&client_id);
    assert_eq!(
        client_credentials(&app, &assertion, "system/Patient.rs")
            .await
            .status,
        200
    );
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_assertion_expiring_more_than_5_minutes_ahead_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion = key.sign("k1", &claims(&client_id, TOKEN_ENDPOINT, 3600));
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_expired_assertion_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion = key.sign("k1", &claims(&client_id, TOKEN_ENDPOINT, -60));
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_assertion_for_another_audience_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion = key.sign(
        "k1",
        &claims(&client_id, "https://other.example/token", 240),
    );
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion = key.sign("k2", &claims(&client_id, TOKEN_ENDPOINT, 240));
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_is_refused() {
    let app = TestApp::new().await;
    let (client_id, _) = backend_client(&app, "system/Patient.rs").await;
    let impostor = ClientKey::new("k1");
    let assertion = impostor.assertion(&client_id);
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn an_assertion_whose_sub_is_not_its_iss_is_refused() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let mut claims = claims(&client_id, TOKEN_ENDPOINT, 240);
    claims["sub"] = json!(uuid::Uuid::new_v4());
    let assertion = key.sign("k1", &claims);
    assert_invalid_client(client_credentials(&app, &assertion, "system/Patient.rs").await).await;
}

#[tokio::test]
async fn a_deleted_clients_tokens_stop_at_once_and_it_gets_no_new_ones() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let token = client_credentials(&app, &key.assertion(&client_id), "system/Patient.rs")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&token))
            .await
            .status,
        200
    );
    let deleted = app
        .call(ApiRequest::delete(&format!("/api/v1/smart-clients/{client_id}")).bearer(&admin))
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&token))
            .await
            .status,
        401
    );
    assert_invalid_client(
        client_credentials(&app, &key.assertion(&client_id), "system/Patient.rs").await,
    )
    .await;
}

#[tokio::test]
async fn the_token_endpoint_answers_rfc_6749_errors() {
    let app = TestApp::new().await;
    let not_a_form = app
        .call(
            ApiRequest::post("/api/v1/smart/token")
                .json(json!({"grant_type": "client_credentials"})),
        )
        .await;
    assert_eq!(not_a_form.status, 400);
    assert_eq!(not_a_form.json()["error"], "invalid_request");
    let no_grant = post_form(&app, "/api/v1/smart/token", &[("client_id", "x")]).await;
    assert_eq!(no_grant.json()["error"], "invalid_request");
    let twice = app
        .call(ApiRequest::post("/api/v1/smart/token").raw_body(
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&grant_type=refresh_token",
        ))
        .await;
    assert_eq!(twice.json()["error"], "invalid_request");
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let unsupported = post_form(
        &app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "password"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &key.assertion(&client_id)),
        ],
    )
    .await;
    assert_eq!(unsupported.json()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn revocation_ends_a_system_token_and_introspection_tells() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let token = client_credentials(&app, &key.assertion(&client_id), "system/Patient.rs")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let introspect = |assertion: String| {
        let token = token.clone();
        let app = &app;
        async move {
            post_form(
                app,
                "/api/v1/smart/introspect",
                &[
                    ("token", &token),
                    ("client_assertion_type", assertion_type),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let active = introspect(key.assertion(&client_id)).await;
    assert_eq!(active.status, 200, "{}", active.body);
    assert_eq!(active.json()["active"], true);
    assert_eq!(active.json()["scope"], "system/Patient.rs");
    let revoked = post_form(
        &app,
        "/api/v1/smart/revoke",
        &[
            ("token", &token),
            ("client_assertion_type", assertion_type),
            ("client_assertion", &key.assertion(&client_id)),
        ],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&token))
            .await
            .status,
        401
    );
    assert_eq!(
        introspect(key.assertion(&client_id)).await.json(),
        json!({"active": false})
    );
    // A superuser's session may introspect any token.
    let admin = app.superuser_token().await;
    let by_admin = app
        .call(
            ApiRequest::post("/api/v1/smart/introspect")
                .bearer(&admin)
                .form(&[("token", &token)]),
        )
        .await;
    assert_eq!(by_admin.json(), json!({"active": false}));
}

#[tokio::test]
async fn another_client_can_neither_introspect_nor_revoke_a_token() {
    let app = TestApp::new().await;
    let token = system_token(&app, "system/Patient.rs").await;
    let (other, key) = backend_client(&app, "system/Patient.rs").await;
    let assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let introspected = post_form(
        &app,
        "/api/v1/smart/introspect",
        &[
            ("token", &token),
            ("client_assertion_type", assertion_type),
            ("client_assertion", &key.assertion(&other)),
        ],
    )
    .await;
    assert_eq!(introspected.json(), json!({"active": false}));
    let revoked = post_form(
        &app,
        "/api/v1/smart/revoke",
        &[
            ("token", &token),
            ("client_assertion_type", assertion_type),
            ("client_assertion", &key.assertion(&other)),
        ],
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&token))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn two_authentication_methods_at_once_are_invalid_request() {
    let app = TestApp::new().await;
    let (client_id, key) = backend_client(&app, "system/Patient.rs").await;
    let response = app
        .call(
            ApiRequest::post("/api/v1/smart/token")
                .header("authorization", "Basic eDp5")
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Patient.rs"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &key.assertion(&client_id)),
                ]),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_request");
}
