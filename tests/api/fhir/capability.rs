//! `GET /fhir/R4/metadata`: the CapabilityStatement says exactly what is served, without a token.

use api_tests::{ApiRequest, TestApp};
use serde_json::{json, Value};

use super::redacted;

/// The CapabilityStatement, asked for without a token.
async fn statement() -> Value {
    let app = TestApp::new().await;
    let response = app.call(ApiRequest::get("/fhir/R4/metadata")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn interactions(resource: &Value) -> Vec<&str> {
    resource["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_statement_is_served_as_fhir_json_without_a_token() {
    let app = TestApp::new().await;
    let response = app.call(ApiRequest::get("/fhir/R4/metadata")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    assert_eq!(response.json()["resourceType"], "CapabilityStatement");
}

#[tokio::test]
async fn the_statement_matches_its_snapshot() {
    let statement = statement().await;
    redacted().bind(|| insta::assert_json_snapshot!("capability_statement", statement));
}

#[tokio::test]
async fn it_declares_an_instance_of_fhir_4_0_1_in_json() {
    let statement = statement().await;
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["kind"], "instance");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    assert_eq!(statement["format"], json!(["json"]));
}

#[tokio::test]
async fn it_lists_exactly_the_resources_and_interactions_served() {
    let statement = statement().await;
    let patient = &statement["rest"][0]["resource"][0];
    assert_eq!(patient["type"], "Patient");
    assert_eq!(
        interactions(patient),
        ["read", "search-type", "create", "update", "delete"]
    );
    // Nothing that is not served.
    let served: Vec<(&str, Vec<&str>)> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["type"].as_str().unwrap(), interactions(r)))
        .collect();
    assert_eq!(
        served,
        [
            (
                "Patient",
                vec!["read", "search-type", "create", "update", "delete"]
            ),
            (
                "DocumentReference",
                vec!["read", "search-type", "create", "delete"]
            ),
            ("Binary", vec!["read"]),
            ("Practitioner", vec!["read"]),
            ("AuditEvent", vec!["read", "search-type"]),
            (
                "Group",
                vec!["read", "search-type", "create", "update", "delete"]
            ),
        ]
    );
}

#[tokio::test]
async fn it_offers_bulk_export_at_every_level_it_serves() {
    let statement = statement().await;
    let rest = &statement["rest"][0];
    assert_eq!(
        rest["operation"][0]["definition"],
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    );
    for (kind, definition) in [("Patient", "patient-export"), ("Group", "group-export")] {
        let resource = rest["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == kind)
            .unwrap();
        assert_eq!(resource["operation"][0]["name"], "export", "{kind}");
        assert_eq!(
            resource["operation"][0]["definition"],
            format!("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{definition}")
        );
    }
}

#[tokio::test]
async fn patient_is_versioned_without_history_and_creates_conditionally() {
    let statement = statement().await;
    let patient = &statement["rest"][0]["resource"][0];
    assert_eq!(patient["type"], "Patient");
    assert_eq!(patient["versioning"], "versioned-update");
    assert_eq!(patient["readHistory"], false);
    assert_eq!(patient["conditionalCreate"], true);
}

#[tokio::test]
async fn patient_search_parameters_are_listed_with_their_definitions() {
    let statement = statement().await;
    let patient = &statement["rest"][0]["resource"][0];
    assert_eq!(patient["type"], "Patient");
    for param in patient["searchParam"].as_array().unwrap() {
        assert!(param["definition"]
            .as_str()
            .unwrap()
            .starts_with("http://hl7.org/fhir/SearchParameter/"));
    }
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["_id", "name", "birthdate", "identifier", "_lastUpdated"]
    );
}

#[tokio::test]
async fn binary_declares_the_presigned_url_operation() {
    let statement = statement().await;
    assert_eq!(statement["rest"][0]["resource"][2]["type"], "Binary");
    assert_eq!(
        statement["rest"][0]["resource"][2]["operation"][0]["name"],
        "presigned-url"
    );
}

/// Each resource's searchParam list names exactly the parameters its search applies (`_sort`
/// aside: a result parameter, documented with the resource), so strict handling refuses
/// nothing the statement offers and nothing it leaves out slips through.
#[tokio::test]
async fn search_parameters_listed_are_exactly_those_applied() {
    let app = TestApp::new().await;
    let statement = app.call(ApiRequest::get("/fhir/R4/metadata")).await.json();
    for (kind, applied) in [
        ("Patient", &fhir::PATIENT_PARAMETERS[..]),
        ("DocumentReference", &fhir::DOCUMENT_PARAMETERS[..]),
        ("AuditEvent", &fhir::AUDIT_EVENT_PARAMETERS[..]),
        ("Group", &fhir::GROUP_PARAMETERS[..]),
    ] {
        let resource = statement["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == kind)
            .unwrap();
        let mut listed: Vec<&str> = resource["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let mut applied: Vec<&str> = applied.iter().copied().filter(|p| *p != "_sort").collect();
        listed.sort();
        applied.sort();
        assert_eq!(listed, applied, "{kind}");
    }
}
