//! One test's API: every function's state built by its real cold start, and its users.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shared::config::Env;

use crate::db::{db_url, function_db_url, TestDb, FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD};
use crate::keys::token_settings;
use crate::mail::unique_email;
use crate::requests::{invoke, ApiRequest, ApiResponse};
use crate::routes::function_for;
use crate::s3::s3_client;
use crate::stack::{stack_var, use_dev_stack_defaults};

/// One test's API: a fresh database and every function's router, each built by its real cold
/// start (`from_env`) from settings that point at that database and the local SMTP sink.
pub struct TestApp {
    pub db: TestDb,
    /// A bucket of its own, like the database: a test's sweep of the bucket sees only its files.
    pub bucket: String,
    settings: BTreeMap<String, String>,
    pub auth: auth::AuthState,
    pub users: users::UsersState,
    pub utils: utils::UtilsState,
    pub patients: patients::PatientsState,
    pub attachments: attachments::AttachmentsState,
    pub events: std::sync::Arc<attachment_events::EventsState>,
    pub audit: audit::AuditState,
    pub fhir: fhir::FhirState,
    /// The export worker, on this test's own queue (`export_queue`).
    pub export_worker: std::sync::Arc<bulk_export::WorkerState>,
    pub export_queue: String,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_settings(&[]).await
    }

    /// `overrides` replace or add settings, e.g. `("USERS_OPEN_REGISTRATION", "true")`.
    pub async fn with_settings(overrides: &[(&str, &str)]) -> Self {
        use_dev_stack_defaults();
        // The functions' JSON logs, shown by the test runner next to a failing test.
        shared::logging::init();
        let db = TestDb::new().await;
        // Random, not from the process id: buckets outlive a run, and ids come back. Short:
        // s3s-fs names a multipart upload's metadata file after the base64 of bucket and key,
        // and a long bucket name takes it past the file system's 255 bytes.
        let bucket = format!("cvt-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        s3_client()
            .await
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create the test's bucket");
        // A 2-second visibility timeout: a message the worker failed comes back quickly.
        let export_queue = crate::queue::create_queue(&format!("{bucket}-exports"), 2).await;
        let mut settings: BTreeMap<String, String> = [
            ("ENVIRONMENT", "local".to_owned()),
            ("DATABASE_URL", db_url(&db.name)),
            ("SMTP_HOST", "127.0.0.1".to_owned()),
            ("SMTP_PORT", stack_var("SMTP_PORT")),
            ("SMTP_TLS", "none".to_owned()),
            ("FRONTEND_HOST", "http://console.carevault.test".to_owned()),
            ("PASSWORD_RECOVERY_MIN_RESPONSE_MS", "0".to_owned()),
            ("S3_BUCKET", bucket.clone()),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("EXPORT_QUEUE_URL", export_queue.clone()),
            // The TOTP secrets' sealing key, as the local secret holds one.
            (
                "MFA_ENCRYPTION_KEY",
                "test-sealing-key-of-at-least-32-characters".to_owned(),
            ),
            // https: the software authenticator speaks only to a secure origin.
            ("WEBAUTHN_ORIGIN", crate::mfa::ORIGIN.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in token_settings() {
            settings.insert(k.to_owned(), v);
        }
        for (k, v) in overrides {
            settings.insert((*k).to_owned(), (*v).to_owned());
        }
        // Each function connects as its own login, with only its group's grants (V16).
        let env = |group: &str| {
            let mut own = settings.clone();
            own.insert("DATABASE_URL".into(), function_db_url(&db.name, group));
            Env::from_pairs(own)
        };
        Self {
            audit: audit::AuditState::from_env(&env("audit"))
                .await
                .expect("audit cold start"),
            fhir: fhir::FhirState::from_env(&env("fhir"))
                .await
                .expect("fhir cold start"),
            attachments: attachments::AttachmentsState::from_env(&env("attachments"))
                .await
                .expect("attachments cold start"),
            events: std::sync::Arc::new(
                attachment_events::EventsState::from_env(&env("attachment_events"))
                    .await
                    .expect("attachment-events cold start"),
            ),
            export_worker: std::sync::Arc::new(
                bulk_export::WorkerState::from_env(&env("bulk_export"))
                    .await
                    .expect("bulk-export cold start"),
            ),
            export_queue,
            bucket,
            auth: auth::AuthState::from_env(&env("auth"))
                .await
                .expect("auth cold start"),
            users: users::UsersState::from_env(&env("users"))
                .await
                .expect("users cold start"),
            utils: utils::UtilsState::from_env(&env("utils"))
                .await
                .expect("utils cold start"),
            patients: patients::PatientsState::from_env(&env("patients"))
                .await
                .expect("patients cold start"),
            settings,
            db,
        }
    }

    /// This app's settings with `overrides`: to build a second function state on the same
    /// database (for example one whose S3 endpoint is down).
    pub fn env_with(&self, overrides: &[(&str, &str)]) -> Env {
        let mut settings = self.settings.clone();
        for (k, v) in overrides {
            settings.insert((*k).to_owned(), (*v).to_owned());
        }
        Env::from_pairs(settings)
    }

    /// Sends `request` to the function API Gateway would route it to (template.yaml's routes).
    pub async fn call(&self, request: ApiRequest) -> ApiResponse {
        let function = function_for(&request.method, &request.path).unwrap_or_else(|| {
            panic!(
                "template.yaml routes no {} {}",
                request.method, request.path
            )
        });
        invoke(self.router_of(function), request).await
    }

    /// The router of the HTTP function whose binary is `function`, on this app's state.
    pub fn router_of(&self, function: &str) -> axum::Router {
        match function {
            "auth" => auth::router(self.auth.clone()),
            "users" => users::router(self.users.clone()),
            "utils" => utils::router(self.utils.clone()),
            "patients" => patients::router(self.patients.clone()),
            "attachments" => attachments::router(self.attachments.clone()),
            "audit" => audit::router(self.audit.clone()),
            "fhir" => fhir::router(self.fhir.clone()),
            other => panic!("no HTTP function is called {other}"),
        }
    }

    /// Runs the export worker on every message of this test's queue, as the event source
    /// mapping would (the worker's failures come back after the visibility timeout), until the
    /// queue holds none for a while. Returns how many invocations it made.
    pub async fn run_export_jobs(&self) -> usize {
        let mut invocations = 0;
        let mut idle = 0;
        while idle < 3 {
            let Some(event) = crate::queue::receive_event(&self.export_queue).await else {
                idle += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            idle = 0;
            let response = self.invoke_export_worker(&event).await;
            crate::queue::delete_done(&self.export_queue, &event, &response).await;
            invocations += 1;
            assert!(invocations < 10_000, "the export queue never empties");
        }
        invocations
    }

    /// One invocation of the export worker with `event` (SQS's event JSON); its batch response.
    pub async fn invoke_export_worker(&self, event: &Value) -> Value {
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(event.clone()).expect("an SQS event");
        serde_json::to_value(bulk_export::handle(&self.export_worker, event).await).unwrap()
    }

    /// The keys under `prefix` in this test's bucket.
    pub async fn objects_under(&self, prefix: &str) -> Vec<String> {
        s3_client()
            .await
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list the test's bucket")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The object under `key` in this test's bucket: None when there is none.
    pub async fn object_in_bucket(&self, key: &str) -> Option<Vec<u8>> {
        match s3_client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => Some(object.body.collect().await.unwrap().into_bytes().to_vec()),
            Err(_) => None,
        }
    }

    /// The trail's events of `action`, oldest first: who, about what, the outcome and details.
    pub async fn audit_events(&self, action: &str) -> Vec<Value> {
        self.db
            .client()
            .await
            .query(
                "SELECT json_build_object('actor_id', actor_id, 'resource_id', resource_id,
                        'outcome', outcome, 'details', details, 'actor_email', actor_email)
                 FROM audit_events WHERE action = $1 ORDER BY occurred_at",
                &[&action],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    pub async fn login(&self, email: &str, password: &str) -> ApiResponse {
        self.call(
            ApiRequest::post("/api/v1/login/access-token")
                .form(&[("username", email), ("password", password)]),
        )
        .await
    }

    pub async fn token_for(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status, 200, "login {email}: {}", response.body);
        response.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn superuser_token(&self) -> String {
        self.token_for(FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD)
            .await
    }

    /// Creates a user through the API (as the first superuser) and logs them in.
    pub async fn user_with(&self, body: Value) -> TestUser {
        let password = body["password"].as_str().unwrap().to_owned();
        let email = body["email"].as_str().unwrap().to_owned();
        let admin = self.superuser_token().await;
        let created = self
            .call(ApiRequest::post("/api/v1/users/").bearer(&admin).json(body))
            .await;
        assert_eq!(created.status, 200, "create user: {}", created.body);
        let json = created.json();
        TestUser {
            id: json["id"].as_str().unwrap().to_owned(),
            token: self.token_for(&email, &password).await,
            email,
            password,
        }
    }

    pub async fn clinician(&self) -> TestUser {
        self.user_with(json!({"email": unique_email("clinician"), "password": "clinician-pass-1", "role": "clinician"}))
            .await
    }

    pub async fn viewer(&self) -> TestUser {
        self.user_with(
            json!({"email": unique_email("viewer"), "password": "viewer-pass-1", "role": "viewer"}),
        )
        .await
    }
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}
