//! App Launch: the authorize endpoint, consent through the console's calls, the code exchange
//! with PKCE, refresh tokens, ID tokens.

use super::*;

pub const REDIRECT: &str = "https://charts.example/callback";

/// A public app (PKCE only) registered for `scope`, with refresh tokens.
pub async fn public_app(app: &TestApp, scope: &str) -> String {
    let client = register(
        app,
        json!({
            "client_name": "Growth charts",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            "scope": scope,
        }),
    )
    .await;
    client["client_id"].as_str().unwrap().to_owned()
}

pub async fn authorize(app: &TestApp, pairs: &[(&str, &str)]) -> ApiResponse {
    let mut request = ApiRequest::get("/api/v1/smart/authorize");
    for (name, value) in pairs {
        request = request.query(name, value);
    }
    app.call(request).await
}

fn standard<'a>(client_id: &'a str, scope: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s-123"),
        ("aud", FHIR_BASE),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// The pending request's id from the authorize endpoint's redirect to the console.
pub async fn begin(app: &TestApp, client_id: &str, scope: &str, challenge: &str) -> String {
    let response = authorize(app, &standard(client_id, scope, challenge)).await;
    assert_eq!(response.status, 303, "{}", response.body);
    let location = response.header("location").unwrap();
    assert!(location.contains("/authorize?request="), "{location}");
    query_of(location)["request"].clone()
}

pub async fn decide(app: &TestApp, token: &str, request: &str, body: Value) -> ApiResponse {
    app.call(
        ApiRequest::post(&format!("/api/v1/smart/authorizations/{request}"))
            .bearer(token)
            .json(body),
    )
    .await
}

/// Signs in as `user_token`'s user, consents (picking `patient`), and answers (code, verifier).
pub async fn code_for(
    app: &TestApp,
    user_token: &str,
    client_id: &str,
    scope: &str,
    patient: Option<&str>,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let request = begin(app, client_id, scope, &challenge).await;
    let decided = decide(
        app,
        user_token,
        &request,
        json!({"approve": true, "patient_id": patient}),
    )
    .await;
    assert_eq!(decided.status, 200, "{}", decided.body);
    let redirect = decided.json()["redirect_to"].as_str().unwrap().to_owned();
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    let query = query_of(&redirect);
    assert_eq!(query["state"], "s-123");
    (query["code"].clone(), verifier)
}

pub async fn exchange(app: &TestApp, client_id: &str, code: &str, verifier: &str) -> ApiResponse {
    post_form(
        app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", client_id),
        ],
    )
    .await
}

/// The token response of a full launch by `user_token`'s user.
pub async fn launch(app: &TestApp, user_token: &str, scope: &str, patient: Option<&str>) -> Value {
    let client_id = public_app(app, scope).await;
    let (code, verifier) = code_for(app, user_token, &client_id, scope, patient).await;
    let response = exchange(app, &client_id, &code, &verifier).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let mut body = response.json();
    body["client_id"] = json!(client_id);
    body
}

#[tokio::test]
async fn a_standalone_launch_picks_a_patient_and_gets_tokens() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let patient_id = patient(&app, &clinician.token, "Ada Lovelace").await;
    let scope = "launch/patient patient/*.rs openid fhirUser offline_access";
    let client_id = public_app(&app, scope).await;
    let (_, challenge) = pkce();
    let request = begin(&app, &client_id, scope, &challenge).await;
    // The consent page: what the app asks for, in words, and that a patient must be picked.
    let shown = app
        .call(
            ApiRequest::get(&format!("/api/v1/smart/authorizations/{request}"))
                .bearer(&clinician.token),
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let shown = shown.json();
    assert_eq!(shown["client_name"], "Growth charts");
    assert_eq!(shown["needs_patient"], true);
    assert!(shown["access"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["text"] == "Read, search all records of the selected patient"));
    let without_patient = decide(&app, &clinician.token, &request, json!({"approve": true})).await;
    assert_eq!(without_patient.status, 422);

    let (code, verifier) =
        code_for(&app, &clinician.token, &client_id, scope, Some(&patient_id)).await;
    let response = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let tokens = response.json();
    assert_eq!(tokens["patient"], patient_id);
    assert_eq!(
        tokens["scope"],
        "patient/*.rs launch/patient openid fhirUser offline_access"
    );
    assert!(tokens["refresh_token"].is_string());
    // The ID token: signed with the server's keys, naming the user as a Practitioner.
    let id_token = tokens["id_token"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
        app.call(ApiRequest::get("/api/v1/.well-known/jwks.json"))
            .await
            .json(),
    )
    .unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[&client_id]);
    validation.set_issuer(&[FHIR_BASE]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(
        claims["fhirUser"],
        format!("{FHIR_BASE}/Practitioner/{}", clinician.id)
    );
    // The access token reads the picked patient.
    let access = tokens["access_token"].as_str().unwrap();
    let read = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{patient_id}")).bearer(access))
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
}

#[tokio::test]
async fn a_viewer_is_granted_read_and_search_only() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await;
    let tokens = launch(&app, &viewer.token, "user/*.cruds", None).await;
    assert_eq!(tokens["scope"], "user/*.rs");
}

#[tokio::test]
async fn a_refused_consent_sends_access_denied_with_the_state() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (_, challenge) = pkce();
    let request = begin(&app, &client_id, "user/*.rs", &challenge).await;
    let decided = decide(&app, &clinician.token, &request, json!({"approve": false})).await;
    let query = query_of(decided.json()["redirect_to"].as_str().unwrap());
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "s-123");
}

#[tokio::test]
async fn a_wrong_or_missing_verifier_is_invalid_grant() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (code, _) = code_for(&app, &clinician.token, &client_id, "user/*.rs", None).await;
    let (other, _) = pkce();
    let wrong = exchange(&app, &client_id, &code, &other).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["error"], "invalid_grant");
    let (code, _) = code_for(&app, &clinician.token, &client_id, "user/*.rs", None).await;
    let missing = post_form(
        &app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_revokes_what_it_issued() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (code, verifier) = code_for(&app, &clinician.token, &client_id, "user/*.rs", None).await;
    let first = exchange(&app, &client_id, &code, &verifier).await.json();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(access))
            .await
            .status,
        200
    );
    let again = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(again.json()["error"], "invalid_grant");
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(access))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (code, verifier) = code_for(&app, &clinician.token, &client_id, "user/*.rs", None).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE smart_authorizations SET code_expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let response = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(response.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_or_a_wrong_aud_is_a_page_never_a_redirect() {
    let app = TestApp::new().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (_, challenge) = pkce();
    for (name, value) in [
        ("redirect_uri", "https://evil.example/callback"),
        ("aud", "https://other.example/fhir"),
        ("client_id", "00000000-0000-4000-8000-000000000000"),
    ] {
        let mut pairs = standard(&client_id, "user/*.rs", &challenge);
        pairs.retain(|(n, _)| *n != name);
        pairs.push((name, value));
        let response = authorize(&app, &pairs).await;
        assert_eq!(response.status, 400, "{name}");
        assert!(response.header("location").is_none(), "{name}");
        assert!(response
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
    }
}

#[tokio::test]
async fn a_plain_or_missing_challenge_is_sent_back_as_invalid_request() {
    let app = TestApp::new().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (verifier, challenge) = pkce();
    for method in ["plain", ""] {
        let mut pairs = standard(&client_id, "user/*.rs", &verifier);
        pairs.retain(|(n, _)| *n != "code_challenge_method");
        if !method.is_empty() {
            pairs.push(("code_challenge_method", method));
        }
        let response = authorize(&app, &pairs).await;
        assert_eq!(response.status, 303, "{method}");
        let query = query_of(response.header("location").unwrap());
        assert_eq!(query["error"], "invalid_request", "{method}");
        assert_eq!(query["state"], "s-123");
    }
    let mut no_challenge = standard(&client_id, "user/*.rs", &challenge);
    no_challenge.retain(|(n, _)| *n != "code_challenge");
    let response = authorize(&app, &no_challenge).await;
    assert_eq!(
        query_of(response.header("location").unwrap())["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let tokens = launch(&app, &clinician.token, "user/*.rs offline_access", None).await;
    let client_id = tokens["client_id"].as_str().unwrap();
    let first = tokens["refresh_token"].as_str().unwrap();
    let refresh = |token: String| {
        let client_id = client_id.to_owned();
        let app = &app;
        async move {
            post_form(
                app,
                "/api/v1/smart/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &client_id),
                ],
            )
            .await
        }
    };
    let rotated = refresh(first.to_owned()).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let rotated = rotated.json();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let access = rotated["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&access))
            .await
            .status,
        200
    );
    // The first one again: refused, and the whole family with it.
    assert_eq!(
        refresh(first.to_owned()).await.json()["error"],
        "invalid_grant"
    );
    assert_eq!(refresh(second).await.json()["error"], "invalid_grant");
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(&access))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn logging_out_everywhere_ends_the_users_smart_tokens() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let tokens = launch(&app, &clinician.token, "user/*.rs offline_access", None).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(access))
            .await
            .status,
        200
    );
    let logout = app
        .call(ApiRequest::post("/api/v1/logout").bearer(&clinician.token))
        .await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(access))
            .await
            .status,
        401
    );
    let refreshed = post_form(
        &app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", tokens["client_id"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(refreshed.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn an_ehr_launch_binds_the_patient_from_the_console() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let patient_id = patient(&app, &clinician.token, "Grace Hopper").await;
    let client = register(
        &app,
        json!({
            "client_name": "Scheduler",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "launch_url": "https://scheduler.example/launch",
            "scope": "launch patient/*.rs",
        }),
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    let apps = app
        .call(ApiRequest::get("/api/v1/smart/apps").bearer(&clinician.token))
        .await
        .json();
    assert_eq!(apps["data"][0]["client_id"], client_id);
    let launched = app
        .call(
            ApiRequest::post("/api/v1/smart/launch")
                .bearer(&clinician.token)
                .json(json!({"client_id": client_id, "patient_id": patient_id})),
        )
        .await;
    assert_eq!(launched.status, 200, "{}", launched.body);
    let url = launched.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://scheduler.example/launch?"));
    let query = query_of(&url);
    assert_eq!(query["iss"], FHIR_BASE);
    let (verifier, challenge) = pkce();
    let mut pairs = standard(client_id, "launch patient/*.rs", &challenge);
    pairs.push(("launch", &query["launch"]));
    let response = authorize(&app, &pairs).await;
    let request = query_of(response.header("location").unwrap())["request"].clone();
    let shown = app
        .call(
            ApiRequest::get(&format!("/api/v1/smart/authorizations/{request}"))
                .bearer(&clinician.token),
        )
        .await
        .json();
    assert_eq!(shown["needs_patient"], false);
    assert_eq!(shown["launch_patient"], patient_id);
    let decided = decide(&app, &clinician.token, &request, json!({"approve": true})).await;
    let code = query_of(decided.json()["redirect_to"].as_str().unwrap())["code"].clone();
    let tokens = exchange(&app, client_id, &code, &verifier).await.json();
    assert_eq!(tokens["patient"], patient_id);
    // The launch value opens one authorization only.
    let again = authorize(&app, &pairs).await;
    assert_eq!(
        query_of(again.header("location").unwrap())["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn the_fhir_user_is_a_practitioner_its_token_reads() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let other = app.viewer().await;
    let tokens = launch(&app, &clinician.token, "openid fhirUser user/*.rs", None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let own = app
        .call(ApiRequest::get(&format!("/fhir/R4/Practitioner/{}", clinician.id)).bearer(access))
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.json()["resourceType"], "Practitioner");
    assert_eq!(own.json()["telecom"][0]["value"], clinician.email.as_str());
    let others = app
        .call(ApiRequest::get(&format!("/fhir/R4/Practitioner/{}", other.id)).bearer(access))
        .await;
    assert_eq!(others.status, 404);
    let by_session = app
        .call(ApiRequest::get(&format!("/fhir/R4/Practitioner/{}", other.id)).bearer(&other.token))
        .await;
    assert_eq!(by_session.status, 200);
    let no_token = app
        .call(ApiRequest::get(&format!(
            "/fhir/R4/Practitioner/{}",
            other.id
        )))
        .await;
    assert_eq!(no_token.status, 401);
}

#[tokio::test]
async fn the_authorize_endpoint_takes_a_posted_form() {
    let app = TestApp::new().await;
    let client_id = public_app(&app, "user/*.rs").await;
    let (_, challenge) = pkce();
    let pairs = standard(&client_id, "user/*.rs", &challenge);
    let response = app
        .call(ApiRequest::post("/api/v1/smart/authorize").form(&pairs))
        .await;
    assert_eq!(response.status, 303, "{}", response.body);
    assert!(response
        .header("location")
        .unwrap()
        .contains("/authorize?request="));
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_never_widen_it() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let tokens = launch(
        &app,
        &clinician.token,
        "user/Patient.rs offline_access",
        None,
    )
    .await;
    let widened = post_form(
        &app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", tokens["client_id"].as_str().unwrap()),
            ("scope", "user/Patient.rs user/DocumentReference.rs"),
        ],
    )
    .await;
    assert_eq!(widened.status, 400);
    assert_eq!(widened.json()["error"], "invalid_scope");
}

#[tokio::test]
async fn deactivation_ends_the_grants_for_good() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let clinician = app.clinician().await;
    let tokens = launch(&app, &clinician.token, "user/*.rs offline_access", None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let set_active = |active: bool| {
        app.call(
            ApiRequest::patch(&format!("/api/v1/users/{}", clinician.id))
                .bearer(&admin)
                .json(json!({ "is_active": active })),
        )
    };
    assert_eq!(set_active(false).await.status, 200);
    assert_eq!(set_active(true).await.status, 200);
    assert_eq!(
        app.call(ApiRequest::get("/fhir/R4/Patient").bearer(access))
            .await
            .status,
        401
    );
    let refreshed = post_form(
        &app,
        "/api/v1/smart/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", tokens["client_id"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(refreshed.json()["error"], "invalid_grant");
}
