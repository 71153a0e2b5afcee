//! DocumentReference: an attachment, read, searched by patient, type and date, created (then
//! uploaded through `Binary/{id}/$presigned-url`) and deleted with its file. The bytes
//! themselves are in `binary`, paging through searches in `paging`.

use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::{json, Value};

use super::{
    documents, download, outcome, patient, put_to_upload_url, q, read, redacted, texts_about,
    upload_url, with_documents,
};

/// A patient with an uploaded report and a pending scan, read by a viewer.
struct Documents {
    app: TestApp,
    viewer: String,
    patient_id: String,
    report: String,
    pending: String,
    bytes: Vec<u8>,
}

impl Documents {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let clinician = app.clinician().await.token;
        let (patient_id, report, pending, bytes) = with_documents(&app, &clinician).await;
        let viewer = app.viewer().await.token;
        Self {
            app,
            viewer,
            patient_id,
            report,
            pending,
            bytes,
        }
    }

    async fn read(&self, id: &str) -> ApiResponse {
        read(&self.app, &self.viewer, &format!("DocumentReference/{id}")).await
    }
}

#[tokio::test]
async fn an_uploaded_attachment_reads_as_a_final_document_reference() {
    let d = Documents::new().await;
    let read = d.read(&d.report).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let document = read.json();
    assert_eq!(document["resourceType"], "DocumentReference");
    assert_eq!(document["status"], "current");
    assert_eq!(document["docStatus"], "final");
    assert_eq!(
        document["subject"]["reference"],
        format!("Patient/{}", d.patient_id)
    );
}

#[tokio::test]
async fn its_attachment_names_the_type_title_size_and_binary() {
    let d = Documents::new().await;
    let document = d.read(&d.report).await.json();
    let attachment = &document["content"][0]["attachment"];
    assert_eq!(attachment["contentType"], "application/pdf");
    assert_eq!(attachment["title"], "report.pdf");
    assert_eq!(attachment["size"], d.bytes.len());
    let binary_url = format!("https://api.carevault.test/fhir/R4/Binary/{}", d.report);
    assert_eq!(attachment["url"], binary_url);
}

#[tokio::test]
async fn a_read_matches_its_snapshot() {
    let d = Documents::new().await;
    let read = d.read(&d.report).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let document = read.json();
    redacted().bind(|| insta::assert_json_snapshot!("document_reference", document));
}

#[tokio::test]
async fn a_pending_upload_reads_as_preliminary() {
    let d = Documents::new().await;
    let pending_doc = d.read(&d.pending).await.json();
    assert_eq!(pending_doc["docStatus"], "preliminary");
}

#[tokio::test]
async fn an_unknown_document_reference_is_404() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    outcome(
        &read(
            &app,
            &viewer,
            &format!("DocumentReference/{}", uuid::Uuid::new_v4()),
        )
        .await,
        404,
        "not-found",
    );
}

/// Two patients with documents each: the first's (patient, report, pending), the second's
/// (patient, report).
struct TwoOwners {
    app: TestApp,
    t: String,
    patient_id: String,
    report: String,
    pending: String,
    other_patient: String,
    other_report: String,
}

impl TwoOwners {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let t = app.clinician().await.token;
        let (patient_id, report, pending, _) = with_documents(&app, &t).await;
        let (other_patient, other_report, _, _) = with_documents(&app, &t).await;
        Self {
            app,
            t,
            patient_id,
            report,
            pending,
            other_patient,
            other_report,
        }
    }

    async fn found(&self, query: &[(&str, &str)]) -> (Vec<String>, Value) {
        documents(&self.app, &self.t, &q(query)).await
    }
}

#[tokio::test]
async fn a_patients_documents_are_found_newest_first_with_a_total() {
    let s = TwoOwners::new().await;
    // Newest first; a patient as id, Patient/id or absolute URL.
    let (by_id, bundle) = s.found(&[("patient", &s.patient_id)]).await;
    assert_eq!(by_id, [s.pending.clone(), s.report.clone()]);
    assert_eq!(bundle["total"], 2);
}

#[tokio::test]
async fn a_patient_is_named_by_id_reference_or_absolute_url() {
    let s = TwoOwners::new().await;
    let (by_id, _) = s.found(&[("patient", &s.patient_id)]).await;
    let typed = format!("Patient/{}", s.patient_id);
    assert_eq!(s.found(&[("subject", &typed)]).await.0, by_id);
    let absolute = format!("https://elsewhere.example/fhir/R4/Patient/{}", s.patient_id);
    assert_eq!(s.found(&[("patient", &absolute)]).await.0, by_id);
}

#[tokio::test]
async fn patients_are_any_of_a_comma_list_and_content_type_narrows() {
    let s = TwoOwners::new().await;
    let both = format!("{},{}", s.patient_id, s.other_patient);
    assert_eq!(
        s.found(&[("patient", &both), ("contenttype", "application/pdf")])
            .await
            .0,
        [s.other_report.clone(), s.report.clone()]
    );
}

#[tokio::test]
async fn a_date_is_a_day_and_its_prefixes_compare() {
    let s = TwoOwners::new().await;
    let today = chrono::Utc::now().date_naive().to_string();
    let (before, not_today) = (format!("lt{today}"), format!("ne{today}"));
    assert_eq!(
        s.found(&[("patient", &s.patient_id), ("date", &today)])
            .await
            .0
            .len(),
        2
    );
    assert_eq!(
        s.found(&[("patient", &s.patient_id), ("date", &before)])
            .await
            .0
            .len(),
        0
    );
    assert_eq!(
        s.found(&[("patient", &s.patient_id), ("date", &not_today)])
            .await
            .0
            .len(),
        0
    );
}

#[tokio::test]
async fn an_instant_bounds_to_the_second_and_needs_its_offset() {
    let s = TwoOwners::new().await;
    // An instant (with its offset) bounds to the second; one without an offset is refused.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    for (prefix, expected) in [("ge", 2), ("lt", 0)] {
        let value = format!("{prefix}{hour_ago}");
        assert_eq!(
            s.found(&[("patient", &s.patient_id), ("date", &value)])
                .await
                .0
                .len(),
            expected,
            "date={value}"
        );
    }
    outcome(
        &s.app
            .call(
                ApiRequest::get("/fhir/R4/DocumentReference")
                    .bearer(&s.t)
                    .query("date", "ge2024-01-01T10:00:00"),
            )
            .await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn a_patient_reference_to_another_type_is_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let invalid = app
        .call(
            ApiRequest::get("/fhir/R4/DocumentReference")
                .query("patient", "Observation/1")
                .bearer(&t),
        )
        .await;
    outcome(&invalid, 400, "invalid");
}

/// A patient of its own and the DocumentReference a client creates for a PDF of `bytes`.
struct Created {
    app: TestApp,
    clinician: String,
    viewer: String,
    owner: String,
    document: Value,
    bytes: Vec<u8>,
}

impl Created {
    /// Nothing created yet: the patient, and the document to create.
    async fn to_create() -> Self {
        let app = TestApp::new().await;
        let clinician = app.clinician().await.token;
        let viewer = app.viewer().await.token;
        let owner = patient(&app, &clinician, json!({"name": "Doc Maker"})).await;
        let bytes = b"%PDF-1.7 made through FHIR".to_vec();
        let document = json!({
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": format!("Patient/{owner}")},
            "content": [{"attachment": {"contentType": "application/pdf", "title": "discharge.pdf", "size": bytes.len()}}],
        });
        Self {
            app,
            clinician,
            viewer,
            owner,
            document,
            bytes,
        }
    }

    async fn create(&self, token: &str, body: Value) -> ApiResponse {
        self.app
            .call(
                ApiRequest::post("/fhir/R4/DocumentReference")
                    .bearer(token)
                    .json(body),
            )
            .await
    }

    /// The document created by the clinician: its id.
    async fn created(&self) -> String {
        let created = self.create(&self.clinician, self.document.clone()).await;
        assert_eq!(created.status, 201, "{}", created.body);
        created.json()["id"].as_str().unwrap().to_owned()
    }

    /// The document created, then its bytes stored through the upload URL: its id.
    async fn uploaded(&self) -> String {
        let id = self.created().await;
        let upload = upload_url(&self.app, &self.clinician, &id).await.json();
        let parameters = upload["parameter"].as_array().unwrap();
        assert!(put_to_upload_url(parameters, self.bytes.clone())
            .await
            .status()
            .is_success());
        id
    }

    async fn delete(&self, token: &str, id: &str) -> ApiResponse {
        self.app
            .call(ApiRequest::delete(&format!("/fhir/R4/DocumentReference/{id}")).bearer(token))
            .await
    }
}

#[tokio::test]
async fn a_create_answers_201_with_a_preliminary_document_and_its_location() {
    let c = Created::to_create().await;
    let created = c.create(&c.clinician, c.document.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let resource = created.json();
    let id = resource["id"].as_str().unwrap().to_owned();
    assert_eq!(resource["docStatus"], "preliminary");
    assert_eq!(
        resource["subject"]["reference"],
        format!("Patient/{}", c.owner)
    );
    assert_eq!(
        resource["content"][0]["attachment"]["title"],
        "discharge.pdf"
    );
    assert!(created
        .header("location")
        .is_some_and(|l| l.ends_with(&format!("/fhir/R4/DocumentReference/{id}"))));
}

#[tokio::test]
async fn a_created_documents_upload_url_stores_the_bytes_binary_serves() {
    let c = Created::to_create().await;
    // The upload URL, then real bytes, then the Binary redirect serves them.
    let id = c.uploaded().await;
    let binary = read(&c.app, &c.viewer, &format!("Binary/{id}")).await;
    assert_eq!(binary.status, 302, "{}", binary.body);
    let downloaded = download(&binary).await;
    assert_eq!(downloaded.as_slice(), c.bytes.as_slice());
    let read = read(&c.app, &c.viewer, &format!("DocumentReference/{id}"))
        .await
        .json();
    assert_eq!(read["docStatus"], "final");
}

#[tokio::test]
async fn a_create_needs_a_token_and_a_writer() {
    let c = Created::to_create().await;
    // Refusals: no token, a viewer, a body of another type, broken rules (located), an
    // unknown patient, inline data.
    let unauthenticated = c
        .app
        .call(ApiRequest::post("/fhir/R4/DocumentReference").json(c.document.clone()))
        .await;
    outcome(&unauthenticated, 401, "login");
    outcome(
        &c.create(&c.viewer, c.document.clone()).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn a_body_of_another_type_is_400() {
    let c = Created::to_create().await;
    outcome(
        &c.create(&c.clinician, json!({"resourceType": "Patient"}))
            .await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn broken_rules_are_422_located_and_create_nothing() {
    let c = Created::to_create().await;
    // The one document that is created; none of the refused ones is.
    c.created().await;
    let mut long_title = c.document.clone();
    long_title["content"][0]["attachment"]["title"] = json!("x".repeat(256));
    let refused = c.create(&c.clinician, long_title).await;
    outcome(&refused, 422, "business-rule");
    assert!(refused.json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .starts_with("DocumentReference.content[0].attachment.title"));
    for (path, value) in [
        (
            "subject",
            json!({"reference": format!("Patient/{}", uuid::Uuid::new_v4())}),
        ),
        ("subject", json!({"reference": "Practitioner/1"})),
        ("subject", Value::Null),
        ("content", json!([])),
        (
            "content",
            json!([{"attachment": {"title": "a.pdf", "data": "JVBERg=="}}]),
        ),
        ("status", json!("entered-in-error")),
    ] {
        let mut bad = c.document.clone();
        bad[path] = value;
        outcome(&c.create(&c.clinician, bad).await, 422, "business-rule");
    }
    assert_eq!(c.app.db.number("SELECT count(*) FROM attachments").await, 1);
}

/// A rule of the upload (a file too large for one PUT) is located at the element that carries
/// it, `content[0].attachment.size`, not at the JSON API's field.
#[tokio::test]
async fn a_refused_upload_is_located_at_its_attachment_element() {
    let c = Created::to_create().await;
    let mut too_large = c.document.clone();
    too_large["content"][0]["attachment"]["size"] = json!(6_u64 * 1024 * 1024 * 1024);
    let refused = c.create(&c.clinician, too_large).await;
    outcome(&refused, 422, "business-rule");
    let diagnostics = refused.json()["issue"][0]["diagnostics"].clone();
    assert!(
        diagnostics
            .as_str()
            .unwrap()
            .starts_with("DocumentReference.content[0].attachment.size"),
        "{diagnostics}"
    );
    assert_eq!(c.app.db.number("SELECT count(*) FROM attachments").await, 0);
}

#[tokio::test]
async fn a_viewer_may_not_delete() {
    let c = Created::to_create().await;
    let id = c.created().await;
    // Delete: a viewer cannot; a clinician can, and the file goes with the row.
    outcome(&c.delete(&c.viewer, &id).await, 403, "forbidden");
}

#[tokio::test]
async fn a_delete_removes_the_file_with_the_row() {
    let c = Created::to_create().await;
    let id = c.uploaded().await;
    let key = format!("patients/{}/attachments/{id}", c.owner);
    assert_eq!(c.app.object_in_bucket(&key).await, Some(c.bytes.clone()));
    let gone = c.delete(&c.clinician, &id).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(c.app.object_in_bucket(&key).await, None);
}

#[tokio::test]
async fn a_deleted_document_is_gone() {
    let c = Created::to_create().await;
    let id = c.created().await;
    let gone = c.delete(&c.clinician, &id).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    outcome(
        &read(&c.app, &c.viewer, &format!("DocumentReference/{id}")).await,
        404,
        "not-found",
    );
    outcome(&c.delete(&c.clinician, &id).await, 404, "not-found");
}

#[tokio::test]
async fn deleting_a_malformed_id_is_404() {
    let c = Created::to_create().await;
    outcome(
        &c.delete(&c.clinician, "not-a-uuid").await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn create_and_delete_are_audited_as_the_json_apis_actions() {
    let c = Created::to_create().await;
    let id = c.uploaded().await;
    let gone = c.delete(&c.clinician, &id).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    let actions = texts_about(&c.app, "SELECT action || ':' || outcome FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id", &id).await;
    assert!(
        actions
            .first()
            .is_some_and(|a| a == "attachment.create:success"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"attachment.delete:success".to_owned()),
        "{actions:?}"
    );
}
