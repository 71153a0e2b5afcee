//! Every file in events/ is replayed here with its expected answer, so the samples given to
//! `cargo lambda invoke --data-file` stay true.

use std::path::{Path, PathBuf};

use api_tests::{events_dir, invoke_event, TestApp};

/// What events/index.json says of the sample events: the HTTP events in the order they are
/// replayed and their expected status (`{{superuser_token}}` in a file is replaced by a real
/// token of the first superuser), and the others, each replayed by its own tests (migrate.rs,
/// attachments.rs). scripts/sam-local replays the same list through `sam local invoke`.
#[derive(serde::Deserialize)]
struct EventIndex {
    http: Vec<HttpEvent>,
    other: Vec<String>,
}

#[derive(serde::Deserialize)]
struct HttpEvent {
    event: String,
    status: u16,
}

const INDEX: &str = "index.json";

fn index() -> EventIndex {
    let text = std::fs::read_to_string(events_dir().join(INDEX)).unwrap();
    serde_json::from_str(&text).unwrap()
}

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
    let index = index();
    let mut files = Vec::new();
    all_event_files(&root, &mut files);
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if relative == INDEX {
            continue;
        }
        let listed =
            index.http.iter().any(|e| e.event == relative) || index.other.contains(&relative);
        assert!(
            listed,
            "events/{relative} is not replayed by any test: add it to events/{INDEX}"
        );
    }
}

#[tokio::test]
async fn http_events_answer_their_expected_status() {
    let app = TestApp::new().await;
    let token = app.superuser_token().await;
    for HttpEvent {
        event: file,
        status: expected,
    } in index().http
    {
        let text = std::fs::read_to_string(events_dir().join(&file))
            .unwrap()
            .replace("{{superuser_token}}", &token);
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Where each is filed and where the deployment routes it agree: tests/api/template.rs.
        let group = file.split('/').next().unwrap();
        let router = app.router_of(group);
        let response = invoke_event(router, event).await;
        assert_eq!(
            response.status, expected,
            "events/{file}: {}",
            response.body
        );
    }
}
