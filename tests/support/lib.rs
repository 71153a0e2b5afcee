//! The test harness: a fresh database per test cloned from a migrated template, and API Gateway
//! HTTP API (payload 2.0) events run through a function's router exactly as Lambda runs them
//! (the `lambda_http` adapter, from event JSON to response JSON).
//!
//! scripts/test starts the real services and exports their addresses. Where a variable is not
//! set, the harness uses the stack scripts/dev starts (PostgreSQL on 127.0.0.1:5432, S3, Secrets
//! Manager and the SMTP sink on 9101 to 9103), so one module runs alone with
//! `cargo test -p api-tests <name>` while scripts/dev runs. A service that is not there fails the
//! test with the connection error, never a silent skip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use base64::Engine;
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent, Service};
use serde_json::{json, Value};
use shared::config::{DatabaseConfig, Env};
use shared::db::DbPool;
use tokio::sync::OnceCell;

/// The settings of the stack scripts/dev starts (scripts/lib/stack.sh, `stack_up dev 9100`).
const DEV_STACK: &[(&str, &str)] = &[
    (
        "CAREVAULT_TEST_ADMIN_URL",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ),
    ("AWS_ACCESS_KEY_ID", "carevault-local"),
    ("AWS_SECRET_ACCESS_KEY", "carevault-local-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9101"),
    ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9102"),
    ("S3_BUCKET", "carevault-local"),
    ("SMTP_PORT", "9103"),
    (
        "SMTP_SINK_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/stack/dev/mail"),
    ),
];

static STACK_DEFAULTS: std::sync::Once = std::sync::Once::new();

/// Fills in scripts/dev's stack for every variable scripts/test did not export. Runs before any
/// test reads the environment (every entry point of the harness calls it first).
fn use_dev_stack_defaults() {
    STACK_DEFAULTS.call_once(|| {
        for (name, value) in DEV_STACK {
            if std::env::var_os(name).is_none() {
                std::env::set_var(name, value);
            }
        }
    });
}

/// The server's admin URL (a database we may CREATE DATABASE from).
pub fn admin_url() -> String {
    stack_var("CAREVAULT_TEST_ADMIN_URL")
}

/// A variable of the local stack: exported by scripts/test, else scripts/dev's value.
pub fn stack_var(name: &str) -> String {
    use_dev_stack_defaults();
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

pub async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
}

/// Connection settings for database `dbname` on the test server.
pub fn database_config(dbname: &str) -> DatabaseConfig {
    let env = Env::from_pairs([("DATABASE_URL", admin_url())]);
    let mut config =
        DatabaseConfig::from_url_env(&env, "carevault-tests").expect("a valid admin URL");
    config.dbname = dbname.to_owned();
    config
}

pub const FIRST_SUPERUSER: &str = "admin@example.com";
/// The local default, so the samples in events/ work against scripts/dev too.
pub const FIRST_SUPERUSER_PASSWORD: &str = "changethis";

pub fn migrate_config(dbname: &str) -> migrate::MigrateConfig {
    migrate::MigrateConfig {
        database: database_config(dbname),
        audit_retention_days: 2_190,
        app_login: None,
        app_statement_timeout_ms: 5_000,
        token_keys: None,
        first_superuser: shared::domain::EmailAddress::parse(FIRST_SUPERUSER.into()).unwrap(),
        first_superuser_password: shared::domain::Password::parse(FIRST_SUPERUSER_PASSWORD.into())
            .unwrap(),
    }
}

/// The template's name carries a hash of what it is made from (the migrations and the first
/// superuser), so a change to either makes a new one.
fn template_name() -> String {
    let mut files: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
            .expect("migrations folder")
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    let mut inputs: Vec<Vec<u8>> = vec![FIRST_SUPERUSER.into(), FIRST_SUPERUSER_PASSWORD.into()];
    for file in files {
        inputs.push(file.file_name().unwrap().as_encoded_bytes().to_vec());
        inputs.push(std::fs::read(&file).unwrap());
    }
    // FNV-1a: stable across runs and processes (std's hasher is randomly seeded).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in inputs.iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("carevault_template_{hash:016x}")
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Migrates the template database once per run (and once across concurrent runs, by lock).
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let admin = admin_client().await;
            admin
                .execute("SELECT pg_advisory_lock(4242)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                // One statement per call: CREATE/DROP DATABASE cannot run in a transaction block.
                for sql in [
                    format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                    format!("CREATE DATABASE {building}"),
                ] {
                    admin.batch_execute(&sql).await.unwrap();
                }
                migrate::run(&migrate_config(&building))
                    .await
                    .expect("migrate the template database");
                // Renamed only when complete: a run killed half-way leaves no broken template.
                admin
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(4242)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database of its own for one test, dropped when the test ends (pass or fail).
pub struct TestDb {
    pub name: String,
    pub config: DatabaseConfig,
    pub pool: DbPool,
}

impl TestDb {
    /// A copy of the migrated template: schema and first superuser, no other rows.
    pub async fn new() -> Self {
        let template = template().await;
        Self::create(&format!("TEMPLATE {template}")).await
    }

    /// An empty database (no schema), for migration tests.
    pub async fn empty() -> Self {
        Self::create("").await
    }

    async fn create(options: &str) -> Self {
        let name = format!(
            "carevault_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("create the test database");
        Self::attach(name)
    }

    /// The single number a query answers, such as a `count(*)`.
    pub async fn number(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    fn attach(name: String) -> Self {
        let config = database_config(&name);
        let pool = shared::db::pool(&config).expect("test pool");
        Self { name, config, pool }
    }

    pub async fn client(&self) -> shared::db::Connection {
        self.pool.get().await.expect("test database connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let name = self.name.clone();
        // Drop runs outside async context: a short-lived thread with its own runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    admin_client()
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
    }
}

/// An API Gateway HTTP API request, built up and turned into the event Lambda receives.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    method: String,
    pub path: String,
    query: Vec<(String, String)>,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    request_id: Option<String>,
    source_ip: String,
}

impl ApiRequest {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: Vec::new(),
            headers: BTreeMap::from([("user-agent".to_owned(), "carevault-tests".to_owned())]),
            body: None,
            request_id: None,
            source_ip: "198.51.100.7".into(),
        }
    }

    /// API Gateway's request id for this request (Lambda's will be `lambda-<it>`).
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }
    /// The client's address as API Gateway reports it (default 198.51.100.7).
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.to_owned();
        self
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }
    pub fn put(path: &str) -> Self {
        Self::new("PUT", path)
    }
    pub fn patch(path: &str) -> Self {
        Self::new("PATCH", path)
    }
    pub fn delete(path: &str) -> Self {
        Self::new("DELETE", path)
    }

    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(self, body: Value) -> Self {
        self.raw_body("application/json", &body.to_string())
    }

    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let encoded = serde_urlencoded::to_string(pairs).unwrap();
        self.raw_body("application/x-www-form-urlencoded", &encoded)
    }

    pub fn raw_body(mut self, content_type: &str, body: &str) -> Self {
        self.headers
            .insert("content-type".into(), content_type.into());
        self.body = Some(body.to_owned());
        self
    }

    /// The payload-2.0 event API Gateway sends for this request.
    pub fn to_event(&self) -> Value {
        let raw_query = serde_urlencoded::to_string(&self.query).unwrap();
        let mut query_params = serde_json::Map::new();
        for (k, v) in &self.query {
            // API Gateway joins repeated keys with commas.
            let joined = match query_params.get(k) {
                Some(Value::String(prev)) => format!("{prev},{v}"),
                _ => v.clone(),
            };
            query_params.insert(k.clone(), Value::String(joined));
        }
        let request_id = self
            .request_id
            .clone()
            .unwrap_or_else(|| format!("test-{}", uuid::Uuid::new_v4()));
        let mut event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": self.path,
            "rawQueryString": raw_query,
            "headers": self.headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "carevault",
                "domainName": "api.carevault.test",
                "domainPrefix": "api",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": self.source_ip,
                    "userAgent": self.headers.get("user-agent").cloned().unwrap_or_default(),
                },
                "requestId": request_id,
                "routeKey": "$default",
                "stage": "$default",
                "time": "27/Nov/2026:06:00:00 +0000",
                "timeEpoch": 1_795_932_000_000u64,
            },
            "isBase64Encoded": false,
        });
        if !query_params.is_empty() {
            event["queryStringParameters"] = Value::Object(query_params);
        }
        if let Some(body) = &self.body {
            event["body"] = Value::String(body.clone());
        }
        event
    }
}

/// What API Gateway would send back to the client.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl ApiResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `detail` of an error answer.
    pub fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
}

/// Runs one event through `router` as Lambda would: event JSON in, response JSON out.
pub async fn invoke_event(router: Router, event: Value) -> ApiResponse {
    let mut context = Context::default();
    context.request_id = format!(
        "lambda-{}",
        event["requestContext"]["requestId"]
            .as_str()
            .unwrap_or("none")
    );
    let payload: LambdaRequest = serde_json::from_value(event).expect("a valid API Gateway event");
    let mut adapter = lambda_http::Adapter::from(shared::http::service(router));
    let response = adapter
        .call(LambdaEvent::new(payload, context))
        .await
        .unwrap_or_else(|e| match e {});
    let response = serde_json::to_value(response).unwrap();
    let status = response["statusCode"].as_u64().expect("statusCode") as u16;
    let headers = response["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = match response.get("body") {
        Some(Value::String(text)) if response["isBase64Encoded"] == json!(true) => {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .expect("base64 body"),
            )
            .expect("UTF-8 body")
        }
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    ApiResponse {
        status,
        headers,
        body,
    }
}

pub async fn invoke(router: Router, request: ApiRequest) -> ApiResponse {
    invoke_event(router, request.to_event()).await
}

/// The repository's `events/` folder.
pub fn events_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// A one-route HTTP server on 127.0.0.1 that records what is sent to it: stands in for the
/// CloudFormation response URL (a presigned S3 URL in AWS).
pub struct RequestRecorder {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<RecordedRequest>>>,
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl RequestRecorder {
    pub async fn start() -> Self {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let sink = sink.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                sink.lock().unwrap().push(RecordedRequest {
                    method: parts.method.to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: body.to_vec(),
                });
                ""
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/cloudformation-response",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    pub fn received(&self) -> Vec<RecordedRequest> {
        self.received.lock().unwrap().clone()
    }
}

/// An HTTP proxy in front of the local S3 server that counts the requests it is carrying at
/// once (each held a little, so requests sent together overlap): how a test sees how many S3
/// requests the API keeps in flight. Headers pass unchanged, so signatures still verify.
pub struct CountingS3Proxy {
    pub url: String,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingS3Proxy {
    pub async fn start() -> Self {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let upstream = stack_var("AWS_ENDPOINT_URL_S3");
        let (in_flight, most, requests) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let counters = (in_flight.clone(), most.clone(), requests.clone());
        let client = http_client();
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let (in_flight, most, requests) = counters.clone();
            let (client, upstream) = (client.clone(), upstream.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                requests.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20)
                    .await
                    .unwrap_or_default();
                let target = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let mut forward = client.request(parts.method.clone(), target).body(body);
                for (name, value) in &parts.headers {
                    forward = forward.header(name, value);
                }
                let answer = forward.send().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match answer {
                    Ok(answer) => {
                        let mut response =
                            axum::response::Response::builder().status(answer.status());
                        for (name, value) in answer.headers() {
                            response = response.header(name, value);
                        }
                        response
                            .body(axum::body::Body::from(
                                answer.bytes().await.unwrap_or_default(),
                            ))
                            .unwrap()
                    }
                    Err(_) => axum::response::Response::builder()
                        .status(502)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            in_flight,
            most,
            requests,
        }
    }

    /// The most requests carried at once so far.
    pub fn most_in_flight(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub fn now_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The token keys of every test app: one ES256 key pair per test process (tests sign tokens of
/// their own with it, and with others).
pub struct TestKeys {
    pub signing: shared::tokens::SigningKeys,
    pub jwks: Value,
}

pub const TEST_KID: &str = "test-key";

pub fn test_keys() -> &'static TestKeys {
    static KEYS: std::sync::OnceLock<TestKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let signing = shared::tokens::SigningKeys::generate(TEST_KID).expect("a test key");
        let jwks = signing.public_jwks().expect("its public half");
        TestKeys { signing, jwks }
    })
}

/// The settings that hand a function the test keys, as the local secrets would.
pub fn token_settings() -> [(&'static str, String); 2] {
    let keys = test_keys();
    [
        (
            "TOKEN_SIGNING_KEYS",
            serde_json::to_string(&keys.signing).unwrap(),
        ),
        ("TOKEN_PUBLIC_KEYS", keys.jwks.to_string()),
    ]
}

/// An access token for `user_id` (in its first session), as a login would issue it.
pub fn access_token_for(user_id: uuid::Uuid) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sign_as_the_api(&json!({
        "sub": user_id, "aud": "carevault:access", "iat": now, "exp": now + 3600, "sep": 0,
    }))
}

/// `claims` signed as the API signs (ES256 with the test key and its kid): for tokens whose
/// claims a test chooses (expired, another audience...).
pub fn sign_as_the_api(claims: &Value) -> String {
    let pem = &test_keys().signing.keys[0].private_key_pem;
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(TEST_KID.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
    )
    .unwrap()
}

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
        let env = Env::from_pairs(settings.clone());
        Self {
            audit: audit::AuditState::from_env(&env)
                .await
                .expect("audit cold start"),
            fhir: fhir::FhirState::from_env(&env)
                .await
                .expect("fhir cold start"),
            attachments: attachments::AttachmentsState::from_env(&env)
                .await
                .expect("attachments cold start"),
            events: std::sync::Arc::new(
                attachment_events::EventsState::from_env(&env)
                    .await
                    .expect("attachment-events cold start"),
            ),
            settings,
            bucket,
            auth: auth::AuthState::from_env(&env)
                .await
                .expect("auth cold start"),
            users: users::UsersState::from_env(&env)
                .await
                .expect("users cold start"),
            utils: utils::UtilsState::from_env(&env)
                .await
                .expect("utils cold start"),
            patients: patients::PatientsState::from_env(&env)
                .await
                .expect("patients cold start"),
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

    /// Sends `request` to the function API Gateway would route it to.
    pub async fn call(&self, request: ApiRequest) -> ApiResponse {
        let router = match function_for_path(&request.path) {
            Some("auth") => auth::router(self.auth.clone()),
            Some("users") => users::router(self.users.clone()),
            Some("utils") => utils::router(self.utils.clone()),
            Some("patients") => patients::router(self.patients.clone()),
            Some("attachments") => attachments::router(self.attachments.clone()),
            Some("audit") => audit::router(self.audit.clone()),
            Some("fhir") => fhir::router(self.fhir.clone()),
            other => panic!("no function serves {} ({other:?})", request.path),
        };
        invoke(router, request).await
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

/// An address no other test uses, so each test finds its own mail in the shared sink.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub fn db_url(dbname: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{dbname}")
}

/// Which function API Gateway sends a path to: the first segment after /api/v1/.
pub fn function_for_path(path: &str) -> Option<&'static str> {
    if path == "/fhir/R4" || path.starts_with("/fhir/R4/") {
        return Some("fhir");
    }
    let rest = path.strip_prefix("/api/v1/")?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    // The one route of a group under another group's prefix.
    if let ["patients", _, "attachments"] = segments.as_slice() {
        return Some("attachments");
    }
    let group = segments[0];
    Some(match group {
        "login"
        | "logout"
        | ".well-known"
        | "password-recovery"
        | "reset-password"
        | "password-recovery-html-content" => "auth",
        "users" => "users",
        "utils" | "openapi.json" => "utils",
        "patients" => "patients",
        "attachments" => "attachments",
        "audit-events" => "audit",
        _ => return None,
    })
}

/// Messages the SMTP sink received for `recipient`, oldest first, as (subject, text body).
pub fn mail_to(recipient: &str) -> Vec<(String, String)> {
    let dir = std::path::PathBuf::from(stack_var("SMTP_SINK_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .filter_map(|path| {
            let raw = std::fs::read(path).ok()?;
            let message = mail_parser::MessageParser::default().parse(&raw)?;
            let to_us = message
                .header_raw("X-Envelope-To")
                .is_some_and(|to| to.contains(recipient));
            to_us.then(|| {
                (
                    message.subject().unwrap_or_default().to_owned(),
                    message.body_text(0).unwrap_or_default().into_owned(),
                )
            })
        })
        .collect()
}

/// The token in a `...reset-password?token=...` link.
pub fn token_in(text: &str) -> String {
    let start = text.find("token=").expect("a link with a token") + "token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

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

/// The sample event `events/<name>`, parsed.
pub fn event(name: &str) -> Value {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
