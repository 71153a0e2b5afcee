//! docs/openapi.json is the contract: every answer the code gives in these tests must be an
//! operation, a status and a body the document describes, every documented operation must be
//! served, and the document, template.yaml and the local router must route the same paths.

use api_tests::{
    deployed_routes, events_dir, function_for, instance_of, invoke_event, route_for, unique_email,
    ApiRequest, ApiResponse, TestApp,
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
            let function = function_for(&method, &raw_path).unwrap_or_else(|| {
                panic!("{}: template.yaml routes no {raw_path}", path.display())
            });
            let router = app.router_of(function);
            let response = invoke_event(router, event).await;
            check(&doc, &method, &raw_path, &response);
            checked += 1;
        }
    }
    assert!(checked > 25);
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::new().await;
    let doc = document();
    let token = app.superuser_token().await;
    for (template, operations) in doc["paths"].as_object().unwrap() {
        let path =
            instance_of(template).replace("00000000-0000-4000-8000-000000000000", "a@example.com");
        let path = if template.contains("{email}") {
            path
        } else {
            instance_of(template)
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

/// Every documented operation has a deployed route (`every_documented_operation_is_served`
/// sends each through template.yaml's routes); and the deployment routes nothing else but the
/// FHIR interface, whose contract is its CapabilityStatement. The local router is checked
/// against the deployment in tests/api/template.rs.
#[test]
fn the_deployment_routes_nothing_the_document_does_not_describe() {
    let doc = document();
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(template, operations)| {
            let path = instance_of(template).trim_end_matches('/').to_owned();
            operations
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    assert_eq!(function_for("GET", "/fhir/R4/metadata"), Some("fhir"));
    for route in deployed_routes() {
        if route.pattern.starts_with("/fhir/R4/") {
            assert_eq!(route.function, "fhir", "{route:?}");
            continue;
        }
        let covered = documented.iter().any(|(method, path)| {
            [path.clone(), format!("{path}/")]
                .iter()
                .any(|p| route_for(std::slice::from_ref(route), method, p).is_some())
        });
        assert!(
            covered,
            "template.yaml routes {route:?}, which the document does not describe"
        );
    }
}
