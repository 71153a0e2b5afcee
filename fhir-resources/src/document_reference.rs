//! DocumentReference: an attachment, its file `Binary/{id}` under the FHIR base.

use domain::attachments::Attachment;
use serde_json::{json, Value};

/// An instant as FHIR writes it (milliseconds, UTC).
pub fn instant(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The DocumentReference of an attachment: its file is `Binary/{id}` on this server.
pub fn resource(attachment: &Attachment, base: &str) -> Value {
    let mut content = json!({
        "contentType": attachment.mime_type,
        "title": attachment.file_name,
        "url": format!("{base}/Binary/{}", attachment.id),
        "creation": instant(attachment.created_at),
    });
    if let Some(size) = attachment.size {
        content["size"] = json!(size);
    }
    let mut resource = json!({
        "resourceType": "DocumentReference",
        "id": attachment.id,
        "meta": { "lastUpdated": instant(attachment.uploaded_at.unwrap_or(attachment.created_at)) },
        "status": "current",
        "subject": { "reference": format!("Patient/{}", attachment.patient_id) },
        "date": instant(attachment.created_at),
        "content": [{ "attachment": content }],
    });
    // Bytes not (yet) in storage: a document that is not final.
    resource["docStatus"] = json!(if attachment.is_pending() {
        "preliminary"
    } else {
        "final"
    });
    resource
}
