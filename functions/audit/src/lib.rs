//! GET /api/v1/audit-events/: the audit trail, newest first, for superusers. Keyset-paginated
//! on (occurred_at, id), since the table grows without bound.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::audit_events::{decode_cursor, encode_cursor, AuditEventOut, AUDIT_READ, COLUMNS};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::auth::{AuthContext, Superuser};
use shared::config::{ConfigError, Env};
use shared::db::{DbPool, SqlParams};
use shared::http::{QueryParams, DEFAULT_LIMIT, MAX_LIMIT};
use shared::secrets::SecretsClient;
use shared::tokens::TokenRole;
use shared::trail::{Audit, AuditTrail};
use shared::{ApiError, ApiResult, FieldError};
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Clone, FromRef)]
pub struct AuditState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
}

impl AuditState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth = AuthContext::from_env(
            env,
            &Arc::new(SecretsClient::from_env(env)),
            "carevault-audit",
            TokenRole::Verify,
        )
        .await?;
        Ok(Self {
            db: auth.pool.clone(),
            auth,
        })
    }
}

pub fn router(state: AuditState) -> Router {
    Router::new()
        .route(
            "/api/v1/audit-events",
            get(list_events.layer(AuditTrail::new(state.db.clone()).on(AUDIT_READ))),
        )
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
struct Filters {
    patient_id: Option<String>,
    actor_id: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Page {
    data: Vec<AuditEventOut>,
    next_cursor: Option<String>,
}

/// The WHERE clause and parameters of the filters, or a 422 naming every bad one.
fn parse(filters: Filters) -> ApiResult<(String, SqlParams, i64)> {
    let mut errors = Vec::new();
    let mut clauses: Vec<String> = Vec::new();
    let mut params = SqlParams::new();
    // Sent empty is invalid for every one of these typed filters.
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned());
    for (name, column, value) in [
        ("patient_id", "patient_id", given(filters.patient_id)),
        ("actor_id", "actor_id", given(filters.actor_id)),
    ] {
        if let Some(raw) = value {
            match Uuid::parse_str(&raw) {
                Ok(id) => {
                    clauses.push(format!("{column} = {}", params.push(id, Type::UUID)));
                }
                Err(_) => errors.push(FieldError::new(
                    &["query", name],
                    "Input should be a valid UUID",
                    "uuid_parsing",
                )),
            }
        }
    }
    if let Some(action) = given(filters.action) {
        clauses.push(format!("action = {}", params.push(action, Type::TEXT)));
    }
    if let Some(outcome) = given(filters.outcome) {
        if ["success", "denied", "not_found", "invalid"].contains(&outcome.as_str()) {
            clauses.push(format!("outcome = {}", params.push(outcome, Type::TEXT)));
        } else {
            errors.push(FieldError::new(
                &["query", "outcome"],
                "Input should be 'success', 'denied', 'not_found' or 'invalid'",
                "enum",
            ));
        }
    }
    for (name, op, value) in [
        ("since", ">=", given(filters.since)),
        ("until", "<", given(filters.until)),
    ] {
        if let Some(raw) = value {
            match DateTime::parse_from_rfc3339(&raw) {
                Ok(at) => {
                    let at = params.push(at.with_timezone(&Utc), Type::TIMESTAMPTZ);
                    clauses.push(format!("occurred_at {op} {at}"));
                }
                Err(_) => errors.push(FieldError::new(
                    &["query", name],
                    "Input should be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z",
                    "datetime_parsing",
                )),
            }
        }
    }
    if let Some(raw) = given(filters.cursor) {
        match decode_cursor(&raw) {
            Some((at, id)) => {
                let at = params.push(at, Type::TIMESTAMPTZ);
                let id = params.push(id, Type::UUID);
                clauses.push(format!("(occurred_at, id) < ({at}, {id})"));
            }
            None => errors.push(FieldError::new(
                &["query", "cursor"],
                "Invalid cursor",
                "value_error",
            )),
        }
    }
    let limit = filters.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            &["query", "limit"],
            format!("Input should be between 1 and {MAX_LIMIT}"),
            "less_than_equal",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    Ok((clause, params, limit))
}

async fn list_events(
    State(state): State<AuditState>,
    _superuser: Superuser,
    audit: Audit,
    QueryParams(filters): QueryParams<Filters>,
) -> ApiResult<Json<Page>> {
    let (clause, mut params, limit) = parse(filters)?;
    let limit_p = params.push(limit + 1, Type::INT8);
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events{clause} ORDER BY occurred_at DESC, id DESC LIMIT {limit_p}"
    );
    let client = state.db.get().await?;
    let rows = client.query_typed(&sql, &params.typed()).await?;
    let mut data: Vec<AuditEventOut> = rows.iter().map(AuditEventOut::from_row).collect();
    let next_cursor = if data.len() as i64 > limit {
        data.truncate(limit as usize);
        data.last().map(|e| encode_cursor(e.occurred_at, e.id))
    } else {
        None
    };
    // Reading the trail is itself recorded.
    audit.describe(|event| event.details(json!({ "events": data.len() })));
    Ok(Json(Page { data, next_cursor }))
}
