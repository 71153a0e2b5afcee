//! The test harness: a fresh database per test cloned from a migrated template, and API Gateway
//! HTTP API (payload 2.0) events run through a function's router exactly as Lambda runs them
//! (the `lambda_http` adapter, from event JSON to response JSON).
//!
//! scripts/test starts the real services and exports their addresses. Where a variable is not
//! set, the harness uses the stack scripts/dev starts (PostgreSQL on 127.0.0.1:5432, S3, Secrets
//! Manager and the SMTP sink on 9101 to 9103), so one module runs alone with
//! `cargo test -p api-tests <name>` while scripts/dev runs. A service that is not there fails the
//! test with the connection error, never a silent skip.
//!
//! Where each part lives: `stack` (the services' addresses), `db` (the template and each test's
//! database), `requests` (API Gateway's events in and answers out), `routes` (template.yaml's route table, the one list of which function serves which path, and the local router's), `app` (one test's functions
//! and users), `keys` (token keys and self-signed tokens), `mail` (the SMTP sink), `s3` (the
//! client side of the bucket) and `servers` (local HTTP servers a test starts). Tests use the
//! items re-exported here, `api_tests::...`, not the modules' paths.

mod app;
mod db;
mod keys;
mod mail;
pub mod mfa;
mod queue;
mod requests;
mod routes;
mod s3;
mod servers;
mod smart;
mod stack;

pub use app::{TestApp, TestUser};
pub use db::{
    admin_client, admin_url, database_config, db_url, function_db_url, function_login,
    migrate_config, TestDb, FIRST_SUPERUSER, FIRST_SUPERUSER_PASSWORD,
};
pub use keys::{access_token_for, sign_as_the_api, test_keys, token_settings, TestKeys, TEST_KID};
pub use mail::{mail_to, token_in, unique_email};
pub use queue::{create_queue, delete_done, receive_event, sqs_client};
pub use requests::{event, events_dir, invoke, invoke_event, ApiRequest, ApiResponse};
pub use routes::{
    deployed_routes, function_for, instance_of, local_routes, route_for, template, Route,
};
pub use s3::{http_client, s3_client, upload};
pub use servers::{CountingS3Proxy, RecordedRequest, RequestRecorder};
pub use smart::{pkce, ClientKey};
pub use stack::stack_var;
