use super::*;

#[tokio::test]
async fn the_discovery_document_is_json_with_absolute_endpoints() {
    let app = TestApp::new().await;
    let response = app
        .call(
            ApiRequest::get("/fhir/R4/.well-known/smart-configuration")
                .header("accept", "application/fhir+json"),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let doc = response.json();
    assert_eq!(doc["issuer"], FHIR_BASE);
    assert_eq!(doc["token_endpoint"], TOKEN_ENDPOINT);
    for endpoint in [
        "jwks_uri",
        "authorization_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        assert!(
            doc[endpoint]
                .as_str()
                .unwrap()
                .starts_with("https://api.carevault.test/api/v1/"),
            "{endpoint}"
        );
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    for alg in ["RS384", "ES384"] {
        assert!(doc["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(alg)));
    }
    for capability in [
        "launch-standalone",
        "launch-ehr",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "context-ehr-patient",
        "permission-patient",
        "permission-user",
        "permission-offline",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
        "authorize-post",
    ] {
        assert!(
            doc["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!(capability)),
            "{capability}"
        );
    }
}

#[tokio::test]
async fn the_capability_statement_names_the_same_endpoints() {
    let app = TestApp::new().await;
    let statement = app.call(ApiRequest::get("/fhir/R4/metadata")).await.json();
    let discovery = app
        .call(ApiRequest::get("/fhir/R4/.well-known/smart-configuration"))
        .await
        .json();
    let security = &statement["rest"][0]["security"];
    let uris = &security["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let uri = |name: &str| {
        uris["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .map(|e| e["valueUri"].clone())
    };
    assert_eq!(
        uri("authorize"),
        Some(discovery["authorization_endpoint"].clone())
    );
    assert_eq!(uri("token"), Some(discovery["token_endpoint"].clone()));
    assert_eq!(
        uri("revoke"),
        Some(discovery["revocation_endpoint"].clone())
    );
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
}
