//! Patient: a record as FHIR R4 Patient.

use domain::patients::model::Patient;
use serde_json::{json, Value};
use shared::domain::EmailAddress;

/// The canonical URL of the extension that carries the record's medical history (free text).
pub const MEDICAL_HISTORY_EXTENSION: &str =
    "https://carevault.dev/fhir/StructureDefinition/medical-history";

fn telecom(contact: &str) -> Value {
    let trimmed = contact.trim();
    let system = if EmailAddress::parse(trimmed.to_owned()).is_ok() {
        "email"
    } else if trimmed.len() >= 5
        && trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        "phone"
    } else {
        "other"
    };
    json!({ "system": system, "value": trimmed })
}

/// `name[0]`: the text as stored; family and given only when the name splits cleanly (two to
/// four words of letters, the last the family name), never guessed from anything else.
fn human_name(name: &str) -> Value {
    let words: Vec<&str> = name.split_whitespace().collect();
    let clean = (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        });
    if clean {
        let (family, given) = words.split_last().expect("two words or more");
        json!({ "use": "official", "text": name, "family": family, "given": given })
    } else {
        json!({ "use": "official", "text": name })
    }
}

/// The FHIR Patient of a record.
pub fn resource(patient: &Patient) -> Value {
    let mut resource = json!({
        "resourceType": "Patient",
        "id": patient.id,
        "meta": {
            "versionId": patient.version.to_string(),
            "lastUpdated": patient.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
        "name": [human_name(&patient.name)],
    });
    if !patient.identifiers.is_empty() {
        resource["identifier"] = json!(patient
            .identifiers
            .iter()
            .map(|i| json!({ "system": i.system, "value": i.value }))
            .collect::<Vec<_>>());
    }
    if let Some(dob) = patient.dob {
        resource["birthDate"] = json!(dob.format("%Y-%m-%d").to_string());
    }
    if let Some(contact) = patient
        .contact_info
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        resource["telecom"] = json!([telecom(contact)]);
    }
    if let Some(history) = patient.medical_history.as_deref().filter(|h| !h.is_empty()) {
        resource["extension"] =
            json!([{ "url": MEDICAL_HISTORY_EXTENSION, "valueString": history }]);
    }
    resource
}
