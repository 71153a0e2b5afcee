//! The CareVault common crate below the HTTP edge (`edge/`): everything the Lambda functions
//! and the domain share, in layers; a module uses only the layers below its own, so the crate
//! has no cycles. It builds without axum: with the `axum` feature (the edge turns it on) it
//! adds only the two trait impls the orphan rule keeps here.
//!
//! 1. Settings and errors: `config`, `error`, `logging`, `tls`, `domain` (types that can only
//!    hold valid values), `input` (untrusted text into those types).
//! 2. Clients made once per cold start: `aws`, `secrets`, `db`, `storage`.
//! 3. Accounts and the trail: `audit` (the trail's records), `trail` (one request's entry),
//!    `password`, `sealing`, `throttle`, `tokens`, `email`. (Users, patients, attachments and the
//!    trail's reading are in the domain crate, `domain/`, which builds on this one.)

// 1
pub mod config;
pub mod domain;
pub mod error;
pub mod input;
pub mod logging;
pub mod tls;
// 2
pub mod aws;
pub mod db;
pub mod queue;
pub mod secrets;
pub mod storage;
// 3
pub mod audit;
pub mod email;
pub mod opaque;
pub mod password;
pub mod sealing;
pub mod throttle;
pub mod tokens;
pub mod trail;

pub use error::{ApiError, ApiResult, FieldError, StoreError};
