//! AuditEvent: the audit trail as IHE BALP events, read and searched by superusers only
//! (reading it is itself audited). Paging is in `paging`.

use api_tests::{ApiRequest, ApiResponse, TestApp, TestUser};
use serde_json::{json, Value};

use super::{outcome, patient, read, redacted};

/// A patient with three events on the trail: its creation by a clinician, the clinician's read
/// of it from 203.0.113.9, and a viewer's refused delete.
struct Trail {
    app: TestApp,
    clinician: TestUser,
    viewer: String,
    admin: String,
    id: String,
}

impl Trail {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let clinician = app.clinician().await;
        let id = patient(&app, &clinician.token, json!({"name": "Audited Person"})).await;
        app.call(
            ApiRequest::get(&format!("/api/v1/patients/{id}"))
                .bearer(&clinician.token)
                .source_ip("203.0.113.9"),
        )
        .await;
        let viewer = app.viewer().await.token;
        // A refusal: a viewer may not delete.
        app.call(ApiRequest::delete(&format!("/api/v1/patients/{id}")).bearer(&viewer))
            .await;
        let admin = app.superuser_token().await;
        Self {
            app,
            clinician,
            viewer,
            admin,
            id,
        }
    }

    /// `GET [base]/AuditEvent?{query}` as the superuser.
    async fn search(&self, query: &[(&str, &str)]) -> ApiResponse {
        let mut request = ApiRequest::get("/fhir/R4/AuditEvent").bearer(&self.admin);
        for (k, v) in query {
            request = request.query(k, v);
        }
        self.app.call(request).await
    }

    /// The one event of the clinician's read, as a search by patient and action finds it.
    async fn the_read(&self) -> Value {
        let reads = self.search(&[("patient", &self.id), ("action", "R")]).await;
        assert_eq!(reads.status, 200, "{}", reads.body);
        let bundle = reads.json();
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{bundle}");
        entries[0]["resource"].clone()
    }

    /// How many entries a search's first page holds.
    async fn entries(&self, query: &[(&str, &str)]) -> usize {
        self.search(query).await.json()["entry"]
            .as_array()
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn a_viewer_may_not_read_the_trail() {
    let t = Trail::new().await;
    outcome(
        &t.app
            .call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&t.viewer))
            .await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn a_search_by_patient_and_action_finds_the_read() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["action"], "R");
}

#[tokio::test]
async fn an_event_is_a_rest_interaction_with_carevaults_action_and_outcome() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    assert_eq!(event["type"]["code"], "rest");
    assert_eq!(
        event["subtype"][0],
        json!({"system": "http://hl7.org/fhir/restful-interaction", "code": "read"})
    );
    assert_eq!(event["subtype"][1]["code"], "patient.read");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    assert!(event["recorded"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn an_event_names_the_requesting_user_and_their_address() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    assert_eq!(
        event["agent"][0]["who"]["identifier"]["value"],
        t.clinician.id
    );
    assert_eq!(event["agent"][0]["requestor"], true);
    assert_eq!(event["agent"][0]["network"]["address"], "203.0.113.9");
}

#[tokio::test]
async fn an_event_names_its_observer_and_the_patient() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    assert_eq!(event["source"]["observer"]["display"], "CareVault");
    assert_eq!(
        event["entity"][0]["what"]["reference"],
        format!("Patient/{}", t.id)
    );
}

#[tokio::test]
async fn an_event_matches_its_snapshot() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    redacted().bind(|| insta::assert_json_snapshot!("audit_event", event));
}

#[tokio::test]
async fn the_total_is_an_estimate_exact_when_asked_and_left_out_when_not() {
    let t = Trail::new().await;
    // The total: the planner's estimate by default (a number, not checked here), exact when
    // asked for, none when not.
    let bundle = t
        .search(&[("patient", &t.id), ("action", "R")])
        .await
        .json();
    assert!(bundle["total"].is_number(), "{bundle}");
    let accurate = t
        .search(&[("patient", &t.id), ("action", "R"), ("_total", "accurate")])
        .await
        .json();
    assert_eq!(accurate["total"], 1);
    let uncounted = t
        .search(&[("patient", &t.id), ("_total", "none")])
        .await
        .json();
    assert!(uncounted.get("total").is_none());
}

#[tokio::test]
async fn action_filters_and_the_patient_may_be_a_reference() {
    let t = Trail::new().await;
    let created = t
        .search(&[("patient", &format!("Patient/{}", t.id)), ("action", "C")])
        .await
        .json();
    assert_eq!(created["entry"].as_array().unwrap().len(), 1);
    assert_eq!(created["entry"][0]["resource"]["action"], "C");
}

#[tokio::test]
async fn outcome_4_finds_the_refusal() {
    let t = Trail::new().await;
    let refused = t
        .search(&[("patient", &t.id), ("outcome", "4")])
        .await
        .json();
    assert_eq!(refused["entry"].as_array().unwrap().len(), 1);
    assert_eq!(refused["entry"][0]["resource"]["outcomeDesc"], "denied");
    assert_eq!(refused["entry"][0]["resource"]["action"], "D");
}

#[tokio::test]
async fn agent_finds_a_users_events() {
    let t = Trail::new().await;
    assert_eq!(
        t.entries(&[("agent", &t.clinician.id), ("patient", &t.id)])
            .await,
        2
    );
}

#[tokio::test]
async fn date_filters_by_day_and_by_instant() {
    let t = Trail::new().await;
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(t.entries(&[("patient", &t.id), ("date", &today)]).await, 3);
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%MZ")
        .to_string();
    assert_eq!(
        t.entries(&[("patient", &t.id), ("date", &format!("gt{hour_ago}"))])
            .await,
        3
    );
    assert!(t
        .search(&[("patient", &t.id), ("date", &format!("lt{today}"))])
        .await
        .json()
        .get("entry")
        .is_none());
}

#[tokio::test]
async fn an_unknown_action_is_400() {
    let t = Trail::new().await;
    outcome(&t.search(&[("action", "X")]).await, 400, "invalid");
}

#[tokio::test]
async fn an_event_reads_by_its_id() {
    let t = Trail::new().await;
    let event = t.the_read().await;
    // Read one; reading the trail is itself on the trail.
    let event_id = event["id"].as_str().unwrap();
    let one = read(&t.app, &t.admin, &format!("AuditEvent/{event_id}")).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["id"], event_id);
}

#[tokio::test]
async fn an_unknown_event_is_404() {
    let t = Trail::new().await;
    outcome(
        &read(
            &t.app,
            &t.admin,
            &format!("AuditEvent/{}", uuid::Uuid::new_v4()),
        )
        .await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn reading_the_trail_is_itself_on_the_trail() {
    let t = Trail::new().await;
    // The reads the other tests make: a viewer's refused search, the superuser's searches (one
    // invalid), one read by id and one of an unknown id.
    t.app
        .call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&t.viewer))
        .await;
    let today = chrono::Utc::now().date_naive().to_string();
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("gt%Y-%m-%dT%H:%MZ")
        .to_string();
    let (reference, before_today) = (format!("Patient/{}", t.id), format!("lt{today}"));
    for query in [
        vec![("patient", t.id.as_str()), ("action", "R")],
        vec![("patient", &t.id), ("action", "R"), ("_total", "accurate")],
        vec![("patient", &t.id), ("_total", "none")],
        vec![("patient", &reference), ("action", "C")],
        vec![("patient", &t.id), ("outcome", "4")],
        vec![("agent", &t.clinician.id), ("patient", &t.id)],
        vec![("patient", &t.id), ("date", &today)],
        vec![("patient", &t.id), ("date", &hour_ago)],
        vec![("patient", &t.id), ("date", &before_today)],
        vec![("action", "X")],
    ] {
        t.search(&query).await;
    }
    let event = t.the_read().await;
    read(
        &t.app,
        &t.admin,
        &format!("AuditEvent/{}", event["id"].as_str().unwrap()),
    )
    .await;
    read(
        &t.app,
        &t.admin,
        &format!("AuditEvent/{}", uuid::Uuid::new_v4()),
    )
    .await;
    let audited = t
        .app
        .db
        .number("SELECT count(*) FROM audit_events WHERE action = 'audit.read' AND details->>'interface' = 'fhir'")
        .await;
    assert!(audited >= 8, "{audited}");
}
