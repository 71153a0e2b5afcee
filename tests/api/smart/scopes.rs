//! A patient-scoped token sees only its patient's compartment.

use super::code_flow::launch;
use super::*;

struct Compartment {
    app: TestApp,
    token: String,
    own: String,
    other: String,
    own_document: String,
    other_document: String,
}

async fn compartment(scope: &str) -> Compartment {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let own = patient(&app, &clinician.token, "Own Patient").await;
    let other = patient(&app, &clinician.token, "Other Patient").await;
    let own_document = document(&app, &clinician.token, &own).await;
    let other_document = document(&app, &clinician.token, &other).await;
    let tokens = launch(
        &app,
        &clinician.token,
        &format!("launch/patient {scope}"),
        Some(&own),
    )
    .await;
    Compartment {
        token: tokens["access_token"].as_str().unwrap().to_owned(),
        app,
        own,
        other,
        own_document,
        other_document,
    }
}

impl Compartment {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> ApiResponse {
        let mut request = ApiRequest::get(path).bearer(&self.token);
        for (k, v) in query {
            request = request.query(k, v);
        }
        self.app.call(request).await
    }

    async fn found(&self, path: &str, query: &[(&str, &str)]) -> Vec<String> {
        let response = self.get(path, query).await;
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn another_patient_and_their_documents_are_404() {
    let c = compartment("patient/*.rs").await;
    assert_eq!(
        c.get(&format!("/fhir/R4/Patient/{}", c.own), &[])
            .await
            .status,
        200
    );
    for path in [
        format!("/fhir/R4/Patient/{}", c.other),
        format!("/fhir/R4/DocumentReference/{}", c.other_document),
        format!("/fhir/R4/Binary/{}", c.other_document),
    ] {
        let response = c.get(&path, &[]).await;
        assert_eq!(response.status, 404, "{path}: {}", response.body);
    }
    assert_eq!(
        c.get(
            &format!("/fhir/R4/DocumentReference/{}", c.own_document),
            &[]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn searches_are_narrowed_to_the_patient() {
    let c = compartment("patient/*.rs").await;
    assert_eq!(c.found("/fhir/R4/Patient", &[]).await, vec![c.own.clone()]);
    assert_eq!(
        c.found("/fhir/R4/Patient", &[("_id", &c.other)]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        c.found("/fhir/R4/DocumentReference", &[]).await,
        vec![c.own_document.clone()]
    );
    for name in ["subject", "patient"] {
        assert_eq!(
            c.found(
                "/fhir/R4/DocumentReference",
                &[(name, &format!("Patient/{}", c.other))]
            )
            .await,
            Vec::<String>::new(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn writing_without_c_u_or_d_is_403() {
    let c = compartment("patient/*.rs").await;
    let create = c
        .app
        .call(
            ApiRequest::post("/fhir/R4/DocumentReference").bearer(&c.token).json(json!({
                "resourceType": "DocumentReference",
                "status": "current",
                "subject": {"reference": format!("Patient/{}", c.own)},
                "content": [{"attachment": {"title": "x.pdf", "contentType": "application/pdf"}}],
            })),
        )
        .await;
    assert_eq!(create.status, 403, "{}", create.body);
    let delete = c
        .app
        .call(
            ApiRequest::delete(&format!("/fhir/R4/DocumentReference/{}", c.own_document))
                .bearer(&c.token),
        )
        .await;
    assert_eq!(delete.status, 403);
}

#[tokio::test]
async fn the_audit_trail_needs_its_own_scope_never_a_patient_or_wildcard_one() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let own = patient(&app, &admin, "Audit Subject").await;
    for (scope, status) in [
        ("launch/patient patient/*.rs", 403),
        ("user/*.rs", 403),
        ("user/AuditEvent.rs", 200),
    ] {
        let tokens = launch(&app, &admin, scope, Some(&own)).await;
        let response = app
            .call(
                ApiRequest::get("/fhir/R4/AuditEvent")
                    .bearer(tokens["access_token"].as_str().unwrap()),
            )
            .await;
        assert_eq!(response.status, status, "{scope}: {}", response.body);
    }
    let system = system_token(&app, "system/AuditEvent.rs").await;
    let response = app
        .call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&system))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let wildcard = system_token(&app, "system/*.rs").await;
    let response = app
        .call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&wildcard))
        .await;
    assert_eq!(response.status, 403, "{}", response.body);
}

#[tokio::test]
async fn a_patient_token_with_every_permission_writes_only_its_patient() {
    let c = compartment("patient/*.cruds").await;
    let call = |request: ApiRequest| c.app.call(request.bearer(&c.token));
    let other_patient = format!("/fhir/R4/Patient/{}", c.other);
    let update = call(ApiRequest::put(&other_patient).json(json!({
        "resourceType": "Patient", "id": c.other, "name": [{"text": "Taken Over"}],
    })))
    .await;
    assert_eq!(update.status, 404, "{}", update.body);
    assert_eq!(call(ApiRequest::delete(&other_patient)).await.status, 404);
    let create_patient = call(ApiRequest::post("/fhir/R4/Patient").json(json!({
        "resourceType": "Patient", "name": [{"text": "New Person"}],
    })))
    .await;
    assert_eq!(create_patient.status, 403);
    let document = |subject: &str| {
        json!({
            "resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": format!("Patient/{subject}")},
            "content": [{"attachment": {"title": "x.pdf", "contentType": "application/pdf"}}],
        })
    };
    let elsewhere =
        call(ApiRequest::post("/fhir/R4/DocumentReference").json(document(&c.other))).await;
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.body);
    let own = call(ApiRequest::post("/fhir/R4/DocumentReference").json(document(&c.own))).await;
    assert_eq!(own.status, 201, "{}", own.body);
    let other_document = format!("/fhir/R4/DocumentReference/{}", c.other_document);
    assert_eq!(call(ApiRequest::delete(&other_document)).await.status, 404);
    let url = call(
        ApiRequest::get(&format!(
            "/fhir/R4/Binary/{}/$presigned-url",
            c.other_document
        ))
        .query("upload", "true"),
    )
    .await;
    assert_eq!(url.status, 404);
    // Nothing of the other patient changed.
    let clinician_view = c
        .app
        .db
        .number(&format!(
            "SELECT count(*) FROM attachments WHERE patient_id = '{}'",
            c.other
        ))
        .await;
    assert_eq!(clinician_view, 1);
}

#[tokio::test]
async fn session_tokens_keep_their_role_on_fhir() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await;
    let search = app
        .call(ApiRequest::get("/fhir/R4/Patient").bearer(&viewer.token))
        .await;
    assert_eq!(search.status, 200);
    let create = app
        .call(
            ApiRequest::post("/fhir/R4/Patient")
                .bearer(&viewer.token)
                .json(json!({"resourceType": "Patient", "name": [{"text": "A B"}]})),
        )
        .await;
    assert_eq!(create.status, 403);
}
