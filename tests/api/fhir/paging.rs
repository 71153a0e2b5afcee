//! Paging through searchset Bundles: totals, absolute `self` and `next` links, cursors, and
//! `previous` links walking back to the start, for Patient, DocumentReference and AuditEvent.

use api_tests::{ApiRequest, TestApp};
use serde_json::{json, Value};

use super::{
    documents, form_pairs, ids, links, outcome, patient, patients, q, redacted, search,
    texts_about, walk_both_ways, with_documents,
};

/// Five patients named "Page Person", born 1950, 1960 ... 1990, created in that order.
async fn page_people() -> (TestApp, String, Vec<String>) {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let made = patients(
        &app,
        &t,
        (0..5).map(
            |i| json!({"name": format!("Page Person {i}"), "dob": format!("19{}0-01-01", 5 + i)}),
        ),
    )
    .await;
    (app, t, made)
}

/// The first page of two of the page people, youngest first, with a parameter nobody knows.
async fn first_page(app: &TestApp, t: &str) -> Value {
    // Lenient: the unknown parameter is ignored (by default it would be 400).
    let first = app
        .call(
            search(
                t,
                &[
                    ("name", "page"),
                    ("_count", "2"),
                    ("_sort", "-birthdate"),
                    ("colour", "x"),
                ],
            )
            .header("prefer", "handling=lenient"),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    first.json()
}

#[tokio::test]
async fn a_page_answers_the_total_and_its_matches_in_sort_order() {
    let (app, t, made) = page_people().await;
    let bundle = first_page(&app, &t).await;
    assert_eq!(bundle["total"], 5);
    assert_eq!(ids(&bundle), [made[4].clone(), made[3].clone()]);
}

#[tokio::test]
async fn a_page_matches_its_snapshot() {
    let (app, t, _) = page_people().await;
    let bundle = first_page(&app, &t).await;
    redacted().bind(|| insta::assert_json_snapshot!("searchset_bundle", bundle));
}

#[tokio::test]
async fn entries_have_absolute_full_urls() {
    let (app, t, made) = page_people().await;
    let bundle = first_page(&app, &t).await;
    let entry = &bundle["entry"][0];
    assert_eq!(
        entry["fullUrl"],
        format!("https://api.carevault.test/fhir/R4/Patient/{}", made[4])
    );
}

#[tokio::test]
async fn the_self_link_shows_the_parameters_used() {
    let (app, t, _) = page_people().await;
    let bundle = first_page(&app, &t).await;
    let links = links(&bundle);
    assert_eq!(links[0].0, "self");
    // The self link shows the parameters used (the unknown one dropped).
    assert_eq!(
        links[0].1,
        "https://api.carevault.test/fhir/R4/Patient?name=page&_count=2&_sort=-birthdate"
    );
}

#[tokio::test]
async fn next_links_page_through_every_match_once_in_order() {
    let (app, t, made) = page_people().await;
    let bundle = first_page(&app, &t).await;
    let links = links(&bundle);
    assert_eq!(links[1].0, "next");
    // Follow next to the end: every patient once, in order.
    let mut seen = ids(&bundle);
    let mut next = links[1].1.clone();
    loop {
        let query = next.split_once('?').unwrap().1.to_owned();
        let mut request = ApiRequest::get("/fhir/R4/Patient").bearer(&t);
        for (k, v) in form_pairs(&query) {
            request = request.query(&k, &v);
        }
        let page = app.call(request).await.json();
        seen.extend(ids(&page));
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(link) => next = link["url"].as_str().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, made.iter().rev().cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn total_none_leaves_the_total_out_of_the_same_page() {
    let (app, t, made) = page_people().await;
    // _total=none leaves total out; the page is the same.
    let none = app
        .call(search(
            &t,
            &[
                ("name", "page"),
                ("_count", "2"),
                ("_sort", "-birthdate"),
                ("_total", "none"),
            ],
        ))
        .await
        .json();
    assert!(none.get("total").is_none());
    assert_eq!(ids(&none), [made[4].clone(), made[3].clone()]);
}

#[tokio::test]
async fn fhir_base_url_decides_the_links_when_set() {
    // FHIR_BASE_URL decides the links when set.
    let app2 =
        TestApp::with_settings(&[("FHIR_BASE_URL", "https://ehr.clinic.example/fhir/R4/")]).await;
    let t2 = app2.clinician().await.token;
    patient(&app2, &t2, json!({"name": "Based Person"})).await;
    let based = app2.call(search(&t2, &[])).await.json();
    assert!(based["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .starts_with("https://ehr.clinic.example/fhir/R4/Patient/"));
    assert_eq!(
        based["link"][0]["url"],
        "https://ehr.clinic.example/fhir/R4/Patient"
    );
}

#[tokio::test]
async fn patient_searches_page_both_ways() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let made = patients(
        &app,
        &t,
        (0..7).map(
            |i| json!({"name": format!("Walk Back {i}"), "dob": format!("19{}0-06-15", 3 + i)}),
        ),
    )
    .await;
    let forward = walk_both_ways(
        &app,
        &t,
        search(
            &t,
            &[("name", "walk"), ("_count", "3"), ("_sort", "birthdate")],
        ),
    )
    .await;
    assert_eq!(forward.concat(), made);
    assert_eq!(forward.len(), 3);
}

#[tokio::test]
async fn document_references_page_one_a_page_through_next_links() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let (patient_id, _, _, _) = with_documents(&app, &t).await;
    let (other_patient, _, _, _) = with_documents(&app, &t).await;
    let both = format!("{patient_id},{other_patient}");
    // Paging: one per page through next links.
    let (first, bundle) = documents(&app, &t, &q(&[("patient", &both), ("_count", "1")])).await;
    assert_eq!(first.len(), 1);
    assert_eq!(bundle["total"], 4);
    let mut seen = first;
    let mut next = bundle["link"][1]["url"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let (page, bundle) = documents(&app, &t, &form_pairs(url.split_once('?').unwrap().1)).await;
        seen.extend(page);
        next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (4, 4));
}

/// A patient with five pending attachments: (app, clinician's token, patient, the
/// attachments newest first).
async fn many_docs() -> (TestApp, String, String, Vec<String>) {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let owner = patient(&app, &t, json!({"name": "Many Docs"})).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let created = app
            .call(ApiRequest::post("/api/v1/attachments/").bearer(&t).json(
                json!({"patient_id": owner, "file_name": format!("{i}.pdf"), "mime_type": "application/pdf"}),
            ))
            .await;
        made.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    made.reverse();
    (app, t, owner, made)
}

#[tokio::test]
async fn document_references_page_both_ways_newest_first() {
    let (app, t, owner, made) = many_docs().await;
    let documents = walk_both_ways(
        &app,
        &t,
        ApiRequest::get("/fhir/R4/DocumentReference")
            .bearer(&t)
            .query("patient", &owner)
            .query("_count", "2"),
    )
    .await;
    assert_eq!(documents.concat(), made, "newest first");
    assert_eq!(documents.len(), 3);
}

#[tokio::test]
async fn audit_events_page_both_ways_over_every_event_of_the_patient() {
    let (app, _, owner, _) = many_docs().await;
    let admin = app.superuser_token().await;
    let events = walk_both_ways(
        &app,
        &admin,
        ApiRequest::get("/fhir/R4/AuditEvent")
            .bearer(&admin)
            .query("patient", &owner)
            .query("_total", "accurate")
            .query("_count", "2"),
    )
    .await;
    // Every event of the patient the trail holds, newest first (the walk's own reads of the
    // trail are about no patient).
    let recorded = texts_about(&app, "SELECT id::text FROM audit_events WHERE patient_id = $1 ORDER BY occurred_at DESC, id DESC", &owner).await;
    assert_eq!(events.concat(), recorded);
}

#[tokio::test]
async fn audit_events_page_through_next_links() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let id = patient(&app, &clinician.token, json!({"name": "Audited Person"})).await;
    app.call(ApiRequest::get(&format!("/api/v1/patients/{id}")).bearer(&clinician.token))
        .await;
    let admin = app.superuser_token().await;
    let search = |query: &[(&str, &str)]| {
        let mut request = ApiRequest::get("/fhir/R4/AuditEvent").bearer(&admin);
        for (k, v) in query {
            request = request.query(k, v);
        }
        app.call(request)
    };
    // Paging through next links.
    let first = search(&[("patient", &id), ("_count", "1")]).await.json();
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap();
    let query = form_pairs(next["url"].as_str().unwrap().split_once('?').unwrap().1);
    let mut request = ApiRequest::get("/fhir/R4/AuditEvent").bearer(&admin);
    for (k, v) in &query {
        request = request.query(k, v);
    }
    let second = app.call(request).await.json();
    assert_ne!(
        second["entry"][0]["resource"]["id"],
        first["entry"][0]["resource"]["id"]
    );
}

#[tokio::test]
async fn a_cursor_not_made_by_this_server_is_400() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    // A cursor not made by this server: 400.
    outcome(
        &app.call(
            ApiRequest::get("/fhir/R4/DocumentReference")
                .bearer(&t)
                .query("_cursor", "prev.nonsense"),
        )
        .await,
        400,
        "invalid",
    );
}
