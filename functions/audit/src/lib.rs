//! GET /api/v1/audit-events/: the audit trail, newest first, for superusers. Keyset-paginated
//! on (occurred_at, id), since the table grows without bound.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::audit_events::{self, AuditEventOut, EventFilter, OutcomeMatch, AUDIT_READ};
use domain::paging::{Count, Keyset, TimeRange};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::audit::Outcome;
use shared::auth::{AuthContext, Superuser};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::http::{QueryParams, DEFAULT_LIMIT, MAX_LIMIT};
use shared::secrets::SecretsClient;
use shared::tokens::TokenRole;
use shared::trail::{Audit, AuditTrail};
use shared::{ApiError, ApiResult, FieldError};
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

/// The filters, the page's start and its size, or a 422 naming every bad one.
fn parse(filters: Filters) -> ApiResult<(Vec<EventFilter>, Keyset, i64)> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    // Sent empty is invalid for every one of these typed filters.
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned());
    for (name, filter, value) in [
        (
            "patient_id",
            EventFilter::Patients as fn(Vec<Uuid>) -> EventFilter,
            given(filters.patient_id),
        ),
        ("actor_id", EventFilter::Actors, given(filters.actor_id)),
    ] {
        if let Some(raw) = value {
            match Uuid::parse_str(&raw) {
                Ok(id) => parsed.push(filter(vec![id])),
                Err(_) => errors.push(FieldError::new(
                    &["query", name],
                    "Input should be a valid UUID",
                    "uuid_parsing",
                )),
            }
        }
    }
    if let Some(action) = given(filters.action) {
        parsed.push(EventFilter::Action(action));
    }
    if let Some(outcome) = given(filters.outcome) {
        let known = [
            Outcome::Success,
            Outcome::Denied,
            Outcome::NotFound,
            Outcome::Invalid,
        ]
        .into_iter()
        .find(|o| o.as_str() == outcome);
        match known {
            Some(outcome) => parsed.push(EventFilter::Outcomes(vec![OutcomeMatch::Is(outcome)])),
            None => errors.push(FieldError::new(
                &["query", "outcome"],
                "Input should be 'success', 'denied', 'not_found' or 'invalid'",
                "enum",
            )),
        }
    }
    for (name, since, value) in [
        ("since", true, given(filters.since)),
        ("until", false, given(filters.until)),
    ] {
        if let Some(raw) = value {
            match DateTime::parse_from_rfc3339(&raw) {
                Ok(at) => {
                    let at = Some(at.with_timezone(&Utc));
                    parsed.push(EventFilter::Occurred(if since {
                        TimeRange {
                            from: at,
                            ..TimeRange::default()
                        }
                    } else {
                        TimeRange {
                            before: at,
                            ..TimeRange::default()
                        }
                    }));
                }
                Err(_) => errors.push(FieldError::new(
                    &["query", name],
                    "Input should be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z",
                    "datetime_parsing",
                )),
            }
        }
    }
    // Only a next page's cursor: this list has no previous links.
    let keyset = match given(filters.cursor).map(|raw| Keyset::decode(&raw)) {
        None => Keyset::first(),
        Some(Ok(keyset)) if !keyset.is_backwards() => keyset,
        Some(_) => {
            errors.push(FieldError::new(
                &["query", "cursor"],
                "Invalid cursor",
                "value_error",
            ));
            Keyset::first()
        }
    };
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
    Ok((parsed, keyset, limit))
}

async fn list_events(
    State(state): State<AuditState>,
    _superuser: Superuser,
    audit: Audit,
    QueryParams(filters): QueryParams<Filters>,
) -> ApiResult<Json<Page>> {
    let (filters, keyset, limit) = parse(filters)?;
    let page = audit_events::list(&state.db, &filters, &keyset, limit, Count::None).await?;
    // Reading the trail is itself recorded.
    audit.describe(|event| event.details(json!({ "events": page.items.len() })));
    Ok(Json(Page {
        data: page.items,
        next_cursor: page.next,
    }))
}
