//! Identifiers: kept by the JSON API, answered as `Patient.identifier`, searched with
//! `identifier`, and the criteria that make a FHIR create conditional (`If-None-Exist`).

use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::{json, Value};

use super::{ids, outcome, patient, read, search};

const MRN: &str = "https://clinic.example/mrn";

/// Ida, created through the JSON API with a national id and an MRN (with spaces to trim).
async fn ida(app: &TestApp, t: &str) -> ApiResponse {
    let created = app
        .call(ApiRequest::post("/api/v1/patients/").bearer(t).json(json!({
            "name": "Ida Ident",
            "identifiers": [
                {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"},
                {"system": MRN, "value": " A-100 "},
            ],
        })))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    created
}

fn id_of(response: &ApiResponse) -> String {
    response.json()["id"].as_str().unwrap().to_owned()
}

/// Otto, whose identifier has Ida's MRN value in another system.
async fn otto(app: &TestApp, t: &str) -> String {
    patient(
        app,
        t,
        json!({"name": "Otto Other", "identifiers": [{"system": "urn:x", "value": "A-100"}]}),
    )
    .await
}

/// A FHIR create of Carla, conditional on `criteria`.
fn conditional(token: &str, criteria: &str) -> ApiRequest {
    let body = json!({
        "resourceType": "Patient",
        "name": [{"family": "Cond", "given": ["Carla"]}],
        "identifier": [{"system": MRN, "value": "C-7", "use": "usual"}],
    });
    ApiRequest::post("/fhir/R4/Patient")
        .bearer(token)
        .header("if-none-exist", criteria)
        .json(body)
}

/// Carla created conditionally (no match yet): the 201 answer.
async fn carla(app: &TestApp, t: &str) -> ApiResponse {
    let first = app
        .call(conditional(t, &format!("identifier={MRN}|C-7")))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    first
}

async fn patch_identifiers(app: &TestApp, t: &str, id: &str, identifiers: Value) -> ApiResponse {
    app.call(
        ApiRequest::patch(&format!("/api/v1/patients/{id}"))
            .bearer(t)
            .json(json!({ "identifiers": identifiers })),
    )
    .await
}

#[tokio::test]
async fn the_json_api_keeps_them_trimmed_and_ordered() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    // The JSON API keeps identifiers, ordered, and answers them with the record.
    let created = ida(&app, &t).await;
    assert_eq!(
        created.json()["identifiers"],
        json!([
            {"system": MRN, "value": "A-100"},
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"},
        ])
    );
}

#[tokio::test]
async fn a_fhir_read_answers_them_as_identifier() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let ida = id_of(&ida(&app, &t).await);
    let read = read(&app, &t, &format!("Patient/{ida}")).await.json();
    assert_eq!(
        read["identifier"][0],
        json!({"system": MRN, "value": "A-100"})
    );
}

#[tokio::test]
async fn the_json_apis_lists_carry_them() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let created = ida(&app, &t).await;
    // Lists and searches carry them too (read in the page's statement).
    let listed = app
        .call(
            ApiRequest::get("/api/v1/patients/")
                .bearer(&t)
                .query("name_text", "ida"),
        )
        .await
        .json();
    assert_eq!(
        listed["data"][0]["identifiers"],
        created.json()["identifiers"]
    );
    // Without a count (the walk of the sort order when it likely holds the page).
    let uncounted = app
        .call(
            ApiRequest::get("/api/v1/patients/")
                .bearer(&t)
                .query("name_text", "ida")
                .query("count", "none"),
        )
        .await
        .json();
    assert_eq!(
        uncounted["data"][0]["identifiers"],
        created.json()["identifiers"]
    );
    let unfiltered = app
        .call(ApiRequest::get("/api/v1/patients/").bearer(&t))
        .await
        .json();
    assert_eq!(
        unfiltered["data"][0]["identifiers"][1]["value"],
        "123-45-6789"
    );
}

#[tokio::test]
async fn a_fhir_search_carries_them() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let ida = id_of(&ida(&app, &t).await);
    let read = read(&app, &t, &format!("Patient/{ida}")).await.json();
    let found = app.call(search(&t, &[("name", "ida")])).await.json();
    assert_eq!(
        found["entry"][0]["resource"]["identifier"],
        read["identifier"]
    );
}

#[tokio::test]
async fn a_pair_another_patient_holds_is_409_and_creates_nothing() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    ida(&app, &t).await;
    // A pair another patient holds: 409, nothing created.
    let taken = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({"name": "Other", "identifiers": [{"system": MRN, "value": "A-100"}]})),
        )
        .await;
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert_eq!(app.db.number("SELECT count(*) FROM patients").await, 1);
}

#[tokio::test]
async fn bad_identifiers_are_422_with_the_field_located() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    // Bad identifiers: 422 with the field located.
    for (identifiers, loc) in [
        (
            json!([{"system": "mrn", "value": "1"}]),
            json!(["body", "identifiers", 0]),
        ),
        (
            json!([{"value": "1"}]),
            json!(["body", "identifiers", 0, "system"]),
        ),
        (
            json!([{"system": MRN, "value": "1"}, {"system": MRN, "value": "1"}]),
            json!(["body", "identifiers"]),
        ),
    ] {
        let bad = app
            .call(
                ApiRequest::post("/api/v1/patients/")
                    .bearer(&t)
                    .json(json!({"name": "Bad", "identifiers": identifiers})),
            )
            .await;
        assert_eq!(bad.status, 422, "{}", bad.body);
        assert_eq!(bad.detail()[0]["loc"], loc, "{}", bad.body);
    }
}

#[tokio::test]
async fn identifier_search_takes_system_and_value_in_any_combination() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let ida = id_of(&ida(&app, &t).await);
    let other = otto(&app, &t).await;
    // identifier search: system|value, value in any system, system| (any value), |value.
    for (value, expected) in [
        (format!("{MRN}|A-100"), vec![ida.clone()]),
        ("A-100".to_owned(), vec![ida.clone(), other.clone()]),
        (format!("{MRN}|"), vec![ida.clone()]),
        ("|A-100".to_owned(), vec![]),
        (format!("{MRN}|a-100"), vec![]),
        (
            format!("urn:x|A-100,{MRN}|A-100"),
            vec![ida.clone(), other.clone()],
        ),
    ] {
        let found = app.call(search(&t, &[("identifier", &value)])).await.json();
        assert_eq!(ids(&found), expected, "identifier={value}");
    }
}

#[tokio::test]
async fn a_conditional_create_without_a_match_creates() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    // Conditional create: no match creates (201); the same again answers it (200), one record.
    let first = carla(&app, &t).await;
    assert_eq!(
        first.json()["identifier"],
        json!([{"system": MRN, "value": "C-7"}])
    );
}

#[tokio::test]
async fn a_conditional_create_with_one_match_answers_it_and_creates_nothing() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let carla = id_of(&carla(&app, &t).await);
    let again = app
        .call(conditional(&t, &format!("identifier={MRN}|C-7")))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], carla.as_str());
    assert_eq!(
        app.db
            .number("SELECT count(*) FROM patients WHERE name = 'Carla Cond'")
            .await,
        1
    );
    // The second is audited as what it was: nothing created.
    let matched = app
        .db
        .number(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'patient.create' AND resource_id = '{carla}' AND details->>'if_none_exist' = 'matched'"
        ))
        .await;
    assert_eq!(matched, 1);
}

#[tokio::test]
async fn a_conditional_create_with_several_matches_is_412() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    ida(&app, &t).await;
    otto(&app, &t).await;
    // Several matches: 412; criteria this server does not know, or none: 400; a viewer: 403.
    outcome(
        &app.call(conditional(&t, "identifier=A-100")).await,
        412,
        "conflict",
    );
}

#[tokio::test]
async fn conditional_criteria_this_server_does_not_know_or_none_are_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    outcome(
        &app.call(conditional(&t, "colour=red")).await,
        400,
        "invalid",
    );
    outcome(&app.call(conditional(&t, "_count=1")).await, 400, "invalid");
}

#[tokio::test]
async fn a_viewer_may_not_create_conditionally() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(conditional(&viewer, "identifier=x|y")).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn an_identifier_without_a_system_is_422_naming_the_element() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    // An identifier without a system cannot be kept: 422 naming the element.
    let systemless = app
        .call(ApiRequest::post("/fhir/R4/Patient").bearer(&t).json(json!({
            "resourceType": "Patient",
            "name": [{"text": "No System"}],
            "identifier": [{"value": "1"}],
        })))
        .await;
    outcome(&systemless, 422, "business-rule");
    assert!(systemless.json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .starts_with("Patient.identifier.0.system"));
}

#[tokio::test]
async fn a_fhir_update_replaces_the_set() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let created = carla(&app, &t).await;
    let carla = id_of(&created);
    // An update replaces the set (FHIR: what the resource leaves out is cleared); the JSON
    // API's null clears it.
    let mut carla_resource = created.json();
    carla_resource["identifier"] = json!([{"system": MRN, "value": "C-8"}]);
    let updated = app
        .call(
            ApiRequest::put(&format!("/fhir/R4/Patient/{carla}"))
                .bearer(&t)
                .json(carla_resource),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        updated.json()["identifier"],
        json!([{"system": MRN, "value": "C-8"}])
    );
}

#[tokio::test]
async fn the_json_apis_null_clears_them() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let carla = id_of(&carla(&app, &t).await);
    let cleared = patch_identifiers(&app, &t, &carla, Value::Null).await;
    assert_eq!(cleared.json()["identifiers"], json!([]));
}

#[tokio::test]
async fn taking_another_patients_pair_by_update_is_409() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    ida(&app, &t).await;
    let carla = id_of(&carla(&app, &t).await);
    // Taking another patient's pair by update: 409, the record unchanged.
    let steal =
        patch_identifiers(&app, &t, &carla, json!([{"system": MRN, "value": "A-100"}])).await;
    assert_eq!(steal.status, 409, "{}", steal.body);
}

#[tokio::test]
async fn deleting_a_patient_frees_its_identifiers() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let ida = id_of(&ida(&app, &t).await);
    let carla = id_of(&carla(&app, &t).await);
    // Deleting a patient frees its identifiers.
    app.call(ApiRequest::delete(&format!("/api/v1/patients/{ida}")).bearer(&t))
        .await;
    let reused =
        patch_identifiers(&app, &t, &carla, json!([{"system": MRN, "value": "A-100"}])).await;
    assert_eq!(reused.status, 200, "{}", reused.body);
}
