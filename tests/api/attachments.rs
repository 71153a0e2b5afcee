use std::time::Duration;

use api_tests::{http_client, upload, ApiRequest, ApiResponse, TestApp};
use md5::{Digest, Md5};
use serde_json::{json, Value};

async fn patient(app: &TestApp, token: &str, name: &str) -> String {
    let response = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(token)
                .json(json!({"name": name})),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["id"].as_str().unwrap().to_owned()
}

async fn create(app: &TestApp, token: &str, body: Value) -> ApiResponse {
    app.call(
        ApiRequest::post("/api/v1/attachments/")
            .bearer(token)
            .json(body),
    )
    .await
}

/// A patient's attachment of type text/plain, its bytes uploaded: the created answer.
async fn uploaded(app: &TestApp, token: &str, bytes: &[u8]) -> Value {
    let patient_id = patient(app, token, "P").await;
    let created = create(
        app,
        token,
        json!({"patient_id": patient_id, "file_name": "a.txt", "mime_type": "text/plain"}),
    )
    .await
    .json();
    assert!(upload(&created, bytes).await.status().is_success());
    created
}

/// GET /attachments/{id} of a created attachment.
async fn read(app: &TestApp, token: &str, created: &Value) -> ApiResponse {
    app.call(
        ApiRequest::get(&format!(
            "/api/v1/attachments/{}",
            created["id"].as_str().unwrap()
        ))
        .bearer(token),
    )
    .await
}

fn key_of(created: &Value) -> String {
    format!(
        "patients/{}/attachments/{}",
        created["patient_id"].as_str().unwrap(),
        created["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn whole_flow_with_real_bytes() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "File Owner").await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file_name = "Scan \"final\"; v2 — Ünïcode 🙂.png";

    let created = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": file_name, "mime_type": "image/png", "size": bytes.len()}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let created = created.json();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["file_name"], file_name);
    assert_eq!(created["mime_type"], "image/png");
    let headers = created["upload_headers"].as_object().unwrap();
    let mut names: Vec<&String> = headers.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["content-length", "content-type", "if-none-match"],
        "exactly what the client must send"
    );
    assert_eq!(
        headers.get("if-none-match").and_then(Value::as_str),
        Some("*"),
        "a URL writes its key once"
    );
    assert_eq!(
        headers.get("content-type").and_then(Value::as_str),
        Some("image/png"),
        "{headers:?}"
    );
    assert_eq!(
        headers.get("content-length").and_then(Value::as_str),
        Some("200000"),
        "{headers:?}"
    );
    assert!(created["upload_expires_at"].is_string());
    // The key is made from ids, never from the file name.
    assert!(created["upload_url"]
        .as_str()
        .unwrap()
        .contains(&key_of(&created)));
    assert!(!created["upload_url"].as_str().unwrap().contains("Scan"));

    let id = created["id"].as_str().unwrap();
    let early = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}/content")).bearer(&t))
        .await;
    assert_eq!(early.status, 409);
    assert_eq!(early.detail(), "Attachment content has not been uploaded");

    let put = upload(&created, &bytes).await;
    assert!(
        put.status().is_success(),
        "upload: {} {}",
        put.status(),
        put.text().await.unwrap()
    );

    // No S3 notification locally: the read itself checks the bucket and confirms.
    let read = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}")).bearer(&t))
        .await
        .json();
    assert_eq!(read["status"], "uploaded");
    assert_eq!(read["size"], 200_000);
    assert_eq!(read["etag"], format!("{:x}", Md5::digest(&bytes)));
    assert!(read["uploaded_at"].is_string());

    let content = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}/content")).bearer(&t))
        .await;
    assert_eq!(content.status, 302, "{}", content.body);
    assert_eq!(content.header("cache-control"), Some("no-store"));
    let location = content.header("location").unwrap().to_owned();
    let download = http_client().get(&location).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"Scan _final__ v2 _ _n_code _.png\"; \
         filename*=UTF-8''Scan%20%22final%22%3B%20v2%20%E2%80%94%20%C3%9Cn%C3%AFcode%20%F0%9F%99%82.png"
    );
    assert_eq!(download.bytes().await.unwrap().to_vec(), bytes);

    // For browser apps: the same URL as JSON, no redirect (fetch cannot read a Location).
    let as_json = app
        .call(
            ApiRequest::get(&format!("/api/v1/attachments/{id}/content?redirect=false")).bearer(&t),
        )
        .await;
    assert_eq!(as_json.status, 200, "{}", as_json.body);
    assert_eq!(as_json.header("location"), None);
    assert_eq!(as_json.header("cache-control"), Some("no-store"));
    let url = as_json.json()["url"].as_str().unwrap().to_owned();
    let download = http_client().get(&url).send().await.unwrap();
    assert_eq!(download.bytes().await.unwrap().to_vec(), bytes);
    let bad = app
        .call(
            ApiRequest::get(&format!("/api/v1/attachments/{id}/content?redirect=maybe")).bearer(&t),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.json()["detail"][0]["loc"], json!(["query", "redirect"]));
}

#[tokio::test]
async fn the_bucket_refuses_uploads_that_break_the_signature() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let created = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "a.pdf", "mime_type": "application/pdf"}),
    )
    .await
    .json();
    let url = created["upload_url"].as_str().unwrap();

    let other_type = http_client()
        .put(url)
        .header("content-type", "text/html")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(other_type.status(), 403, "another Content-Type");

    let other_key = url.replace(
        created["id"].as_str().unwrap(),
        &uuid::Uuid::new_v4().to_string(),
    );
    let tampered = http_client()
        .put(&other_key)
        .header("content-type", "application/pdf")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tampered.status(),
        403,
        "another key under the same signature"
    );

    let with_size = create(&app, &t, json!({"patient_id": patient_id, "file_name": "b.pdf", "mime_type": "application/pdf", "size": 10}))
        .await
        .json();
    let longer = http_client()
        .put(with_size["upload_url"].as_str().unwrap())
        .header("content-type", "application/pdf")
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();
    assert!(
        longer.status().is_client_error(),
        "another size: {}",
        longer.status()
    );
    assert!(app.object_in_bucket(&key_of(&with_size)).await.is_none());
    assert!(app.object_in_bucket(&key_of(&created)).await.is_none());
}

#[tokio::test]
async fn upload_and_download_urls_expire() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let short = attachments::AttachmentsState::from_env(&app.env_with(&[
        // Long enough for the upload and the redirect under a loaded CI machine.
        ("UPLOAD_URL_EXPIRE_SECONDS", "3"),
        ("DOWNLOAD_URL_EXPIRE_SECONDS", "3"),
    ]))
    .await
    .unwrap();
    let patient_id = patient(&app, &t, "P").await;
    let call = |request: ApiRequest| api_tests::invoke(attachments::router(short.clone()), request);

    let expired = call(ApiRequest::post("/api/v1/attachments/").bearer(&t).json(
        json!({"patient_id": patient_id, "file_name": "late.txt", "mime_type": "text/plain"}),
    ))
    .await
    .json();
    let fresh = call(ApiRequest::post("/api/v1/attachments/").bearer(&t).json(
        json!({"patient_id": patient_id, "file_name": "on-time.txt", "mime_type": "text/plain"}),
    ))
    .await
    .json();
    assert!(upload(&fresh, b"in time").await.status().is_success());
    let content = call(
        ApiRequest::get(&format!(
            "/api/v1/attachments/{}/content",
            fresh["id"].as_str().unwrap()
        ))
        .bearer(&t),
    )
    .await;
    assert_eq!(content.status, 302);

    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let late_put = upload(&expired, b"too late").await;
    assert_eq!(late_put.status(), 403, "expired upload URL");
    let late_get = http_client()
        .get(content.header("location").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(late_get.status(), 403, "expired download URL");
}

#[tokio::test]
async fn s3_notification_confirms_and_a_replay_changes_nothing() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let created = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "r.txt", "mime_type": "text/plain"}),
    )
    .await
    .json();
    assert!(upload(&created, b"hello").await.status().is_success());

    let mut event: Value = api_tests::event("attachment-events/s3-object-created.json");
    event["Records"][0]["s3"]["object"]["key"] = json!(key_of(&created));
    event["Records"][0]["s3"]["bucket"]["name"] = json!(app.bucket);

    let first = attachment_events::handle(&app.events, event.clone())
        .await
        .unwrap();
    assert_eq!(
        first,
        json!({"confirmed": 1, "orphans_queued": 0, "replaced": 0, "ignored": 0})
    );
    let confirmed = attachment_row(&app, &created).await;
    assert_eq!(confirmed.0, "uploaded");
    assert_eq!(confirmed.1, Some(5));
    assert_eq!(
        confirmed.2.as_deref(),
        Some(format!("{:x}", Md5::digest(b"hello")).as_str())
    );
    assert_eq!(confirmed.3.as_deref(), Some("text/plain"));
    assert!(!confirmed.4, "what was stored is what was declared");

    let replay = attachment_events::handle(&app.events, event).await.unwrap();
    assert_eq!(
        replay,
        json!({"confirmed": 0, "orphans_queued": 0, "replaced": 0, "ignored": 1})
    );
    assert_eq!(
        attachment_row(&app, &created).await,
        confirmed,
        "a redelivered event changes nothing"
    );

    let mut unknown: Value = api_tests::event("attachment-events/s3-object-created.json");
    unknown["Records"][0]["s3"]["object"]["key"] = json!("somewhere/else.txt");
    assert_eq!(
        attachment_events::handle(&app.events, unknown)
            .await
            .unwrap(),
        json!({"confirmed": 0, "orphans_queued": 0, "replaced": 0, "ignored": 1}),
        "a key outside the attachments prefix is not ours to judge"
    );
    let wrong_shape =
        attachment_events::handle(&app.events, json!({"rawPath": "/api/v1/patients"})).await;
    assert!(wrong_shape.is_err());
}

#[tokio::test]
async fn validation_and_not_found() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let unknown_patient = create(
        &app,
        &t,
        json!({"patient_id": uuid::Uuid::new_v4(), "file_name": "x.txt"}),
    )
    .await;
    assert_eq!(unknown_patient.status, 404);
    assert_eq!(unknown_patient.detail(), "Patient not found");

    let cases = [
        (
            json!({"patient_id": patient_id, "file_name": "x", "mime_type": "nonsense"}),
            "mime_type",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "x", "mime_type": "image/"}),
            "mime_type",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "x", "mime_type": "a/b c"}),
            "mime_type",
        ),
        (
            json!({"patient_id": patient_id, "file_name": ""}),
            "file_name",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "n".repeat(256)}),
            "file_name",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "../etc/passwd"}),
            "file_name",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "a\\b"}),
            "file_name",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "a\r\nb"}),
            "file_name",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "x", "size": -1}),
            "size",
        ),
        (
            json!({"patient_id": patient_id, "file_name": "x", "size": (5u64 << 40) + 1}),
            "size",
        ),
        (
            json!({"patient_id": "not-a-uuid", "file_name": "x"}),
            "patient_id",
        ),
        (json!({"file_name": "x"}), "patient_id"),
    ];
    for (body, field) in cases {
        let response = create(&app, &t, body.clone()).await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        assert_eq!(
            response.detail()[0]["loc"],
            json!(["body", field]),
            "{body}"
        );
    }
    let bad_mime = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "x", "mime_type": "nonsense"}),
    )
    .await;
    assert_eq!(
        bad_mime.detail()[0]["msg"],
        "Value error, Invalid MIME type format"
    );

    let default_type = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "blob"}),
    )
    .await
    .json();
    assert_eq!(default_type["mime_type"], "application/octet-stream");

    let missing = format!("/api/v1/attachments/{}", uuid::Uuid::new_v4());
    for request in [
        ApiRequest::get(&missing),
        ApiRequest::get(&format!("{missing}/content")),
        ApiRequest::delete(&missing),
    ] {
        let response = app.call(request.clone().bearer(&t)).await;
        assert_eq!(response.status, 404, "{request:?}");
        assert_eq!(response.detail(), "Attachment not found");
    }
    let malformed = app
        .call(ApiRequest::get("/api/v1/attachments/nope").bearer(&t))
        .await;
    assert_eq!(malformed.status, 422);
    let bad_filter = app
        .call(
            ApiRequest::get("/api/v1/attachments/")
                .bearer(&t)
                .query("patient_id", "nope"),
        )
        .await;
    assert_eq!(bad_filter.status, 422);
    let no_patient = app
        .call(
            ApiRequest::get(&format!(
                "/api/v1/patients/{}/attachments",
                uuid::Uuid::new_v4()
            ))
            .bearer(&t),
        )
        .await;
    assert_eq!(no_patient.status, 404);
    assert_eq!(no_patient.detail(), "Patient not found");
}

#[tokio::test]
async fn mime_type_allow_list() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let strict = attachments::AttachmentsState::from_env(
        &app.env_with(&[("ALLOWED_MIME_TYPES", "application/pdf, image/png")]),
    )
    .await
    .unwrap();
    let post = |body: Value| {
        api_tests::invoke(
            attachments::router(strict.clone()),
            ApiRequest::post("/api/v1/attachments")
                .bearer(&t)
                .json(body),
        )
    };
    assert_eq!(
        post(json!({"patient_id": patient_id, "file_name": "a", "mime_type": "IMAGE/PNG"}))
            .await
            .status,
        200
    );
    let refused =
        post(json!({"patient_id": patient_id, "file_name": "a", "mime_type": "text/html"})).await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.detail()[0]["loc"], json!(["body", "mime_type"]));
}

#[tokio::test]
async fn lists_all_and_per_patient_newest_first() {
    let app = TestApp::new().await;
    let t = app.viewer().await.token;
    let writer = app.clinician().await.token;
    let a = patient(&app, &writer, "A").await;
    let b = patient(&app, &writer, "B").await;
    let mut ids = Vec::new();
    for (p, name) in [(&a, "1"), (&b, "2"), (&a, "3")] {
        ids.push(
            create(&app, &writer, json!({"patient_id": p, "file_name": name}))
                .await
                .json()["id"]
                .clone(),
        );
    }
    let all = app
        .call(ApiRequest::get("/api/v1/attachments/").bearer(&t))
        .await
        .json();
    assert_eq!(all["count"], 3);
    assert_eq!(all["data"][0]["file_name"], "3");
    let page = app
        .call(
            ApiRequest::get("/api/v1/attachments")
                .bearer(&t)
                .query("skip", "1")
                .query("limit", "1"),
        )
        .await
        .json();
    assert_eq!(page["data"][0]["file_name"], "2");
    assert_eq!(page["count"], 3);
    let of_a = app
        .call(
            ApiRequest::get("/api/v1/attachments/")
                .bearer(&t)
                .query("patient_id", &a),
        )
        .await
        .json();
    assert_eq!(of_a["count"], 2);
    let nested = app
        .call(ApiRequest::get(&format!("/api/v1/patients/{a}/attachments")).bearer(&t))
        .await
        .json();
    assert_eq!(nested["count"], 2);
    assert_eq!(nested["data"][0]["file_name"], "3");
    assert_eq!(nested["data"][1]["file_name"], "1");
    for field in [
        "id",
        "patient_id",
        "file_name",
        "mime_type",
        "status",
        "size",
        "etag",
        "created_at",
        "uploaded_at",
    ] {
        assert!(nested["data"][0].get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn viewer_downloads_but_cannot_create_or_delete_and_tokens_are_required() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await.token;
    let viewer = app.viewer().await.token;
    let patient_id = patient(&app, &clinician, "P").await;
    let created = create(
        &app,
        &clinician,
        json!({"patient_id": patient_id, "file_name": "v.txt", "mime_type": "text/plain"}),
    )
    .await
    .json();
    assert!(upload(&created, b"viewable").await.status().is_success());
    let id = created["id"].as_str().unwrap();

    let content = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}/content")).bearer(&viewer))
        .await;
    assert_eq!(content.status, 302);
    let denied_create = create(
        &app,
        &viewer,
        json!({"patient_id": patient_id, "file_name": "no"}),
    )
    .await;
    assert_eq!(denied_create.status, 403);
    let denied_delete = app
        .call(ApiRequest::delete(&format!("/api/v1/attachments/{id}")).bearer(&viewer))
        .await;
    assert_eq!(denied_delete.status, 403);

    for request in [
        ApiRequest::get("/api/v1/attachments/"),
        ApiRequest::post("/api/v1/attachments/").json(json!({})),
        ApiRequest::get(&format!("/api/v1/attachments/{id}")),
        ApiRequest::get(&format!("/api/v1/attachments/{id}/content")),
        ApiRequest::delete(&format!("/api/v1/attachments/{id}")),
        ApiRequest::get(&format!("/api/v1/patients/{patient_id}/attachments")),
    ] {
        assert_eq!(app.call(request.clone()).await.status, 401, "{request:?}");
    }
}

#[tokio::test]
async fn deleting_attachments_and_patients_leaves_no_object() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "Leaving").await;
    let mut keys = Vec::new();
    let mut first_id = String::new();
    for i in 0..3 {
        let created = create(
            &app,
            &t,
            json!({"patient_id": patient_id, "file_name": format!("{i}.bin")}),
        )
        .await
        .json();
        assert!(upload(&created, format!("file {i}").as_bytes())
            .await
            .status()
            .is_success());
        keys.push(key_of(&created));
        if i == 0 {
            first_id = created["id"].as_str().unwrap().to_owned();
        }
    }
    for key in &keys {
        assert!(app.object_in_bucket(key).await.is_some());
    }
    let deleted = app
        .call(ApiRequest::delete(&format!("/api/v1/attachments/{first_id}")).bearer(&t))
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.json(),
        json!({"message": "Attachment deleted successfully"})
    );
    assert!(app.object_in_bucket(&keys[0]).await.is_none());
    assert!(app.object_in_bucket(&keys[1]).await.is_some());

    let gone = app
        .call(ApiRequest::delete(&format!("/api/v1/patients/{patient_id}")).bearer(&t))
        .await;
    assert_eq!(gone.status, 200);
    for key in &keys {
        assert!(
            app.object_in_bucket(key).await.is_none(),
            "{key} left behind"
        );
    }
    let queued = app.db.number("SELECT count(*) FROM object_deletions").await;
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn with_s3_unreachable_deletes_are_queued_and_the_sweep_finishes_them() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let created = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "keep-trying.bin"}),
    )
    .await
    .json();
    assert!(upload(&created, b"bytes").await.status().is_success());
    let key = key_of(&created);

    // The same database, an S3 endpoint where nothing listens.
    let down = attachments::AttachmentsState::from_env(
        &app.env_with(&[("S3_ENDPOINT_URL", "http://127.0.0.1:1")]),
    )
    .await
    .unwrap();
    let call = |request: ApiRequest| api_tests::invoke(attachments::router(down.clone()), request);

    // Presigning needs no network: creating still works.
    let offline = call(
        ApiRequest::post("/api/v1/attachments/")
            .bearer(&t)
            .json(json!({"patient_id": patient_id, "file_name": "x"})),
    )
    .await;
    assert_eq!(offline.status, 200, "{}", offline.body);
    assert!(offline.json()["upload_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:1/"));

    let deleted = call(
        ApiRequest::delete(&format!(
            "/api/v1/attachments/{}",
            created["id"].as_str().unwrap()
        ))
        .bearer(&t),
    )
    .await;
    assert_eq!(
        deleted.status, 200,
        "the row is gone; the object is queued: {}",
        deleted.body
    );
    assert!(
        app.object_in_bucket(&key).await.is_some(),
        "S3 was unreachable"
    );
    let queue = app
        .db
        .client()
        .await
        .query_one(
            "SELECT object_key, attempts, last_error IS NOT NULL FROM object_deletions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(queue.get::<_, String>(0), key);
    assert_eq!(queue.get::<_, i32>(1), 1);
    assert!(queue.get::<_, bool>(2));

    let schedule: Value = api_tests::event("attachment-events/schedule.json");
    let sweep = attachment_events::handle(&app.events, schedule)
        .await
        .unwrap();
    assert_eq!(sweep["objects_deleted"], 1, "{sweep}");
    assert!(app.object_in_bucket(&key).await.is_none());
    let left = app.db.number("SELECT count(*) FROM object_deletions").await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_sweep_removes_uploads_never_completed_and_confirms_late_ones() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    let abandoned = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "never.bin"}),
    )
    .await
    .json();
    let late = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "late.bin"}),
    )
    .await
    .json();
    let recent = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "recent.bin"}),
    )
    .await
    .json();
    assert!(upload(&late, b"made it").await.status().is_success());
    for old in [&abandoned, &late] {
        let id = uuid::Uuid::parse_str(old["id"].as_str().unwrap()).unwrap();
        app.db
            .client()
            .await
            .execute(
                "UPDATE attachments SET created_at = now() - interval '2 days' WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
    }
    let schedule: Value = api_tests::event("attachment-events/schedule.json");
    let sweep = attachment_events::handle(&app.events, schedule)
        .await
        .unwrap();
    assert_eq!(sweep["abandoned_uploads_removed"], 1, "{sweep}");
    let status = |v: &Value| {
        app.call(
            ApiRequest::get(&format!(
                "/api/v1/attachments/{}",
                v["id"].as_str().unwrap()
            ))
            .bearer(&t),
        )
    };
    assert_eq!(status(&abandoned).await.status, 404);
    assert_eq!(status(&late).await.json()["status"], "uploaded");
    assert_eq!(status(&recent).await.json()["status"], "pending");
}

#[tokio::test]
async fn patient_search_by_attachment_mime_type_uses_these_attachments() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let genome = patient(&app, &t, "Genome").await;
    let scan = patient(&app, &t, "Scan").await;
    create(
        &app,
        &t,
        json!({"patient_id": genome, "file_name": "reads.bam", "mime_type": "application/x-bam"}),
    )
    .await;
    create(
        &app,
        &t,
        json!({"patient_id": scan, "file_name": "ct.png", "mime_type": "image/png"}),
    )
    .await;
    let found = app
        .call(
            ApiRequest::get("/api/v1/patients/")
                .bearer(&t)
                .query("has_attachment_mime_type", "application/x-bam"),
        )
        .await
        .json();
    assert_eq!(found["count"], 1);
    assert_eq!(found["data"][0]["name"], "Genome");
}

/// What the database holds about an attachment's upload.
async fn attachment_row(
    app: &TestApp,
    created: &Value,
) -> (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
) {
    let id = uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let r = app
        .db
        .client()
        .await
        .query_one(
            "SELECT status, size, etag, stored_content_type, content_mismatch, uploaded_at::text
             FROM attachments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
}

#[tokio::test]
async fn an_upload_url_writes_its_key_once() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let created = uploaded(&app, &t, b"first").await;
    let first = read(&app, &t, &created).await.json();
    assert_eq!(first["status"], "uploaded");

    let again = upload(&created, b"other").await;
    assert_eq!(
        again.status(),
        412,
        "the key already holds the confirmed file"
    );
    assert_eq!(
        app.object_in_bucket(&key_of(&created)).await.as_deref(),
        Some(&b"first"[..]),
        "the stored bytes are the first ones"
    );
    let after = read(&app, &t, &created).await.json();
    assert_eq!(after["etag"], first["etag"]);
}

/// An attachment created then deleted before its upload, and the old URL used afterwards:
/// an object in the bucket that no row points at.
async fn orphan_object(app: &TestApp, t: &str) -> (Value, String) {
    let patient_id = patient(app, t, "P").await;
    let created = create(
        app,
        t,
        json!({"patient_id": patient_id, "file_name": "late.txt", "mime_type": "text/plain"}),
    )
    .await
    .json();
    let deleted = app
        .call(
            ApiRequest::delete(&format!(
                "/api/v1/attachments/{}",
                created["id"].as_str().unwrap()
            ))
            .bearer(t),
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert!(upload(&created, b"late bytes").await.status().is_success());
    let key = key_of(&created);
    assert!(app.object_in_bucket(&key).await.is_some());
    (created, key)
}

async fn orphan_events(app: &TestApp, patient_id: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM audit_events WHERE action = 'attachment.orphan_object_queued'
             AND actor_id IS NULL AND patient_id = $1",
            &[&uuid::Uuid::parse_str(patient_id).unwrap()],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_object_without_a_row_reported_by_s3_is_removed() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let (created, key) = orphan_object(&app, &t).await;
    let mut event: Value = api_tests::event("attachment-events/s3-object-created.json");
    event["Records"][0]["s3"]["object"]["key"] = json!(key);
    event["Records"][0]["s3"]["bucket"]["name"] = json!(app.bucket);
    let handled = attachment_events::handle(&app.events, event).await.unwrap();
    assert_eq!(handled["orphans_queued"], 1, "{handled}");
    assert!(
        app.object_in_bucket(&key).await.is_none(),
        "removed at once"
    );
    assert_eq!(
        app.db.number("SELECT count(*) FROM object_deletions").await,
        0
    );
    assert_eq!(
        orphan_events(&app, created["patient_id"].as_str().unwrap()).await,
        1
    );
}

#[tokio::test]
async fn the_sweep_removes_objects_no_row_points_at() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let (created, key) = orphan_object(&app, &t).await;
    // A file with its row must stay.
    let kept = create(
        &app,
        &t,
        json!({"patient_id": created["patient_id"], "file_name": "kept.txt", "mime_type": "text/plain"}),
    )
    .await
    .json();
    assert!(upload(&kept, b"kept").await.status().is_success());

    let schedule: Value = api_tests::event("attachment-events/schedule.json");
    // Younger than an upload URL's lifetime (15 minutes here): it may still get its row.
    let sweep = attachment_events::handle(&app.events, schedule.clone())
        .await
        .unwrap();
    assert_eq!(sweep["orphan_objects_queued"], 0, "{sweep}");
    assert!(app.object_in_bucket(&key).await.is_some());

    // With one-second upload URLs, the same object is old enough a moment later.
    let short = attachment_events::EventsState::from_env(
        &app.env_with(&[("UPLOAD_URL_EXPIRE_SECONDS", "1")]),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let sweep = attachment_events::handle(&short, schedule).await.unwrap();
    assert_eq!(sweep["orphan_objects_queued"], 1, "{sweep}");
    assert!(
        app.object_in_bucket(&key).await.is_none(),
        "the orphan is gone"
    );
    assert!(
        app.object_in_bucket(&key_of(&kept)).await.is_some(),
        "a file with its row stays"
    );
    assert_eq!(
        orphan_events(&app, created["patient_id"].as_str().unwrap()).await,
        1
    );
}

#[tokio::test]
async fn a_delete_stands_when_draining_its_object_fails() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let created = uploaded(&app, &t, b"bytes").await;
    // S3 is unreachable and the queue cannot record the failed attempt either.
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = 'disk_full'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON object_deletions FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let down = attachments::AttachmentsState::from_env(
        &app.env_with(&[("S3_ENDPOINT_URL", "http://127.0.0.1:1")]),
    )
    .await
    .unwrap();
    let deleted = api_tests::invoke(
        attachments::router(down),
        ApiRequest::delete(&format!(
            "/api/v1/attachments/{}",
            created["id"].as_str().unwrap()
        ))
        .bearer(&t),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = read(&app, &t, &created).await;
    assert_eq!(again.status, 404);
    assert_eq!(
        app.db.number("SELECT count(*) FROM object_deletions").await,
        1,
        "the object stays queued for the sweep"
    );
}

#[tokio::test]
async fn a_page_of_pending_uploads_keeps_few_s3_requests_in_flight() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    for i in 0..200 {
        let created = create(
            &app,
            &t,
            json!({"patient_id": patient_id, "file_name": format!("f{i}.bin")}),
        )
        .await;
        assert_eq!(created.status, 200);
    }
    let proxy = api_tests::CountingS3Proxy::start().await;
    let through_proxy =
        attachments::AttachmentsState::from_env(&app.env_with(&[("S3_ENDPOINT_URL", &proxy.url)]))
            .await
            .unwrap();
    let listed = api_tests::invoke(
        attachments::router(through_proxy),
        ApiRequest::get("/api/v1/attachments/")
            .bearer(&t)
            .query("limit", "200"),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["data"].as_array().unwrap().len(), 200);
    assert_eq!(
        proxy.requests.load(std::sync::atomic::Ordering::SeqCst),
        200,
        "one HEAD per pending upload"
    );
    let most = proxy.most_in_flight();
    assert!(
        (2..=domain::attachments::MAX_HEADS_IN_FLIGHT).contains(&most),
        "at most {} HEADs at once, and more than one: {most}",
        domain::attachments::MAX_HEADS_IN_FLIGHT
    );
    assert_eq!(proxy.now_in_flight(), 0);
}

#[tokio::test]
async fn file_names_that_would_display_as_something_else_are_refused() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient_id = patient(&app, &t, "P").await;
    for name in [
        "invoice\u{202E}fdp.exe",
        "report\u{200B}.pdf",
        "\u{FEFF}scan.png",
        "a\u{2066}b\u{2069}.txt",
    ] {
        let refused = create(
            &app,
            &t,
            json!({"patient_id": patient_id, "file_name": name}),
        )
        .await;
        assert_eq!(refused.status, 422, "{name:?}: {}", refused.body);
        assert_eq!(refused.detail()[0]["loc"], json!(["body", "file_name"]));
    }
    let fine = create(
        &app,
        &t,
        json!({"patient_id": patient_id, "file_name": "Résumé – ñandú 名前.pdf"}),
    )
    .await;
    assert_eq!(fine.status, 200, "{}", fine.body);
}

#[tokio::test]
async fn an_uploaded_file_replaced_behind_our_back_is_flagged_and_audited() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let created = uploaded(&app, &t, b"original").await;
    assert_eq!(read(&app, &t, &created).await.json()["status"], "uploaded");
    // Someone with direct bucket access writes over it (no upload URL can).
    api_tests::s3_client()
        .await
        .put_object()
        .bucket(&app.bucket)
        .key(key_of(&created))
        .content_type("text/plain")
        .body(b"tampered".to_vec().into())
        .send()
        .await
        .unwrap();
    let mut event: Value = api_tests::event("attachment-events/s3-object-created.json");
    event["Records"][0]["s3"]["object"]["key"] = json!(key_of(&created));
    event["Records"][0]["s3"]["bucket"]["name"] = json!(app.bucket);
    let handled = attachment_events::handle(&app.events, event).await.unwrap();
    assert_eq!(handled["replaced"], 1, "{handled}");
    let row = attachment_row(&app, &created).await;
    assert!(row.4, "flagged on the row");
    let events = app
        .db
        .number(
            "SELECT count(*) FROM audit_events WHERE action = 'attachment.object_replaced' AND actor_id IS NULL",
        )
        .await;
    assert_eq!(events, 1);
}

/// A patient's attachments are only read at their path: another method is the attachments
/// function's 405, as the replaced system answered, wherever API Gateway routes it.
#[tokio::test]
async fn another_method_on_a_patients_attachments_is_405() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let id = patient(&app, &token, "Method Probe").await;
    let response = app
        .call(
            ApiRequest::post(&format!("/api/v1/patients/{id}/attachments"))
                .bearer(&token)
                .json(json!({})),
        )
        .await;
    assert_eq!(response.status, 405, "{}", response.body);
    assert_eq!(response.detail(), "Method Not Allowed");
}
