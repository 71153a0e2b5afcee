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
    assert_eq!(interactions, ["read", "search-type"]);
    assert_eq!(patient["readHistory"], false);
    for param in patient["searchParam"].as_array().unwrap() {
        assert!(param["definition"]
            .as_str()
            .unwrap()
            .starts_with("http://hl7.org/fhir/SearchParameter/"));
    }
    // Nothing that is not served: one resource type.
    assert_eq!(
        statement["rest"][0]["resource"].as_array().unwrap().len(),
        1
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
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            patient(
                &app,
                &t,
                json!({"name": format!("Page Person {i}"), "dob": format!("19{}0-01-01", 5 + i)}),
            )
            .await,
        );
    }
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
