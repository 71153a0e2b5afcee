//! GET /api/v1/audit-events/: the audit trail, newest first, for superusers. Keyset-paginated
//! on (occurred_at, id), since the table grows without bound.

use axum::extract::{FromRef, State};
use axum::handler::Handler;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::audit_events::{self, AuditEventOut, EventFilter, OutcomeMatch, AUDIT_READ};
use domain::paging::{Count, Keyset, List, TimeRange};
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, Superuser};
use edge::http::QueryParams;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::audit::Outcome;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::input::{DEFAULT_LIMIT, MAX_LIMIT};
use shared::trail::AuditEntry;
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
        let auth = AuthContext::verifying(env, "carevault-audit").await?;
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

/// A filter's value as sent (trimmed): sent empty is invalid for every one of these typed
/// filters.
fn given(value: Option<String>) -> Option<String> {
    value.map(|s| s.trim().to_owned())
}

fn invalid(name: &str, msg: &str, kind: &str) -> FieldError {
    FieldError::new(&["query", name], msg, kind)
}

/// `patient_id` or `actor_id`: one id.
fn id_filter(
    name: &str,
    raw: &str,
    filter: fn(Vec<Uuid>) -> EventFilter,
) -> Result<EventFilter, FieldError> {
    Uuid::parse_str(raw)
        .map(|id| filter(vec![id]))
        .map_err(|_| invalid(name, "Input should be a valid UUID", "uuid_parsing"))
}

fn outcome_filter(raw: &str) -> Result<EventFilter, FieldError> {
    [
        Outcome::Success,
        Outcome::Denied,
        Outcome::NotFound,
        Outcome::Invalid,
        Outcome::Error,
    ]
    .into_iter()
    .find(|o| o.as_str() == raw)
    .map(|outcome| EventFilter::Outcomes(vec![OutcomeMatch::Is(outcome)]))
    .ok_or_else(|| {
        invalid(
            "outcome",
            "Input should be 'success', 'denied', 'not_found', 'invalid' or 'error'",
            "enum",
        )
    })
}

/// `since` (at or after) or `until` (before): an RFC 3339 instant.
fn time_filter(name: &str, raw: &str) -> Result<EventFilter, FieldError> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map(|at| Some(at.with_timezone(&Utc)))
        .map_err(|_| {
            invalid(
                name,
                "Input should be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z",
                "datetime_parsing",
            )
        })?;
    Ok(EventFilter::Occurred(if name == "since" {
        TimeRange {
            from: at,
            ..TimeRange::default()
        }
    } else {
        TimeRange {
            before: at,
            ..TimeRange::default()
        }
    }))
}

/// Only a next page's cursor: this list has no previous links.
fn next_page(raw: &str) -> Result<Keyset, FieldError> {
    Keyset::of(List::AuditEvents, Some(raw))
        .ok()
        .filter(|keyset| !keyset.is_backwards())
        .ok_or_else(|| invalid("cursor", "Invalid cursor", "value_error"))
}

/// The filters, the page's start and its size, or a 422 naming every bad one.
fn parse(filters: Filters) -> ApiResult<(Vec<EventFilter>, Keyset, i64)> {
    let mut checked: Vec<Result<EventFilter, FieldError>> = Vec::new();
    let patient = given(filters.patient_id);
    checked.extend(patient.map(|raw| id_filter("patient_id", &raw, EventFilter::Patients)));
    let actor = given(filters.actor_id);
    checked.extend(actor.map(|raw| id_filter("actor_id", &raw, EventFilter::Actors)));
    checked.extend(given(filters.action).map(|action| Ok(EventFilter::Action(action))));
    checked.extend(given(filters.outcome).map(|raw| outcome_filter(&raw)));
    checked.extend(given(filters.since).map(|raw| time_filter("since", &raw)));
    checked.extend(given(filters.until).map(|raw| time_filter("until", &raw)));
    let (parsed, mut errors): (Vec<_>, Vec<_>) = checked.into_iter().partition(Result::is_ok);
    let mut errors: Vec<FieldError> = errors.drain(..).filter_map(Result::err).collect();
    let keyset = match given(filters.cursor).map(|raw| next_page(&raw)) {
        None => Keyset::first(List::AuditEvents),
        Some(Ok(keyset)) => keyset,
        Some(Err(error)) => {
            errors.push(error);
            Keyset::first(List::AuditEvents)
        }
    };
    let limit = filters.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(invalid(
            "limit",
            &format!("Input should be between 1 and {MAX_LIMIT}"),
            "less_than_equal",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok((
        parsed.into_iter().filter_map(Result::ok).collect(),
        keyset,
        limit,
    ))
}

async fn list_events(
    State(state): State<AuditState>,
    _superuser: Superuser,
    audit: AuditEntry,
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
