use super::*;

fn public_app() -> Value {
    json!({
        "client_name": "Growth charts",
        "redirect_uris": ["https://charts.example/callback"],
        "token_endpoint_auth_method": "none",
        "scope": "launch/patient patient/*.rs openid fhirUser offline_access",
    })
}

#[tokio::test]
async fn a_superuser_registers_lists_reads_and_deletes_a_client() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let created = register(&app, public_app()).await;
    let id = created["client_id"].as_str().unwrap();
    assert_eq!(created["token_endpoint_auth_method"], "none");
    assert_eq!(created["grant_types"], json!(["authorization_code"]));
    assert!(created.get("client_secret").is_none());
    let listed = app
        .call(ApiRequest::get("/api/v1/smart-clients/").bearer(&admin))
        .await
        .json();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["data"][0]["client_id"], id);
    let read = app
        .call(ApiRequest::get(&format!("/api/v1/smart-clients/{id}")).bearer(&admin))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["client_name"], "Growth charts");
    let deleted = app
        .call(ApiRequest::delete(&format!("/api/v1/smart-clients/{id}")).bearer(&admin))
        .await;
    assert_eq!(deleted.status, 200);
    let gone = app
        .call(ApiRequest::get(&format!("/api/v1/smart-clients/{id}")).bearer(&admin))
        .await;
    assert_eq!(gone.status, 404);
    let actions: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at",
            &[&uuid::Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        actions.contains(&"smart.client_register".to_owned()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"smart.client_delete".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_confidential_client_gets_its_secret_once_and_only_its_hash_is_kept() {
    let app = TestApp::new().await;
    let mut body = public_app();
    body["token_endpoint_auth_method"] = json!("client_secret_basic");
    let created = register(&app, body).await;
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43);
    let stored: String = app
        .db
        .client()
        .await
        .query_one("SELECT secret_hash FROM smart_clients", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains(secret));
    let admin = app.superuser_token().await;
    let id = created["client_id"].as_str().unwrap();
    let read = app
        .call(ApiRequest::get(&format!("/api/v1/smart-clients/{id}")).bearer(&admin))
        .await
        .json();
    assert!(read.get("client_secret").is_none());
}

#[tokio::test]
async fn registration_needs_a_superuser() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let no_token = app
        .call(ApiRequest::post("/api/v1/smart-clients/").json(public_app()))
        .await;
    assert_eq!(no_token.status, 401);
    let bad_token = app
        .call(ApiRequest::get("/api/v1/smart-clients/").bearer("not-a-token"))
        .await;
    assert_eq!(bad_token.status, 401);
    for request in [
        ApiRequest::post("/api/v1/smart-clients/").json(public_app()),
        ApiRequest::get("/api/v1/smart-clients/"),
    ] {
        let response = app.call(request.bearer(&clinician.token)).await;
        assert_eq!(response.status, 403, "{}", response.body);
    }
}

#[tokio::test]
async fn bad_metadata_is_422_naming_each_field() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let cases = [
        (json!({"redirect_uris": ["callback"]}), "redirect_uris"),
        (
            json!({"redirect_uris": ["http://charts.example/cb"]}),
            "redirect_uris",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "scope": "system/*.rs"}),
            "jwks",
        ),
        (json!({"scope": "patient/Observation.rs"}), "scope"),
        (
            json!({"launch_url": "ftp://charts.example/launch"}),
            "launch_url",
        ),
    ];
    for (change, field) in cases {
        let mut body = public_app();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = app
            .call(
                ApiRequest::post("/api/v1/smart-clients/")
                    .bearer(&admin)
                    .json(body),
            )
            .await;
        assert_eq!(response.status, 422, "{field}: {}", response.body);
        let fields: Vec<Value> = response.json()["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["loc"][1].clone())
            .collect();
        assert!(fields.contains(&json!(field)), "{field}: {fields:?}");
    }
}

#[tokio::test]
async fn an_unknown_or_malformed_client_id_is_404_or_422() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let unknown = uuid::Uuid::new_v4();
    for request in [
        ApiRequest::get(&format!("/api/v1/smart-clients/{unknown}")),
        ApiRequest::delete(&format!("/api/v1/smart-clients/{unknown}")),
    ] {
        assert_eq!(app.call(request.bearer(&admin)).await.status, 404);
    }
    let malformed = app
        .call(ApiRequest::get("/api/v1/smart-clients/nope").bearer(&admin))
        .await;
    assert_eq!(malformed.status, 422);
}
