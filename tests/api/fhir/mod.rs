//! /fhir/R4 through API Gateway events: the CapabilityStatement, Patient read and search with
//! FHIR's search semantics over the JSON API's data, OperationOutcome errors, and the audit
//! trail the JSON API writes.
//!
//! One file per resource (`capability`, `patient` with `patient_search` and `identifiers`,
//! `document_reference`, `binary`, `audit_event`), then `paging` (Bundle links, both ways) and
//! `errors` (OperationOutcomes that no one resource owns) and `strict` (what a search cannot
//! apply is refused), and `generated` (hostile generated input: never a 5xx, never a hang). The
//! helpers every file uses are here.
//! Whole documents are also checked as snapshots (`snapshots/`), with what changes from run to
//! run redacted (`redacted()`). When a document changes on purpose, write its snapshot again with
//! `INSTA_UPDATE=always cargo nextest run -p api-tests -E 'test(snapshot)'` (or `cargo insta
//! review`) and read the change in the diff; under `CI=true` insta writes nothing, and a missing
//! or different snapshot fails the test.

mod audit_event;
mod binary;
mod capability;
mod document_reference;
mod errors;
mod export;
mod generated;
mod group;
mod identifiers;
mod paging;
mod patient;
mod patient_search;
mod strict;

use api_tests::{ApiRequest, ApiResponse, TestApp};
use serde_json::{json, Value};

async fn patient(app: &TestApp, token: &str, body: Value) -> String {
    let response = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(token)
                .json(body),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["id"].as_str().unwrap().to_owned()
}

/// Creates patients one after the other (their creation order is their `_lastUpdated` order).
async fn patients(app: &TestApp, token: &str, bodies: impl Iterator<Item = Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for body in bodies {
        ids.push(patient(app, token, body).await);
    }
    ids
}

/// The first column (text) of `sql`'s rows, its one parameter the UUID `id`.
async fn texts_about(app: &TestApp, sql: &str, id: &str) -> Vec<String> {
    app.db
        .client()
        .await
        .query(sql, &[&uuid::Uuid::parse_str(id).unwrap()])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn outcome(response: &ApiResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/fhir+json")),
        "{:?}",
        response
    );
    let body = response.json();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], code, "{body}");
    assert!(body["issue"][0]["diagnostics"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
}

/// The ids of a searchset Bundle's entries, in order.
fn ids(bundle: &Value) -> Vec<String> {
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    assert_eq!(bundle["type"], "searchset");
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    assert_eq!(e["search"]["mode"], "match");
                    e["resource"]["id"].as_str().unwrap().to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn search(token: &str, query: &[(&str, &str)]) -> ApiRequest {
    let mut request = ApiRequest::get("/fhir/R4/Patient").bearer(token);
    for (k, v) in query {
        request = request.query(k, v);
    }
    request
}

/// `GET [base]/{path}` as `token`.
async fn read(app: &TestApp, token: &str, path: &str) -> ApiResponse {
    app.call(ApiRequest::get(&format!("/fhir/R4/{path}")).bearer(token))
        .await
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap()
}

/// A DocumentReference search: the ids of its Bundle, in order, and the Bundle.
async fn documents(app: &TestApp, token: &str, query: &[(String, String)]) -> (Vec<String>, Value) {
    let mut request = ApiRequest::get("/fhir/R4/DocumentReference").bearer(token);
    for (k, v) in query {
        request = request.query(k, v);
    }
    let response = app.call(request).await;
    assert_eq!(response.status, 200, "{query:?}: {}", response.body);
    let bundle = response.json();
    (ids(&bundle), bundle)
}

/// Owned query pairs, for `documents`.
fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A patient with an uploaded PDF and a pending upload: (patient id, uploaded id, pending id, bytes).
async fn with_documents(app: &TestApp, token: &str) -> (String, String, String, Vec<u8>) {
    let patient_id = patient(app, token, json!({"name": "Doc Owner"})).await;
    let create = |name: &str, mime: &str| {
        let body = json!({"patient_id": patient_id, "file_name": name, "mime_type": mime});
        app.call(
            ApiRequest::post("/api/v1/attachments/")
                .bearer(token)
                .json(body),
        )
    };
    let report = create("report.pdf", "application/pdf").await.json();
    let bytes = b"%PDF-1.7 a report".to_vec();
    assert!(api_tests::upload(&report, &bytes)
        .await
        .status()
        .is_success());
    let pending = create("scan.dcm", "application/dicom").await.json();
    (
        patient_id,
        report["id"].as_str().unwrap().to_owned(),
        pending["id"].as_str().unwrap().to_owned(),
        bytes,
    )
}

/// `GET [base]/Binary/{id}/$presigned-url?upload=true` as `token`.
async fn upload_url(app: &TestApp, token: &str, id: &str) -> ApiResponse {
    app.call(
        ApiRequest::get(&format!("/fhir/R4/Binary/{id}/$presigned-url"))
            .query("upload", "true")
            .bearer(token),
    )
    .await
}

/// PUTs `bytes` to the upload URL of a `$presigned-url?upload=true` answer's parameters, with
/// one header per `header` parameter (what the signature covers).
async fn put_to_upload_url(parameters: &[Value], bytes: Vec<u8>) -> reqwest::Response {
    let url = parameters.iter().find(|p| p["name"] == "url").unwrap()["valueUrl"]
        .as_str()
        .unwrap();
    let mut put = api_tests::http_client().put(url).body(bytes);
    for p in parameters.iter().filter(|p| p["name"] == "header") {
        let (name, value) = p["valueString"].as_str().unwrap().split_once(": ").unwrap();
        put = put.header(name, value);
    }
    put.send().await.unwrap()
}

/// The bytes behind a redirect's `Location` (a Binary read).
async fn download(redirect: &ApiResponse) -> Vec<u8> {
    api_tests::http_client()
        .get(redirect.header("location").unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn links(bundle: &Value) -> Vec<(String, String)> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["relation"].as_str().unwrap().to_owned(),
                l["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The request a Bundle link names.
fn follow(token: &str, url: &str) -> ApiRequest {
    let (path, query) = url
        .split_once("/fhir/R4")
        .unwrap()
        .1
        .split_once('?')
        .unwrap();
    let mut request = ApiRequest::get(&format!("/fhir/R4{path}")).bearer(token);
    for (k, v) in form_pairs(query) {
        request = request.query(&k, &v);
    }
    request
}

/// Follows a search's `next` links to the end, then its `previous` links back to the start:
/// both walks must give the same pages (the first without a previous link, a previous page's
/// `next` going forward again). The pages' ids, in order.
async fn walk_both_ways(app: &TestApp, token: &str, first: ApiRequest) -> Vec<Vec<String>> {
    let mut pages = vec![app.call(first).await.json()];
    assert!(links(&pages[0]).iter().all(|(r, _)| r != "previous"));
    while let Some((_, next)) = links(pages.last().unwrap())
        .into_iter()
        .find(|(r, _)| r == "next")
    {
        pages.push(app.call(follow(token, &next)).await.json());
    }
    let forward: Vec<Vec<String>> = pages.iter().map(ids).collect();
    let mut back = vec![ids(pages.last().unwrap())];
    let mut page = pages.last().unwrap().clone();
    while let Some((_, previous)) = links(&page).into_iter().find(|(r, _)| r == "previous") {
        page = app.call(follow(token, &previous)).await.json();
        assert_eq!(page["total"], pages[0]["total"]);
        back.push(ids(&page));
    }
    back.reverse();
    assert_eq!(back, forward);
    if forward.len() > 1 {
        let (_, next) = links(&page).into_iter().find(|(r, _)| r == "next").unwrap();
        assert_eq!(
            ids(&app.call(follow(token, &next)).await.json()),
            forward[1]
        );
    }
    forward
}

/// The settings a whole document is snapshotted with: what differs from one run to the next is
/// redacted, so a snapshot holds only what the server decides. Ids are random, instants are the
/// clock's, versions move with each write and with the crate, ports with the local stack; a
/// string that embeds an id, a cursor (which encodes a row's sort key and id) or a port keeps
/// its shape with that part replaced. Selectors that a document does not have match nothing.
fn redacted() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_sort_maps(true);
    for selector in [
        ".**.lastUpdated",
        ".**.recorded",
        ".**.date",
        ".**.creation",
    ] {
        settings.add_redaction(selector, "[instant]");
    }
    for selector in [".**.versionId", ".software.version"] {
        settings.add_redaction(selector, "[version]");
    }
    for selector in [
        ".**.id",
        ".**.reference",
        ".**.fullUrl",
        ".**.url",
        ".**.value",
        ".**.display",
    ] {
        settings.add_redaction(
            selector,
            insta::dynamic_redaction(|value, _| match value.as_str() {
                Some(text) => stable_text(text).into(),
                None => value,
            }),
        );
    }
    settings
}

/// `text` with a URL's port replaced by `[port]`, every UUID (hyphenated, or the 32 digits of
/// the simple form that test users' addresses carry) by `[id]` and a `_cursor` parameter's value
/// by `[cursor]`.
fn stable_text(text: &str) -> String {
    let text = without_port(text);
    let hyphenated = |s: &str| {
        s.len() >= 36
            && s.as_bytes()[..36].iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    };
    let simple = |s: &str| {
        let digits = s.bytes().take_while(u8::is_ascii_hexdigit).count();
        digits == 32 && !s[32..].starts_with(|c: char| c.is_ascii_alphanumeric())
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(c) = rest.chars().next() {
        let at_word_start = !out.ends_with(|c: char| c.is_ascii_alphanumeric());
        if hyphenated(rest) {
            out.push_str("[id]");
            rest = &rest[36..];
        } else if at_word_start && simple(rest) {
            out.push_str("[id]");
            rest = &rest[32..];
        } else if let Some(cursor) = rest.strip_prefix("_cursor=") {
            out.push_str("_cursor=[cursor]");
            rest = &cursor[cursor.find('&').unwrap_or(cursor.len())..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A URL with its authority's port (if any) replaced by `[port]`; any other text as it is.
fn without_port(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{scheme}://{host}:[port]{path}")
        }
        _ => text.to_owned(),
    }
}

#[test]
fn stable_text_redacts_ids_cursors_and_ports() {
    assert_eq!(
        stable_text("Patient/0b9e4f2c-3d1a-4c5e-9f8a-7b6c5d4e3f21"),
        "Patient/[id]"
    );
    assert_eq!(
        stable_text("https://api.carevault.test/fhir/R4/Patient?name=x&_cursor=abc.DEF-1&_count=2"),
        "https://api.carevault.test/fhir/R4/Patient?name=x&_cursor=[cursor]&_count=2"
    );
    assert_eq!(
        stable_text("http://127.0.0.1:9101/bucket/key:1?x=1"),
        "http://127.0.0.1:[port]/bucket/key:1?x=1"
    );
    assert_eq!(
        stable_text("clinician-90fbef50acea4bbcb37c4f2ca2cd55a8@example.com"),
        "clinician-[id]@example.com"
    );
    assert_eq!(stable_text("anna@example.com"), "anna@example.com");
    assert_eq!(stable_text("Dr. José"), "Dr. José");
}
