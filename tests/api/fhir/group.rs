//! Group: cohorts of patients, created, read, updated, deleted and searched through FHIR, each
//! refusal an OperationOutcome.

use api_tests::{ApiRequest, TestApp};
use serde_json::{json, Value};

use super::{ids, outcome, patient, read};

fn cohort(name: &str, members: &[&str]) -> Value {
    json!({
        "resourceType": "Group",
        "type": "person",
        "actual": true,
        "name": name,
        "member": members
            .iter()
            .map(|id| json!({ "entity": { "reference": format!("Patient/{id}") } }))
            .collect::<Vec<_>>(),
    })
}

async fn create(app: &TestApp, token: &str, body: Value) -> api_tests::ApiResponse {
    app.call(ApiRequest::post("/fhir/R4/Group").bearer(token).json(body))
        .await
}

/// The patient ids a Group lists, sorted.
fn members(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["member"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    m["entity"]["reference"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("Patient/")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_clinician_creates_reads_updates_and_deletes_a_cohort() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let anna = patient(&app, &token, json!({"name": "Anna Cohort"})).await;
    let ben = patient(&app, &token, json!({"name": "Ben Cohort"})).await;

    let created = create(&app, &token, cohort("Asthma study", &[&anna])).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.json();
    let id = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["type"], "person");
    assert_eq!(group["actual"], true);
    assert_eq!(group["quantity"], 1);
    assert_eq!(members(&group), vec![anna.clone()]);
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(created
        .header("location")
        .is_some_and(|l| l.ends_with(&format!("/Group/{id}/_history/1"))));

    let mut changed = cohort("Asthma study, phase 2", &[&anna, &ben]);
    changed["id"] = json!(id);
    let updated = app
        .call(
            ApiRequest::put(&format!("/fhir/R4/Group/{id}"))
                .bearer(&token)
                .header("if-match", "W/\"1\"")
                .json(changed.clone()),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let mut both = vec![anna.clone(), ben.clone()];
    both.sort();
    assert_eq!(members(&updated.json()), both);

    // A write from a stale version is refused.
    let stale = app
        .call(
            ApiRequest::put(&format!("/fhir/R4/Group/{id}"))
                .bearer(&token)
                .header("if-match", "W/\"1\"")
                .json(changed),
        )
        .await;
    outcome(&stale, 412, "conflict");

    let read_back = read(&app, &token, &format!("Group/{id}")).await;
    assert_eq!(read_back.status, 200);
    assert_eq!(read_back.json()["name"], "Asthma study, phase 2");

    let deleted = app
        .call(ApiRequest::delete(&format!("/fhir/R4/Group/{id}")).bearer(&token))
        .await;
    assert_eq!(deleted.status, 204);
    outcome(
        &read(&app, &token, &format!("Group/{id}")).await,
        404,
        "not-found",
    );
    // Its members are still patients.
    assert_eq!(
        read(&app, &token, &format!("Patient/{anna}")).await.status,
        200
    );
}

#[tokio::test]
async fn groups_are_found_by_name_and_by_member() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let anna = patient(&app, &token, json!({"name": "Anna Member"})).await;
    let ben = patient(&app, &token, json!({"name": "Ben Member"})).await;
    let asthma = create(&app, &token, cohort("Asthma study", &[&anna]))
        .await
        .json();
    let diabetes = create(&app, &token, cohort("Diabetes registry", &[&anna, &ben]))
        .await
        .json();

    let by_name = app
        .call(
            ApiRequest::get("/fhir/R4/Group")
                .bearer(&token)
                .query("name", "asth"),
        )
        .await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    assert_eq!(ids(&by_name.json()), vec![asthma["id"].as_str().unwrap()]);
    // A search's entry counts the members and says it lists none (a read lists them).
    let entry = &by_name.json()["entry"][0]["resource"];
    assert_eq!(entry["quantity"], 1);
    assert!(entry.get("member").is_none());
    assert_eq!(entry["meta"]["tag"][0]["code"], "SUBSETTED");

    let by_member = app
        .call(
            ApiRequest::get("/fhir/R4/Group")
                .bearer(&token)
                .query("member", &format!("Patient/{ben}")),
        )
        .await;
    assert_eq!(
        ids(&by_member.json()),
        vec![diabetes["id"].as_str().unwrap()]
    );

    // Newest first; the total counts every match.
    let all = app
        .call(
            ApiRequest::get("/fhir/R4/Group")
                .bearer(&token)
                .query("member", &format!("Patient/{anna}")),
        )
        .await
        .json();
    assert_eq!(all["total"], 2);
    assert_eq!(
        ids(&all),
        vec![
            diabetes["id"].as_str().unwrap(),
            asthma["id"].as_str().unwrap()
        ]
    );

    let bad = app
        .call(
            ApiRequest::get("/fhir/R4/Group")
                .bearer(&token)
                .query("member", "Practitioner/x"),
        )
        .await;
    outcome(&bad, 400, "invalid");
}

#[tokio::test]
async fn a_deleted_patient_leaves_its_groups() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let anna = patient(&app, &token, json!({"name": "Anna Leaves"})).await;
    let ben = patient(&app, &token, json!({"name": "Ben Stays"})).await;
    let group = create(&app, &token, cohort("Follow-up", &[&anna, &ben]))
        .await
        .json();
    let gone = app
        .call(ApiRequest::delete(&format!("/fhir/R4/Patient/{anna}")).bearer(&token))
        .await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    let read_back = read(
        &app,
        &token,
        &format!("Group/{}", group["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(members(&read_back.json()), vec![ben]);
}

#[tokio::test]
async fn a_group_that_is_not_a_cohort_of_known_patients_is_refused() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let mut not_person = cohort("Devices", &[]);
    not_person["type"] = json!("device");
    let refused = create(&app, &token, not_person).await;
    outcome(&refused, 422, "business-rule");
    assert!(refused.body.contains("Group.type"), "{}", refused.body);

    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = create(&app, &token, cohort("Ghosts", &[&unknown])).await;
    outcome(&refused, 422, "business-rule");
    assert!(refused.body.contains(&unknown), "{}", refused.body);

    let mut bad_reference = cohort("Bad", &[]);
    bad_reference["member"] = json!([{ "entity": { "reference": "Practitioner/1" } }]);
    outcome(
        &create(&app, &token, bad_reference).await,
        422,
        "business-rule",
    );

    let mut unnamed = cohort("x", &[]);
    unnamed.as_object_mut().unwrap().remove("name");
    outcome(&create(&app, &token, unnamed).await, 422, "business-rule");

    // Nothing was written.
    let all = app
        .call(ApiRequest::get("/fhir/R4/Group").bearer(&token))
        .await
        .json();
    assert_eq!(all["total"], 0, "{all}");
}

#[tokio::test]
async fn groups_need_a_token_a_writer_role_and_a_known_id() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    let refused = create(&app, &viewer, cohort("Viewers cannot", &[])).await;
    outcome(&refused, 403, "forbidden");
    let anonymous = app
        .call(ApiRequest::post("/fhir/R4/Group").json(cohort("Nobody", &[])))
        .await;
    outcome(&anonymous, 401, "login");
    // A viewer reads and searches.
    let search = app
        .call(ApiRequest::get("/fhir/R4/Group").bearer(&viewer))
        .await;
    assert_eq!(search.status, 200, "{}", search.body);
    let missing = read(&app, &viewer, &format!("Group/{}", uuid::Uuid::new_v4())).await;
    outcome(&missing, 404, "not-found");
    outcome(
        &read(&app, &viewer, "Group/not-a-uuid").await,
        404,
        "not-found",
    );
}
