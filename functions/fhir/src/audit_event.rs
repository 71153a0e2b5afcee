//! AuditEvent (read, search; superusers only): the audit trail as FHIR R4 AuditEvents, following
//! IHE Basic Audit Log Patterns (BALP): a RESTful interaction, its outcome, the user who asked
//! and from where, the patient and the resource it touched. Reading them is itself audited.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::audit_events::{self, EventFilter, OutcomeMatch};
use domain::paging::{Count, List};
use domain::smart::scopes::{Interaction, Reach, ResourceType};
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::audit::Outcome;
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::query::{self, Common};
use crate::{FhirState, PublicBase};
use fhir_resources::audit_event::action_kind;
pub use fhir_resources::audit_event::resource;

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("AuditEvent/{raw_id} is not known"))
}

/// `GET /fhir/R4/AuditEvent/{id}`.
pub async fn read(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    // The trail is never a patient's compartment: user/ or system/ scopes only.
    if caller.permit(ResourceType::AuditEvent, Interaction::Read)? != Reach::All {
        return Err(ApiError::Forbidden(
            "The trail needs user/AuditEvent.rs or system/AuditEvent.rs".into(),
        ));
    }
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    let event = audit_events::find(&state.db, id)
        .await?
        .ok_or_else(|| not_found(&raw_id))?;
    audit.describe(|e| e.patient(event.patient_id));
    Ok(Json(resource(&event)))
}

/// The ids a comma list of references or identifiers names (the part after the last of
/// `separators`); a value that is no UUID names nothing, so it matches nothing.
fn ids_of(value: &str, separators: &[char]) -> Vec<Uuid> {
    value
        .split(',')
        .map(|r| {
            Uuid::parse_str(r.trim().rsplit(separators).next().unwrap_or("")).unwrap_or(Uuid::nil())
        })
        .collect()
}

/// Each code of a comma list, all understood (or None).
fn each<T>(value: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    value.split(',').map(|code| parse(code.trim())).collect()
}

/// FHIR's audit outcome code as the trail's outcomes.
fn outcome_match(code: &str) -> Option<OutcomeMatch> {
    match code {
        "0" => Some(OutcomeMatch::Is(Outcome::Success)),
        "4" => Some(OutcomeMatch::Refused),
        // A serious failure: a handler that panicked. Other server errors (and major failures)
        // are logged, not audited.
        "8" => Some(OutcomeMatch::Is(Outcome::Error)),
        "12" => Some(OutcomeMatch::Unrecorded),
        _ => None,
    }
}

/// The trail's filter one search parameter asks for; None for a parameter this search does
/// not know.
pub(crate) fn filter_of(param: &query::Param) -> Result<Option<EventFilter>, ApiError> {
    let value = param.value.trim();
    let not_understood =
        || ApiError::BadRequest(format!("{}={value:?} is not understood", param.name));
    Ok(Some(
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("patient", None) => EventFilter::Patients(ids_of(value, &['/'])),
            // A user id, with or without its system (`system|id`).
            ("agent", None) => EventFilter::Actors(ids_of(value, &['|', '/'])),
            ("action", None) => {
                EventFilter::Kinds(each(value, action_kind).ok_or_else(not_understood)?)
            }
            ("outcome", None) => {
                EventFilter::Outcomes(each(value, outcome_match).ok_or_else(not_understood)?)
            }
            // A date covers its UTC days, an instant (with its offset) its precision.
            ("date", None) => EventFilter::Occurred(
                query::instant_value(value)
                    .map_err(ApiError::BadRequest)?
                    .range(),
            ),
            _ => return Ok(None),
        },
    ))
}

/// The search parameters this resource's search applies (the CapabilityStatement lists them).
pub const AUDIT_EVENT_PARAMETERS: [&str; 5] = ["patient", "date", "agent", "action", "outcome"];

/// `GET /fhir/R4/AuditEvent?...`: by `patient`, `date`, `agent`, `action`, `outcome`, newest
/// first, paged by cursor: the trail's list, as the JSON API's `/audit-events/` pages it.
pub async fn search(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // The trail is never a patient's compartment: user/ or system/ scopes only.
    if caller.permit(ResourceType::AuditEvent, Interaction::Search)? != Reach::All {
        return Err(ApiError::Forbidden(
            "The trail needs user/AuditEvent.rs or system/AuditEvent.rs".into(),
        ));
    }
    let params = query::params(raw.as_deref());
    let mut filters = Vec::new();
    let mut common = Common::new(&AUDIT_EVENT_PARAMETERS);
    for param in &params {
        if common.take(param)? {
            continue;
        }
        match filter_of(param)? {
            Some(filter) => filters.push(filter),
            None => common.unknown(param),
        }
    }
    common.check(&headers)?;
    // The trail grows by the second: its total is the planner's estimate unless an accurate
    // count is asked for (which counts every matching event).
    let page = audit_events::list(
        &state.db,
        &filters,
        &query::keyset(common.cursor.as_deref(), List::AuditEvents)?,
        common.count,
        common.total.unwrap_or(Count::Estimate),
    )
    .await?;
    audit.describe(|event| event.details(json!({ "events": page.items.len() })));
    let base = PublicBase::of(&state.base, &headers, &uri);
    let entries = page
        .items
        .iter()
        .map(|e| crate::bundle::entry(&base, resource(e)))
        .collect();
    Ok(Json(crate::bundle::searchset(
        &base,
        "AuditEvent",
        &params,
        &common.unknown,
        (page.previous.as_deref(), page.next.as_deref()),
        page.total,
        entries,
    ))
    .into_response())
}
