//! AuditEvent: an event of the audit trail as FHIR R4 AuditEvent, following IHE Basic Audit Log
//! Patterns (BALP): a RESTful interaction, its outcome, the user who asked and from where, the
//! patient and the resource it touched.

use domain::audit_events::{ActionKind, AuditEventOut};
use serde_json::{json, Value};

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
pub fn action_kind(code: &str) -> Option<ActionKind> {
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
