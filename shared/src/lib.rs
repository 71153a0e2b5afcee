//! The CareVault common crate: everything the Lambda functions share, in layers; a module uses
//! only the layers below its own, so the crate has no cycles.
//!
//! 1. Settings and errors: `config`, `error`, `logging`, `tls`, `domain` (types that can only
//!    hold valid values).
//! 2. Clients made once per cold start: `aws`, `secrets`, `db`, `storage`.
//! 3. Accounts and the trail: `audit` (the trail's records), `password`, `throttle`, `tokens`,
//!    `users`, `email`. (Patients, attachments and the trail's reading are in the domain
//!    crate, `domain/`, which builds on this one.)
//! 4. The HTTP edge: `http` (the Lambda adapter, request parsing), `trail` (the audit layer
//!    around every route), `auth` (the caller, from the bearer token).

// 1
pub mod config;
pub mod domain;
pub mod error;
pub mod logging;
pub mod tls;
// 2
pub mod aws;
pub mod db;
pub mod secrets;
pub mod storage;
// 3
pub mod audit;
pub mod email;
pub mod password;
pub mod throttle;
pub mod tokens;
pub mod users;
// 4
pub mod auth;
pub mod http;
pub mod trail;

pub use error::{ApiError, ApiResult, FieldError};
