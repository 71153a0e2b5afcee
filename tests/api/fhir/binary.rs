//! Binary: an attachment's bytes, never through Lambda: a read redirects to them, and
//! `$presigned-url` answers the download URL, or (a writer, a pending upload) the upload URL
//! with the headers its signature covers.

use api_tests::{ApiRequest, TestApp};
use serde_json::Value;

use super::{download, outcome, put_to_upload_url, read, texts_about, upload_url, with_documents};

/// A patient with an uploaded report and a pending scan: a clinician's and a viewer's tokens.
struct Binaries {
    app: TestApp,
    clinician: String,
    viewer: String,
    report: String,
    pending: String,
    bytes: Vec<u8>,
}

impl Binaries {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let clinician = app.clinician().await.token;
        let (_, report, pending, bytes) = with_documents(&app, &clinician).await;
        let viewer = app.viewer().await.token;
        Self {
            app,
            clinician,
            viewer,
            report,
            pending,
            bytes,
        }
    }
}

/// The values of the parameters named `name`, each its `key` (`valueUrl`, `valueCode`...).
fn values(parameters: &[Value], name: &str, key: &str) -> Vec<String> {
    parameters
        .iter()
        .filter(|p| p["name"] == name)
        .map(|p| p[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_read_redirects_to_the_bytes_never_kept_by_a_cache() {
    let b = Binaries::new().await;
    // Binary: a redirect to the bytes, never kept by a cache.
    let binary = read(&b.app, &b.viewer, &format!("Binary/{}", b.report)).await;
    assert_eq!(binary.status, 302, "{}", binary.body);
    assert_eq!(binary.header("cache-control"), Some("no-store"));
    assert_eq!(download(&binary).await, b.bytes);
}

#[tokio::test]
async fn a_pending_uploads_bytes_are_409() {
    let b = Binaries::new().await;
    outcome(
        &read(&b.app, &b.viewer, &format!("Binary/{}", b.pending)).await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn a_read_needs_a_token() {
    let b = Binaries::new().await;
    outcome(
        &b.app
            .call(ApiRequest::get(&format!("/fhir/R4/Binary/{}", b.report)))
            .await,
        401,
        "login",
    );
}

#[tokio::test]
async fn presigned_url_answers_the_download_url_as_parameters() {
    let b = Binaries::new().await;
    // $presigned-url: the download URL; the upload URL (a writer, a pending file) with the
    // headers its signature covers, which then stores the bytes.
    let url = read(
        &b.app,
        &b.viewer,
        &format!("Binary/{}/$presigned-url", b.report),
    )
    .await;
    assert_eq!(url.status, 200, "{}", url.body);
    assert_eq!(url.json()["resourceType"], "Parameters");
    assert_eq!(url.json()["parameter"][0]["name"], "url");
}

#[tokio::test]
async fn a_viewer_gets_no_upload_url() {
    let b = Binaries::new().await;
    outcome(
        &upload_url(&b.app, &b.viewer, &b.pending).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn a_writers_upload_url_with_its_signed_headers_stores_the_bytes() {
    let b = Binaries::new().await;
    let upload = upload_url(&b.app, &b.clinician, &b.pending).await;
    assert_eq!(upload.status, 200, "{}", upload.body);
    let parameters = upload.json()["parameter"].as_array().unwrap().clone();
    assert_eq!(values(&parameters, "method", "valueCode"), ["PUT"]);
    assert_eq!(values(&parameters, "expires", "valueInstant").len(), 1);
    assert!(put_to_upload_url(&parameters, b"DICM a scan".to_vec())
        .await
        .status()
        .is_success());
    let now_final = read(
        &b.app,
        &b.viewer,
        &format!("DocumentReference/{}", b.pending),
    )
    .await
    .json();
    assert_eq!(now_final["docStatus"], "final");
}

#[tokio::test]
async fn a_stored_file_gets_no_upload_url() {
    let b = Binaries::new().await;
    outcome(
        &upload_url(&b.app, &b.clinician, &b.report).await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn reads_are_audited_as_the_json_apis_actions() {
    let b = Binaries::new().await;
    for path in [
        format!("DocumentReference/{}", b.report),
        format!("Binary/{}", b.report),
        format!("Binary/{}/$presigned-url", b.report),
    ] {
        let response = read(&b.app, &b.viewer, &path).await;
        assert!(matches!(response.status, 200 | 302), "{path}: {response:?}");
    }
    // The JSON API's audit actions.
    let actions = texts_about(
        &b.app,
        "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id",
        &b.report,
    )
    .await;
    for action in [
        "attachment.read",
        "attachment.download",
        "attachment.presigned_url",
    ] {
        assert!(actions.contains(&action.to_owned()), "{actions:?}");
    }
}
