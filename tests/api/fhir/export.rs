//! FHIR Bulk Data export: the kick-off and its refusals, the worker run from the test's own
//! queue exactly as the event source mapping runs it, the manifest and its presigned files,
//! `_since`, `_type`, `_typeFilter`, groups, consistency with writes during the export, a worker
//! killed mid-chunk, and cancel. (A database cut during an export: faults.rs. The independent
//! Bulk Data client: scripts/bulk-check.)

use std::collections::HashMap;
use std::time::Duration;

use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::{json, Value};

use super::{outcome, patient, read, with_documents};
use crate::smart::system_token;

const READ_ALL: &str = "system/Patient.rs system/DocumentReference.rs system/AuditEvent.rs";

fn kick_off_request(token: &str, path: &str) -> ApiRequest {
    ApiRequest::get(path)
        .bearer(token)
        .header("prefer", "respond-async")
        .header("accept", "application/fhir+json")
}

async fn kick_off(app: &TestApp, request: ApiRequest) -> String {
    let response = app.call(request).await;
    assert_eq!(response.status, 202, "{}", response.body);
    status_path(&response)
}

/// The status URL of a kick-off's answer, as a path of this API.
fn status_path(response: &ApiResponse) -> String {
    let location = response
        .header("content-location")
        .unwrap_or_else(|| panic!("no Content-Location: {response:?}"));
    let url = reqwest::Url::parse(location).expect("an absolute status URL");
    assert!(
        url.path().starts_with("/fhir/R4/$export-status/"),
        "{location}"
    );
    url.path().to_owned()
}

async fn poll(app: &TestApp, token: &str, status: &str) -> ApiResponse {
    app.call(ApiRequest::get(status).bearer(token)).await
}

/// Runs the worker until the queue is empty, then reads the manifest (200).
async fn manifest(app: &TestApp, token: &str, status: &str) -> Value {
    app.run_export_jobs().await;
    let done = poll(app, token, status).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json")));
    assert!(done.header("expires").is_some(), "{done:?}");
    done.json()
}

/// Every resource of the manifest's output, by type, from its presigned URLs.
async fn resources_of(manifest: &Value) -> HashMap<String, Vec<Value>> {
    let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
    for file in manifest["output"].as_array().unwrap() {
        let lines = lines_at(file["url"].as_str().unwrap()).await;
        assert_eq!(
            lines.len() as u64,
            file["count"].as_u64().unwrap(),
            "{file}"
        );
        for line in lines {
            assert_eq!(line["resourceType"], file["type"], "one type per file");
            by_type
                .entry(file["type"].as_str().unwrap().to_owned())
                .or_default()
                .push(line);
        }
    }
    by_type
}

/// The NDJSON lines at a presigned URL, each parsed.
async fn lines_at(url: &str) -> Vec<Value> {
    let response = api_tests::http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let text = response.text().await.unwrap();
    assert!(text.ends_with('\n'), "every line ends with a newline");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON resource"))
        .collect()
}

fn ids_of(resources: Option<&Vec<Value>>) -> Vec<String> {
    let mut ids: Vec<String> = resources
        .map(|list| {
            list.iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_superuser_exports_every_record_as_the_fhir_read_returns_it() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let anna = patient(
        &app,
        &admin,
        json!({"name": "Anna Export", "dob": "1980-02-03"}),
    )
    .await;
    let (owner, report, pending, _) = with_documents(&app, &admin).await;
    // The upload confirmed (S3's notification does it in AWS; a read does it too): an export
    // holds what the database holds at its transaction time.
    assert_eq!(
        read(&app, &admin, &format!("DocumentReference/{report}"))
            .await
            .json()["docStatus"],
        "final"
    );

    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/$export")).await;
    // Before the worker runs: accepted, with its progress.
    let running = poll(&app, &admin, &status).await;
    assert_eq!(running.status, 202, "{}", running.body);
    assert!(running.header("x-progress").is_some());
    assert!(running.header("retry-after").is_some());

    let manifest = manifest(&app, &admin, &status).await;
    assert_eq!(manifest["requiresAccessToken"], false);
    assert!(manifest["request"]
        .as_str()
        .unwrap()
        .ends_with("/fhir/R4/$export"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(manifest["transactionTime"].as_str().unwrap()).is_ok()
    );
    assert_eq!(manifest["error"], json!([]));
    let exported = resources_of(&manifest).await;
    assert_eq!(
        ids_of(exported.get("Patient")),
        sorted(vec![anna.clone(), owner.clone()])
    );
    assert_eq!(
        ids_of(exported.get("DocumentReference")),
        sorted(vec![report.clone(), pending.clone()])
    );
    // The audit trail up to the kick-off (its own events included).
    assert!(!exported["AuditEvent"].is_empty());

    // Each line is exactly what the FHIR read answers.
    for resource in exported["Patient"]
        .iter()
        .chain(&exported["DocumentReference"])
    {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        assert_eq!(&read(&app, &admin, &path).await.json(), resource, "{path}");
    }
}

#[tokio::test]
async fn every_step_of_an_export_is_audited_with_who_asked() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    patient(&app, &admin, json!({"name": "Audited Export"})).await;
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
    manifest(&app, &admin, &status).await;
    let id = status.rsplit('/').next().unwrap();
    let rows = app
        .db
        .client()
        .await
        .query(
            "SELECT action, actor_id IS NOT NULL, details FROM audit_events \
             WHERE resource_id = $1 ORDER BY occurred_at",
            &[&uuid::Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for expected in [
        "bulk_export.kick_off",
        "bulk_export.planned",
        "bulk_export.file_written",
        "bulk_export.completed",
        "bulk_export.status",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(1)),
        "each names the superuser"
    );
    let status_event = rows
        .iter()
        .rev()
        .find(|r| r.get::<_, String>(0) == "bulk_export.status")
        .unwrap();
    // One file: the patient (no documents).
    assert_eq!(status_event.get::<_, Value>(2)["download_urls"], 1);
}

#[tokio::test]
async fn a_backend_client_exports_what_its_system_scopes_permit() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let anna = patient(&app, &admin, json!({"name": "Anna Scoped"})).await;
    let token = system_token(&app, "system/Patient.rs").await;

    // Without _type: every type it may read, here Patient alone.
    let status = kick_off(&app, kick_off_request(&token, "/fhir/R4/$export")).await;
    let manifest = manifest(&app, &token, &status).await;
    let exported = resources_of(&manifest).await;
    assert_eq!(exported.keys().collect::<Vec<_>>(), vec!["Patient"]);
    assert_eq!(ids_of(exported.get("Patient")), vec![anna]);
    // The worker's steps are attributed to the client, as the kick-off is.
    let id = uuid::Uuid::parse_str(status.rsplit('/').next().unwrap()).unwrap();
    let steps = app
        .db
        .client()
        .await
        .query(
            "SELECT action, details->>'smart_client_id' FROM audit_events \
             WHERE resource_id = $1 ORDER BY occurred_at",
            &[&id],
        )
        .await
        .unwrap();
    let clients: std::collections::BTreeSet<Option<String>> =
        steps.iter().map(|row| row.get(1)).collect();
    assert_eq!(clients.len(), 1, "one client names every step: {clients:?}");
    assert!(clients.iter().all(Option::is_some));
    assert!(steps
        .iter()
        .any(|row| row.get::<_, &str>(0) == "bulk_export.file_written"));

    // A type beyond its scopes.
    let refused = app
        .call(kick_off_request(&token, "/fhir/R4/$export").query("_type", "AuditEvent"))
        .await;
    outcome(&refused, 403, "forbidden");
    // Someone else's job, and the client's own after it is gone.
    let admin_poll = poll(&app, &admin, &status).await;
    outcome(&admin_poll, 404, "not-found");
    let other = system_token(&app, READ_ALL).await;
    outcome(&poll(&app, &other, &status).await, 404, "not-found");
}

#[tokio::test]
async fn an_export_needs_a_superuser_or_system_scopes() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    outcome(
        &app.call(kick_off_request(&clinician, "/fhir/R4/$export"))
            .await,
        403,
        "forbidden",
    );
    let anonymous = app
        .call(ApiRequest::get("/fhir/R4/$export").header("prefer", "respond-async"))
        .await;
    outcome(&anonymous, 401, "login");
    // The status URL too.
    let status = format!("/fhir/R4/$export-status/{}", uuid::Uuid::new_v4());
    outcome(&poll(&app, &clinician, &status).await, 403, "forbidden");
}

#[tokio::test]
async fn a_kick_off_it_cannot_run_is_refused_with_what_is_wrong() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let no_prefer = app
        .call(ApiRequest::get("/fhir/R4/$export").bearer(&admin))
        .await;
    outcome(&no_prefer, 400, "invalid");
    assert!(no_prefer.body.contains("respond-async"));
    let too_many = vec!["Patient?name=a"; 33].join(",");
    let cases: [(&str, &str, &str); 9] = [
        ("_outputFormat", "text/csv", "_outputFormat"),
        ("_type", "Observation", "_type"),
        ("_since", "yesterday", "_since"),
        ("_since", "2999-01-01T00:00:00Z", "_since"),
        ("_typeFilter", "Patient?colour=blue", "_typeFilter"),
        ("_typeFilter", "Patient", "_typeFilter"),
        ("_typeFilter", "Observation?code=1", "_typeFilter"),
        ("_typeFilter", &too_many, "_typeFilter"),
        ("_elements", "id", "_elements"),
    ];
    for (name, value, named) in cases {
        let refused = app
            .call(kick_off_request(&admin, "/fhir/R4/$export").query(name, value))
            .await;
        outcome(&refused, 400, "invalid");
        assert!(refused.body.contains(named), "{name}: {}", refused.body);
    }
    // A filter of a type the export does not hold.
    let refused = app
        .call(
            kick_off_request(&admin, "/fhir/R4/$export")
                .query("_type", "Patient")
                .query(
                    "_typeFilter",
                    "DocumentReference?contenttype=application/pdf",
                ),
        )
        .await;
    outcome(&refused, 400, "invalid");
    assert!(refused.body.contains("does not hold"), "{}", refused.body);
    // A POST body that is no Parameters resource.
    let refused = app
        .call(
            ApiRequest::post("/fhir/R4/$export")
                .bearer(&admin)
                .header("prefer", "respond-async")
                .json(json!({ "resourceType": "Patient" })),
        )
        .await;
    outcome(&refused, 400, "invalid");
    // A group id that is no id names no group.
    let refused = app
        .call(kick_off_request(&admin, "/fhir/R4/Group/not-an-id/$export"))
        .await;
    outcome(&refused, 404, "not-found");
    // AuditEvent is a system-level type only.
    let refused = app
        .call(kick_off_request(&admin, "/fhir/R4/Patient/$export").query("_type", "AuditEvent"))
        .await;
    outcome(&refused, 400, "invalid");
    // None of them left a job behind.
    let jobs = jobs_recorded(&app).await;
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn an_unknown_type_is_skipped_and_reported_under_lenient_handling() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let anna = patient(&app, &admin, json!({"name": "Anna Lenient"})).await;
    let status = kick_off(
        &app,
        kick_off_request(&admin, "/fhir/R4/Patient/$export")
            .header("prefer", "respond-async, handling=lenient")
            .query("_type", "Patient,Observation")
            .query("_outputFormat", "application/ndjson"),
    )
    .await;
    let manifest = manifest(&app, &admin, &status).await;
    assert_eq!(
        ids_of(resources_of(&manifest).await.get("Patient")),
        vec![anna]
    );
    let errors = manifest["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{manifest}");
    assert_eq!(errors[0]["type"], "OperationOutcome");
    let issues = lines_at(errors[0]["url"].as_str().unwrap()).await;
    assert!(issues[0]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Observation"));
}

#[tokio::test]
async fn since_and_type_filter_narrow_the_export() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let old = patient(&app, &admin, json!({"name": "Olga Before"})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let anna = patient(&app, &admin, json!({"name": "Anna After"})).await;
    let bob = patient(&app, &admin, json!({"name": "Bob After"})).await;

    let status = kick_off(
        &app,
        kick_off_request(&admin, "/fhir/R4/Patient/$export")
            .query("_type", "Patient")
            .query("_since", &since),
    )
    .await;
    let exported = resources_of(&manifest(&app, &admin, &status).await).await;
    assert_eq!(
        ids_of(exported.get("Patient")),
        sorted(vec![anna.clone(), bob])
    );
    assert!(!ids_of(exported.get("Patient")).contains(&old));

    // POST with a Parameters resource; _typeFilter is the Patient search's own.
    let filtered = app
        .call(
            ApiRequest::post("/fhir/R4/Patient/$export")
                .bearer(&admin)
                .header("prefer", "respond-async")
                .json(json!({
                    "resourceType": "Parameters",
                    "parameter": [
                        { "name": "_type", "valueString": "Patient" },
                        { "name": "_typeFilter", "valueString": "Patient?name=anna" },
                    ],
                })),
        )
        .await;
    assert_eq!(filtered.status, 202, "{}", filtered.body);
    let status = status_path(&filtered);
    let exported = resources_of(&manifest(&app, &admin, &status).await).await;
    assert_eq!(ids_of(exported.get("Patient")), vec![anna]);
}

#[tokio::test]
async fn a_group_export_holds_its_members_and_their_documents() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let (member, report, pending, _) = with_documents(&app, &admin).await;
    let outsider = patient(&app, &admin, json!({"name": "Not In The Group"})).await;
    let group = app
        .call(
            ApiRequest::post("/fhir/R4/Group")
                .bearer(&admin)
                .json(json!({
                    "resourceType": "Group", "type": "person", "actual": true, "name": "Cohort",
                    "member": [{ "entity": { "reference": format!("Patient/{member}") } }],
                })),
        )
        .await
        .json();
    let id = group["id"].as_str().unwrap();
    let status = kick_off(
        &app,
        kick_off_request(&admin, &format!("/fhir/R4/Group/{id}/$export")),
    )
    .await;
    let exported = resources_of(&manifest(&app, &admin, &status).await).await;
    assert_eq!(ids_of(exported.get("Patient")), vec![member]);
    assert!(!ids_of(exported.get("Patient")).contains(&outsider));
    assert_eq!(
        ids_of(exported.get("DocumentReference")),
        sorted(vec![report, pending])
    );
    assert!(!exported.contains_key("AuditEvent"));

    let unknown = app
        .call(kick_off_request(
            &admin,
            &format!("/fhir/R4/Group/{}/$export", uuid::Uuid::new_v4()),
        ))
        .await;
    outcome(&unknown, 404, "not-found");
}

#[tokio::test]
async fn an_export_holds_the_database_as_of_its_transaction_time() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let anna = patient(&app, &admin, json!({"name": "Anna Original"})).await;
    let (owner, report, pending, _) = with_documents(&app, &admin).await;
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
    // Planned: the snapshot is taken.
    let plan = api_tests::receive_event(&app.export_queue)
        .await
        .expect("the plan message");
    let response = app.invoke_export_worker(&plan).await;
    api_tests::delete_done(&app.export_queue, &plan, &response).await;

    // Writes while the chunks wait: a rename, a new patient, a deletion with its documents.
    let renamed = app
        .call(
            ApiRequest::put(&format!("/api/v1/patients/{anna}"))
                .bearer(&admin)
                .json(json!({"name": "Anna Renamed"})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let late = patient(&app, &admin, json!({"name": "Late Arrival"})).await;
    let deleted = app
        .call(ApiRequest::delete(&format!("/api/v1/patients/{owner}")).bearer(&admin))
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);

    let manifest = manifest(&app, &admin, &status).await;
    let exported = resources_of(&manifest).await;
    assert_eq!(
        ids_of(exported.get("Patient")),
        sorted(vec![anna.clone(), owner])
    );
    assert!(!ids_of(exported.get("Patient")).contains(&late));
    let anna_line = exported["Patient"]
        .iter()
        .find(|p| p["id"] == anna)
        .unwrap();
    assert_eq!(anna_line["name"][0]["text"], "Anna Original");
    assert_eq!(
        ids_of(exported.get("DocumentReference")),
        sorted(vec![report, pending])
    );
}

#[tokio::test]
async fn a_worker_killed_mid_chunk_leaves_every_resource_exactly_once() {
    // Files of a few lines each: a chunk is many uploads, so a worker stopped after some time
    // is stopped in the middle of one.
    let app = TestApp::with_settings(&[("EXPORT_FILE_MAX_BYTES", "400")]).await;
    let admin = app.superuser_token().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(patient(&app, &admin, json!({"name": format!("Patient Number{n}")})).await);
    }
    let status = kick_off(
        &app,
        kick_off_request(&admin, "/fhir/R4/Patient/$export").query("_type", "Patient"),
    )
    .await;
    let plan = api_tests::receive_event(&app.export_queue).await.unwrap();
    let response = app.invoke_export_worker(&plan).await;
    api_tests::delete_done(&app.export_queue, &plan, &response).await;
    let chunk = api_tests::receive_event(&app.export_queue)
        .await
        .expect("the chunk message");

    // Stopped (the future dropped: no more code of it runs) once it has written some files.
    let prefix = format!("exports/{}/", status.rsplit('/').next().unwrap());
    let mut budget = Duration::from_millis(20);
    loop {
        let attempt = tokio::time::timeout(budget, app.invoke_export_worker(&chunk)).await;
        assert!(
            attempt.is_err(),
            "the chunk finished within {budget:?}: give it more files"
        );
        if !app.objects_under(&prefix).await.is_empty() {
            break;
        }
        budget *= 2;
    }
    // Never deleted: SQS delivers it again after its visibility timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manifest = manifest(&app, &admin, &status).await;
    let files = manifest["output"].as_array().unwrap().len();
    assert!(files > 5, "split into files of a few lines: {files}");
    let exported = resources_of(&manifest).await;
    let exported_ids: Vec<String> = exported["Patient"]
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported_ids.len(), 40, "no line lost or repeated");
    assert_eq!(sorted(exported_ids), sorted(ids));
}

#[tokio::test]
async fn a_client_runs_one_export_at_a_time_and_cancels_it() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    patient(&app, &admin, json!({"name": "Cancelled Export"})).await;
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/$export")).await;
    let second = app.call(kick_off_request(&admin, "/fhir/R4/$export")).await;
    outcome(&second, 429, "throttled");
    assert!(second.header("retry-after").is_some());

    // Cancelled once written: its files go, its status is gone.
    let manifest = manifest(&app, &admin, &status).await;
    let first_url = manifest["output"][0]["url"].as_str().unwrap().to_owned();
    let cancelled = app.call(ApiRequest::delete(&status).bearer(&admin)).await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    outcome(&poll(&app, &admin, &status).await, 404, "not-found");
    outcome(
        &app.call(ApiRequest::delete(&status).bearer(&admin)).await,
        404,
        "not-found",
    );
    let prefix = format!("exports/{}/", status.rsplit('/').next().unwrap());
    assert!(app.objects_under(&prefix).await.is_empty());
    assert_eq!(
        api_tests::http_client()
            .get(&first_url)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Cancelled while it runs: the worker's steps find it gone and leave nothing.
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/$export")).await;
    let plan = api_tests::receive_event(&app.export_queue).await.unwrap();
    let response = app.invoke_export_worker(&plan).await;
    api_tests::delete_done(&app.export_queue, &plan, &response).await;
    let cancelled = app.call(ApiRequest::delete(&status).bearer(&admin)).await;
    assert_eq!(cancelled.status, 202);
    app.run_export_jobs().await;
    let prefix = format!("exports/{}/", status.rsplit('/').next().unwrap());
    assert!(app.objects_under(&prefix).await.is_empty());
    outcome(&poll(&app, &admin, &status).await, 404, "not-found");
    // And the client may start another.
    kick_off(&app, kick_off_request(&admin, "/fhir/R4/$export")).await;
}

#[tokio::test]
async fn the_sample_queue_event_of_a_job_that_is_gone_is_done_without_a_retry() {
    let app = TestApp::new().await;
    let event = api_tests::event("bulk-export/sqs-plan.json");
    let response = app.invoke_export_worker(&event).await;
    assert_eq!(response, json!({ "batchItemFailures": [] }));
    // A message that is no job step is reported failed: it goes to the dead-letter queue.
    let mut malformed = event.clone();
    malformed["Records"][0]["body"] = json!("{\"step\": \"unknown\"}");
    let response = app.invoke_export_worker(&malformed).await;
    assert_eq!(
        response["batchItemFailures"][0]["itemIdentifier"],
        event["Records"][0]["messageId"]
    );
}

#[tokio::test]
async fn a_step_that_fails_on_its_last_delivery_fails_the_job_with_a_500() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    patient(&app, &admin, json!({"name": "Failed Export"})).await;
    let status = kick_off(
        &app,
        kick_off_request(&admin, "/fhir/R4/Patient/$export").query("_type", "Patient"),
    )
    .await;
    let plan = api_tests::receive_event(&app.export_queue).await.unwrap();
    let response = app.invoke_export_worker(&plan).await;
    api_tests::delete_done(&app.export_queue, &plan, &response).await;
    // The rows copied for the chunk are gone: no retry can write it.
    app.db
        .client()
        .await
        .execute("DELETE FROM bulk_export_patients", &[])
        .await
        .unwrap();
    let mut chunk = api_tests::receive_event(&app.export_queue).await.unwrap();
    let first = app.invoke_export_worker(&chunk).await;
    assert_eq!(first["batchItemFailures"].as_array().unwrap().len(), 1);
    outcome_of_running(&poll(&app, &admin, &status).await);
    // Its last delivery (SQS's count in the same payload): the job fails.
    chunk["Records"][0]["attributes"]["ApproximateReceiveCount"] = json!("5");
    let last = app.invoke_export_worker(&chunk).await;
    assert_eq!(last["batchItemFailures"].as_array().unwrap().len(), 1);
    let failed = poll(&app, &admin, &status).await;
    outcome(&failed, 500, "exception");
    assert!(failed.body.contains("failed"), "{}", failed.body);
    let prefix = format!("exports/{}/", status.rsplit('/').next().unwrap());
    assert!(app.objects_under(&prefix).await.is_empty());
    // The client may start again.
    kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
}

fn outcome_of_running(response: &ApiResponse) {
    assert_eq!(response.status, 202, "still running: {}", response.body);
}

#[tokio::test]
async fn a_job_that_stalled_fails_and_blocks_no_new_one() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
    // No step ran for hours (every delivery of its plan crashed the worker, say).
    let id = uuid::Uuid::parse_str(status.rsplit('/').next().unwrap()).unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE bulk_exports SET touched_at = now() - interval '4 hours' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let failed = poll(&app, &admin, &status).await;
    outcome(&failed, 500, "exception");
    assert!(failed.body.contains("no progress"), "{}", failed.body);
    kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
}

#[tokio::test]
async fn a_cancel_never_waits_on_a_plan_in_progress() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let status = kick_off(&app, kick_off_request(&admin, "/fhir/R4/Patient/$export")).await;
    let id = uuid::Uuid::parse_str(status.rsplit('/').next().unwrap()).unwrap();
    // A plan holds the job's row with a key-share lock for as long as its copy takes.
    let mut planning = app.db.client().await;
    let plan = planning.transaction().await.unwrap();
    plan.query_one(
        "SELECT status FROM bulk_exports WHERE id = $1 FOR KEY SHARE",
        &[&id],
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let cancelled = app.call(ApiRequest::delete(&status).bearer(&admin)).await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    plan.rollback().await.unwrap();
    outcome(&poll(&app, &admin, &status).await, 404, "not-found");
    // The queue's steps: the plan finds it cancelled, the clean-up removes it.
    app.run_export_jobs().await;
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM bulk_exports WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_kick_off_the_queue_cannot_take_answers_503_and_leaves_no_job() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    // The FHIR function cold-started with a queue nobody answers at.
    let state = fhir::FhirState::from_env(&app.env_with(&[
        (
            "EXPORT_QUEUE_URL",
            "http://127.0.0.1:9/000000000000/nowhere",
        ),
        (
            "DATABASE_URL",
            &api_tests::function_db_url(&app.db.name, "fhir"),
        ),
    ]))
    .await
    .unwrap();
    let refused = api_tests::invoke(
        fhir::router(state),
        kick_off_request(&admin, "/fhir/R4/$export"),
    )
    .await;
    outcome(&refused, 503, "transient");
    let jobs = jobs_recorded(&app).await;
    assert_eq!(jobs, 0, "the job was withdrawn");
    // So the client is not blocked: the real queue takes its next kick-off.
    kick_off(&app, kick_off_request(&admin, "/fhir/R4/$export")).await;
}

/// How many export jobs the database holds, whatever their state.
async fn jobs_recorded(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT count(*) FROM bulk_exports", &[])
        .await
        .unwrap()
        .get(0)
}
