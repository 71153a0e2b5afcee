//! /fhir/R4 through API Gateway events: the CapabilityStatement, Patient read and search with
//! FHIR's search semantics over the JSON API's data, OperationOutcome errors, and the audit
//! trail the JSON API writes.

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

#[tokio::test]
async fn the_capability_statement_says_what_is_served_without_a_token() {
    let app = TestApp::new().await;
    let response = app.call(ApiRequest::get("/fhir/R4/metadata")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    let statement = response.json();
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["kind"], "instance");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    assert_eq!(statement["format"], json!(["json"]));
    let patient = &statement["rest"][0]["resource"][0];
    assert_eq!(patient["type"], "Patient");
    let interactions: Vec<&str> = patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        interactions,
        ["read", "search-type", "create", "update", "delete"]
    );
    assert_eq!(patient["versioning"], "versioned-update");
    assert_eq!(patient["readHistory"], false);
    for param in patient["searchParam"].as_array().unwrap() {
        assert!(param["definition"]
            .as_str()
            .unwrap()
            .starts_with("http://hl7.org/fhir/SearchParameter/"));
    }
    // Nothing that is not served.
    let served: Vec<(&str, Vec<&str>)> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap(),
                r["interaction"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["code"].as_str().unwrap())
                    .collect(),
            )
        })
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
            ("AuditEvent", vec!["read", "search-type"]),
        ]
    );
    let patient = &statement["rest"][0]["resource"][0];
    assert_eq!(patient["conditionalCreate"], true);
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
    assert_eq!(
        statement["rest"][0]["resource"][2]["operation"][0]["name"],
        "presigned-url"
    );
}

#[tokio::test]
async fn a_patient_reads_as_a_fhir_resource_with_its_version() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let id = patient(
        &app,
        &clinician,
        json!({"name": "Anna Smith-Jones", "dob": "1980-02-29", "contact_info": "anna@example.com",
               "medical_history": "Asthma since childhood."}),
    )
    .await;
    let viewer = app.viewer().await.token;
    let response = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{id}")).bearer(&viewer))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
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

    // A phone number, a name that does not split cleanly, nothing else.
    let other = patient(
        &app,
        &clinician,
        json!({"name": "Dr. X", "contact_info": "+44 20 7946 0000"}),
    )
    .await;
    let other = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{other}")).bearer(&viewer))
        .await
        .json();
    assert_eq!(
        other["name"][0],
        json!({"use": "official", "text": "Dr. X"})
    );
    assert_eq!(other["telecom"][0]["system"], "phone");
    assert!(other.get("birthDate").is_none() && other.get("extension").is_none());

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

#[tokio::test]
async fn errors_are_operation_outcomes() {
    let app = TestApp::new().await;
    let viewer = app.viewer().await.token;
    let unknown = uuid::Uuid::new_v4();
    let missing = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{unknown}")))
        .await;
    outcome(&missing, 401, "login");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    outcome(
        &app.call(
            ApiRequest::get(&format!("/fhir/R4/Patient/{unknown}")).bearer("forged.token.here"),
        )
        .await,
        401,
        "login",
    );
    outcome(
        &app.call(ApiRequest::get(&format!("/fhir/R4/Patient/{unknown}")).bearer(&viewer))
            .await,
        404,
        "not-found",
    );
    outcome(
        &app.call(ApiRequest::get("/fhir/R4/Patient/not-a-uuid").bearer(&viewer))
            .await,
        404,
        "not-found",
    );
    outcome(
        &app.call(ApiRequest::get("/fhir/R4/Observation").bearer(&viewer))
            .await,
        404,
        "not-found",
    );
    outcome(
        &app.call(search(&viewer, &[("birthdate", "1980-13")])).await,
        400,
        "invalid",
    );
    outcome(
        &app.call(search(&viewer, &[("_sort", "colour")])).await,
        400,
        "invalid",
    );
    outcome(
        &app.call(search(&viewer, &[("_total", "some")])).await,
        400,
        "invalid",
    );
    outcome(
        &app.call(search(&viewer, &[("_cursor", "nonsense")])).await,
        400,
        "invalid",
    );
    outcome(
        &app.call(search(&viewer, &[("_count", "many")])).await,
        400,
        "invalid",
    );
    // An inactive user's token is refused as in the JSON API.
    let inactive = app.viewer().await;
    let admin = app.superuser_token().await;
    app.call(
        ApiRequest::patch(&format!("/api/v1/users/{}", inactive.id))
            .bearer(&admin)
            .json(json!({"is_active": false})),
    )
    .await;
    outcome(
        &app.call(search(&inactive.token, &[])).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn search_follows_fhir_semantics_over_the_same_index() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let anna = patient(
        &app,
        &t,
        json!({"name": "Anna Smith-Jones", "dob": "1980-02-29"}),
    )
    .await;
    let annabel = patient(
        &app,
        &t,
        json!({"name": "Annabel Lee", "dob": "1981-06-01"}),
    )
    .await;
    let bob = patient(
        &app,
        &t,
        json!({"name": "Bob O'Brien", "dob": "1979-12-31"}),
    )
    .await;
    let nodob = patient(&app, &t, json!({"name": "Ann Nodate"})).await;
    let found = |query: &'static [(&'static str, &'static str)]| {
        let (app, t) = (&app, &t);
        async move {
            let response = app.call(search(t, query)).await;
            assert_eq!(response.status, 200, "{query:?}: {}", response.body);
            let mut got = ids(&response.json());
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    // Each word starts a word of the name, accents and case aside; repeated is AND.
    assert_eq!(
        found(&[("name", "ann")]).await,
        sorted(vec![&anna, &annabel, &nodob])
    );
    assert_eq!(found(&[("name", "SMITH-jo")]).await, vec![anna.clone()]);
    assert_eq!(
        found(&[("name", "ann"), ("name", "lee")]).await,
        vec![annabel.clone()]
    );
    assert_eq!(found(&[("name", "obrien")]).await, vec![bob.clone()]);
    assert_eq!(
        found(&[("name:exact", "Annabel Lee")]).await,
        vec![annabel.clone()]
    );
    assert_eq!(
        found(&[("name:exact", "annabel lee")]).await,
        Vec::<String>::new()
    );
    // Dates: partial, with prefixes, repeated is AND; no birth date matches no date.
    assert_eq!(found(&[("birthdate", "1980")]).await, vec![anna.clone()]);
    assert_eq!(found(&[("birthdate", "1980-02")]).await, vec![anna.clone()]);
    assert_eq!(
        found(&[("birthdate", "eq1980-02-29")]).await,
        vec![anna.clone()]
    );
    assert_eq!(
        found(&[("birthdate", "ge1980")]).await,
        sorted(vec![&anna, &annabel])
    );
    assert_eq!(
        found(&[("birthdate", "gt1980")]).await,
        vec![annabel.clone()]
    );
    assert_eq!(found(&[("birthdate", "lt1980")]).await, vec![bob.clone()]);
    assert_eq!(
        found(&[("birthdate", "le1980-02-29")]).await,
        sorted(vec![&anna, &bob])
    );
    assert_eq!(
        found(&[("birthdate", "ne1980")]).await,
        sorted(vec![&annabel, &bob])
    );
    assert_eq!(
        found(&[("birthdate", "ge1979-12-31"), ("birthdate", "lt1981")]).await,
        sorted(vec![&anna, &bob])
    );
    // _id takes several (any of them); unknown parameters are ignored.
    let ids_query = format!("{anna},{bob},not-a-uuid");
    let response = app
        .call(search(&t, &[("_id", &ids_query), ("colour", "blue")]))
        .await;
    let mut got = ids(&response.json());
    got.sort();
    assert_eq!(got, sorted(vec![&anna, &bob]));
    // ... unless the client asks for strict handling.
    let strict = app
        .call(search(&t, &[("colour", "blue")]).header("prefer", "handling=strict"))
        .await;
    outcome(&strict, 400, "invalid");
    assert!(strict.body.contains("colour"));
}

#[tokio::test]
async fn search_pages_by_cursor_with_absolute_links_and_totals() {
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
    let first = app
        .call(search(
            &t,
            &[
                ("name", "page"),
                ("_count", "2"),
                ("_sort", "-birthdate"),
                ("colour", "x"),
            ],
        ))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let bundle = first.json();
    assert_eq!(bundle["total"], 5);
    assert_eq!(ids(&bundle), [made[4].clone(), made[3].clone()]);
    let entry = &bundle["entry"][0];
    assert_eq!(
        entry["fullUrl"],
        format!("https://api.carevault.test/fhir/R4/Patient/{}", made[4])
    );
    let links: Vec<(&str, &str)> = bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["relation"].as_str().unwrap(), l["url"].as_str().unwrap()))
        .collect();
    assert_eq!(links[0].0, "self");
    // The self link shows the parameters used (the unknown one dropped).
    assert_eq!(
        links[0].1,
        "https://api.carevault.test/fhir/R4/Patient?name=page&_count=2&_sort=-birthdate"
    );
    assert_eq!(links[1].0, "next");
    // Follow next to the end: every patient once, in order.
    let mut seen = ids(&bundle);
    let mut next = links[1].1.to_owned();
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

fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap()
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

#[tokio::test]
async fn attachments_are_document_references_and_their_bytes_binaries() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let (patient_id, report, pending, bytes) = with_documents(&app, &clinician).await;
    let viewer = app.viewer().await.token;

    let read = app
        .call(ApiRequest::get(&format!("/fhir/R4/DocumentReference/{report}")).bearer(&viewer))
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    let document = read.json();
    assert_eq!(document["resourceType"], "DocumentReference");
    assert_eq!(document["status"], "current");
    assert_eq!(document["docStatus"], "final");
    assert_eq!(
        document["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let attachment = &document["content"][0]["attachment"];
    assert_eq!(attachment["contentType"], "application/pdf");
    assert_eq!(attachment["title"], "report.pdf");
    assert_eq!(attachment["size"], bytes.len());
    let binary_url = format!("https://api.carevault.test/fhir/R4/Binary/{report}");
    assert_eq!(attachment["url"], binary_url);
    let pending_doc = app
        .call(ApiRequest::get(&format!("/fhir/R4/DocumentReference/{pending}")).bearer(&viewer))
        .await
        .json();
    assert_eq!(pending_doc["docStatus"], "preliminary");

    // Binary: a redirect to the bytes, never kept by a cache.
    let binary = app
        .call(ApiRequest::get(&format!("/fhir/R4/Binary/{report}")).bearer(&viewer))
        .await;
    assert_eq!(binary.status, 302, "{}", binary.body);
    assert_eq!(binary.header("cache-control"), Some("no-store"));
    let downloaded = api_tests::http_client()
        .get(binary.header("location").unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.to_vec(), bytes);
    outcome(
        &app.call(ApiRequest::get(&format!("/fhir/R4/Binary/{pending}")).bearer(&viewer))
            .await,
        409,
        "conflict",
    );

    // $presigned-url: the download URL; the upload URL (a writer, a pending file) with the
    // headers its signature covers, which then stores the bytes.
    let url = app
        .call(ApiRequest::get(&format!("/fhir/R4/Binary/{report}/$presigned-url")).bearer(&viewer))
        .await;
    assert_eq!(url.status, 200, "{}", url.body);
    assert_eq!(url.json()["resourceType"], "Parameters");
    assert_eq!(url.json()["parameter"][0]["name"], "url");
    outcome(
        &app.call(
            ApiRequest::get(&format!("/fhir/R4/Binary/{pending}/$presigned-url"))
                .query("upload", "true")
                .bearer(&viewer),
        )
        .await,
        403,
        "forbidden",
    );
    let upload = app
        .call(
            ApiRequest::get(&format!("/fhir/R4/Binary/{pending}/$presigned-url"))
                .query("upload", "true")
                .bearer(&clinician),
        )
        .await;
    assert_eq!(upload.status, 200, "{}", upload.body);
    let parameters = upload.json()["parameter"].as_array().unwrap().clone();
    let value = |name: &str, key: &str| {
        parameters
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| p[key].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(value("method", "valueCode"), ["PUT"]);
    assert_eq!(value("expires", "valueInstant").len(), 1);
    let mut put = api_tests::http_client()
        .put(&value("url", "valueUrl")[0])
        .body(b"DICM a scan".to_vec());
    for header in value("header", "valueString") {
        let (name, v) = header.split_once(": ").unwrap();
        put = put.header(name, v);
    }
    assert!(put.send().await.unwrap().status().is_success());
    let now_final = app
        .call(ApiRequest::get(&format!("/fhir/R4/DocumentReference/{pending}")).bearer(&viewer))
        .await
        .json();
    assert_eq!(now_final["docStatus"], "final");
    outcome(
        &app.call(
            ApiRequest::get(&format!("/fhir/R4/Binary/{report}/$presigned-url"))
                .query("upload", "true")
                .bearer(&clinician),
        )
        .await,
        409,
        "conflict",
    );

    // The JSON API's audit actions.
    let actions = texts_about(
        &app,
        "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id",
        &report,
    )
    .await;
    for action in [
        "attachment.read",
        "attachment.download",
        "attachment.presigned_url",
    ] {
        assert!(actions.contains(&action.to_owned()), "{actions:?}");
    }
    outcome(
        &app.call(
            ApiRequest::get(&format!(
                "/fhir/R4/DocumentReference/{}",
                uuid::Uuid::new_v4()
            ))
            .bearer(&viewer),
        )
        .await,
        404,
        "not-found",
    );
    outcome(
        &app.call(ApiRequest::get(&format!("/fhir/R4/Binary/{report}")))
            .await,
        401,
        "login",
    );
}

#[tokio::test]
async fn document_references_are_searched_by_patient_type_and_date() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let (patient_id, report, pending, _) = with_documents(&app, &t).await;
    let (other_patient, other_report, _, _) = with_documents(&app, &t).await;
    let found = |query: Vec<(String, String)>| {
        let (app, t) = (&app, &t);
        async move {
            let mut request = ApiRequest::get("/fhir/R4/DocumentReference").bearer(t);
            for (k, v) in &query {
                request = request.query(k, v);
            }
            let response = app.call(request).await;
            assert_eq!(response.status, 200, "{query:?}: {}", response.body);
            let bundle = response.json();
            (ids(&bundle), bundle)
        }
    };
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Newest first; a patient as id, Patient/id or absolute URL.
    let (by_id, bundle) = found(q(&[("patient", &patient_id)])).await;
    assert_eq!(by_id, [pending.clone(), report.clone()]);
    assert_eq!(bundle["total"], 2);
    let typed = format!("Patient/{patient_id}");
    assert_eq!(found(q(&[("subject", &typed)])).await.0, by_id);
    let absolute = format!("https://elsewhere.example/fhir/R4/Patient/{patient_id}");
    assert_eq!(found(q(&[("patient", &absolute)])).await.0, by_id);
    let both = format!("{patient_id},{other_patient}");
    assert_eq!(
        found(q(&[("patient", &both), ("contenttype", "application/pdf")]))
            .await
            .0,
        [other_report.clone(), report.clone()]
    );
    let today = chrono::Utc::now().date_naive().to_string();
    let (before, not_today) = (format!("lt{today}"), format!("ne{today}"));
    assert_eq!(
        found(q(&[("patient", &patient_id), ("date", &today)]))
            .await
            .0
            .len(),
        2
    );
    assert_eq!(
        found(q(&[("patient", &patient_id), ("date", &before)]))
            .await
            .0
            .len(),
        0
    );
    assert_eq!(
        found(q(&[("patient", &patient_id), ("date", &not_today)]))
            .await
            .0
            .len(),
        0
    );
    // An instant (with its offset) bounds to the second; one without an offset is refused.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    for (prefix, expected) in [("ge", 2), ("lt", 0)] {
        let value = format!("{prefix}{hour_ago}");
        assert_eq!(
            found(q(&[("patient", &patient_id), ("date", &value)]))
                .await
                .0
                .len(),
            expected,
            "date={value}"
        );
    }
    outcome(
        &app.call(
            ApiRequest::get("/fhir/R4/DocumentReference")
                .bearer(&t)
                .query("date", "ge2024-01-01T10:00:00"),
        )
        .await,
        400,
        "invalid",
    );
    // Paging: one per page through next links.
    let (first, bundle) = found(q(&[("patient", &both), ("_count", "1")])).await;
    assert_eq!(first.len(), 1);
    assert_eq!(bundle["total"], 4);
    let mut seen = first;
    let mut next = bundle["link"][1]["url"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let (page, bundle) = found(form_pairs(url.split_once('?').unwrap().1)).await;
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
    let invalid = app
        .call(
            ApiRequest::get("/fhir/R4/DocumentReference")
                .query("patient", "Observation/1")
                .bearer(&t),
        )
        .await;
    outcome(&invalid, 400, "invalid");
}

#[tokio::test]
async fn patients_are_created_updated_and_deleted_with_versions() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let fhir_post = |token: &str, body: Value| {
        ApiRequest::post("/fhir/R4/Patient")
            .bearer(token)
            .raw_body("application/fhir+json", &body.to_string())
    };
    let new_patient = json!({
        "resourceType": "Patient",
        "id": "chosen-by-the-client",
        "meta": {"versionId": "99"},
        "name": [{"given": ["Maria", "José"], "family": "García-López"}],
        "birthDate": "1975-03-04",
        "telecom": [{"system": "phone", "value": "+34 600 000 000"}],
        "extension": [{"url": "https://carevault.dev/fhir/StructureDefinition/medical-history", "valueString": "Hypertension."}],
    });
    let created = app.call(fhir_post(&clinician, new_patient.clone())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let resource = created.json();
    let id = resource["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(resource["meta"]["versionId"], "1");
    assert_eq!(
        created.header("location").unwrap(),
        format!("https://api.carevault.test/fhir/R4/Patient/{id}/_history/1")
    );
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    // The JSON API sees the same record.
    let json_api = app
        .call(ApiRequest::get(&format!("/api/v1/patients/{id}")).bearer(&clinician))
        .await
        .json();
    assert_eq!(json_api["name"], "Maria José García-López");
    assert_eq!(json_api["dob"], "1975-03-04T00:00:00");
    assert_eq!(json_api["contact_info"], "+34 600 000 000");
    assert_eq!(json_api["medical_history"], "Hypertension.");

    // Update: the whole resource, its id the URL's, If-Match against the version.
    let put = |body: Value, if_match: Option<&str>| {
        let mut request = ApiRequest::put(&format!("/fhir/R4/Patient/{id}"))
            .bearer(&clinician)
            .raw_body("application/fhir+json", &body.to_string());
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        app.call(request)
    };
    let changed = json!({"resourceType": "Patient", "id": id, "name": [{"text": "Maria García"}], "birthDate": "1975-03-04"});
    outcome(
        &put(changed.clone(), Some("W/\"7\"")).await,
        412,
        "conflict",
    );
    let mut other_id = changed.clone();
    other_id["id"] = json!(uuid::Uuid::new_v4().to_string());
    outcome(&put(other_id, None).await, 400, "invalid");
    let updated = put(changed.clone(), Some("W/\"1\"")).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    let updated = updated.json();
    assert_eq!(updated["name"][0]["text"], "Maria García");
    // What the resource left out is cleared.
    assert!(updated.get("telecom").is_none() && updated.get("extension").is_none());
    assert_eq!(put(changed.clone(), Some("\"2\"")).await.status, 200);

    // Refusals: a viewer, a wrong resource type, no JSON, no name, a bad birth date.
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(fhir_post(&viewer, new_patient.clone())).await,
        403,
        "forbidden",
    );
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
    outcome(
        &app.call(fhir_post(&clinician, json!({"resourceType": "Patient"})))
            .await,
        422,
        "business-rule",
    );
    outcome(
        &app.call(fhir_post(
            &clinician,
            json!({"resourceType": "Patient", "name": [{"text": "A"}], "birthDate": "1800-01-01"}),
        ))
        .await,
        422,
        "business-rule",
    );
    outcome(
        &put(json!({"resourceType": "Patient", "id": "nope"}), None)
            .await
            .clone(),
        400,
        "invalid",
    );

    // Delete: 204, then gone; If-Match checked first.
    let delete = |tag: Option<&str>| {
        let mut request = ApiRequest::delete(&format!("/fhir/R4/Patient/{id}")).bearer(&clinician);
        if let Some(tag) = tag {
            request = request.header("if-match", tag);
        }
        app.call(request)
    };
    outcome(&delete(Some("W/\"1\"")).await, 412, "conflict");
    assert_eq!(delete(Some("W/\"3\"")).await.status, 204);
    outcome(
        &app.call(ApiRequest::get(&format!("/fhir/R4/Patient/{id}")).bearer(&clinician))
            .await,
        404,
        "not-found",
    );
    outcome(&delete(None).await, 404, "not-found");

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

#[tokio::test]
async fn superusers_read_the_trail_as_audit_events() {
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
    outcome(
        &app.call(ApiRequest::get("/fhir/R4/AuditEvent").bearer(&viewer))
            .await,
        403,
        "forbidden",
    );

    let admin = app.superuser_token().await;
    let search = |query: &[(&str, &str)]| {
        let mut request = ApiRequest::get("/fhir/R4/AuditEvent").bearer(&admin);
        for (k, v) in query {
            request = request.query(k, v);
        }
        app.call(request)
    };
    let reads = search(&[("patient", &id), ("action", "R")]).await;
    assert_eq!(reads.status, 200, "{}", reads.body);
    let bundle = reads.json();
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{bundle}");
    let event = &entries[0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["type"]["code"], "rest");
    assert_eq!(
        event["subtype"][0],
        json!({"system": "http://hl7.org/fhir/restful-interaction", "code": "read"})
    );
    assert_eq!(event["subtype"][1]["code"], "patient.read");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    assert_eq!(
        event["agent"][0]["who"]["identifier"]["value"],
        clinician.id
    );
    assert_eq!(event["agent"][0]["requestor"], true);
    assert_eq!(event["agent"][0]["network"]["address"], "203.0.113.9");
    assert_eq!(event["source"]["observer"]["display"], "CareVault");
    assert_eq!(
        event["entity"][0]["what"]["reference"],
        format!("Patient/{id}")
    );
    assert!(event["recorded"].as_str().unwrap().ends_with('Z'));

    // The total: the planner's estimate by default (a number, not checked here), exact when
    // asked for, none when not.
    assert!(bundle["total"].is_number(), "{bundle}");
    let accurate = search(&[("patient", &id), ("action", "R"), ("_total", "accurate")])
        .await
        .json();
    assert_eq!(accurate["total"], 1);
    let uncounted = search(&[("patient", &id), ("_total", "none")]).await.json();
    assert!(uncounted.get("total").is_none());
    let created = search(&[("patient", &format!("Patient/{id}")), ("action", "C")])
        .await
        .json();
    assert_eq!(created["entry"].as_array().unwrap().len(), 1);
    assert_eq!(created["entry"][0]["resource"]["action"], "C");
    let refused = search(&[("patient", &id), ("outcome", "4")]).await.json();
    assert_eq!(refused["entry"].as_array().unwrap().len(), 1);
    assert_eq!(refused["entry"][0]["resource"]["outcomeDesc"], "denied");
    assert_eq!(refused["entry"][0]["resource"]["action"], "D");
    let by_agent = search(&[("agent", &clinician.id), ("patient", &id)])
        .await
        .json();
    assert_eq!(by_agent["entry"].as_array().unwrap().len(), 2);
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(
        search(&[("patient", &id), ("date", &today)]).await.json()["entry"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%MZ")
        .to_string();
    assert_eq!(
        search(&[("patient", &id), ("date", &format!("gt{hour_ago}"))])
            .await
            .json()["entry"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(search(&[("patient", &id), ("date", &format!("lt{today}"))])
        .await
        .json()
        .get("entry")
        .is_none());
    outcome(&search(&[("action", "X")]).await, 400, "invalid");

    // Read one; reading the trail is itself on the trail.
    let event_id = event["id"].as_str().unwrap();
    let one = app
        .call(ApiRequest::get(&format!("/fhir/R4/AuditEvent/{event_id}")).bearer(&admin))
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["id"], event_id);
    outcome(
        &app.call(
            ApiRequest::get(&format!("/fhir/R4/AuditEvent/{}", uuid::Uuid::new_v4()))
                .bearer(&admin),
        )
        .await,
        404,
        "not-found",
    );
    let audited = app
        .db
        .number("SELECT count(*) FROM audit_events WHERE action = 'audit.read' AND details->>'interface' = 'fhir'")
        .await;
    assert!(audited >= 8, "{audited}");
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

#[tokio::test]
async fn documents_and_audit_events_page_both_ways() {
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

#[tokio::test]
async fn identifiers_are_kept_searched_and_make_creation_conditional() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    const MRN: &str = "https://clinic.example/mrn";
    // The JSON API keeps identifiers, ordered, and answers them with the record.
    let created = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({
                    "name": "Ida Ident",
                    "identifiers": [
                        {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"},
                        {"system": MRN, "value": " A-100 "},
                    ],
                })),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let ida = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.json()["identifiers"],
        json!([
            {"system": MRN, "value": "A-100"},
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"},
        ])
    );
    let read = app
        .call(ApiRequest::get(&format!("/fhir/R4/Patient/{ida}")).bearer(&t))
        .await
        .json();
    assert_eq!(
        read["identifier"][0],
        json!({"system": MRN, "value": "A-100"})
    );
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
    let found = app.call(search(&t, &[("name", "ida")])).await.json();
    assert_eq!(
        found["entry"][0]["resource"]["identifier"],
        read["identifier"]
    );
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

    // identifier search: system|value, value in any system, system| (any value), |value.
    let other = patient(
        &app,
        &t,
        json!({"name": "Otto Other", "identifiers": [{"system": "urn:x", "value": "A-100"}]}),
    )
    .await;
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

    // Conditional create: no match creates (201); the same again answers it (200), one record.
    let body = json!({
        "resourceType": "Patient",
        "name": [{"family": "Cond", "given": ["Carla"]}],
        "identifier": [{"system": MRN, "value": "C-7", "use": "usual"}],
    });
    let conditional = |token: &str, criteria: &str| {
        ApiRequest::post("/fhir/R4/Patient")
            .bearer(token)
            .header("if-none-exist", criteria)
            .json(body.clone())
    };
    let first = app
        .call(conditional(&t, &format!("identifier={MRN}|C-7")))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let carla = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.json()["identifier"],
        json!([{"system": MRN, "value": "C-7"}])
    );
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
    // Several matches: 412; criteria this server does not know, or none: 400; a viewer: 403.
    outcome(
        &app.call(conditional(&t, "identifier=A-100")).await,
        412,
        "conflict",
    );
    outcome(
        &app.call(conditional(&t, "colour=red")).await,
        400,
        "invalid",
    );
    outcome(&app.call(conditional(&t, "_count=1")).await, 400, "invalid");
    let viewer = app.viewer().await.token;
    outcome(
        &app.call(conditional(&viewer, "identifier=x|y")).await,
        403,
        "forbidden",
    );
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

    // An update replaces the set (FHIR: what the resource leaves out is cleared); the JSON
    // API's null clears it.
    let mut carla_resource = again.json();
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
    let cleared = app
        .call(
            ApiRequest::patch(&format!("/api/v1/patients/{carla}"))
                .bearer(&t)
                .json(json!({"identifiers": null})),
        )
        .await;
    assert_eq!(cleared.json()["identifiers"], json!([]));
    // Taking another patient's pair by update: 409, the record unchanged.
    let steal = app
        .call(
            ApiRequest::patch(&format!("/api/v1/patients/{carla}"))
                .bearer(&t)
                .json(json!({"identifiers": [{"system": MRN, "value": "A-100"}]})),
        )
        .await;
    assert_eq!(steal.status, 409, "{}", steal.body);
    // Deleting a patient frees its identifiers.
    app.call(ApiRequest::delete(&format!("/api/v1/patients/{ida}")).bearer(&t))
        .await;
    let reused = app
        .call(
            ApiRequest::patch(&format!("/api/v1/patients/{carla}"))
                .bearer(&t)
                .json(json!({"identifiers": [{"system": MRN, "value": "A-100"}]})),
        )
        .await;
    assert_eq!(reused.status, 200, "{}", reused.body);
}

#[tokio::test]
async fn previous_links_walk_back_and_commas_are_or() {
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

    // Commas: any of the values; repeated: all of them.
    let names = app
        .call(search(
            &t,
            &[("name", "back 1,back 5"), ("_sort", "birthdate")],
        ))
        .await
        .json();
    assert_eq!(ids(&names), [made[1].clone(), made[5].clone()]);
    let dates = app
        .call(search(
            &t,
            &[
                ("birthdate", "1930,ge1980"),
                ("birthdate", "lt1990"),
                ("_sort", "birthdate"),
            ],
        ))
        .await
        .json();
    assert_eq!(ids(&dates), [made[0].clone(), made[5].clone()]);
    let too_many = vec!["x"; 33].join(",");
    outcome(
        &app.call(search(&t, &[("name", &too_many)])).await,
        400,
        "invalid",
    );
}

#[tokio::test]
async fn last_updated_filters_and_sorts() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let old = patient(&app, &t, json!({"name": "Lu Old"})).await;
    let newer = patient(&app, &t, json!({"name": "Lu Newer"})).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE patients SET updated_at = '2020-05-01T10:00:00Z' WHERE id = $1",
            &[&uuid::Uuid::parse_str(&old).unwrap()],
        )
        .await
        .unwrap();
    for (value, expected) in [
        ("2020-05-01", vec![old.clone()]),
        ("gt2020-05-01T10:00:00Z", vec![newer.clone()]),
        (
            "ge2020-05-01T12:00:00+02:00",
            vec![old.clone(), newer.clone()],
        ),
        ("lt2020-05-01T10:00:00Z", vec![]),
        ("le2020-05-01T10:00:00Z", vec![old.clone()]),
        ("ne2020-05", vec![newer.clone()]),
    ] {
        let found = app
            .call(search(
                &t,
                &[("_lastUpdated", value), ("_sort", "_lastUpdated")],
            ))
            .await
            .json();
        assert_eq!(ids(&found), expected, "_lastUpdated={value}");
    }
    let newest_first = app
        .call(search(&t, &[("_sort", "-_lastUpdated")]))
        .await
        .json();
    assert_eq!(ids(&newest_first), [newer.clone(), old.clone()]);
    assert_eq!(
        newest_first["entry"][1]["resource"]["meta"]["lastUpdated"],
        "2020-05-01T10:00:00.000Z"
    );
    for bad in ["2020-05-01T10:00:00", "yesterday", "ap2020"] {
        outcome(
            &app.call(search(&t, &[("_lastUpdated", bad)])).await,
            400,
            "invalid",
        );
    }
    outcome(
        &app.call(search(&t, &[("_sort", "name,birthdate")])).await,
        400,
        "invalid",
    );
}

/// Every parser of dates and instants (Patient `_lastUpdated`, DocumentReference and
/// AuditEvent `date`, `If-None-Exist`) refuses multi-byte text around the `T` with a 400;
/// slicing it at a byte offset once panicked, which kills the Lambda execution environment.
#[tokio::test]
async fn dates_with_multibyte_text_are_refused_not_a_crash() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let crafted = [
        "2024-01-01\u{3000}\u{3000}\u{3000}\u{3000}T00:00Z",
        "ge2024-01-01\u{3000}T00:00Z",
        "2024-01-01T\u{3000}:00Z",
        "2024-01-01\u{0301}T00:00:00Z",
    ];
    for value in crafted {
        for (path, param) in [
            ("/fhir/R4/Patient", "_lastUpdated"),
            ("/fhir/R4/DocumentReference", "date"),
            ("/fhir/R4/AuditEvent", "date"),
        ] {
            let response = app
                .call(ApiRequest::get(path).bearer(&admin).query(param, value))
                .await;
            outcome(&response, 400, "invalid");
        }
        let conditional = app
            .call(
                ApiRequest::post("/fhir/R4/Patient")
                    .bearer(&admin)
                    .header(
                        "if-none-exist",
                        &serde_urlencoded::to_string([("_lastUpdated", value)]).unwrap(),
                    )
                    .json(json!({"resourceType": "Patient", "name": [{"text": "Never Made"}]})),
            )
            .await;
        outcome(&conditional, 400, "invalid");
    }
    // The function goes on serving.
    let after = app
        .call(search(&admin, &[("_lastUpdated", "2024-01-01")]))
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
}

#[tokio::test]
async fn document_references_are_created_uploaded_and_deleted() {
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
    let create = |token: &str, body: Value| {
        app.call(
            ApiRequest::post("/fhir/R4/DocumentReference")
                .bearer(token)
                .json(body),
        )
    };
    let created = create(&clinician, document.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let resource = created.json();
    let id = resource["id"].as_str().unwrap().to_owned();
    assert_eq!(resource["docStatus"], "preliminary");
    assert_eq!(resource["subject"]["reference"], format!("Patient/{owner}"));
    assert_eq!(
        resource["content"][0]["attachment"]["title"],
        "discharge.pdf"
    );
    assert!(created
        .header("location")
        .is_some_and(|l| l.ends_with(&format!("/fhir/R4/DocumentReference/{id}"))));
    // The upload URL, then real bytes, then the Binary redirect serves them.
    let upload = app
        .call(
            ApiRequest::get(&format!("/fhir/R4/Binary/{id}/$presigned-url"))
                .query("upload", "true")
                .bearer(&clinician),
        )
        .await
        .json();
    let parameters = upload["parameter"].as_array().unwrap();
    let url = parameters.iter().find(|p| p["name"] == "url").unwrap()["valueUrl"]
        .as_str()
        .unwrap();
    let mut put = api_tests::http_client().put(url).body(bytes.clone());
    for p in parameters.iter().filter(|p| p["name"] == "header") {
        let (name, value) = p["valueString"].as_str().unwrap().split_once(": ").unwrap();
        put = put.header(name, value);
    }
    assert!(put.send().await.unwrap().status().is_success());
    let binary = app
        .call(ApiRequest::get(&format!("/fhir/R4/Binary/{id}")).bearer(&viewer))
        .await;
    assert_eq!(binary.status, 302, "{}", binary.body);
    let downloaded = api_tests::http_client()
        .get(binary.header("location").unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    let read = app
        .call(ApiRequest::get(&format!("/fhir/R4/DocumentReference/{id}")).bearer(&viewer))
        .await
        .json();
    assert_eq!(read["docStatus"], "final");

    // Refusals: no token, a viewer, a body of another type, broken rules (located), an
    // unknown patient, inline data.
    let unauthenticated = app
        .call(ApiRequest::post("/fhir/R4/DocumentReference").json(document.clone()))
        .await;
    outcome(&unauthenticated, 401, "login");
    outcome(&create(&viewer, document.clone()).await, 403, "forbidden");
    outcome(
        &create(&clinician, json!({"resourceType": "Patient"})).await,
        400,
        "invalid",
    );
    let mut long_title = document.clone();
    long_title["content"][0]["attachment"]["title"] = json!("x".repeat(256));
    let refused = create(&clinician, long_title).await;
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
        let mut bad = document.clone();
        bad[path] = value;
        outcome(&create(&clinician, bad).await, 422, "business-rule");
    }
    assert_eq!(app.db.number("SELECT count(*) FROM attachments").await, 1);

    // Delete: a viewer cannot; a clinician can, and the file goes with the row.
    let delete = |token: &str, id: &str| {
        app.call(ApiRequest::delete(&format!("/fhir/R4/DocumentReference/{id}")).bearer(token))
    };
    outcome(&delete(&viewer, &id).await, 403, "forbidden");
    let key = format!("patients/{owner}/attachments/{id}");
    assert_eq!(app.object_in_bucket(&key).await, Some(bytes.clone()));
    let gone = delete(&clinician, &id).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(app.object_in_bucket(&key).await, None);
    outcome(
        &app.call(ApiRequest::get(&format!("/fhir/R4/DocumentReference/{id}")).bearer(&viewer))
            .await,
        404,
        "not-found",
    );
    outcome(&delete(&clinician, &id).await, 404, "not-found");
    outcome(&delete(&clinician, "not-a-uuid").await, 404, "not-found");
    let actions = texts_about(&app, "SELECT action || ':' || outcome FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id", &id).await;
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
