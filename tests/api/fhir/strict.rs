//! Searches are strict by default: what a search cannot apply is refused, never dropped (a
//! dropped `subject:Patient` once answered other patients' documents). `Prefer:
//! handling=lenient` ignores unknown parameters, never an unsupported modifier.

use api_tests::{ApiRequest, TestApp};
use serde_json::json;

use super::{ids, outcome, patient};

/// The OperationOutcome's one issue names `parameter` where FHIR names HTTP parameters.
fn names(response: &api_tests::ApiResponse, parameter: &str) {
    let issue = &response.json()["issue"][0];
    let at = json!([format!("http.{parameter}")]);
    assert_eq!(issue["location"], at, "{issue}");
    assert_eq!(issue["expression"], at, "{issue}");
}

#[tokio::test]
async fn an_unsupported_modifier_is_400_even_when_lenient() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let owner = patient(&app, &t, json!({"name": "Has Documents"})).await;
    let created = app
        .call(ApiRequest::post("/api/v1/attachments/").bearer(&t).json(
            json!({"patient_id": owner, "file_name": "a.pdf", "mime_type": "application/pdf"}),
        ))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let nobody = format!("Patient/{}", uuid::Uuid::new_v4());
    for prefer in [None, Some("handling=lenient")] {
        let mut request = ApiRequest::get("/fhir/R4/DocumentReference")
            .bearer(&t)
            .query("subject:Patient", &nobody);
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        let refused = app.call(request).await;
        outcome(&refused, 400, "invalid");
        names(&refused, "subject:Patient");
    }
    // A chained parameter narrows a known one: refused even when lenient.
    let chained = app
        .call(
            ApiRequest::get("/fhir/R4/DocumentReference")
                .bearer(&t)
                .header("prefer", "handling=lenient")
                .query("patient.identifier", "urn:mrn|nobody"),
        )
        .await;
    outcome(&chained, 400, "invalid");
    names(&chained, "patient.identifier");
    for (path, name, value) in [
        ("/fhir/R4/Patient", "_format", "xml"),
        ("/fhir/R4/Patient", "name:contains", "ann"),
        ("/fhir/R4/Patient", "birthdate:missing", "true"),
        ("/fhir/R4/AuditEvent", "patient:Patient", "x"),
    ] {
        let token = if path.ends_with("AuditEvent") {
            app.superuser_token().await
        } else {
            t.clone()
        };
        let refused = app
            .call(ApiRequest::get(path).bearer(&token).query(name, value))
            .await;
        outcome(&refused, 400, "invalid");
        names(&refused, name);
    }
}

#[tokio::test]
async fn unknown_chained_and_result_parameters_are_400_by_default() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    for (name, value) in [
        ("colour", "blue"),
        ("patient.identifier", "urn:mrn|1"),
        ("_include", "DocumentReference:subject"),
        ("_revinclude", "Provenance:target"),
        ("_has:Observation:patient:code", "1234"),
        ("_summary", "true"),
        ("_elements", "id"),
    ] {
        let refused = app
            .call(
                ApiRequest::get("/fhir/R4/DocumentReference")
                    .bearer(&t)
                    .query(name, value),
            )
            .await;
        outcome(&refused, 400, "invalid");
        names(&refused, name);
    }
}

#[tokio::test]
async fn lenient_handling_ignores_unknown_parameters_and_links_only_what_was_applied() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let anna = patient(&app, &t, json!({"name": "Anna Lenient"})).await;
    let bundle = app
        .call(
            ApiRequest::get("/fhir/R4/Patient")
                .bearer(&t)
                .header("prefer", "handling=lenient")
                .query("name", "anna")
                .query("colour", "blue"),
        )
        .await;
    assert_eq!(bundle.status, 200, "{}", bundle.body);
    let bundle = bundle.json();
    assert_eq!(ids(&bundle), [anna]);
    let own = bundle["link"][0]["url"].as_str().unwrap();
    assert!(own.ends_with("/Patient?name=anna"), "{own}");
}

#[tokio::test]
async fn links_never_follow_a_forwarded_host() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    patient(&app, &t, json!({"name": "Linked Patient"})).await;
    let bundle = app
        .call(
            ApiRequest::get("/fhir/R4/Patient")
                .bearer(&t)
                .header("x-forwarded-host", "attacker.example")
                .query("name", "linked"),
        )
        .await
        .json();
    for link in bundle["link"].as_array().unwrap() {
        let url = link["url"].as_str().unwrap();
        assert!(
            url.starts_with("https://api.carevault.test/fhir/R4/"),
            "{url}"
        );
    }
    let full_url = bundle["entry"][0]["fullUrl"].as_str().unwrap();
    assert!(!full_url.contains("attacker"), "{full_url}");
}
