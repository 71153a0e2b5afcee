use std::collections::HashSet;

use api_tests::{mail_to, token_in, unique_email, ApiRequest, TestApp};
use serde_json::{json, Value};

/// The audit events written for API Gateway request `request_id`, oldest first.
async fn events_of(app: &TestApp, request_id: &str) -> Vec<Value> {
    let lambda_id = format!("lambda-{request_id}");
    app.db
        .client()
        .await
        .query(
            "SELECT json_build_object('action', action, 'outcome', outcome, 'actor_id', actor_id,
                    'actor_email', actor_email, 'resource_type', resource_type, 'resource_id', resource_id,
                    'patient_id', patient_id, 'source_ip', source_ip, 'user_agent', user_agent, 'details', details)
             FROM audit_events WHERE request_id = $1 ORDER BY occurred_at, id",
            &[&lambda_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Sends `request` with a known request id and returns the one event it left.
async fn only_event(app: &TestApp, request: ApiRequest) -> (u16, Value, Value) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = app.call(request.request_id(&request_id)).await;
    let events = events_of(app, &request_id).await;
    assert_eq!(
        events.len(),
        1,
        "exactly one event per request: {events:?} ({})",
        response.body
    );
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    };
    (response.status, body, events[0].clone())
}

fn check(event: &Value, action: &str, outcome: &str, actor: Option<&str>, patient: Option<&str>) {
    assert_eq!(event["action"], action, "{event}");
    assert_eq!(event["outcome"], outcome, "{event}");
    assert_eq!(event["actor_id"].as_str(), actor, "{event}");
    assert_eq!(event["patient_id"].as_str(), patient, "{event}");
    assert_eq!(event["source_ip"], "198.51.100.7", "{event}");
    assert_eq!(event["user_agent"], "carevault-tests", "{event}");
}

#[tokio::test]
async fn every_patient_and_attachment_route_leaves_its_event() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let viewer = app.viewer().await;
    let (t, me) = (&clinician.token, Some(clinician.id.as_str()));

    let (status, patient, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/patients/")
            .bearer(t)
            .json(json!({"name": "Audited", "medical_history": "asthma"})),
    )
    .await;
    assert_eq!(status, 200);
    let pid = patient["id"].as_str().unwrap().to_owned();
    let p = Some(pid.as_str());
    check(&event, "patient.create", "success", me, p);
    assert_eq!(event["resource_id"].as_str(), p);

    let path = format!("/api/v1/patients/{pid}");
    let (_, _, event) = only_event(&app, ApiRequest::get(&path).bearer(t)).await;
    check(&event, "patient.read", "success", me, p);

    let (_, _, event) = only_event(
        &app,
        ApiRequest::patch(&path)
            .bearer(t)
            .json(json!({"contact_info": "555"})),
    )
    .await;
    check(&event, "patient.update", "success", me, p);
    assert_eq!(
        event["details"]["fields"],
        json!(["contact_info"]),
        "field names, never values"
    );

    let (_, _, event) = only_event(
        &app,
        ApiRequest::get("/api/v1/patients/")
            .bearer(t)
            .query("history_text", "asthma"),
    )
    .await;
    check(&event, "patient.search", "success", me, None);
    assert_eq!(event["details"]["filters"], json!(["history_text"]));
    assert_eq!(event["details"]["patient_ids"], json!([pid]));
    assert!(
        !event.to_string().contains("asthma"),
        "no search text in the trail"
    );

    // Attachments.
    let (_, created, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/attachments/")
            .bearer(t)
            .json(json!({"patient_id": pid, "file_name": "a.txt", "mime_type": "text/plain"})),
    )
    .await;
    let aid = created["id"].as_str().unwrap().to_owned();
    check(&event, "attachment.create", "success", me, p);
    assert_eq!(event["resource_id"].as_str(), Some(aid.as_str()));
    let put = api_tests::upload(&created, b"hello").await;
    assert!(put.status().is_success());

    // The first read finds the upload: the confirmation (by the system) and the read.
    let request_id = uuid::Uuid::new_v4().to_string();
    app.call(
        ApiRequest::get(&format!("/api/v1/attachments/{aid}"))
            .bearer(t)
            .request_id(&request_id),
    )
    .await;
    let events = events_of(&app, &request_id).await;
    let confirmed = app
        .db
        .client()
        .await
        .query_one(
            "SELECT actor_id IS NULL, patient_id::text, outcome FROM audit_events WHERE action = 'attachment.upload_confirmed' AND resource_id = $1",
            &[&uuid::Uuid::parse_str(&aid).unwrap()],
        )
        .await
        .unwrap();
    assert!(confirmed.get::<_, bool>(0));
    assert_eq!(confirmed.get::<_, String>(1), pid);
    assert_eq!(events.len(), 1);
    check(&events[0], "attachment.read", "success", me, p);

    let (_, _, event) = only_event(
        &app,
        ApiRequest::get("/api/v1/attachments/")
            .bearer(t)
            .query("patient_id", &pid),
    )
    .await;
    check(&event, "attachment.list", "success", me, p);
    assert_eq!(event["details"]["attachment_ids"], json!([aid]));
    let (_, _, event) = only_event(
        &app,
        ApiRequest::get(&format!("/api/v1/patients/{pid}/attachments")).bearer(t),
    )
    .await;
    check(&event, "attachment.list", "success", me, p);

    let (status, _, event) = only_event(
        &app,
        ApiRequest::get(&format!("/api/v1/attachments/{aid}/content")).bearer(&viewer.token),
    )
    .await;
    assert_eq!(status, 302);
    check(
        &event,
        "attachment.download",
        "success",
        Some(viewer.id.as_str()),
        p,
    );

    // Denied and not found: what an auditor looks for.
    let (status, _, event) =
        only_event(&app, ApiRequest::delete(&path).bearer(&viewer.token)).await;
    assert_eq!(status, 403);
    check(
        &event,
        "patient.delete",
        "denied",
        Some(viewer.id.as_str()),
        p,
    );
    let (status, _, event) = only_event(
        &app,
        ApiRequest::delete(&format!("/api/v1/attachments/{aid}")).bearer(&viewer.token),
    )
    .await;
    assert_eq!(status, 403);
    check(
        &event,
        "attachment.delete",
        "denied",
        Some(viewer.id.as_str()),
        None,
    );
    let missing = uuid::Uuid::new_v4().to_string();
    let (status, _, event) = only_event(
        &app,
        ApiRequest::get(&format!("/api/v1/patients/{missing}")).bearer(t),
    )
    .await;
    assert_eq!(status, 404);
    check(
        &event,
        "patient.read",
        "not_found",
        me,
        Some(missing.as_str()),
    );
    let (status, _, event) = only_event(
        &app,
        ApiRequest::get("/api/v1/patients/not-a-uuid").bearer(t),
    )
    .await;
    assert_eq!(status, 422);
    check(&event, "patient.read", "invalid", me, None);

    let (status, _, event) = only_event(
        &app,
        ApiRequest::delete(&format!("/api/v1/attachments/{aid}")).bearer(t),
    )
    .await;
    assert_eq!(status, 200);
    check(&event, "attachment.delete", "success", me, p);
    let (status, _, event) = only_event(&app, ApiRequest::delete(&path).bearer(t)).await;
    assert_eq!(status, 200);
    check(&event, "patient.delete", "success", me, p);
}

#[tokio::test]
async fn identity_events_never_hold_secrets() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let admin_id = app
        .call(ApiRequest::get("/api/v1/users/me").bearer(&admin))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let email = unique_email("audited");
    let (_, user, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/users/")
            .bearer(&admin)
            .json(json!({"email": email, "password": "first-password-1"})),
    )
    .await;
    let uid = user["id"].as_str().unwrap().to_owned();
    check(
        &event,
        "user.create",
        "success",
        Some(admin_id.as_str()),
        None,
    );
    assert_eq!(event["resource_id"].as_str(), Some(uid.as_str()));

    let (_, login, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/login/access-token")
            .form(&[("username", &email), ("password", "first-password-1")]),
    )
    .await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    check(&event, "auth.login", "success", Some(uid.as_str()), None);

    let (status, _, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/login/access-token")
            .form(&[("username", &email), ("password", "wrong-password-1")]),
    )
    .await;
    assert_eq!(status, 400);
    check(&event, "auth.login", "denied", None, None);
    assert_eq!(
        event["actor_email"],
        email.as_str(),
        "the attempted email is kept"
    );

    let (_, _, event) = only_event(
        &app,
        ApiRequest::patch("/api/v1/users/me/password")
            .bearer(&token)
            .json(json!({"current_password": "first-password-1", "new_password": "second-password-2"})),
    )
    .await;
    check(
        &event,
        "user.password_change",
        "success",
        Some(uid.as_str()),
        None,
    );

    let (_, _, event) = only_event(
        &app,
        ApiRequest::post(&format!("/api/v1/password-recovery/{email}")),
    )
    .await;
    check(&event, "auth.password_reset_request", "success", None, None);
    assert_eq!(event["resource_id"].as_str(), Some(uid.as_str()));
    let reset_token = token_in(&mail_to(&email).last().unwrap().1);
    let (_, _, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/reset-password")
            .json(json!({"token": reset_token, "new_password": "third-password-3"})),
    )
    .await;
    check(
        &event,
        "auth.password_reset",
        "success",
        Some(uid.as_str()),
        None,
    );
    let (status, _, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/reset-password")
            .json(json!({"token": reset_token, "new_password": "fourth-password-4"})),
    )
    .await;
    assert_eq!(status, 400);
    check(
        &event,
        "auth.password_reset",
        "invalid",
        Some(uid.as_str()),
        None,
    );

    let (_, _, event) = only_event(
        &app,
        ApiRequest::patch(&format!("/api/v1/users/{uid}"))
            .bearer(&admin)
            .json(json!({"role": "viewer"})),
    )
    .await;
    check(
        &event,
        "user.update",
        "success",
        Some(admin_id.as_str()),
        None,
    );
    assert_eq!(event["details"]["fields"], json!(["role"]));
    let (_, _, event) = only_event(
        &app,
        ApiRequest::delete(&format!("/api/v1/users/{uid}")).bearer(&admin),
    )
    .await;
    check(
        &event,
        "user.delete",
        "success",
        Some(admin_id.as_str()),
        None,
    );

    // Nothing secret anywhere in the trail.
    let all: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT row_to_json(audit_events)::text FROM audit_events",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for secret in [
        "first-password-1",
        "wrong-password-1",
        "second-password-2",
        "third-password-3",
        &token,
        &reset_token,
    ] {
        assert!(
            all.iter().all(|row| !row.contains(secret)),
            "a secret reached the audit trail"
        );
    }
}

#[tokio::test]
async fn the_trail_is_append_only() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    app.call(
        ApiRequest::post("/api/v1/patients/")
            .bearer(&t)
            .json(json!({"name": "X"})),
    )
    .await;
    let client = app.db.client().await;

    // The application role: INSERT and SELECT only.
    client
        .batch_execute("SET ROLE carevault_app")
        .await
        .unwrap();
    assert!(client
        .query("SELECT count(*) FROM audit_events", &[])
        .await
        .is_ok());
    for sql in [
        "UPDATE audit_events SET outcome = 'success'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            err.code().unwrap().code(),
            "42501",
            "{sql}: permission denied"
        );
    }
    let purge = client
        .query(
            "SELECT carevault_purge_audit_events(interval '0 days')",
            &[],
        )
        .await;
    assert!(purge.is_err(), "the application role cannot purge");
    client.batch_execute("RESET ROLE").await.unwrap();

    // Even the owner is refused by the trigger, except through the retention purge.
    for sql in [
        "UPDATE audit_events SET outcome = 'success'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only")
                || err
                    .as_db_error()
                    .is_some_and(|e| e.message().contains("append-only")),
            "{sql}: {err:?}"
        );
    }
    let before: i64 = client
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(before > 0);
    client
        .execute("UPDATE audit_events SET outcome = outcome WHERE false", &[])
        .await
        .expect("a no-op touches no row");
    let config = api_tests::migrate_config(&app.db.name);
    assert_eq!(
        migrate::purge_audit_events(&config).await.unwrap(),
        0,
        "nothing is six years old"
    );
}

#[tokio::test]
async fn a_read_fails_closed_when_the_audit_insert_fails() {
    let app = TestApp::new().await;
    let t = app.clinician().await.token;
    let patient = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({"name": "Secret Person"})),
        )
        .await
        .json();
    // The trail refuses writes (a full disk, a broken replica...).
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = 'disk_full'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let read = app
        .call(
            ApiRequest::get(&format!(
                "/api/v1/patients/{}",
                patient["id"].as_str().unwrap()
            ))
            .bearer(&t),
        )
        .await;
    assert_eq!(read.status, 503);
    assert!(
        !read.body.contains("Secret Person"),
        "no patient data without its audit event"
    );
    let search = app
        .call(ApiRequest::get("/api/v1/patients/").bearer(&t))
        .await;
    assert_eq!(search.status, 503);
    assert!(!search.body.contains("Secret Person"));
    // A write without its event does not happen either.
    let write = app
        .call(
            ApiRequest::post("/api/v1/patients/")
                .bearer(&t)
                .json(json!({"name": "Never Stored"})),
        )
        .await;
    assert_eq!(write.status, 503);
    let stored = app
        .db
        .number("SELECT count(*) FROM patients WHERE name = 'Never Stored'")
        .await;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn the_audit_endpoint_is_for_superusers_with_filters_and_cursor_paging() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let clinician = app.clinician().await;
    let viewer = app.viewer().await;
    for token in [&clinician.token, &viewer.token] {
        let denied = app
            .call(ApiRequest::get("/api/v1/audit-events/").bearer(token))
            .await;
        assert_eq!(denied.status, 403);
    }
    assert_eq!(
        app.call(ApiRequest::get("/api/v1/audit-events/"))
            .await
            .status,
        401
    );

    let mut pid = String::new();
    for i in 0..7 {
        let p = app
            .call(
                ApiRequest::post("/api/v1/patients/")
                    .bearer(&clinician.token)
                    .json(json!({"name": format!("P{i}")})),
            )
            .await
            .json();
        if i == 3 {
            pid = p["id"].as_str().unwrap().to_owned();
        }
    }
    app.call(ApiRequest::get(&format!("/api/v1/patients/{pid}")).bearer(&viewer.token))
        .await;
    app.call(ApiRequest::delete(&format!("/api/v1/patients/{pid}")).bearer(&viewer.token))
        .await;

    let get = |query: &[(&str, &str)]| {
        let mut request = ApiRequest::get("/api/v1/audit-events").bearer(&admin);
        for (k, v) in query {
            request = request.query(k, v);
        }
        app.call(request)
    };
    let of_patient = get(&[("patient_id", &pid)]).await.json();
    let actions: Vec<&str> = of_patient["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["patient.delete", "patient.read", "patient.create"],
        "newest first"
    );
    let denied = get(&[("outcome", "denied"), ("actor_id", &viewer.id)])
        .await
        .json();
    let mut denied_actions: Vec<&str> = denied["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    denied_actions.sort();
    // The viewer's refused delete, and their refused look at this very trail.
    assert_eq!(denied_actions, ["audit.read", "patient.delete"]);
    let denied = get(&[("outcome", "denied"), ("action", "patient.delete")])
        .await
        .json();
    for field in [
        "id",
        "occurred_at",
        "actor_id",
        "actor_email",
        "action",
        "outcome",
        "resource_type",
        "resource_id",
        "patient_id",
        "request_id",
        "source_ip",
        "user_agent",
        "details",
    ] {
        assert!(denied["data"][0].get(field).is_some(), "{field}");
    }
    let creates = get(&[("action", "patient.create")]).await.json();
    assert_eq!(creates["data"].as_array().unwrap().len(), 7);
    let future = get(&[("since", "2999-01-01T00:00:00Z")]).await.json();
    assert_eq!(future["data"], json!([]));
    let past = get(&[("until", "2000-01-01T00:00:00Z")]).await.json();
    assert_eq!(past["data"], json!([]));

    // Cursor paging over everything: no gaps, no repeats, null at the end.
    let all = get(&[("limit", "1000")]).await.json();
    let expected: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected.len() > 10);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "3")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = get(&query).await.json();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Reading the trail is recorded too: events after the first read may appear; none before it may be missing.
    let seen_set: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), seen_set.len(), "no repeats");
    for id in &expected {
        assert!(seen_set.contains(id), "gap: {id}");
    }

    for (query, field) in [
        (("patient_id", "nope"), "patient_id"),
        (("outcome", "maybe"), "outcome"),
        (("since", "yesterday"), "since"),
        (("cursor", "!!!"), "cursor"),
        (("limit", "0"), "limit"),
    ] {
        let bad = get(&[query]).await;
        assert_eq!(bad.status, 422, "{query:?}");
        assert_eq!(bad.detail()[0]["loc"], json!(["query", field]));
    }
}

/// Who a route lets in, for the refusals it must record.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Needs {
    Token,
    Writer,
    Superuser,
}

/// Every route that takes a token, as (method, path, action, who may call it).
pub(crate) fn routes_with_a_token() -> Vec<(&'static str, String, &'static str, Needs)> {
    let id = uuid::Uuid::new_v4();
    let email = "someone@example.com";
    use Needs::*;
    vec![
        (
            "POST",
            "/api/v1/login/test-token".into(),
            "auth.test_token",
            Token,
        ),
        (
            "POST",
            format!("/api/v1/password-recovery-html-content/{email}"),
            "auth.password_reset_preview",
            Superuser,
        ),
        ("GET", "/api/v1/users/".into(), "user.list", Superuser),
        ("POST", "/api/v1/users/".into(), "user.create", Superuser),
        ("GET", "/api/v1/users/me".into(), "user.read", Token),
        ("PATCH", "/api/v1/users/me".into(), "user.update", Token),
        ("DELETE", "/api/v1/users/me".into(), "user.delete", Token),
        (
            "PATCH",
            "/api/v1/users/me/password".into(),
            "user.password_change",
            Token,
        ),
        ("GET", format!("/api/v1/users/{id}"), "user.read", Token),
        (
            "PATCH",
            format!("/api/v1/users/{id}"),
            "user.update",
            Superuser,
        ),
        (
            "DELETE",
            format!("/api/v1/users/{id}"),
            "user.delete",
            Superuser,
        ),
        ("GET", "/api/v1/patients/".into(), "patient.search", Token),
        ("POST", "/api/v1/patients/".into(), "patient.create", Writer),
        (
            "GET",
            format!("/api/v1/patients/{id}"),
            "patient.read",
            Token,
        ),
        (
            "PUT",
            format!("/api/v1/patients/{id}"),
            "patient.update",
            Writer,
        ),
        (
            "PATCH",
            format!("/api/v1/patients/{id}"),
            "patient.update",
            Writer,
        ),
        (
            "DELETE",
            format!("/api/v1/patients/{id}"),
            "patient.delete",
            Writer,
        ),
        (
            "GET",
            "/api/v1/attachments/".into(),
            "attachment.list",
            Token,
        ),
        (
            "POST",
            "/api/v1/attachments/".into(),
            "attachment.create",
            Writer,
        ),
        (
            "GET",
            format!("/api/v1/attachments/{id}"),
            "attachment.read",
            Token,
        ),
        (
            "DELETE",
            format!("/api/v1/attachments/{id}"),
            "attachment.delete",
            Writer,
        ),
        (
            "GET",
            format!("/api/v1/attachments/{id}/content"),
            "attachment.download",
            Token,
        ),
        (
            "GET",
            format!("/api/v1/patients/{id}/attachments"),
            "attachment.list",
            Token,
        ),
        (
            "GET",
            "/api/v1/audit-events/".into(),
            "audit.read",
            Superuser,
        ),
    ]
}

#[tokio::test]
async fn every_refusal_before_a_handler_is_recorded_exactly_once() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let clinician = app.clinician().await;
    let viewer = app.viewer().await;
    let inactive = app.viewer().await;
    let deactivated = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", inactive.id))
                .bearer(&admin)
                .json(json!({"is_active": false})),
        )
        .await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.body);
    // Signed with another key: a forged or tampered token.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": clinician.id, "aud": "carevault:access", "iat": 1, "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-key-of-this-deployment-0123456789"),
    )
    .unwrap();

    for (method, path, action, needs) in routes_with_a_token() {
        let request = || {
            let request = ApiRequest::new(method, &path);
            if matches!(method, "POST" | "PUT" | "PATCH") {
                request.json(json!({}))
            } else {
                request
            }
        };
        let mut cases: Vec<(&str, ApiRequest, u16, Option<&str>)> = vec![
            ("no token", request(), 401, None),
            ("a forged token", request().bearer(&forged), 401, None),
            (
                "a malformed token",
                request().bearer("not.a.jwt"),
                401,
                None,
            ),
            (
                "an inactive user's token",
                request().bearer(&inactive.token),
                403,
                Some(inactive.id.as_str()),
            ),
        ];
        match needs {
            Needs::Writer => cases.push((
                "a viewer",
                request().bearer(&viewer.token),
                403,
                Some(viewer.id.as_str()),
            )),
            Needs::Superuser => cases.push((
                "a clinician",
                request().bearer(&clinician.token),
                403,
                Some(clinician.id.as_str()),
            )),
            Needs::Token => {}
        }
        for (who, request, status, actor) in cases {
            if actor.is_none() {
                // No valid token: counted on the route's row, not an event of its own.
                let request_id = uuid::Uuid::new_v4().to_string();
                let before: i32 = refusal_counts(&app, action)
                    .await
                    .iter()
                    .map(|(_, n)| n)
                    .sum();
                let answered = app.call(request.request_id(&request_id)).await;
                assert_eq!(answered.status, status, "{method} {path} with {who}");
                assert!(events_of(&app, &request_id).await.is_empty());
                let after: i32 = refusal_counts(&app, action)
                    .await
                    .iter()
                    .map(|(_, n)| n)
                    .sum();
                assert_eq!(after, before + 1, "{method} {path} with {who}");
                continue;
            }
            let (answered, _, event) = only_event(&app, request).await;
            assert_eq!(answered, status, "{method} {path} with {who}");
            assert_eq!(
                event["action"], action,
                "{method} {path} with {who}: {event}"
            );
            assert_eq!(
                event["outcome"], "denied",
                "{method} {path} with {who}: {event}"
            );
            assert_eq!(
                event["actor_id"].as_str(),
                actor,
                "{method} {path} with {who}: {event}"
            );
            assert_eq!(event["source_ip"], "198.51.100.7");
        }
    }
}

#[tokio::test]
async fn a_malformed_request_is_recorded_with_its_route_and_caller() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let missing = uuid::Uuid::new_v4().to_string();
    // A body the extractor refuses, on a route whose path names the patient.
    let (status, _, event) = only_event(
        &app,
        ApiRequest::patch(&format!("/api/v1/patients/{missing}"))
            .bearer(&clinician.token)
            .raw_body("application/json", "{not json"),
    )
    .await;
    assert_eq!(status, 422);
    check(
        &event,
        "patient.update",
        "invalid",
        Some(clinician.id.as_str()),
        Some(missing.as_str()),
    );
    assert_eq!(event["resource_id"].as_str(), Some(missing.as_str()));
    // A query string the extractor refuses.
    let (status, _, event) = only_event(
        &app,
        ApiRequest::get("/api/v1/patients/")
            .bearer(&clinician.token)
            .query("limit", "many"),
    )
    .await;
    assert_eq!(status, 422);
    check(
        &event,
        "patient.search",
        "invalid",
        Some(clinician.id.as_str()),
        None,
    );
}

#[tokio::test]
async fn user_reads_and_the_recovery_preview_are_audited() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let clinician = app.clinician().await;
    let (status, _, event) = only_event(
        &app,
        ApiRequest::get("/api/v1/users/me").bearer(&clinician.token),
    )
    .await;
    assert_eq!(status, 200);
    check(
        &event,
        "user.read",
        "success",
        Some(clinician.id.as_str()),
        None,
    );
    assert_eq!(event["resource_id"].as_str(), Some(clinician.id.as_str()));

    let (status, _, event) = only_event(
        &app,
        ApiRequest::get(&format!("/api/v1/users/{}", clinician.id)).bearer(&admin),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(event["action"], "user.read");
    assert_eq!(event["resource_id"].as_str(), Some(clinician.id.as_str()));

    let (status, list, event) =
        only_event(&app, ApiRequest::get("/api/v1/users/").bearer(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(event["action"], "user.list");
    assert_eq!(
        event["details"]["user_ids"].as_array().unwrap().len(),
        list["data"].as_array().unwrap().len(),
        "which accounts were shown"
    );

    let request_id = uuid::Uuid::new_v4().to_string();
    let preview = app
        .call(
            ApiRequest::post(&format!(
                "/api/v1/password-recovery-html-content/{}",
                clinician.email
            ))
            .bearer(&admin)
            .request_id(&request_id),
        )
        .await;
    assert_eq!(preview.status, 200);
    let events = events_of(&app, &request_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "auth.password_reset_preview");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(
        events[0]["resource_id"].as_str(),
        Some(clinician.id.as_str())
    );
    assert!(
        events[0]["actor_id"].is_string(),
        "the superuser who looked"
    );

    // Public metadata is not an access to audit.
    for path in ["/api/v1/utils/health-check/", "/api/v1/openapi.json"] {
        let request_id = uuid::Uuid::new_v4().to_string();
        let answer = app
            .call(ApiRequest::get(path).request_id(&request_id))
            .await;
        assert_eq!(answer.status, 200);
        assert!(events_of(&app, &request_id).await.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn a_failed_login_keeps_only_a_valid_email_and_a_bounded_user_agent() {
    let app = TestApp::new().await;
    let typed_password = "correct horse battery staple";
    let (status, _, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/login/access-token")
            .form(&[("username", typed_password), ("password", "x")]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(event["outcome"], "denied");
    assert!(
        event["actor_email"].is_null(),
        "a password typed into the email box is never kept: {event}"
    );
    assert!(!event.to_string().contains("horse"));

    let long_agent = "A".repeat(5_000);
    let request_id = uuid::Uuid::new_v4().to_string();
    app.call(
        ApiRequest::post("/api/v1/login/access-token")
            .header("user-agent", &long_agent)
            .form(&[
                ("username", "nobody@example.com"),
                ("password", "wrong-password"),
            ])
            .request_id(&request_id),
    )
    .await;
    let events = events_of(&app, &request_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor_email"], "nobody@example.com");
    assert_eq!(
        events[0]["user_agent"].as_str().unwrap().chars().count(),
        256
    );
}

/// The rows counting the refusals of requests without a valid token for `action`:
/// (source address, refusals).
async fn refusal_counts(app: &TestApp, action: &str) -> Vec<(String, i32)> {
    app.db
        .client()
        .await
        .query(
            "SELECT source_ip, refusals FROM audit_refusals WHERE action = $1 ORDER BY source_ip",
            &[&action],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// 1,000 requests without a token leave no event of their own: one row a minute counts them
/// (a minute's boundary may split them over two), so nobody can flood the trail.
#[tokio::test]
async fn a_thousand_token_less_refusals_are_counted_not_kept_one_by_one() {
    let app = TestApp::new().await;
    let before = app.db.number("SELECT count(*) FROM audit_events").await;
    for _ in 0..1_000 {
        let refused = app
            .call(ApiRequest::get("/api/v1/patients/").source_ip("203.0.113.9"))
            .await;
        assert_eq!(refused.status, 401);
    }
    assert_eq!(
        app.db.number("SELECT count(*) FROM audit_events").await,
        before,
        "no event per refusal"
    );
    let counted = refusal_counts(&app, "patient.search").await;
    assert!((1..=2).contains(&counted.len()), "{counted:?}");
    assert!(counted.iter().all(|(ip, _)| ip == "203.0.113.9"));
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<i32>(), 1_000);
    // A refusal of a known user keeps its own event.
    let viewer = app.viewer().await;
    let (status, _, event) = only_event(
        &app,
        ApiRequest::post("/api/v1/patients/")
            .bearer(&viewer.token)
            .json(json!({"name": "Not Allowed"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(event["actor_id"], viewer.id.as_str());
}
