//! The CareVault common crate: everything the Lambda functions share.

pub mod attachments;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod error;
pub mod http;
pub mod logging;
pub mod password;
pub mod secrets;
pub mod storage;
pub mod tls;
pub mod users;

pub use error::{ApiError, ApiResult, FieldError};
