//! docs/openapi.json is the contract: every answer the code gives in these tests must be an
//! operation, a status and a body the document describes, every documented operation must be
//! served, and the document, template.yaml and the local router must route the same paths.

use std::path::Path;

use api_tests::{
    events_dir, function_for_path, invoke_event, unique_email, ApiRequest, ApiResponse, TestApp,
};
use serde_json::{json, Value};

fn document() -> Value {
    serde_json::from_str(utils::OPENAPI).expect("docs/openapi.json is JSON")
}

/// The document's path template that `path` is an instance of (`/x` and `/x/` are one path).
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let wanted: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find_map(|template| {
            let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
            let matches = parts.len() == wanted.len()
                && parts
                    .iter()
                    .zip(&wanted)
                    .all(|(p, w)| p.starts_with('{') || p == w);
            matches.then(|| template.clone())
        })
}

/// JSON Pointer escaping (RFC 6901), percent-encoded for a URI fragment.
fn pointer_part(s: &str) -> String {
    s.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// Checks one exchange against the document: operation, status, body.
fn check(doc: &Value, method: &str, path: &str, response: &ApiResponse) {
    let template =
        template_of(doc, path).unwrap_or_else(|| panic!("{method} {path}: not in the document"));
    let method = method.to_ascii_lowercase();
    let operation = &doc["paths"][&template][&method];
    assert!(
        operation.is_object(),
        "{method} {template}: not in the document"
    );
    let status = response.status.to_string();
    let documented = &operation["responses"][&status];
    assert!(
        documented.is_object(),
        "{method} {template}: status {status} is not documented ({})",
        response.body
    );
    let Some((content_type, _)) = documented["content"]
        .as_object()
        .and_then(|c| c.iter().next())
    else {
        return;
    };
    if content_type != "application/json" {
        return;
    }
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!(
        "#/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        pointer_part(&template)
    ));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the document's schemas compile");
    let body = response.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: body does not match the document: {errors:?}\n{body}"
    );
}

/// Sends a request through the app and checks the exchange against the document.
async fn call(app: &TestApp, doc: &Value, request: ApiRequest) -> ApiResponse {
    let event = request.to_event();
    let (method, path) = (
        event["requestContext"]["http"]["method"]
            .as_str()
            .unwrap()
            .to_owned(),
        event["rawPath"].as_str().unwrap().to_owned(),
    );
    let response = app.call(request).await;
    check(doc, &method, &path, &response);
    response
}

#[tokio::test]
async fn every_answer_in_a_full_tour_matches_the_document() {
    let app = TestApp::new().await;
    let doc = document();
    let admin = app.superuser_token().await;
    let clinician = app.clinician().await;
    let viewer = app.viewer().await;
    let t = &clinician.token;

    // login and users
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/login/access-token")
            .form(&[("username", "x@example.com"), ("password", "nope-nope")]),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/login/access-token").form(&[("username", "x@example.com")]),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/login/test-token").bearer(t),
    )
    .await;
    call(&app, &doc, ApiRequest::post("/api/v1/login/test-token")).await;
    call(
        &app,
        &doc,
        ApiRequest::post(&format!("/api/v1/password-recovery/{}", clinician.email)),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/password-recovery/not-an-email"),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/reset-password/")
            .json(json!({"token": "x", "new_password": "long-enough-1"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post(&format!(
            "/api/v1/password-recovery-html-content/{}",
            clinician.email
        ))
        .bearer(&admin),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post(&format!(
            "/api/v1/password-recovery-html-content/{}",
            clinician.email
        ))
        .bearer(t),
    )
    .await;
    call(&app, &doc, ApiRequest::get("/api/v1/users/").bearer(&admin)).await;
    call(&app, &doc, ApiRequest::get("/api/v1/users/").bearer(t)).await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/users/")
            .bearer(&admin)
            .query("limit", "0"),
    )
    .await;
    let created = call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/users/")
            .bearer(&admin)
            .json(json!({"email": unique_email("c"), "password": "password-123"})),
    )
    .await;
    let uid = created.json()["id"].as_str().unwrap().to_owned();
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/users/")
            .bearer(&admin)
            .json(json!({"email": clinician.email, "password": "password-123"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/users/")
            .bearer(&admin)
            .raw_body("text/plain", "x"),
    )
    .await;
    call(&app, &doc, ApiRequest::get("/api/v1/users/me").bearer(t)).await;
    call(
        &app,
        &doc,
        ApiRequest::patch("/api/v1/users/me")
            .bearer(t)
            .json(json!({"full_name": "Dr Tour"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::patch("/api/v1/users/me/password")
            .bearer(t)
            .json(json!({"current_password": "wrong", "new_password": "password-456"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete("/api/v1/users/me").bearer(&admin),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/users/signup")
            .json(json!({"email": unique_email("s"), "password": "password-123"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/users/{uid}")).bearer(&admin),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/users/{uid}")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::patch(&format!("/api/v1/users/{uid}"))
            .bearer(&admin)
            .json(json!({"role": "viewer"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/users/nope").bearer(&admin),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/users/{uid}")).bearer(&admin),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/users/{uid}")).bearer(&admin),
    )
    .await;

    // patients
    let patient = call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/patients/").bearer(t).json(
            json!({"name": "Tour Patient", "dob": "1990-02-03", "medical_history": "asthma"}),
        ),
    )
    .await;
    let pid = patient.json()["id"].as_str().unwrap().to_owned();
    let etag = patient.header("etag").unwrap().to_owned();
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/patients/")
            .bearer(&viewer.token)
            .json(json!({"name": "No"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/patients/")
            .bearer(t)
            .json(json!({"name": ""})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/patients/{pid}")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/patients/{}", uuid::Uuid::new_v4())).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/patients/")
            .bearer(t)
            .query("name_text", "tour pat")
            .query("history_text", "asthma"),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/patients/")
            .bearer(t)
            .query("count", "none"),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/patients/")
            .bearer(t)
            .query("sort", "age"),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::put(&format!("/api/v1/patients/{pid}"))
            .bearer(t)
            .header("if-match", &etag)
            .json(json!({"contact_info": "555"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::patch(&format!("/api/v1/patients/{pid}"))
            .bearer(t)
            .header("if-match", &etag)
            .json(json!({"contact_info": "556"})),
    )
    .await;

    // attachments
    let attachment = call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/attachments/")
            .bearer(t)
            .json(json!({"patient_id": pid, "file_name": "a.txt", "mime_type": "text/plain"})),
    )
    .await;
    let aid = attachment.json()["id"].as_str().unwrap().to_owned();
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/attachments/")
            .bearer(t)
            .json(json!({"patient_id": uuid::Uuid::new_v4(), "file_name": "a.txt"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/attachments/")
            .bearer(t)
            .json(json!({"patient_id": pid, "file_name": "a", "mime_type": "bad"})),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/attachments/")
            .bearer(t)
            .query("patient_id", &pid),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/patients/{pid}/attachments")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/attachments/{aid}")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/attachments/{aid}/content")).bearer(t),
    )
    .await;
    let put = api_tests::upload(&attachment.json(), b"hi").await;
    assert!(put.status().is_success());

    // A multipart upload, every step and its refusals.
    let bytes = b"a small file sent in one part".to_vec();
    let multipart = call(
        &app,
        &doc,
        ApiRequest::post("/api/v1/attachments/").bearer(t).json(
            json!({"patient_id": pid, "file_name": "m.bin", "size": bytes.len(), "upload": "multipart"}),
        ),
    )
    .await
    .json();
    let mid = multipart["id"].as_str().unwrap();
    let digest = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes))
    };
    for (request, status) in [
        (
            ApiRequest::get(&format!("/api/v1/attachments/{mid}/upload-parts")).bearer(t),
            200,
        ),
        (
            ApiRequest::post(&format!("/api/v1/attachments/{mid}/complete")).bearer(t),
            409,
        ),
        (
            ApiRequest::post(&format!("/api/v1/attachments/{mid}/upload-parts"))
                .bearer(t)
                .json(json!({"part_numbers": [2], "sha256": [digest]})),
            422,
        ),
        (
            ApiRequest::post(&format!("/api/v1/attachments/{mid}/upload-parts"))
                .bearer(&viewer.token)
                .json(json!({"part_numbers": [1], "sha256": [digest]})),
            403,
        ),
        (
            ApiRequest::get(&format!("/api/v1/attachments/{aid}/upload-parts")).bearer(t),
            409,
        ),
    ] {
        assert_eq!(call(&app, &doc, request).await.status, status);
    }
    let urls = call(
        &app,
        &doc,
        ApiRequest::post(&format!("/api/v1/attachments/{mid}/upload-parts"))
            .bearer(t)
            .json(json!({"part_numbers": [1], "sha256": [digest]})),
    )
    .await
    .json();
    let part = &urls["parts"][0];
    let mut request = api_tests::http_client()
        .put(part["url"].as_str().unwrap())
        .body(bytes.clone());
    for (name, value) in part["headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    assert!(request.send().await.unwrap().status().is_success());
    let done = call(
        &app,
        &doc,
        ApiRequest::post(&format!("/api/v1/attachments/{mid}/complete")).bearer(t),
    )
    .await;
    assert_eq!(done.json()["status"], "uploaded");
    call(
        &app,
        &doc,
        ApiRequest::get(&format!("/api/v1/attachments/{aid}/content")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/attachments/{aid}")).bearer(&viewer.token),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/attachments/{aid}")).bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/patients/{pid}"))
            .bearer(t)
            .header("if-match", &etag),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::delete(&format!("/api/v1/patients/{pid}")).bearer(t),
    )
    .await;

    // audit and utils
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/audit-events/")
            .bearer(&admin)
            .query("limit", "5"),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/audit-events/").bearer(t),
    )
    .await;
    call(
        &app,
        &doc,
        ApiRequest::get("/api/v1/audit-events/")
            .bearer(&admin)
            .query("cursor", "!"),
    )
    .await;
    call(&app, &doc, ApiRequest::get("/api/v1/utils/health-check/")).await;
    let served = call(&app, &doc, ApiRequest::get("/api/v1/openapi.json")).await;
    assert_eq!(
        served.json(),
        doc,
        "the served document is the committed one"
    );
}

#[tokio::test]
async fn every_event_file_matches_the_document() {
    let app = TestApp::new().await;
    let doc = document();
    let mut stack = vec![events_dir()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // A token of its own: the logout sample ends the session it is sent with.
            let token = app.superuser_token().await;
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("{{superuser_token}}", &token);
            let event: Value = serde_json::from_str(&text).unwrap();
            let Some(raw_path) = event["rawPath"].as_str().map(str::to_owned) else {
                continue;
            };
            // FHIR's contract is its CapabilityStatement; tests/api/events.rs replays these.
            if raw_path.starts_with("/fhir/") {
                continue;
            }
            let method = event["requestContext"]["http"]["method"]
                .as_str()
                .unwrap()
                .to_owned();
            let router = match function_for_path(&raw_path) {
                Some("auth") => auth::router(app.auth.clone()),
                Some("users") => users::router(app.users.clone()),
                Some("patients") => patients::router(app.patients.clone()),
                Some("attachments") => attachments::router(app.attachments.clone()),
                Some("audit") => audit::router(app.audit.clone()),
                Some("utils") => utils::router(app.utils.clone()),
                other => panic!("{}: {other:?}", path.display()),
            };
            let response = invoke_event(router, event).await;
            check(&doc, &method, &raw_path, &response);
            checked += 1;
        }
    }
    assert!(checked > 25);
}

/// A concrete path for a template: every `{param}` becomes a UUID.
fn instance(template: &str) -> String {
    template
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                "00000000-0000-4000-8000-000000000000"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::new().await;
    let doc = document();
    let token = app.superuser_token().await;
    for (template, operations) in doc["paths"].as_object().unwrap() {
        let path =
            instance(template).replace("00000000-0000-4000-8000-000000000000", "a@example.com");
        let path = if template.contains("{email}") {
            path
        } else {
            instance(template)
        };
        for method in operations.as_object().unwrap().keys() {
            let request = ApiRequest::new(&method.to_ascii_uppercase(), &path).bearer(&token);
            let response = app.call(request).await;
            // The router's own fallbacks: the route does not exist in the code.
            assert!(
                !(response.status == 404 && response.body.contains("\"Not Found\""))
                    && response.status != 405,
                "{method} {template}: documented but not served ({} {})",
                response.status,
                response.body
            );
        }
    }
}

#[test]
fn the_document_the_template_and_the_local_router_route_the_same_paths() {
    let doc = document();
    let template_text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&template_text).unwrap();
    let manifest: toml::Value =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    // (pattern, function) of each side.
    let mut deployed: Vec<(String, String)> = Vec::new();
    for (_, resource) in template["Resources"].as_mapping().unwrap() {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_default();
        for (_, event) in events {
            if event["Type"].as_str() == Some("HttpApi") {
                deployed.push((
                    event["Properties"]["Path"].as_str().unwrap().to_owned(),
                    binary.to_owned(),
                ));
            }
        }
    }
    let local: Vec<(String, String)> = manifest["workspace"]["metadata"]["lambda"]["watch"]
        ["router"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(p, f)| {
            (
                p.replace("{*path}", "{proxy+}"),
                f.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let matches = |pattern: &str, path: &str| {
        let parts: Vec<&str> = pattern.split('/').collect();
        let segments: Vec<&str> = path.split('/').collect();
        if let Some(i) = parts.iter().position(|p| p.ends_with("+}")) {
            return segments.len() > i
                && parts[..i]
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
                && !segments[i..].join("/").is_empty();
        }
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p.starts_with('{') && !s.is_empty() || p == s)
    };
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|t| instance(t).trim_end_matches('/').to_owned())
        .collect();
    for path in &documented {
        let owner = function_for_path(path).unwrap_or_else(|| panic!("{path}: no function"));
        for (side, routes) in [("template.yaml", &deployed), ("cargo lambda watch", &local)] {
            let found: Vec<&String> = routes
                .iter()
                .filter(|(p, _)| matches(p, path))
                .map(|(_, f)| f)
                .collect();
            assert!(!found.is_empty(), "{side} has no route for {path}");
            assert!(
                found.iter().any(|f| *f == owner),
                "{side} routes {path} to {found:?}, not {owner}"
            );
        }
    }
    // And nothing routed that the document does not describe, but the FHIR interface, whose
    // contract is its CapabilityStatement (GET /fhir/R4/metadata), routed to its function on
    // both sides.
    for (side, routes) in [("template.yaml", &deployed), ("cargo lambda watch", &local)] {
        assert!(
            routes
                .iter()
                .any(|(p, f)| matches(p, "/fhir/R4/metadata") && f == "fhir"),
            "{side} does not route /fhir/R4 to the fhir function"
        );
        for (pattern, function) in routes.iter() {
            let covered = documented
                .iter()
                .any(|path| matches(pattern, path) || matches(pattern, &format!("{path}/")))
                || (pattern.starts_with("/fhir/R4/") && function == "fhir");
            assert!(
                covered,
                "{side} routes {pattern}, which the document does not describe"
            );
        }
    }
}
