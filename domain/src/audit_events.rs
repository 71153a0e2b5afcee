//! The audit trail as it is read back: an event as stored, the kinds of action, and the one
//! list (filters, newest first by keyset, counted as asked) that the JSON API's
//! `/audit-events/` and FHIR's AuditEvent search both page through.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::audit::Outcome;
use shared::db::{DbPool, SqlParams};
use shared::trail::RouteEvent;
use shared::StoreError;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::paging::{self, Count, Keyset, Page, Position, TimeRange};

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

/// What kind of access an action is (FHIR's C/R/U/D/E), by the verb its name ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Create,
    Read,
    Update,
    Delete,
    /// Anything else (a login, a sweep, a token refresh).
    Execute,
}

/// The verbs that end our action names (`patient.read`, `attachment.presigned_url`), by kind.
const VERBS: [(&str, ActionKind); 8] = [
    ("create", ActionKind::Create),
    ("read", ActionKind::Read),
    ("search", ActionKind::Read),
    ("list", ActionKind::Read),
    ("download", ActionKind::Read),
    ("presigned_url", ActionKind::Read),
    ("update", ActionKind::Update),
    ("delete", ActionKind::Delete),
];

impl ActionKind {
    /// The kind of an action name.
    pub fn of(action: &str) -> Self {
        let verb = action.rsplit('.').next().unwrap_or("");
        VERBS
            .iter()
            .find(|(v, _)| *v == verb)
            .map_or(Self::Execute, |(_, kind)| *kind)
    }

    /// The SQL condition on the `action` column.
    fn condition(self) -> String {
        let like = |kind: Option<Self>| {
            VERBS
                .iter()
                .filter(|(_, k)| kind.is_none_or(|kind| *k == kind))
                .map(|(verb, _)| format!("action LIKE '%.{verb}'"))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        match self {
            Self::Execute => format!("NOT ({})", like(None)),
            kind => format!("({})", like(Some(kind))),
        }
    }
}

/// Which outcomes an event may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeMatch {
    Is(Outcome),
    /// Any refusal (FHIR's minor failure): every outcome but success and a server error.
    Refused,
    /// Our own failures, which are logged, not audited: matches nothing.
    Unrecorded,
}

/// One filter of the trail's list; a list's filters all hold (AND), the values within one
/// are alternatives (OR).
#[derive(Debug, Clone, PartialEq)]
pub enum EventFilter {
    /// About one of these patients.
    Patients(Vec<Uuid>),
    /// By one of these users.
    Actors(Vec<Uuid>),
    /// This action exactly (`patient.read`).
    Action(String),
    Kinds(Vec<ActionKind>),
    Outcomes(Vec<OutcomeMatch>),
    Occurred(TimeRange),
}

impl EventFilter {
    fn condition(&self, params: &mut SqlParams) -> String {
        let any = |conditions: Vec<String>| format!("({})", conditions.join(" OR "));
        match self {
            Self::Patients(ids) => format!(
                "patient_id = ANY({})",
                params.push(ids.clone(), Type::UUID_ARRAY)
            ),
            Self::Actors(ids) => format!(
                "actor_id = ANY({})",
                params.push(ids.clone(), Type::UUID_ARRAY)
            ),
            Self::Action(action) => format!("action = {}", params.push(action.clone(), Type::TEXT)),
            Self::Kinds(kinds) => any(kinds.iter().map(|k| k.condition()).collect()),
            Self::Outcomes(outcomes) => any(outcomes
                .iter()
                .map(|outcome| match outcome {
                    OutcomeMatch::Is(outcome) => {
                        format!("outcome = '{}'", outcome.as_str())
                    }
                    OutcomeMatch::Refused => "outcome NOT IN ('success', 'error')".to_owned(),
                    OutcomeMatch::Unrecorded => "false".to_owned(),
                })
                .collect()),
            Self::Occurred(range) => range.condition("occurred_at", params),
        }
    }
}

/// The events the filters select, newest first, one page from `keyset` on (`limit` of them),
/// counted as `count` asks; the count and the page in one round trip.
pub async fn list(
    pool: &DbPool,
    filters: &[EventFilter],
    keyset: &Keyset,
    limit: i64,
    count: Count,
) -> Result<Page<AuditEventOut>, StoreError> {
    let mut params = SqlParams::new();
    let filter: String = filters
        .iter()
        .map(|f| format!(" AND {}", f.condition(&mut params)))
        .collect();
    let from_where = format!("FROM audit_events WHERE true{filter}");
    let after = keyset
        .condition("occurred_at", "id", &mut params)
        .map(|condition| format!(" AND {condition}"))
        .unwrap_or_default();
    let order = keyset.order_by("occurred_at", "id");
    let wanted = params.push(limit + 1, Type::INT8);
    let page_sql = format!("SELECT {COLUMNS} {from_where}{after} ORDER BY {order} LIMIT {wanted}");
    let (rows, total) =
        paging::page_and_count(pool, &page_sql, &from_where, &params, count).await?;
    let mut items: Vec<AuditEventOut> = rows.iter().map(AuditEventOut::from_row).collect();
    let (previous, next) = keyset.page(&mut items, limit, |e| Position::at(e.occurred_at, e.id));
    Ok(Page {
        items,
        previous,
        next,
        total,
    })
}

/// One event; None when the trail holds none with this id.
pub async fn find(pool: &DbPool, id: Uuid) -> Result<Option<AuditEventOut>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_opt(
            &format!("SELECT {COLUMNS} FROM audit_events WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(AuditEventOut::from_row))
}
