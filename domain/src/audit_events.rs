//! The audit trail as it is read back: an event as stored, the columns that make it, and the
//! position of a page's last event (the cursor of both interfaces' lists).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::trail::RouteEvent;
use uuid::Uuid;

/// Reading the trail, through either interface.
pub const AUDIT_READ: RouteEvent = RouteEvent::new("audit.read", "audit_event");

/// An event of the trail as stored (the JSON API answers it as is; FHIR maps it).
#[derive(Debug, Serialize)]
pub struct AuditEventOut {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub action: String,
    pub outcome: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Value,
}

/// The columns `AuditEventOut::from_row` reads, in order.
pub const COLUMNS: &str =
    "id, occurred_at, actor_id, actor_email, action, outcome, resource_type, \
    resource_id, patient_id, request_id, source_ip, user_agent, details";

impl AuditEventOut {
    pub fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
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
        }
    }
}

/// The position after the last event of a page: its time (microseconds) and id, opaque to clients.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", at.timestamp_micros()))
}

pub fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
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
