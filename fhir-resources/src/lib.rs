//! The domain's records as FHIR R4 resources: what the FHIR read answers and what a bulk export
//! writes, one mapping for both (functions/fhir and functions/bulk-export).

pub mod audit_event;
pub mod document_reference;
pub mod patient;

use serde_json::Value;

/// An exported record as the FHIR read returns it, under the FHIR base `base` (a
/// DocumentReference links its Binary there).
pub fn resource(record: &domain::exports::chunks::Record, base: &str) -> Value {
    use domain::exports::chunks::Record;
    match record {
        Record::Patient(patient) => patient::resource(patient),
        Record::Document(attachment) => document_reference::resource(attachment, base),
        Record::AuditEvent(event) => audit_event::resource(event),
    }
}
