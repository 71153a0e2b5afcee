//! Multipart uploads and checksums, with real signatures and real bytes through the local S3
//! server: part URLs, resuming, completion, abort, the sweep, and single uploads that declare
//! a SHA-256.

use api_tests::{http_client, upload, ApiRequest, ApiResponse, TestApp};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// S3's composite checksum, computed here independently of the API.
fn composite(parts: &[&[u8]]) -> String {
    let mut outer = Sha256::new();
    for part in parts {
        outer.update(Sha256::digest(part));
    }
    format!(
        "{}-{}",
        base64::engine::general_purpose::STANDARD.encode(outer.finalize()),
        parts.len()
    )
}

/// Deterministic bytes that differ from part to part.
fn file_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
        .collect()
}

async fn patient(app: &TestApp, token: &str) -> String {
    let response = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(token)
                .json(json!({"name": "Genome Owner"})),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["id"].as_str().unwrap().to_owned()
}

struct Multipart<'a> {
    app: &'a TestApp,
    token: String,
    id: String,
    bytes: Vec<u8>,
    part_size: usize,
}

impl Multipart<'_> {
    fn part(&self, number: usize) -> &[u8] {
        let start = (number - 1) * self.part_size;
        &self.bytes[start..(start + self.part_size).min(self.bytes.len())]
    }

    fn path(&self, tail: &str) -> String {
        format!("/api/v1/attachments/{}{tail}", self.id)
    }

    async fn part_urls(&self, numbers: &[usize], digests: &[String]) -> ApiResponse {
        self.app
            .call(
                ApiRequest::post(&self.path("/upload-parts"))
                    .bearer(&self.token)
                    .json(json!({"part_numbers": numbers, "sha256": digests})),
            )
            .await
    }

    /// Asks for the URLs of `numbers` (signed for their real digests) and PUTs `body(n)` to each.
    async fn send(&self, numbers: &[usize], body: impl Fn(usize) -> Vec<u8>) -> Vec<u16> {
        let digests: Vec<String> = numbers.iter().map(|n| sha256_b64(self.part(*n))).collect();
        let urls = self.part_urls(numbers, &digests).await;
        assert_eq!(urls.status, 200, "{}", urls.body);
        let mut statuses = Vec::new();
        for ((n, part), digest) in numbers
            .iter()
            .zip(urls.json()["parts"].as_array().unwrap())
            .zip(&digests)
        {
            assert_eq!(part["part_number"], *n);
            // The signature covers the part's length and digest (as S3's checksum and as the
            // payload hash).
            let headers = &part["headers"];
            assert_eq!(headers["x-amz-checksum-sha256"], *digest, "{part}");
            let hex: String = base64::engine::general_purpose::STANDARD
                .decode(digest)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(headers["x-amz-content-sha256"], hex, "{part}");
            assert_eq!(
                headers["content-length"],
                self.part(*n).len().to_string(),
                "{part}"
            );
            let signed = part["url"].as_str().unwrap();
            assert!(signed.contains("X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-sha256%3Bx-amz-content-sha256"), "{signed}");
            statuses.push(put(part, body(*n)).await);
        }
        statuses
    }

    async fn progress(&self) -> ApiResponse {
        self.app
            .call(ApiRequest::get(&self.path("/upload-parts")).bearer(&self.token))
            .await
    }

    async fn complete(&self) -> ApiResponse {
        self.app
            .call(ApiRequest::post(&self.path("/complete")).bearer(&self.token))
            .await
    }

    async fn download(&self) -> Vec<u8> {
        let content = self
            .app
            .call(
                ApiRequest::get(&self.path("/content"))
                    .query("redirect", "false")
                    .bearer(&self.token),
            )
            .await;
        assert_eq!(content.status, 200, "{}", content.body);
        let response = http_client()
            .get(content.json()["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap().to_vec()
    }
}

/// PUTs `body` to a part URL with exactly the headers the API listed: the status, or 0 when
/// the server cut the connection (s3s may refuse before reading the body).
async fn put(part: &Value, body: Vec<u8>) -> u16 {
    assert_eq!(part["method"], "PUT");
    let mut request = http_client().put(part["url"].as_str().unwrap()).body(body);
    // Content-Length is the body's own (a signed header: the wrong length is refused).
    for (name, value) in part["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    request.send().await.map_or(0, |r| r.status().as_u16())
}

/// S3 answers 400 (BadDigest) for bytes that are not the signed ones; s3s-fs 0.14.1 answers
/// 500 for the same refusal. Either way nothing is stored, which the tests check as well.
fn refused(status: u16) -> bool {
    !(200..300).contains(&status)
}

/// A multipart attachment of two full 8 MiB parts and a short third one.
async fn started(app: &TestApp) -> Multipart<'_> {
    let token = app.clinician().await.token;
    let patient_id = patient(app, &token).await;
    let bytes = file_bytes(2 * 8 * MIB + 1234, 7);
    let created = app
        .call(
            ApiRequest::post("/api/v1/attachments/")
                .bearer(&token)
                .json(json!({
                    "patient_id": patient_id, "file_name": "sample.bam",
                    "mime_type": "application/x-bam", "size": bytes.len(), "upload": "multipart",
                })),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let created = created.json();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["upload"]["type"], "multipart");
    assert_eq!(created["upload"]["part_size"], 8 * MIB);
    assert_eq!(created["upload"]["part_count"], 3);
    assert!(created["upload"]["expires_at"].is_string());
    // Not the single-PUT fields: a client that only knows those must not PUT a part-less URL.
    assert!(created.get("upload_url").is_none(), "{created}");
    Multipart {
        app,
        token,
        id: created["id"].as_str().unwrap().to_owned(),
        bytes,
        part_size: 8 * MIB,
    }
}

async fn actions(app: &TestApp, id: &str) -> Vec<(String, String)> {
    app.db
        .client()
        .await
        .query(
            "SELECT action, outcome FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id",
            &[&uuid::Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn three_checksummed_parts_complete_and_download_byte_identical() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    assert_eq!(
        upload.send(&[1, 2, 3], |n| upload.part(n).to_vec()).await,
        [200, 200, 200]
    );

    let progress = upload.progress().await;
    assert_eq!(progress.status, 200, "{}", progress.body);
    let progress = progress.json();
    assert_eq!(progress["missing_part_numbers"], json!([]));
    assert_eq!(progress["uploaded_bytes"], upload.bytes.len());
    let listed: Vec<(i64, i64, String)> = progress["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part_number"].as_i64().unwrap(),
                p["size"].as_i64().unwrap(),
                p["checksum_sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        (1..=3)
            .map(|n| (
                n as i64,
                upload.part(n).len() as i64,
                sha256_b64(upload.part(n))
            ))
            .collect::<Vec<_>>()
    );

    let completed = upload.complete().await;
    assert_eq!(completed.status, 200, "{}", completed.body);
    let completed = completed.json();
    assert_eq!(completed["status"], "uploaded");
    assert_eq!(completed["size"], upload.bytes.len());
    assert_eq!(
        completed["checksum_sha256"],
        composite(&[upload.part(1), upload.part(2), upload.part(3)])
    );
    // A retry answers the same attachment.
    let again = upload.complete().await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.json()["checksum_sha256"],
        completed["checksum_sha256"]
    );
    assert!(upload.download().await == upload.bytes);
    assert_eq!(
        actions(&app, &upload.id).await,
        [
            ("attachment.create", "success"),
            ("attachment.upload_part_urls", "success"),
            ("attachment.upload_parts_list", "success"),
            ("attachment.upload_confirmed", "success"),
            ("attachment.upload_complete", "success"),
            ("attachment.upload_complete", "success"),
            ("attachment.download", "success"),
        ]
        .map(|(a, o)| (a.to_owned(), o.to_owned()))
    );
}

#[tokio::test]
async fn a_part_with_other_bytes_is_refused_and_completion_waits_until_it_is_resent() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    // Part 2's URL is signed for its real digest; other bytes of the same length are refused
    // by the bucket, and so are bytes of another length.
    let corrupt = |n: usize| {
        let mut bytes = upload.part(n).to_vec();
        if n == 2 {
            bytes[12345] ^= 0xff;
        }
        bytes
    };
    let statuses = upload.send(&[1, 2, 3], corrupt).await;
    assert_eq!(statuses[0], 200);
    assert!(refused(statuses[1]), "{statuses:?}");
    assert_eq!(statuses[2], 200);
    let short = upload.send(&[2], |n| upload.part(n)[..100].to_vec()).await;
    assert!(refused(short[0]), "{short:?}");

    let progress = upload.progress().await.json();
    assert_eq!(progress["missing_part_numbers"], json!([2]));
    let refused = upload.complete().await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.detail().as_str().unwrap().contains("parts 2 "),
        "{}",
        refused.body
    );
    // The refusal left the upload intact: resend part 2 and complete.
    assert_eq!(upload.send(&[2], |n| upload.part(n).to_vec()).await, [200]);
    let completed = upload.complete().await;
    assert_eq!(completed.status, 200, "{}", completed.body);
    assert!(upload.download().await == upload.bytes);
}

#[tokio::test]
async fn a_resumed_upload_lists_what_arrived_and_sends_only_the_rest() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    assert_eq!(
        upload.send(&[1, 3], |n| upload.part(n).to_vec()).await,
        [200, 200]
    );

    // Another client (a reload, another machine) asks what arrived.
    let progress = upload.progress().await.json();
    assert_eq!(progress["part_count"], 3);
    assert_eq!(progress["part_size"], 8 * MIB);
    assert_eq!(progress["size"], upload.bytes.len());
    assert_eq!(progress["missing_part_numbers"], json!([2]));
    let held: Vec<i64> = progress["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part_number"].as_i64().unwrap())
        .collect();
    assert_eq!(held, [1, 3]);
    let missing: Vec<usize> = progress["missing_part_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        upload.send(&missing, |n| upload.part(n).to_vec()).await,
        [200]
    );
    assert_eq!(upload.complete().await.status, 200);
    assert!(upload.download().await == upload.bytes);
}

#[tokio::test]
async fn deleting_a_pending_multipart_upload_aborts_it_and_leaves_nothing() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    assert_eq!(upload.send(&[1], |n| upload.part(n).to_vec()).await, [200]);
    let digests = vec![sha256_b64(upload.part(2))];
    let later = upload.part_urls(&[2], &digests).await.json()["parts"][0].clone();

    let deleted = app
        .call(ApiRequest::delete(&upload.path("")).bearer(&upload.token))
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    // The upload is gone in S3: a URL issued before cannot add a part.
    let status = put(&later, upload.part(2).to_vec()).await;
    assert!(refused(status), "{status}");
    assert_eq!(
        app.db.number("SELECT count(*) FROM multipart_aborts").await,
        0
    );
    assert_eq!(app.db.number("SELECT count(*) FROM upload_parts").await, 0);
    assert_eq!(
        app.call(ApiRequest::get(&upload.path("")).bearer(&upload.token))
            .await
            .status,
        404
    );
    let key = app
        .db
        .client()
        .await
        .query_one(
            "SELECT details FROM audit_events WHERE action = 'attachment.delete' AND resource_id = $1",
            &[&uuid::Uuid::parse_str(&upload.id).unwrap()],
        )
        .await
        .unwrap()
        .get::<_, Value>(0);
    assert_eq!(key["multipart_upload_aborted"], true);
}

#[tokio::test]
async fn the_sweep_aborts_multipart_uploads_abandoned_for_the_window() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    assert_eq!(upload.send(&[1], |n| upload.part(n).to_vec()).await, [200]);
    let digests = vec![sha256_b64(upload.part(2))];
    let later = upload.part_urls(&[2], &digests).await.json()["parts"][0].clone();
    let schedule: Value = api_tests::event("attachment-events/schedule.json");

    // Activity an hour ago keeps it alive, whenever it was created.
    let id = uuid::Uuid::parse_str(&upload.id).unwrap();
    let age = |created: &'static str, active: &'static str| {
        let app = &app;
        async move {
            app.db
                .client()
                .await
                .execute(
                    &format!(
                        "UPDATE attachments SET created_at = now() - interval '{created}',
                         upload_activity_at = now() - interval '{active}' WHERE id = $1"
                    ),
                    &[&id],
                )
                .await
                .unwrap();
        }
    };
    age("3 days", "1 hour").await;
    let sweep = attachment_events::handle(&app.events, schedule.clone())
        .await
        .unwrap();
    assert_eq!(sweep["abandoned_uploads_removed"], 0, "{sweep}");
    assert_eq!(upload.progress().await.status, 200);

    age("3 days", "25 hours").await;
    let sweep = attachment_events::handle(&app.events, schedule)
        .await
        .unwrap();
    assert_eq!(sweep["abandoned_uploads_removed"], 1, "{sweep}");
    let status = put(&later, upload.part(2).to_vec()).await;
    assert!(refused(status), "{status}");
    assert_eq!(
        app.db.number("SELECT count(*) FROM multipart_aborts").await,
        0
    );
    assert_eq!(
        app.call(ApiRequest::get(&upload.path("")).bearer(&upload.token))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn new_routes_check_token_role_input_and_state() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    let viewer = app.viewer().await.token;
    let digest = sha256_b64(upload.part(1));
    let routes = [
        ("POST", "/upload-parts"),
        ("GET", "/upload-parts"),
        ("POST", "/complete"),
    ];
    for (method, tail) in routes {
        let request = |token: Option<&str>, id: &str| {
            let mut r = ApiRequest::new(method, &format!("/api/v1/attachments/{id}{tail}"));
            if let Some(token) = token {
                r = r.bearer(token);
            }
            if method == "POST" && tail == "/upload-parts" {
                r = r.json(json!({"part_numbers": [1], "sha256": [digest]}));
            }
            r
        };
        assert_eq!(
            app.call(request(None, &upload.id)).await.status,
            401,
            "{method} {tail}"
        );
        assert_eq!(
            app.call(request(Some("not-a-token"), &upload.id))
                .await
                .status,
            401
        );
        assert_eq!(
            app.call(request(Some(&viewer), &upload.id)).await.status,
            403,
            "{method} {tail}"
        );
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            app.call(request(Some(&upload.token), &unknown))
                .await
                .status,
            404
        );
        assert_eq!(
            app.call(request(Some(&upload.token), "nope")).await.status,
            422
        );
    }

    let bad = |body: Value| {
        let (app, upload) = (&app, &upload);
        async move {
            let response = app
                .call(
                    ApiRequest::post(&upload.path("/upload-parts"))
                        .bearer(&upload.token)
                        .json(body),
                )
                .await;
            assert_eq!(response.status, 422, "{}", response.body);
            response.detail()[0]["loc"].clone()
        }
    };
    assert_eq!(
        bad(json!({"part_numbers": [0], "sha256": [digest]})).await,
        json!(["body", "part_numbers", "0"])
    );
    assert_eq!(
        bad(json!({"part_numbers": [4], "sha256": [digest]})).await,
        json!(["body", "part_numbers", "0"])
    );
    assert_eq!(
        bad(json!({"part_numbers": [1, 1], "sha256": [digest, digest]})).await,
        json!(["body", "part_numbers", "1"])
    );
    assert_eq!(
        bad(json!({"part_numbers": [1, 2], "sha256": [digest]})).await,
        json!(["body", "sha256"])
    );
    assert_eq!(
        bad(json!({"part_numbers": [], "sha256": []})).await,
        json!(["body", "part_numbers"])
    );
    assert_eq!(
        bad(json!({"part_numbers": [1], "sha256": ["abc"]})).await,
        json!(["body", "sha256", 0])
    );
    assert_eq!(
        bad(json!({"part_numbers": [1.5], "sha256": [digest]})).await,
        json!(["body", "part_numbers", 0])
    );
    // A whole number written as a float is an integer, as JSON Schema and FastAPI take it.
    let float = app
        .call(
            ApiRequest::post(&upload.path("/upload-parts"))
                .bearer(&upload.token)
                .json(json!({"part_numbers": [1.0], "sha256": [digest]})),
        )
        .await;
    assert_eq!(float.status, 200, "{}", float.body);
    let many: Vec<usize> = (1..=101).collect();
    assert_eq!(
        bad(json!({"part_numbers": many, "sha256": vec![digest.clone(); 101]})).await,
        json!(["body", "part_numbers"])
    );
    let missing_body = app
        .call(ApiRequest::post(&upload.path("/upload-parts")).bearer(&upload.token))
        .await;
    assert_eq!(missing_body.status, 422);

    // Nothing arrived: completion names what is missing and changes nothing.
    let early = upload.complete().await;
    assert_eq!(early.status, 409, "{}", early.body);
    assert_eq!(upload.progress().await.status, 200);
    // A client's list of parts that is not what S3 holds is refused.
    assert_eq!(
        upload.send(&[1, 2, 3], |n| upload.part(n).to_vec()).await,
        [200, 200, 200]
    );
    let disagree = app
        .call(
            ApiRequest::post(&upload.path("/complete"))
                .bearer(&upload.token)
                .json(json!({"parts": [{"part_number": 1}, {"part_number": 2}]})),
        )
        .await;
    assert_eq!(disagree.status, 409, "{}", disagree.body);
    let agree = app
        .call(
            ApiRequest::post(&upload.path("/complete"))
                .bearer(&upload.token)
                .json(
                    json!({"parts": [{"part_number": 1}, {"part_number": 2}, {"part_number": 3}]}),
                ),
        )
        .await;
    assert_eq!(agree.status, 200, "{}", agree.body);
    // Completed: no more part URLs, no part list.
    assert_eq!(
        upload
            .part_urls(&[1], std::slice::from_ref(&digest))
            .await
            .status,
        409
    );
    assert_eq!(upload.progress().await.status, 409);

    // Refused part URLs, listings and completions are audited, each once: a viewer's as an
    // event of its own, those without a valid token (none, a bad one) counted per route.
    let denied = app
        .db
        .number(&format!(
            "SELECT count(*) FROM audit_events WHERE action IN ('attachment.upload_part_urls', 'attachment.upload_parts_list', 'attachment.upload_complete') AND outcome = 'denied' AND resource_id = '{}'",
            upload.id
        ))
        .await;
    assert_eq!(denied, 3);
    let counted = app
        .db
        .number(
            "SELECT coalesce(sum(refusals), 0)::int8 FROM audit_refusals WHERE action IN ('attachment.upload_part_urls', 'attachment.upload_parts_list', 'attachment.upload_complete')",
        )
        .await;
    assert_eq!(counted, 6);
}

#[tokio::test]
async fn creation_chooses_the_upload_from_size_and_threshold() {
    let app =
        TestApp::with_settings(&[("MULTIPART_THRESHOLD_BYTES", &(6 * MIB).to_string())]).await;
    let token = app.clinician().await.token;
    let patient_id = patient(&app, &token).await;
    let create = |body: Value| {
        let mut body = body;
        body["patient_id"] = json!(patient_id);
        body["file_name"] = json!("f.bin");
        app.call(
            ApiRequest::post("/api/v1/attachments/")
                .bearer(&token)
                .json(body),
        )
    };
    // The replaced system's clients declare no size: one URL, in the fields they read.
    let legacy = create(json!({})).await.json();
    assert_eq!(legacy["upload"]["type"], "single");
    assert_eq!(legacy["upload_method"], "PUT");
    assert_eq!(legacy["upload_url"], legacy["upload"]["url"]);
    assert_eq!(
        create(json!({"size": 6 * MIB})).await.json()["upload"]["type"],
        "single"
    );
    let above = create(json!({"size": 6 * MIB + 1})).await.json();
    assert_eq!(above["upload"]["type"], "multipart");
    assert_eq!(above["upload"]["part_count"], 1);
    assert_eq!(
        create(json!({"size": 6.0 * MIB as f64 + 1.0})).await.json()["upload"]["type"],
        "multipart"
    );
    assert_eq!(
        create(json!({"size": 10, "upload": "multipart"}))
            .await
            .json()["upload"]["type"],
        "multipart"
    );
    // 5 TiB in 10,000 parts at most.
    let largest = create(json!({"size": 5u64 << 40})).await.json();
    assert_eq!(largest["upload"]["type"], "multipart");
    assert!(largest["upload"]["part_count"].as_u64().unwrap() <= 10_000);

    let refused = |body: Value, loc: Value| {
        let create = &create;
        async move {
            let response = create(body).await;
            assert_eq!(response.status, 422, "{}", response.body);
            assert_eq!(response.detail()[0]["loc"], loc, "{}", response.body);
        }
    };
    refused(json!({"size": (5u64 << 40) + 1}), json!(["body", "size"])).await;
    refused(json!({"upload": "multipart"}), json!(["body", "size"])).await;
    refused(
        json!({"size": (5u64 << 30) + 1, "upload": "single"}),
        json!(["body", "upload"]),
    )
    .await;
    refused(
        json!({"size": 7 * MIB, "sha256": sha256_b64(b"x")}),
        json!(["body", "sha256"]),
    )
    .await;
    refused(
        json!({"size": 10, "sha256": "not base64!"}),
        json!(["body", "sha256"]),
    )
    .await;
    refused(json!({"upload": "chunked"}), json!(["body", "upload"])).await;
    refused(json!({"size": 10.5}), json!(["body", "size"])).await;
    refused(json!({"size": -1}), json!(["body", "size"])).await;
    // Nothing was written for any refusal.
    assert_eq!(app.db.number("SELECT count(*) FROM attachments").await, 6);
}

#[tokio::test]
async fn a_single_upload_with_a_declared_sha256_stores_only_those_bytes() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let patient_id = patient(&app, &token).await;
    let bytes = file_bytes(300_000, 3);
    let created = app
        .call(
            ApiRequest::post("/api/v1/attachments/").bearer(&token).json(json!({
                "patient_id": patient_id, "file_name": "report.pdf", "mime_type": "application/pdf",
                "size": bytes.len(), "sha256": sha256_b64(&bytes),
            })),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let created = created.json();
    assert_eq!(
        created["upload_headers"]["x-amz-checksum-sha256"],
        sha256_b64(&bytes)
    );
    let mut other = bytes.clone();
    other[0] ^= 1;
    let status = upload(&created, &other).await.status().as_u16();
    assert!(refused(status), "{status}");
    let key = format!(
        "patients/{patient_id}/attachments/{}",
        created["id"].as_str().unwrap()
    );
    assert!(
        app.object_in_bucket(&key).await.is_none(),
        "refused bytes were stored"
    );

    assert!(upload(&created, &bytes).await.status().is_success());
    let read = app
        .call(
            ApiRequest::get(&format!(
                "/api/v1/attachments/{}",
                created["id"].as_str().unwrap()
            ))
            .bearer(&token),
        )
        .await
        .json();
    assert_eq!(read["status"], "uploaded");
    assert_eq!(read["checksum_sha256"], sha256_b64(&bytes));
}

#[tokio::test]
async fn other_bytes_written_past_the_url_are_removed_not_confirmed() {
    let app = TestApp::new().await;
    let token = app.clinician().await.token;
    let patient_id = patient(&app, &token).await;
    let bytes = b"the declared bytes".to_vec();
    let created = app
        .call(
            ApiRequest::post("/api/v1/attachments/")
                .bearer(&token)
                .json(json!({
                    "patient_id": patient_id, "file_name": "a.txt", "sha256": sha256_b64(&bytes),
                })),
        )
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let key = format!("patients/{patient_id}/attachments/{id}");
    // Someone with direct bucket access writes other bytes under the key.
    api_tests::s3_client()
        .await
        .put_object()
        .bucket(&app.bucket)
        .key(&key)
        .body(b"other bytes".to_vec().into())
        .send()
        .await
        .unwrap();
    let read = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}")).bearer(&token))
        .await
        .json();
    assert_eq!(read["status"], "pending");
    assert!(app.object_in_bucket(&key).await.is_none());
    assert_eq!(
        app.db
            .number("SELECT count(*) FROM audit_events WHERE action = 'attachment.checksum_mismatch' AND actor_id IS NULL")
            .await,
        1
    );
    // The upload URL can still write the right bytes.
    assert!(upload(&created, &bytes).await.status().is_success());
    let read = app
        .call(ApiRequest::get(&format!("/api/v1/attachments/{id}")).bearer(&token))
        .await
        .json();
    assert_eq!(read["status"], "uploaded");
}

/// Part URLs are signed for the user who opened the upload (or a superuser), never for another
/// clinician; and a part S3 already holds is never signed again for another digest, while a
/// part never sent may be.
#[tokio::test]
async fn only_the_opener_signs_parts_and_a_stored_part_keeps_its_digest() {
    let app = TestApp::new().await;
    let upload = started(&app).await;
    let other = app.clinician().await.token;
    let digest = sha256_b64(upload.part(1));
    let as_other = app
        .call(
            ApiRequest::post(&upload.path("/upload-parts"))
                .bearer(&other)
                .json(json!({"part_numbers": [1], "sha256": [digest]})),
        )
        .await;
    assert_eq!(as_other.status, 403, "{}", as_other.body);
    let admin = app.superuser_token().await;
    let as_admin = app
        .call(
            ApiRequest::post(&upload.path("/upload-parts"))
                .bearer(&admin)
                .json(json!({"part_numbers": [1], "sha256": [digest]})),
        )
        .await;
    assert_eq!(as_admin.status, 200, "{}", as_admin.body);
    // Part 1 stored; part 2 only signed.
    assert_eq!(upload.send(&[1], |n| upload.part(n).to_vec()).await, [200]);
    let first_digest_of_2 = sha256_b64(b"bytes never sent");
    assert_eq!(
        upload.part_urls(&[2], &[first_digest_of_2]).await.status,
        200
    );
    let other_bytes = sha256_b64(b"other bytes for a stored part");
    let resigned = upload
        .part_urls(&[1], std::slice::from_ref(&other_bytes))
        .await;
    assert_eq!(resigned.status, 409, "{}", resigned.body);
    // Part 2 was never sent: signing it for its real bytes is fine.
    assert_eq!(
        upload
            .part_urls(&[2], &[sha256_b64(upload.part(2))])
            .await
            .status,
        200
    );
    // The stored part still holds the original bytes' digest.
    let recorded = app
        .db
        .client()
        .await
        .query_one(
            "SELECT sha256 FROM upload_parts WHERE attachment_id = $1 AND part_number = 1",
            &[&uuid::Uuid::parse_str(&upload.id).unwrap()],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(recorded, digest);
}
