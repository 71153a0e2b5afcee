//! The client side of the bucket: presigned URLs' HTTP client, an upload as a client sends it,
//! and an S3 client of the local server.

use serde_json::Value;

use crate::stack::use_dev_stack_defaults;

/// An HTTP client for presigned URLs (the client side of an upload or download).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(shared::tls::client_config())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// PUTs `bytes` to the upload URL with exactly the headers the API said to send.
pub async fn upload(created: &Value, bytes: &[u8]) -> reqwest::Response {
    assert_eq!(created["upload_method"], "PUT");
    let mut request = http_client()
        .put(created["upload_url"].as_str().unwrap())
        .body(bytes.to_vec());
    for (name, value) in created["upload_headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    request.send().await.expect("the S3 server answers")
}

/// An S3 client of the local server, as the tests' side of the bucket.
pub async fn s3_client() -> aws_sdk_s3::Client {
    use_dev_stack_defaults();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared::aws::sdk_config().await)
            .force_path_style(true)
            .build(),
    )
}
