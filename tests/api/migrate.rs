use std::time::Duration;

use api_tests::{migrate_config, RequestRecorder, TestDb, FIRST_SUPERUSER};
use serde_json::{json, Value};

/// Every column of every table in the public schema, in order: what a second run must not change.
async fn schema_snapshot(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn superusers(db: &TestDb) -> Vec<(uuid::Uuid, String, String, bool)> {
    db.client()
        .await
        .query(
            "SELECT id, email, hashed_password, is_active FROM users WHERE is_superuser ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn migrate_twice_leaves_schema_and_superuser_unchanged() {
    let db = TestDb::empty().await;
    let config = migrate_config(&db.name);

    let first = migrate::run(&config).await.expect("first run");
    assert!(
        first.applied.contains(&"V1__core_schema".to_owned()),
        "{first:?}"
    );
    assert!(first.superuser_created);
    let schema = schema_snapshot(&db).await;
    assert!(
        schema
            .iter()
            .any(|c| c.starts_with("patients.medical_history:text")),
        "{schema:?}"
    );
    let admins = superusers(&db).await;
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0].1, FIRST_SUPERUSER);
    assert!(admins[0].2.starts_with("$argon2id$"), "stored as argon2id");
    assert!(admins[0].3, "active");

    let second = migrate::run(&config).await.expect("second run");
    assert_eq!(second.applied, Vec::<String>::new());
    assert!(!second.superuser_created);
    assert_eq!(schema_snapshot(&db).await, schema);
    assert_eq!(superusers(&db).await, admins, "same id and same hash");
}

fn custom_resource_event(request_type: &str, response_url: &str) -> Value {
    let mut event: Value = api_tests::event("migrate/custom-resource-create.json");
    event["RequestType"] = json!(request_type);
    event["ResponseURL"] = json!(response_url);
    if request_type != "Create" {
        event["PhysicalResourceId"] = json!("carevault-database-schema");
    }
    if request_type == "Update" {
        event["OldResourceProperties"] = event["ResourceProperties"].clone();
    }
    event
}

fn only_response(recorder: &RequestRecorder) -> Value {
    let received = recorder.received();
    assert_eq!(
        received.len(),
        1,
        "exactly one answer to CloudFormation: {received:?}"
    );
    assert_eq!(received[0].method, "PUT");
    // The presigned response URL is signed without a Content-Type.
    assert_eq!(received[0].content_type, None);
    serde_json::from_slice(&received[0].body).unwrap()
}

#[tokio::test]
async fn custom_resource_create_migrates_and_answers_success() {
    let db = TestDb::empty().await;
    let recorder = RequestRecorder::start().await;
    let event = custom_resource_event("Create", &recorder.url);

    let result = migrate::handle_event(
        &Ok(migrate_config(&db.name)),
        event,
        Duration::from_secs(60),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");

    let answer = only_response(&recorder);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], "carevault-database-schema");
    assert_eq!(answer["LogicalResourceId"], "DatabaseSchema");
    assert_eq!(answer["RequestId"], "11111111-1111-1111-1111-111111111111");
    assert!(answer["Data"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "V1__core_schema"));
    assert_eq!(superusers(&db).await.len(), 1);
}

#[tokio::test]
async fn custom_resource_update_with_unreachable_database_answers_failed_with_reason() {
    let recorder = RequestRecorder::start().await;
    let mut config = migrate_config("postgres");
    config.database.port = 1;
    config.database.pool.connect_timeout = Duration::from_millis(500);
    let event = custom_resource_event("Update", &recorder.url);

    let result = migrate::handle_event(&Ok(config), event, Duration::from_secs(60)).await;
    assert!(
        result.is_ok(),
        "the answer itself was delivered: {result:?}"
    );

    let answer = only_response(&recorder);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"].as_str().unwrap().contains("database"),
        "{answer}"
    );
    assert_eq!(
        answer["PhysicalResourceId"], "carevault-database-schema",
        "kept on update"
    );
}

#[tokio::test]
async fn custom_resource_with_a_config_error_answers_failed_naming_the_setting() {
    let recorder = RequestRecorder::start().await;
    let event = custom_resource_event("Create", &recorder.url);
    let config =
        Err("setting FIRST_SUPERUSER is invalid: value is not a valid email address".to_owned());

    migrate::handle_event(&config, event, Duration::from_secs(60))
        .await
        .unwrap();

    let answer = only_response(&recorder);
    assert_eq!(answer["Status"], "FAILED");
    assert!(
        answer["Reason"]
            .as_str()
            .unwrap()
            .contains("FIRST_SUPERUSER"),
        "{answer}"
    );
}

#[tokio::test]
async fn custom_resource_delete_keeps_the_database_and_answers_success() {
    let db = TestDb::empty().await;
    let recorder = RequestRecorder::start().await;
    let event = custom_resource_event("Delete", &recorder.url);

    migrate::handle_event(
        &Ok(migrate_config(&db.name)),
        event,
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    assert_eq!(only_response(&recorder)["Status"], "SUCCESS");
    assert!(
        schema_snapshot(&db).await.is_empty(),
        "Delete must not touch the database"
    );
}

#[tokio::test]
async fn direct_invocation_answers_the_report() {
    let db = TestDb::empty().await;
    let event: Value = api_tests::event("migrate/direct-invoke.json");
    let report = migrate::handle_event(
        &Ok(migrate_config(&db.name)),
        event,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(report["superuser_created"], true);
    assert!(report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "V1__core_schema"));
}

#[tokio::test]
async fn the_scheduled_run_purges_only_audit_events_past_retention() {
    let db = api_tests::TestDb::new().await;
    let client = db.client().await;
    // One event seven years old (written as it would have been then), one from today.
    client
        .batch_execute(
            "INSERT INTO audit_events (id, occurred_at, action, outcome, resource_type)
             VALUES (gen_random_uuid(), now() - interval '7 years', 'patient.read', 'success', 'patient'),
                    (gen_random_uuid(), now(), 'patient.read', 'success', 'patient')",
        )
        .await
        .unwrap();
    let event: Value = api_tests::event("migrate/schedule-audit-retention.json");
    let report = migrate::handle_event(
        &Ok(migrate_config(&db.name)),
        event,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(report["audit_events_purged"], 1);
    let left: i64 = client
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

#[tokio::test]
async fn migrate_creates_the_application_login_with_only_the_application_grants() {
    let db = TestDb::empty().await;
    let username = format!(
        "carevault_api_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut config = migrate_config(&db.name);
    config.app_login = Some(migrate::AppLogin {
        username: username.clone(),
        password: "first-secret-value".into(),
    });
    migrate::run(&config).await.expect("creates the login");
    // The secret rotated: the next run sets the new password.
    config.app_login.as_mut().unwrap().password = "it's a 'quoted' secret".into();
    migrate::run(&config).await.expect("updates the login");

    let mut login = db.config.clone();
    login.user = username.clone();
    login.password = Some("it's a 'quoted' secret".into());
    let (client, connection) = login
        .pg_config()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("log in as the app role");
    tokio::spawn(connection);
    client
        .query("SELECT count(*) FROM patients", &[])
        .await
        .expect("reads patients");
    client
        .execute(
            "INSERT INTO audit_events (id, action, outcome, resource_type) VALUES (gen_random_uuid(), 'x', 'success', 'y')",
            &[],
        )
        .await
        .expect("appends to the trail");
    for sql in [
        "UPDATE audit_events SET action = 'y'",
        "DELETE FROM audit_events",
        "CREATE TABLE intruder (id int)",
        "DROP TABLE patients",
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{sql}: {err:?}"
        );
    }
    drop(client);
    api_tests::admin_client()
        .await
        .batch_execute(&format!("DROP ROLE \"{username}\""))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_renamed_or_deleted_bootstrap_account_is_never_recreated() {
    let db = TestDb::new().await;
    let config = migrate_config(&db.name);
    // The bootstrap account renamed, as an administrator should: no second one appears.
    db.client()
        .await
        .execute(
            "UPDATE users SET email = 'chief@clinic.example' WHERE is_superuser",
            &[],
        )
        .await
        .unwrap();
    let report = migrate::run(&config).await.unwrap();
    assert!(!report.superuser_created);
    let emails: Vec<String> = superusers(&db).await.into_iter().map(|u| u.1).collect();
    assert_eq!(emails, ["chief@clinic.example"]);
    // Only a database with no superuser at all gets one.
    db.client()
        .await
        .batch_execute("UPDATE users SET is_superuser = false")
        .await
        .unwrap();
    let report = migrate::run(&config).await.unwrap();
    assert!(report.superuser_created);
}

#[tokio::test]
async fn migrate_generates_rotates_and_retires_the_token_keys_in_secrets_manager() {
    api_tests::stack_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let secrets = std::sync::Arc::new(shared::secrets::SecretsClient::new());
    let client = aws_sdk_secretsmanager::Client::new(&shared::aws::sdk_config().await);
    let mut ids = Vec::new();
    // Created empty, as the stack creates them.
    for name in ["signing", "public"] {
        let name = format!("carevault/test/{name}-{}", uuid::Uuid::new_v4());
        client
            .create_secret()
            .name(&name)
            .secret_string("{}")
            .send()
            .await
            .unwrap();
        ids.push(name);
    }
    let keys = migrate::TokenKeySecrets {
        secrets: secrets.clone(),
        signing_secret_id: ids[0].clone(),
        public_secret_id: ids[1].clone(),
    };
    let published = || async {
        let jwks: Value = secrets
            .json("TOKEN_PUBLIC_KEYS_SECRET_ARN", &ids[1])
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let change = |c| migrate::manage_token_keys(&keys, c);
    assert_eq!(change(migrate::KeyChange::None).await.unwrap(), "created");
    let first = published().await;
    assert_eq!(first.len(), 1);
    assert_eq!(change(migrate::KeyChange::None).await.unwrap(), "unchanged");
    // Keys are named by the second: a rotation within the same second would reuse the name.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(change(migrate::KeyChange::Rotate).await.unwrap(), "rotated");
    let both = published().await;
    assert_eq!(both.len(), 2, "the previous key stays published");
    assert!(both.contains(&first[0]));
    let signing: shared::tokens::SigningKeys = secrets
        .json("TOKEN_SIGNING_SECRET_ARN", &ids[0])
        .await
        .unwrap();
    assert_ne!(signing.active_kid, first[0], "the new key signs");
    assert_eq!(
        change(migrate::KeyChange::RetireInactive).await.unwrap(),
        "retired"
    );
    assert_eq!(published().await, vec![signing.active_kid]);
}

/// Connects to `db` as function `group`'s own login, as that function does.
async fn connect_as(db: &TestDb, group: &str) -> tokio_postgres::Client {
    let config: tokio_postgres::Config =
        api_tests::function_db_url(&db.name, group).parse().unwrap();
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("log in as {group}'s login: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn the_patients_function_cannot_update_users() {
    let db = TestDb::new().await;
    let patients = connect_as(&db, "patients").await;
    patients
        .query("SELECT count(*) FROM patients", &[])
        .await
        .expect("reads its own table");
    for sql in [
        "UPDATE users SET is_superuser = true",
        "SELECT hashed_password FROM users",
        "DELETE FROM audit_events",
        "SELECT * FROM login_failures",
    ] {
        let err = patients.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test]
async fn only_the_users_function_may_make_a_superuser() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    for group in migrate::FUNCTION_GROUPS {
        let role = format!("carevault_{group}");
        let row = admin
            .query_one(
                "SELECT has_column_privilege($1, 'users', 'is_superuser', 'UPDATE'),
                        has_column_privilege($1, 'users', 'hashed_password', 'SELECT')",
                &[&role],
            )
            .await
            .unwrap();
        let (promote, see_hashes): (bool, bool) = (row.get(0), row.get(1));
        assert_eq!(promote, group == "users", "{role} may update is_superuser");
        assert_eq!(
            see_hashes,
            ["users", "auth"].contains(&group),
            "{role} may read password hashes"
        );
    }
}

#[tokio::test]
async fn the_login_every_function_shared_logs_in_no_more_once_each_has_its_own() {
    let db = TestDb::empty().await;
    let admin = api_tests::admin_client().await;
    // As an earlier stack made it: the one login of every function, in carevault_app.
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 CREATE ROLE {login} LOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN
                 ALTER ROLE {login} LOGIN;
             END $$",
            login = migrate::SHARED_LOGIN
        ))
        .await
        .unwrap();
    let mut config = migrate_config(&db.name);
    config.function_logins = vec![migrate::FunctionLogin {
        group: "utils",
        login: migrate::AppLogin {
            username: api_tests::function_login("utils"),
            password: "carevault-test-login".into(),
        },
    }];
    migrate::run(&config).await.expect("migrates");
    let can_login: bool = admin
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&migrate::SHARED_LOGIN],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!can_login, "the shared login still logs in");
}
