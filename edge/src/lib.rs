//! The HTTP edge every HTTP function goes through, and the only crate besides the function
//! crates that knows axum and Lambda's HTTP adapter. A request enters at `http::start` (the
//! Lambda adapter around the function's router), passes the audit layer (`audit_layer`), then
//! the extractors of its handler: the caller (`auth`), the body and query (`http`), parsed by
//! `shared::input` into domain types.

pub mod audit_layer;
pub mod auth;
pub mod base;
pub mod http;
pub mod smart;
