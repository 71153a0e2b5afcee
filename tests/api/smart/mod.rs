//! SMART on FHIR: discovery, client registration, Backend Services (client assertions),
//! App Launch (authorization code with PKCE, consent, patient pick), refresh, revocation,
//! introspection, and the scopes enforced on every FHIR interaction. The independent clients
//! (pyjwt signing assertions) run in scripts/test (scripts/smart-check).

mod backend;
mod clients;
mod code_flow;
mod discovery;
mod scopes;

use api_tests::{pkce, ApiRequest, ApiResponse, ClientKey, TestApp};
use serde_json::{json, Value};

/// The FHIR base every test request reaches (API Gateway's domain in the sample events).
const FHIR_BASE: &str = "https://api.carevault.test/fhir/R4";
const TOKEN_ENDPOINT: &str = "https://api.carevault.test/api/v1/smart/token";

async fn register(app: &TestApp, body: Value) -> Value {
    let admin = app.superuser_token().await;
    let response = app
        .call(
            ApiRequest::post("/api/v1/smart-clients/")
                .bearer(&admin)
                .json(body),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()
}

/// A valid assertion of `client_id` for the token endpoint.
trait Assertion {
    fn assertion(&self, client_id: &str) -> String;
}

impl Assertion for ClientKey {
    fn assertion(&self, client_id: &str) -> String {
        self.assertion_for(client_id, TOKEN_ENDPOINT)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(client_id: &str, aud: &str, expires_in: i64) -> Value {
    json!({
        "iss": client_id, "sub": client_id, "aud": aud,
        "exp": now() + expires_in, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// POSTs a form to a SMART endpoint.
async fn post_form(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> ApiResponse {
    app.call(ApiRequest::post(path).form(pairs)).await
}

/// A Backend Services client with an ES384 key and `scope`: (client id, key).
async fn backend_client(app: &TestApp, scope: &str) -> (String, ClientKey) {
    let key = ClientKey::new("k1");
    let client = register(
        app,
        json!({
            "client_name": "Analytics pipeline",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": key.jwks(),
            "scope": scope,
        }),
    )
    .await;
    (client["client_id"].as_str().unwrap().to_owned(), key)
}

async fn client_credentials(app: &TestApp, assertion: &str, scope: &str) -> ApiResponse {
    post_form(
        app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// A system token of a new Backend Services client granted `scope`.
pub(crate) async fn system_token(app: &TestApp, scope: &str) -> String {
    let (client_id, key) = backend_client(app, scope).await;
    let response = client_credentials(app, &key.assertion(&client_id), scope).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["access_token"].as_str().unwrap().to_owned()
}

async fn patient(app: &TestApp, token: &str, name: &str) -> String {
    let response = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(token)
                .json(json!({ "name": name })),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["id"].as_str().unwrap().to_owned()
}

async fn document(app: &TestApp, token: &str, patient_id: &str) -> String {
    let response = app
        .call(ApiRequest::post("/api/v1/attachments/").bearer(token).json(json!({
            "patient_id": patient_id, "file_name": "report.pdf", "mime_type": "application/pdf",
        })))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["id"].as_str().unwrap().to_owned()
}

/// The query parameters of a URL.
fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs().into_owned().collect()
}
