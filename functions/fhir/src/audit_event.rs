//! AuditEvent (read, search; superusers only): the audit trail as FHIR R4 AuditEvents, following
//! IHE Basic Audit Log Patterns (BALP): a RESTful interaction, its outcome, the user who asked
//! and from where, the patient and the resource it touched. Reading them is itself audited.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::audit_events::{self, ActionKind, AuditEventOut, EventFilter, OutcomeMatch};
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

/// The identifier system of CareVault's user ids (users are not FHIR resources here).
pub const USER_ID_SYSTEM: &str = "https://carevault.dev/fhir/sid/user-id";
/// The code system of CareVault's own action names (`patient.read`, `auth.login`...).
pub const ACTION_SYSTEM: &str = "https://carevault.dev/fhir/CodeSystem/audit-action";

/// FHIR's RESTful interaction and C/R/U/D/E action of one of our actions.
fn interaction(action: &str) -> (Option<&'static str>, &'static str) {
    let rest = match action.rsplit('.').next().unwrap_or("") {
        "create" => Some("create"),
        "read" => Some("read"),
        "search" | "list" => Some("search-type"),
        "update" => Some("update"),
        "delete" => Some("delete"),
        _ => None,
    };
    (rest, action_code(ActionKind::of(action)))
}

/// FHIR's code of an action kind (hl7.org/fhir/R4/valueset-audit-event-action.html).
fn action_code(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Create => "C",
        ActionKind::Read => "R",
        ActionKind::Update => "U",
        ActionKind::Delete => "D",
        ActionKind::Execute => "E",
    }
}

/// The action kind of a FHIR code.
fn action_kind(code: &str) -> Option<ActionKind> {
    [
        ActionKind::Create,
        ActionKind::Read,
        ActionKind::Update,
        ActionKind::Delete,
        ActionKind::Execute,
    ]
    .into_iter()
    .find(|kind| action_code(*kind) == code)
}

/// The FHIR type a resource of the trail is, when it is one.
fn fhir_type(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "patient" => Some("Patient"),
        "attachment" => Some("DocumentReference"),
        "audit_event" => Some("AuditEvent"),
        _ => None,
    }
}

pub fn resource(event: &AuditEventOut) -> Value {
    let (rest, action) = interaction(&event.action);
    let mut subtype = vec![json!({ "system": ACTION_SYSTEM, "code": event.action })];
    if let Some(rest) = rest {
        subtype.insert(
            0,
            json!({ "system": "http://hl7.org/fhir/restful-interaction", "code": rest }),
        );
    }
    let mut agent = json!({
        "type": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP", "display": "information recipient",
        }]},
        "requestor": true,
    });
    match event.actor_id {
        Some(id) => {
            agent["who"] = json!({
                "identifier": { "system": USER_ID_SYSTEM, "value": id },
                "display": event.actor_email,
            })
        }
        // A request without a valid token: who it was is not known.
        None => {
            agent["who"] = json!({ "display": event.actor_email.as_deref().unwrap_or("unauthenticated or system") })
        }
    }
    if let Some(address) = &event.source_ip {
        agent["network"] = json!({ "address": address, "type": "2" });
    }
    let mut entities = Vec::new();
    if let Some(patient) = event.patient_id {
        entities.push(json!({
            "what": { "reference": format!("Patient/{patient}") },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        }));
    }
    if let Some(id) = event.resource_id {
        let what = match fhir_type(&event.resource_type) {
            Some(kind) => json!({ "reference": format!("{kind}/{id}") }),
            None => {
                json!({ "identifier": { "system": format!("https://carevault.dev/fhir/sid/{}-id", event.resource_type), "value": id } })
            }
        };
        if event.patient_id != Some(id) {
            entities.push(json!({
                "what": what,
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            }));
        }
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": event.id,
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": subtype,
        "action": action,
        "recorded": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "outcome": match event.outcome.as_str() {
            "success" => "0",
            "error" => "8",
            _ => "4",
        },
        "outcomeDesc": event.outcome,
        "agent": [agent],
        "source": {
            "observer": { "display": "CareVault" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
    });
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource
}

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
