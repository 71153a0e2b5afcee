//! GET /api/v1/audit-events/: the audit trail, newest first, for superusers. Keyset-paginated
//! on (occurred_at, id), since the table grows without bound.

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::audit::{Audit, Event};
use shared::auth::{AuthContext, CurrentUser};
use shared::config::{ConfigError, Env};
use shared::http::{QueryParams, DEFAULT_LIMIT, MAX_LIMIT};
use shared::secrets::SecretsClient;
use shared::{ApiError, ApiResult, FieldError};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

#[derive(Clone)]
pub struct AuditState {
    pub auth: AuthContext,
}

impl FromRef<AuditState> for AuthContext {
    fn from_ref(state: &AuditState) -> Self {
        state.auth.clone()
    }
}

impl AuditState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            auth: AuthContext::from_env(env, &SecretsClient::from_env(env), "carevault-audit")
                .await?,
        })
    }
}

pub fn router(state: AuditState) -> Router {
    Router::new()
        .route("/api/v1/audit-events", get(list_events))
        .with_state(state)
}

#[derive(Debug, Serialize)]
pub struct AuditEventOut {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_email: Option<String>,
    action: String,
    outcome: String,
    resource_type: String,
    resource_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    request_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    details: Value,
}

const COLUMNS: &str = "id, occurred_at, actor_id, actor_email, action, outcome, resource_type, \
    resource_id, patient_id, request_id, source_ip, user_agent, details";

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

/// The position after the last event of a page: its time (microseconds) and id, opaque to clients.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (micros, id) = text.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

type Param = (Box<dyn ToSql + Sync + Send>, Type);

/// The WHERE clause and parameters of the filters, or a 422 naming every bad one.
fn parse(filters: Filters) -> ApiResult<(String, Vec<Param>, i64)> {
    let mut errors = Vec::new();
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    // Sent empty is invalid for every one of these typed filters.
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned());
    for (name, column, value) in [
        ("patient_id", "patient_id", given(filters.patient_id)),
        ("actor_id", "actor_id", given(filters.actor_id)),
    ] {
        if let Some(raw) = value {
            match Uuid::parse_str(&raw) {
                Ok(id) => {
                    params.push((Box::new(id), Type::UUID));
                    clauses.push(format!("{column} = ${}", params.len()));
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
        params.push((Box::new(action), Type::TEXT));
        clauses.push(format!("action = ${}", params.len()));
    }
    if let Some(outcome) = given(filters.outcome) {
        if ["success", "denied", "not_found", "invalid"].contains(&outcome.as_str()) {
            params.push((Box::new(outcome), Type::TEXT));
            clauses.push(format!("outcome = ${}", params.len()));
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
                    params.push((Box::new(at.with_timezone(&Utc)), Type::TIMESTAMPTZ));
                    clauses.push(format!("occurred_at {op} ${}", params.len()));
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
                params.push((Box::new(at), Type::TIMESTAMPTZ));
                params.push((Box::new(id), Type::UUID));
                clauses.push(format!(
                    "(occurred_at, id) < (${}, ${})",
                    params.len() - 1,
                    params.len()
                ));
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
    current: CurrentUser,
    audit: Audit,
    filters: Result<QueryParams<Filters>, ApiError>,
) -> ApiResult<Json<Page>> {
    let audit = audit.by(&current);
    let result = async {
        current.require_superuser()?;
        let QueryParams(filters) = filters?;
        let (clause, mut params, limit) = parse(filters)?;
        params.push((Box::new(limit + 1), Type::INT8));
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events{clause} ORDER BY occurred_at DESC, id DESC LIMIT ${}",
            params.len()
        );
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect();
        let client = state.auth.pool.get().await?;
        let rows = client.query_typed(&sql, &typed).await?;
        let mut data: Vec<AuditEventOut> = rows
            .iter()
            .map(|r| AuditEventOut {
                id: r.get(0),
                occurred_at: r.get(1),
                actor_id: r.get(2),
                actor_email: r.get(3),
                action: r.get(4),
                outcome: r.get(5),
                resource_type: r.get(6),
                resource_id: r.get(7),
                patient_id: r.get(8),
                request_id: r.get(9),
                source_ip: r.get(10),
                user_agent: r.get(11),
                details: r.get(12),
            })
            .collect();
        let next_cursor = if data.len() as i64 > limit {
            data.truncate(limit as usize);
            data.last().map(|e| encode_cursor(e.occurred_at, e.id))
        } else {
            None
        };
        Ok(Page { data, next_cursor })
    }
    .await;
    // Reading the trail is itself recorded.
    let event = Event::new("audit.read", "audit_event").details(json!({
        "events": result.as_ref().map(|p| p.data.len()).unwrap_or(0)
    }));
    audit.read(&state.auth.pool, event, result.map(Json)).await
}
