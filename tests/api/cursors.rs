//! The newest-first lists (DocumentReference and AuditEvent searches, `/audit-events/`) share
//! one opaque cursor; cursors handed out before it was one format name the same pages.

use api_tests::{ApiRequest, TestApp};
use serde_json::{json, Value};

/// The ids of a Bundle's entries, in order.
fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The `_cursor` of a Bundle's link with this relation.
fn cursor(bundle: &Value, relation: &str) -> String {
    let link = bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == relation)
        .unwrap_or_else(|| panic!("no {relation} link in {bundle}"));
    let url = link["url"].as_str().unwrap();
    let query = url.split_once('?').unwrap().1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "_cursor")
        .unwrap()
        .1
}

/// A DocumentReference cursor as this server wrote them before: `<µs since 1970>_<id>` of the
/// attachment it follows.
async fn legacy_cursor(app: &TestApp, attachment_id: &str) -> String {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT (extract(epoch FROM created_at) * 1000000)::int8 FROM attachments WHERE id = $1",
            &[&uuid::Uuid::parse_str(attachment_id).unwrap()],
        )
        .await
        .unwrap();
    format!("{}_{attachment_id}", row.get::<_, i64>(0))
}

#[tokio::test]
async fn document_reference_cursors_of_the_earlier_format_name_the_same_pages() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let owner = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({"name": "Paged Docs"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..4 {
        let created = app
            .call(ApiRequest::post("/api/v1/attachments/").bearer(&t).json(
                json!({"patient_id": owner, "file_name": format!("{i}.pdf"), "mime_type": "application/pdf"}),
            ))
            .await;
        assert_eq!(created.status, 200, "{}", created.body);
    }
    let page = |cursor: Option<&str>| {
        let mut request = ApiRequest::get("/fhir/R4/DocumentReference")
            .bearer(&t)
            .query("patient", &owner)
            .query("_count", "2");
        if let Some(cursor) = cursor {
            request = request.query("_cursor", cursor);
        }
        request
    };
    let first = app.call(page(None)).await.json();
    let second = app.call(page(Some(&cursor(&first, "next")))).await.json();
    assert_eq!(ids(&second).len(), 2);
    let after_first = legacy_cursor(&app, ids(&first).last().unwrap()).await;
    let through_legacy = app.call(page(Some(&after_first))).await.json();
    assert_eq!(ids(&through_legacy), ids(&second));
    let before_second = legacy_cursor(&app, &ids(&second)[0]).await;
    let back = app
        .call(page(Some(&format!("prev.{before_second}"))))
        .await
        .json();
    assert_eq!(ids(&back), ids(&first));
    // The new cursors say nothing readable about the rows.
    let next = cursor(&first, "next");
    assert!(!next.contains(&ids(&first)[1]), "{next}");
    // A cursor names its list: the trail's lists refuse a documents' one, never a wrong page.
    let admin = app.superuser_token().await;
    let elsewhere = app
        .call(
            ApiRequest::get("/fhir/R4/AuditEvent")
                .bearer(&admin)
                .query("_cursor", &next),
        )
        .await;
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.body);
    let listed = app
        .call(
            ApiRequest::get("/api/v1/audit-events/")
                .bearer(&admin)
                .query("cursor", &next),
        )
        .await;
    assert_eq!(listed.status, 422, "{}", listed.body);
    let legacy = app
        .call(
            ApiRequest::get("/api/v1/audit-events/")
                .bearer(&admin)
                .query("cursor", &after_first),
        )
        .await;
    assert_eq!(
        legacy.status, 422,
        "the plain form was DocumentReference's: {}",
        legacy.body
    );
}

#[tokio::test]
async fn a_previous_page_cursor_is_not_a_next_page_of_the_json_audit_list() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    // Reading the trail is itself recorded: three events at least.
    for _ in 0..3 {
        app.call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&admin))
            .await;
    }
    let bundle = app
        .call(
            ApiRequest::get("/fhir/R4/AuditEvent")
                .bearer(&admin)
                .query("_count", "1"),
        )
        .await
        .json();
    let second = app
        .call(
            ApiRequest::get("/fhir/R4/AuditEvent")
                .bearer(&admin)
                .query("_count", "1")
                .query("_cursor", &cursor(&bundle, "next")),
        )
        .await
        .json();
    let previous = cursor(&second, "previous");
    let response = app
        .call(
            ApiRequest::get("/api/v1/audit-events/")
                .bearer(&admin)
                .query("cursor", &previous),
        )
        .await;
    assert_eq!(response.status, 422, "{}", response.body);
    assert_eq!(
        response.json()["detail"][0]["loc"],
        json!(["query", "cursor"])
    );
    // The next-page cursor of the FHIR search pages the JSON list the same way.
    let next = cursor(&bundle, "next");
    let listed = app
        .call(
            ApiRequest::get("/api/v1/audit-events/")
                .bearer(&admin)
                .query("cursor", &next)
                .query("limit", "1"),
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["data"][0]["id"], ids(&second)[0].as_str());
}
