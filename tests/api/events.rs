//! Every file in events/ is replayed here with its expected answer, so the samples given to
//! `cargo lambda invoke --data-file` stay true.

use std::path::{Path, PathBuf};

use api_tests::{events_dir, invoke_event, TestApp};

/// (file under events/, expected HTTP status). Non-HTTP events are replayed by their own tests
/// (migrate.rs, attachments.rs) and listed here so that no file goes unchecked.
/// `{{superuser_token}}` in a file is replaced by a real token of the first superuser.
const HTTP_EVENTS: &[(&str, u16)] = &[
    ("auth/login-access-token.json", 200),
    ("auth/login-test-token.json", 200),
    ("auth/jwks.json", 200),
    ("auth/password-recovery.json", 200),
    ("auth/reset-password.json", 400),
    ("auth/password-recovery-html-content.json", 200),
    ("users/list-users.json", 200),
    ("users/create-user.json", 200),
    ("users/read-me.json", 200),
    ("users/update-me.json", 200),
    ("users/update-my-password.json", 400),
    ("users/delete-me.json", 403),
    ("users/signup.json", 403),
    ("users/read-user.json", 404),
    ("users/update-user.json", 404),
    ("users/delete-user.json", 404),
    ("utils/health-check.json", 200),
    ("patients/create-patient.json", 200),
    ("patients/search-patients.json", 200),
    ("patients/read-patient.json", 404),
    ("patients/update-patient.json", 404),
    ("patients/patch-patient.json", 404),
    ("patients/delete-patient.json", 404),
    ("audit/list-audit-events.json", 200),
    ("attachments/create-attachment.json", 404),
    ("attachments/list-attachments.json", 200),
    ("attachments/list-patient-attachments.json", 404),
    ("attachments/read-attachment.json", 404),
    ("attachments/download-attachment.json", 404),
    ("attachments/delete-attachment.json", 404),
    ("attachments/create-multipart-attachment.json", 404),
    ("attachments/issue-part-urls.json", 404),
    ("attachments/list-upload-parts.json", 404),
    ("attachments/complete-upload.json", 404),
    ("fhir/metadata.json", 200),
    ("fhir/read-patient.json", 404),
    ("fhir/search-patients.json", 200),
    ("fhir/create-patient-conditional.json", 201),
    // The subject is no patient of the empty database: a rule the resource breaks.
    ("fhir/create-document-reference.json", 422),
    // Last: it ends the session every event above uses.
    ("auth/logout.json", 204),
];
const OTHER_EVENTS: &[&str] = &[
    "migrate/custom-resource-create.json",
    "migrate/direct-invoke.json",
    "migrate/schedule-audit-retention.json",
    "attachment-events/s3-object-created.json",
    "attachment-events/schedule.json",
];

fn all_event_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_event_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

#[test]
fn every_event_file_is_replayed() {
    let root = events_dir();
    let mut files = Vec::new();
    all_event_files(&root, &mut files);
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let listed = HTTP_EVENTS.iter().any(|(f, _)| *f == relative)
            || OTHER_EVENTS.contains(&relative.as_str());
        assert!(
            listed,
            "events/{relative} is not replayed by any test: add it to tests/api/events.rs"
        );
    }
}

#[tokio::test]
async fn http_events_answer_their_expected_status() {
    let app = TestApp::new().await;
    let token = app.superuser_token().await;
    for (file, expected) in HTTP_EVENTS {
        let text = std::fs::read_to_string(events_dir().join(file))
            .unwrap()
            .replace("{{superuser_token}}", &token);
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Where each is filed and where the deployment routes it agree: tests/api/template.rs.
        let group = file.split('/').next().unwrap();
        let router = app.router_of(group);
        let response = invoke_event(router, event).await;
        assert_eq!(
            response.status, *expected,
            "events/{file}: {}",
            response.body
        );
    }
}
