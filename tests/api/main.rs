//! One test binary for the whole API (one link step instead of one per file).
//! Every test runs against real PostgreSQL, S3, Secrets Manager and SMTP started by scripts/test.

mod attachments;
mod audit;
mod auth;
mod config;
mod cursors;
mod events;
mod faults;
mod fhir;
mod generated;
mod health;
mod layout;
mod mfa;
mod migrate;
mod multipart;
mod openapi;
mod origin;
mod patients;
mod sessions;
mod smart;
mod template;
mod users;
