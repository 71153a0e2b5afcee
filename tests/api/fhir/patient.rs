//! Patient: read, create, update and delete, with versions, over the JSON API's records and
//! audit trail. Search is in `patient_search`, identifiers and conditional create in
//! `identifiers`.

use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::{json, Value};

use super::{outcome, patient, read, redacted, texts_about};

/// Anna, with everything a Patient maps: a name that splits, a birth date, an email, a history.
async fn anna(app: &TestApp, token: &str) -> String {
    patient(
        app,
        token,
        json!({"name": "Anna Smith-Jones", "dob": "1980-02-29", "contact_info": "anna@example.com",
               "medical_history": "Asthma since childhood."}),
    )
    .await
}

/// Anna as a viewer reads her through FHIR: (her id, the answer).
async fn anna_read() -> (TestApp, String, ApiResponse) {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let id = anna(&app, &clinician).await;
    let viewer = app.viewer().await.token;
    let response = read(&app, &viewer, &format!("Patient/{id}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    (app, id, response)
}

#[tokio::test]
async fn a_read_answers_the_version_as_etag_and_meta() {
    let (_app, id, response) = anna_read().await;
    assert_eq!(response.header("etag"), Some("W/\"1\""));
    assert!(response.header("last-modified").unwrap().ends_with(" GMT"));
    let resource = response.json();
    assert_eq!(resource["resourceType"], "Patient");
    assert_eq!(resource["id"], id);
    assert_eq!(resource["meta"]["versionId"], "1");
    assert!(resource["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

#[tokio::test]
async fn a_read_maps_name_birth_date_telecom_and_history() {
    let (_app, _id, response) = anna_read().await;
    let resource = response.json();
    assert_eq!(resource["name"][0]["text"], "Anna Smith-Jones");
    assert_eq!(resource["name"][0]["family"], "Smith-Jones");
    assert_eq!(resource["name"][0]["given"], json!(["Anna"]));
    assert_eq!(resource["birthDate"], "1980-02-29");
    assert_eq!(
        resource["telecom"],
        json!([{"system": "email", "value": "anna@example.com"}])
    );
    assert_eq!(
        resource["extension"],
        json!([{"url": "https://carevault.dev/fhir/StructureDefinition/medical-history", "valueString": "Asthma since childhood."}])
    );
}

#[tokio::test]
async fn a_read_matches_its_snapshot() {
    let (_app, _id, response) = anna_read().await;
    let resource = response.json();
    redacted().bind(|| insta::assert_json_snapshot!("patient", resource));
}

#[tokio::test]
async fn a_name_that_does_not_split_is_text_only_and_a_phone_is_a_phone() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let viewer = app.viewer().await.token;
    // A phone number, a name that does not split cleanly, nothing else.
    let other = patient(
        &app,
        &clinician,
        json!({"name": "Dr. X", "contact_info": "+44 20 7946 0000"}),
    )
    .await;
    let other = read(&app, &viewer, &format!("Patient/{other}"))
        .await
        .json();
    assert_eq!(
        other["name"][0],
        json!({"use": "official", "text": "Dr. X"})
    );
    assert_eq!(other["telecom"][0]["system"], "phone");
    assert!(other.get("birthDate").is_none() && other.get("extension").is_none());
}

#[tokio::test]
async fn a_read_is_audited_as_the_json_apis_action_marked_fhir() {
    let (app, id, _) = anna_read().await;
    // The JSON API's audit: the same action, marked as FHIR.
    let events = app
        .db
        .client()
        .await
        .query(
            "SELECT action, outcome, details FROM audit_events WHERE resource_id = $1 AND action = 'patient.read'",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get::<_, String>(1), "success");
    assert_eq!(events[0].get::<_, Value>(2)["interface"], "fhir");
}

/// `POST [base]/Patient` with a FHIR body.
fn fhir_post(token: &str, body: Value) -> ApiRequest {
    ApiRequest::post("/fhir/R4/Patient")
        .bearer(token)
        .raw_body("application/fhir+json", &body.to_string())
}

/// A Patient as a client sends it, with an `id` and `meta` of its own (both ignored).
fn new_patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "chosen-by-the-client",
        "meta": {"versionId": "99"},
        "name": [{"given": ["Maria", "José"], "family": "García-López"}],
        "birthDate": "1975-03-04",
        "telecom": [{"system": "phone", "value": "+34 600 000 000"}],
        "extension": [{"url": "https://carevault.dev/fhir/StructureDefinition/medical-history", "valueString": "Hypertension."}],
    })
}

/// The whole resource an update sends: a new name, the birth date, nothing else.
fn changed(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"text": "Maria García"}], "birthDate": "1975-03-04"})
}

/// `PUT [base]/Patient/{id}` of `body`, with `If-Match` when given.
async fn put(
    app: &TestApp,
    token: &str,
    id: &str,
    body: Value,
    if_match: Option<&str>,
) -> ApiResponse {
    let mut request = ApiRequest::put(&format!("/fhir/R4/Patient/{id}"))
        .bearer(token)
        .raw_body("application/fhir+json", &body.to_string());
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    app.call(request).await
}

/// `DELETE [base]/Patient/{id}`, with `If-Match` when given.
async fn delete(app: &TestApp, token: &str, id: &str, tag: Option<&str>) -> ApiResponse {
    let mut request = ApiRequest::delete(&format!("/fhir/R4/Patient/{id}")).bearer(token);
    if let Some(tag) = tag {
        request = request.header("if-match", tag);
    }
    app.call(request).await
}

/// Maria created through FHIR by a clinician: (the app, the clinician's token, her id, the answer).
async fn created() -> (TestApp, String, String, ApiResponse) {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let created = app.call(fhir_post(&clinician, new_patient())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    (app, clinician, id, created)
}

#[tokio::test]
async fn a_create_answers_201_with_a_new_id_version_and_location() {
    let (_app, _clinician, id, created) = created().await;
    let resource = created.json();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(resource["meta"]["versionId"], "1");
    assert_eq!(
        created.header("location").unwrap(),
        format!("https://api.carevault.test/fhir/R4/Patient/{id}/_history/1")
    );
    assert_eq!(created.header("etag"), Some("W/\"1\""));
}

#[tokio::test]
async fn a_created_patient_is_the_json_apis_record() {
    let (app, clinician, id, _) = created().await;
    // The JSON API sees the same record.
    let json_api = app
        .call(ApiRequest::get(&format!("/api/v1/patients/{id}")).bearer(&clinician))
        .await
        .json();
    assert_eq!(json_api["name"], "Maria José García-López");
    assert_eq!(json_api["dob"], "1975-03-04T00:00:00");
    assert_eq!(json_api["contact_info"], "+34 600 000 000");
    assert_eq!(json_api["medical_history"], "Hypertension.");
}

#[tokio::test]
async fn an_update_with_a_stale_if_match_is_412() {
    let (app, clinician, id, _) = created().await;
    outcome(
        &put(&app, &clinician, &id, changed(&id), Some("W/\"7\"")).await,
        412,
        "conflict",
    );
}

#[tokio::test]
async fn an_update_whose_id_is_not_the_urls_is_400() {
    let (app, clinician, id, _) = created().await;
    let mut other_id = changed(&id);
    other_id["id"] = json!(uuid::Uuid::new_v4().to_string());
    outcome(
        &put(&app, &clinician, &id, other_id, None).await,
        400,
        "invalid",
    );
    outcome(
        &put(
            &app,
            &clinician,
            &id,
            json!({"resourceType": "Patient", "id": "nope"}),
            None,
        )
        .await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn an_update_replaces_the_resource_and_moves_the_version() {
    let (app, clinician, id, _) = created().await;
    // Update: the whole resource, its id the URL's, If-Match against the version.
    let updated = put(&app, &clinician, &id, changed(&id), Some("W/\"1\"")).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    let updated = updated.json();
    assert_eq!(updated["name"][0]["text"], "Maria García");
    // What the resource left out is cleared.
    assert!(updated.get("telecom").is_none() && updated.get("extension").is_none());
}

#[tokio::test]
async fn if_match_takes_a_weak_or_a_strong_version() {
    let (app, clinician, id, _) = created().await;
    let weak = put(&app, &clinician, &id, changed(&id), Some("W/\"1\"")).await;
    assert_eq!(weak.status, 200, "{}", weak.body);
    assert_eq!(
        put(&app, &clinician, &id, changed(&id), Some("\"2\""))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_viewer_may_not_create() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(fhir_post(&viewer, new_patient())).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_patient_is_400() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    // A wrong resource type, no JSON.
    outcome(
        &app.call(fhir_post(
            &clinician,
            json!({"resourceType": "Observation"}),
        ))
        .await,
        400,
        "invalid",
    );
    outcome(
        &app.call(
            ApiRequest::post("/fhir/R4/Patient")
                .bearer(&clinician)
                .raw_body("application/fhir+json", "{not json"),
        )
        .await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn a_patient_without_a_name_or_with_an_impossible_birth_date_is_422() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    outcome(
        &app.call(fhir_post(&clinician, json!({"resourceType": "Patient"})))
            .await,
        422,
        "business-rule",
    );
    let impossible = app
        .call(fhir_post(
            &clinician,
            json!({"resourceType": "Patient", "name": [{"text": "A"}], "birthDate": "1800-01-01"}),
        ))
        .await;
    outcome(&impossible, 422, "business-rule");
    // Located at the resource's element, not the JSON API's field.
    let diagnostics = impossible.json()["issue"][0]["diagnostics"].clone();
    assert!(
        diagnostics
            .as_str()
            .unwrap()
            .starts_with("Patient.birthDate: "),
        "{diagnostics}"
    );
}

#[tokio::test]
async fn a_delete_checks_if_match_first_then_answers_204() {
    let (app, clinician, id, _) = created().await;
    for tag in ["W/\"1\"", "\"2\""] {
        let updated = put(&app, &clinician, &id, changed(&id), Some(tag)).await;
        assert_eq!(updated.status, 200, "{}", updated.body);
    }
    // Delete: 204, then gone; If-Match checked first.
    outcome(
        &delete(&app, &clinician, &id, Some("W/\"1\"")).await,
        412,
        "conflict",
    );
    assert_eq!(
        delete(&app, &clinician, &id, Some("W/\"3\"")).await.status,
        204
    );
}

#[tokio::test]
async fn a_deleted_patient_is_gone() {
    let (app, clinician, id, _) = created().await;
    assert_eq!(delete(&app, &clinician, &id, None).await.status, 204);
    outcome(
        &read(&app, &clinician, &format!("Patient/{id}")).await,
        404,
        "not-found",
    );
    outcome(&delete(&app, &clinician, &id, None).await, 404, "not-found");
}

#[tokio::test]
async fn writes_are_audited_once_each_as_the_json_apis_actions_marked_fhir() {
    let (app, clinician, id, _) = created().await;
    // Every write the other tests make, refused ones included: only what went through counts
    // as a success.
    put(&app, &clinician, &id, changed(&id), Some("W/\"7\"")).await;
    let mut other_id = changed(&id);
    other_id["id"] = json!(uuid::Uuid::new_v4().to_string());
    put(&app, &clinician, &id, other_id, None).await;
    assert_eq!(
        put(&app, &clinician, &id, changed(&id), Some("W/\"1\""))
            .await
            .status,
        200
    );
    assert_eq!(
        put(&app, &clinician, &id, changed(&id), Some("\"2\""))
            .await
            .status,
        200
    );
    put(
        &app,
        &clinician,
        &id,
        json!({"resourceType": "Patient", "id": "nope"}),
        None,
    )
    .await;
    delete(&app, &clinician, &id, Some("W/\"1\"")).await;
    assert_eq!(
        delete(&app, &clinician, &id, Some("W/\"3\"")).await.status,
        204
    );
    delete(&app, &clinician, &id, None).await;

    let actions = texts_about(
        &app,
        "SELECT action || ':' || outcome FROM audit_events WHERE resource_id = $1 AND details->>'interface' = 'fhir' ORDER BY occurred_at, id",
        &id,
    )
    .await;
    let count = |action: &str, outcome: &str| {
        actions
            .iter()
            .filter(|a| **a == format!("{action}:{outcome}"))
            .count()
    };
    assert_eq!(count("patient.create", "success"), 1, "{actions:?}");
    assert_eq!(count("patient.update", "success"), 2, "{actions:?}");
    assert_eq!(count("patient.delete", "success"), 1, "{actions:?}");
}
