use api_tests::{mail_to, token_in, unique_email, ApiRequest, TestApp, FIRST_SUPERUSER};
use serde_json::json;

#[tokio::test]
async fn superuser_creates_lists_reads_updates_and_deletes_users() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let email = unique_email("new");

    let created = app
        .call(ApiRequest::post("/api/v1/users/").bearer(&admin).json(json!({
            "email": email, "password": "a-good-password", "full_name": "Dr. Ada Lovelace", "role": "viewer"
        })))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let user = created.json();
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["full_name"], "Dr. Ada Lovelace");
    assert_eq!(user["role"], "viewer");
    assert_eq!(user["is_active"], true);
    assert_eq!(user["is_superuser"], false);
    let id = user["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    // Newest first; count counts everyone.
    for path in ["/api/v1/users/", "/api/v1/users"] {
        let list = app.call(ApiRequest::get(path).bearer(&admin)).await;
        assert_eq!(list.status, 200, "{}", list.body);
        let list = list.json();
        assert_eq!(list["count"], 2);
        assert_eq!(list["data"][0]["id"], id.as_str());
        assert_eq!(list["data"][1]["email"], FIRST_SUPERUSER);
    }
    let page = app
        .call(
            ApiRequest::get("/api/v1/users/")
                .bearer(&admin)
                .query("skip", "1")
                .query("limit", "1"),
        )
        .await
        .json();
    assert_eq!(page["count"], 2);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["email"], FIRST_SUPERUSER);

    let read = app
        .call(ApiRequest::get(&format!("/api/v1/users/{id}")).bearer(&admin))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["email"], email.as_str());

    let updated = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{id}"))
                .bearer(&admin)
                .json(json!({"role": "clinician", "full_name": null, "is_superuser": true})),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let updated = updated.json();
    assert_eq!(updated["role"], "clinician");
    assert_eq!(updated["full_name"], json!(null));
    assert_eq!(updated["is_superuser"], true);
    assert_eq!(updated["email"], email.as_str(), "unsent fields unchanged");

    // A password set by a superuser works at once.
    let reset = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{id}"))
                .bearer(&admin)
                .json(json!({"password": "set-by-admin-1"})),
        )
        .await;
    assert_eq!(reset.status, 200);
    assert_eq!(app.login(&email, "set-by-admin-1").await.status, 200);

    let deleted = app
        .call(ApiRequest::delete(&format!("/api/v1/users/{id}")).bearer(&admin))
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["message"], "User deleted successfully");
    let gone = app
        .call(ApiRequest::get(&format!("/api/v1/users/{id}")).bearer(&admin))
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.detail(), "User not found");
}

#[tokio::test]
async fn creating_a_user_sends_a_new_account_email_with_a_set_password_link() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let mails = mail_to(&user.email);
    let (subject, text) = mails
        .iter()
        .find(|(s, _)| s.contains("New account"))
        .expect("new account email");
    assert!(subject.contains(&user.email));
    assert!(
        !text.contains(&user.password),
        "the password is never mailed"
    );
    let token = token_in(text);
    let set = app
        .call(
            ApiRequest::post("/api/v1/reset-password")
                .json(json!({"token": token, "new_password": "my-own-choice-1"})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(app.login(&user.email, "my-own-choice-1").await.status, 200);
}

#[tokio::test]
async fn user_management_is_for_superusers_only() {
    let app = TestApp::new().await;
    let clinician = app.clinician().await;
    let viewer = app.viewer().await;
    let other = format!("/api/v1/users/{}", viewer.id);
    for user in [&clinician, &viewer] {
        let t = &user.token;
        let cases = [
            ApiRequest::get("/api/v1/users/").bearer(t),
            ApiRequest::post("/api/v1/users/")
                .bearer(t)
                .json(json!({"email": unique_email("x"), "password": "password-123"})),
            ApiRequest::patch(&format!("/api/v1/users/{}", clinician.id))
                .bearer(t)
                .json(json!({"is_superuser": true})),
            ApiRequest::delete(&format!("/api/v1/users/{}", clinician.id)).bearer(t),
        ];
        for request in cases {
            let response = app.call(request.clone()).await;
            assert_eq!(response.status, 403, "{request:?}: {}", response.body);
            assert_eq!(response.detail(), "The user doesn't have enough privileges");
        }
    }
    // Reading another user: 403; reading oneself by id: 200.
    let response = app
        .call(ApiRequest::get(&other).bearer(&clinician.token))
        .await;
    assert_eq!(response.status, 403);
    let own = app
        .call(ApiRequest::get(&format!("/api/v1/users/{}", clinician.id)).bearer(&clinician.token))
        .await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn every_users_route_needs_a_token() {
    let app = TestApp::new().await;
    let id = uuid::Uuid::new_v4();
    for request in [
        ApiRequest::get("/api/v1/users/"),
        ApiRequest::post("/api/v1/users/").json(json!({})),
        ApiRequest::get("/api/v1/users/me"),
        ApiRequest::patch("/api/v1/users/me").json(json!({})),
        ApiRequest::delete("/api/v1/users/me"),
        ApiRequest::patch("/api/v1/users/me/password").json(json!({})),
        ApiRequest::get(&format!("/api/v1/users/{id}")),
        ApiRequest::patch(&format!("/api/v1/users/{id}")).json(json!({})),
        ApiRequest::delete(&format!("/api/v1/users/{id}")),
    ] {
        let response = app.call(request.clone()).await;
        assert_eq!(response.status, 401, "{request:?}");
        assert_eq!(response.detail(), "Not authenticated");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
}

#[tokio::test]
async fn create_user_validates_and_refuses_duplicates() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let create = |body| ApiRequest::post("/api/v1/users/").bearer(&admin).json(body);
    let cases = [
        (
            json!({"email": "not-an-email", "password": "password-123"}),
            "email",
        ),
        (
            json!({"email": unique_email("a"), "password": "short"}),
            "password",
        ),
        (
            json!({"email": unique_email("a"), "password": "x".repeat(129)}),
            "password",
        ),
        (json!({"password": "password-123"}), "email"),
        (
            json!({"email": unique_email("a"), "password": "password-123", "role": "doctor"}),
            "role",
        ),
        (
            json!({"email": unique_email("a"), "password": "password-123", "full_name": "n".repeat(256)}),
            "full_name",
        ),
        (
            json!({"email": unique_email("a"), "password": "password-123", "is_active": "yes"}),
            "is_active",
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(250)), "password": "password-123"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let response = app.call(create(body.clone())).await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        assert_eq!(
            response.detail()[0]["loc"],
            json!(["body", field]),
            "{body}"
        );
    }
    let wrong_type = app
        .call(
            ApiRequest::post("/api/v1/users/")
                .bearer(&admin)
                .raw_body("text/plain", "email=x"),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    let malformed = app
        .call(
            ApiRequest::post("/api/v1/users/")
                .bearer(&admin)
                .raw_body("application/json", "{not json"),
        )
        .await;
    assert_eq!(malformed.status, 422);

    let duplicate = app
        .call(create(
            json!({"email": FIRST_SUPERUSER.to_uppercase(), "password": "password-123"}),
        ))
        .await;
    assert_eq!(duplicate.status, 400);
    assert_eq!(
        duplicate.detail(),
        "The user with this email already exists in the system."
    );

    let bad_paging = app
        .call(
            ApiRequest::get("/api/v1/users/")
                .bearer(&admin)
                .query("limit", "0"),
        )
        .await;
    assert_eq!(bad_paging.status, 422);
    assert_eq!(bad_paging.detail()[0]["loc"], json!(["query", "limit"]));
    let bad_skip = app
        .call(
            ApiRequest::get("/api/v1/users/")
                .bearer(&admin)
                .query("skip", "abc"),
        )
        .await;
    assert_eq!(bad_skip.status, 422);
    assert_eq!(bad_skip.detail()[0]["loc"], json!(["query", "skip"]));
}

#[tokio::test]
async fn me_reads_updates_and_conflicts() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let me = app
        .call(ApiRequest::get("/api/v1/users/me/").bearer(&user.token))
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], user.email.as_str());

    let new_email = unique_email("renamed");
    let updated = app
        .call(
            ApiRequest::patch("/api/v1/users/me")
                .bearer(&user.token)
                .json(json!({"full_name": "Renamed", "email": new_email, "current_password": user.password, "is_superuser": true, "role": "viewer"})),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let updated = updated.json();
    assert_eq!(updated["full_name"], "Renamed");
    assert_eq!(updated["email"], new_email.as_str());
    assert_eq!(
        updated["is_superuser"], false,
        "users cannot raise their own powers"
    );
    assert_eq!(updated["role"], "clinician");

    let taken = app
        .call(
            ApiRequest::patch("/api/v1/users/me")
                .bearer(&user.token)
                .json(json!({"email": FIRST_SUPERUSER, "current_password": user.password})),
        )
        .await;
    assert_eq!(taken.status, 409);
    assert_eq!(taken.detail(), "User with this email already exists");

    let admin = app.superuser_token().await;
    let taken_by_admin = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user.id))
                .bearer(&admin)
                .json(json!({"email": FIRST_SUPERUSER})),
        )
        .await;
    assert_eq!(taken_by_admin.status, 409);
}

#[tokio::test]
async fn change_own_password() {
    let app = TestApp::new().await;
    let user = app.clinician().await;
    let change = |current: &str, new: &str| {
        ApiRequest::patch("/api/v1/users/me/password")
            .bearer(&user.token)
            .json(json!({"current_password": current, "new_password": new}))
    };
    let wrong = app.call(change("not-my-password", "new-password-1")).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.detail(), "Incorrect password");
    let same = app.call(change(&user.password, &user.password)).await;
    assert_eq!(same.status, 400);
    assert_eq!(
        same.detail(),
        "New password cannot be the same as the current one"
    );
    let short = app.call(change(&user.password, "short")).await;
    assert_eq!(short.status, 422);

    let ok = app.call(change(&user.password, "new-password-1")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["message"], "Password updated successfully");
    assert_eq!(app.login(&user.email, "new-password-1").await.status, 200);
    assert_eq!(app.login(&user.email, &user.password).await.status, 400);
}

#[tokio::test]
async fn deleting_users_and_self_deletion_rules() {
    let app = TestApp::new().await;
    let admin = app.superuser_token().await;
    let admin_id = app
        .call(ApiRequest::get("/api/v1/users/me").bearer(&admin))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let self_delete = app
        .call(ApiRequest::delete("/api/v1/users/me").bearer(&admin))
        .await;
    assert_eq!(self_delete.status, 403);
    assert_eq!(
        self_delete.detail(),
        "Super users are not allowed to delete themselves"
    );
    for change in [json!({"is_active": false}), json!({"is_superuser": false})] {
        let demote = app
            .call(
                ApiRequest::patch(&format!("/api/v1/users/{admin_id}"))
                    .bearer(&admin)
                    .json(change.clone()),
            )
            .await;
        assert_eq!(demote.status, 403, "{change}");
        assert_eq!(
            demote.detail(),
            "Super users are not allowed to deactivate or demote themselves"
        );
    }
    let self_delete_by_id = app
        .call(ApiRequest::delete(&format!("/api/v1/users/{admin_id}")).bearer(&admin))
        .await;
    assert_eq!(self_delete_by_id.status, 403);

    let user = app.clinician().await;
    let deleted = app
        .call(ApiRequest::delete("/api/v1/users/me").bearer(&user.token))
        .await;
    assert_eq!(deleted.status, 200);
    // A deleted user's token stops working at once.
    let after = app
        .call(ApiRequest::get("/api/v1/users/me").bearer(&user.token))
        .await;
    assert_eq!(after.status, 401);

    let missing = format!("/api/v1/users/{}", uuid::Uuid::new_v4());
    assert_eq!(
        app.call(ApiRequest::delete(&missing).bearer(&admin))
            .await
            .status,
        404
    );
    let patch_missing = app
        .call(
            ApiRequest::patch(&missing)
                .bearer(&admin)
                .json(json!({"full_name": "x"})),
        )
        .await;
    assert_eq!(patch_missing.status, 404);
    assert_eq!(
        patch_missing.detail(),
        "The user with this id does not exist in the system"
    );
    let malformed = app
        .call(ApiRequest::get("/api/v1/users/not-a-uuid").bearer(&admin))
        .await;
    assert_eq!(malformed.status, 422);
    assert_eq!(malformed.detail()[0]["loc"], json!(["path", "user_id"]));
}

#[tokio::test]
async fn signup_is_off_by_default() {
    let app = TestApp::new().await;
    let response = app
        .call(
            ApiRequest::post("/api/v1/users/signup")
                .json(json!({"email": unique_email("s"), "password": "password-123"})),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        response.detail(),
        "Open user registration is forbidden on this server"
    );
}

#[tokio::test]
async fn signup_when_open_registration_is_on() {
    let app = TestApp::with_settings(&[("USERS_OPEN_REGISTRATION", "true")]).await;
    let email = unique_email("signup");
    let response = app
        .call(
            ApiRequest::post("/api/v1/users/signup")
                .json(json!({"email": email, "password": "password-123", "full_name": "Self Made", "is_superuser": true})),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let user = response.json();
    assert_eq!(
        user["is_superuser"], false,
        "signup cannot make a superuser"
    );
    assert_eq!(user["role"], "clinician");
    assert_eq!(
        user["is_active"], false,
        "a stranger's account waits for activation"
    );
    let waiting = app.login(&email, "password-123").await;
    assert_eq!(waiting.status, 400);
    assert_eq!(waiting.detail(), "Inactive user");
    let admin = app.superuser_token().await;
    let activated = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", user["id"].as_str().unwrap()))
                .bearer(&admin)
                .json(json!({"is_active": true})),
        )
        .await;
    assert_eq!(activated.status, 200);
    assert_eq!(app.login(&email, "password-123").await.status, 200);

    let again = app
        .call(
            ApiRequest::post("/api/v1/users/signup")
                .json(json!({"email": email, "password": "password-123"})),
        )
        .await;
    assert_eq!(again.status, 400);
    let bad = app
        .call(
            ApiRequest::post("/api/v1/users/signup")
                .json(json!({"email": "nope", "password": "password-123"})),
        )
        .await;
    assert_eq!(bad.status, 422);
}

/// A superuser's own email and password change through `/users/{id}` only with
/// `current_password`, as through `/users/me`: a stolen superuser session cannot take the
/// account over by naming its own id. Other users' accounts need no such proof.
#[tokio::test]
async fn a_superuser_changing_their_own_email_by_id_proves_the_password() {
    let app = TestApp::new().await;
    let own = app
        .user_with(json!({"email": unique_email("root"), "password": "root-pass-12345", "is_superuser": true}))
        .await;
    let patch = |body: serde_json::Value| {
        ApiRequest::patch(&format!("/api/v1/users/{}", own.id))
            .bearer(&own.token)
            .json(body)
    };
    let moved = unique_email("moved");
    let missing = app.call(patch(json!({"email": moved}))).await;
    assert_eq!(missing.status, 422, "{}", missing.body);
    assert_eq!(
        missing.detail()[0]["loc"],
        json!(["body", "current_password"])
    );
    let new_password = app.call(patch(json!({"password": "taken-over-123"}))).await;
    assert_eq!(new_password.status, 422, "{}", new_password.body);
    let wrong = app
        .call(patch(
            json!({"email": moved, "current_password": "not-it-12345"}),
        ))
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert_eq!(
        app.login(&own.email, &own.password).await.status,
        200,
        "unchanged"
    );
    let proved = app
        .call(patch(
            json!({"email": moved, "current_password": own.password}),
        ))
        .await;
    assert_eq!(proved.status, 200, "{}", proved.body);
    assert_eq!(proved.json()["email"], moved.as_str());
    // Someone else's account: the superuser's right, no password asked.
    let other = app.clinician().await;
    let renamed = app
        .call(
            ApiRequest::patch(&format!("/api/v1/users/{}", other.id))
                .bearer(&own.token)
                .json(json!({"email": unique_email("other")})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
}
