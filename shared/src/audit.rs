//! The audit trail's records: what happened (`Event`), who did it and from where
//! (`Attribution`), and the one place that knows the `audit_events` columns. Writes put their
//! event in the change's own statement (`logged_cte`), so it exists exactly when the change does;
//! everything else is written by the HTTP layer (`crate::trail`) before the answer leaves.
//! Events never hold a password, token or secret.

use serde_json::{json, Value};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::db::SqlParams;
use crate::error::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    NotFound,
    Invalid,
    /// The handler panicked (500): it may have read records before it failed. Other server
    /// errors are logged, not audited.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }

    /// What an answer's status means for the trail; None for our own failures (5xx), which are
    /// logged, not audited.
    pub fn of_status(status: u16) -> Option<Self> {
        match status {
            100..=399 => Some(Self::Success),
            401 | 403 | 429 => Some(Self::Denied),
            404 => Some(Self::NotFound),
            400..=499 => Some(Self::Invalid),
            _ => None,
        }
    }
}

/// One thing that happened, before it is tied to who did it and from where.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub outcome: Outcome,
    pub details: Value,
}

impl Event {
    pub fn new(action: &'static str, resource_type: &'static str) -> Self {
        Self {
            action,
            resource_type,
            resource_id: None,
            patient_id: None,
            outcome: Outcome::Success,
            details: json!({}),
        }
    }

    pub fn resource(mut self, id: Option<Uuid>) -> Self {
        self.resource_id = id;
        self
    }

    pub fn patient(mut self, id: Option<Uuid>) -> Self {
        self.patient_id = id;
        self
    }

    /// Adds `details` to the event's: object keys are merged (a later value wins), so the
    /// route's handler and the shared code it calls can each say what they know.
    pub fn details(mut self, details: Value) -> Self {
        match (&mut self.details, details) {
            (Value::Object(current), Value::Object(added)) => current.extend(added),
            (current, added) => *current = added,
        }
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// Who did it and from where: the actor when known (None for the system, or for a request
/// without a valid token), and what API Gateway told about the request.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept: enough to tell a browser or client apart as evidence, bounded
/// against storage abuse.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// The rows an insert into the trail takes its resource, patient and details from: SQL
/// expressions over `source` (a CTE holding the changed rows), or parameters when there is none.
pub struct LoggedRows<'a> {
    pub source: &'a str,
    pub resource: &'a str,
    pub patient: &'a str,
    /// A JSONB expression over `source`; None: the event's own details.
    pub details: Option<&'a str>,
}

/// The columns of `audit_events`, in the order `insert_sql` fills them.
const COLUMNS: &str = "id, actor_id, actor_email, action, outcome, resource_type, resource_id, \
                       patient_id, request_id, source_ip, user_agent, details";

/// `INSERT INTO audit_events (...) SELECT ...`: one event per row of `rows.source` (or one
/// event, without a source), its values pushed onto `params`.
fn insert_sql(
    who: &Attribution,
    event: &Event,
    params: &mut SqlParams,
    rows: Option<&LoggedRows<'_>>,
) -> String {
    let actor_id = params.push(who.actor_id, Type::UUID);
    let actor_email = params.push(who.actor_email.clone(), Type::TEXT);
    let action = params.push(event.action.to_owned(), Type::TEXT);
    let outcome = params.push(event.outcome.as_str().to_owned(), Type::TEXT);
    let resource_type = params.push(event.resource_type.to_owned(), Type::TEXT);
    let request_id = params.push(who.request_id.clone(), Type::TEXT);
    let source_ip = params.push(who.source_ip.clone(), Type::TEXT);
    let user_agent = params.push(who.user_agent.clone(), Type::TEXT);
    let (resource, patient, details, from) = match rows {
        Some(rows) => (
            rows.resource.to_owned(),
            rows.patient.to_owned(),
            rows.details
                .map(str::to_owned)
                .unwrap_or_else(|| params.push(event.details.clone(), Type::JSONB)),
            format!(" FROM {}", rows.source),
        ),
        None => (
            params.push(event.resource_id, Type::UUID),
            params.push(event.patient_id, Type::UUID),
            params.push(event.details.clone(), Type::JSONB),
            String::new(),
        ),
    };
    format!(
        "INSERT INTO audit_events ({COLUMNS})
         SELECT gen_random_uuid(), {actor_id}, {actor_email}, {action}, {outcome}, {resource_type},
                {resource}, {patient}, {request_id}, {source_ip}, {user_agent}, {details}{from}"
    )
}

/// The names of the fields a change sent, for its event's details: which fields changed,
/// never their values.
pub fn sent_fields<'a>(fields: &[(&'a str, bool)]) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(_, sent)| *sent)
        .map(|(field, _)| *field)
        .collect()
}

/// The audit insert as a CTE named `logged` of the change's own statement, so the event costs
/// no extra round trip and exists exactly when the change does.
pub fn logged_cte(
    who: &Attribution,
    event: &Event,
    params: &mut SqlParams,
    rows: &LoggedRows<'_>,
) -> String {
    format!("logged AS ({})", insert_sql(who, event, params, Some(rows)))
}

/// Writes `event` on `client`. A failure is 503: the caller must not go on without its trail.
pub async fn insert<C: tokio_postgres::GenericClient>(
    client: &C,
    who: &Attribution,
    event: &Event,
) -> Result<(), StoreError> {
    let mut params = SqlParams::new();
    let sql = insert_sql(who, event, &mut params, None);
    client
        .query_typed(&sql, &params.typed())
        .await
        .map_err(|e| {
            let cause = e
                .as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            StoreError::Unavailable(format!("audit trail: {cause}"))
        })?;
    Ok(())
}

/// Counts a refusal of a request without a valid token on its minute's row for `action` and
/// the source address (see migration V13): bounded however many arrive. A failure is 503, as
/// for an event.
pub async fn count_refusal(
    client: &tokio_postgres::Client,
    who: &Attribution,
    action: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO audit_refusals (minute, action, source_ip, refusals, user_agent)
             VALUES (date_trunc('minute', now()), $1, $2, 1, $3)
             ON CONFLICT (minute, action, source_ip) DO UPDATE
             SET refusals = audit_refusals.refusals + 1, user_agent = EXCLUDED.user_agent",
            &[
                &action,
                &who.source_ip.clone().unwrap_or_default(),
                &who.user_agent,
            ],
        )
        .await
        .map_err(|e| StoreError::Unavailable(format!("audit trail: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(Outcome::of_status(200), Some(Outcome::Success));
        assert_eq!(Outcome::of_status(302), Some(Outcome::Success));
        assert_eq!(Outcome::of_status(401), Some(Outcome::Denied));
        assert_eq!(Outcome::of_status(403), Some(Outcome::Denied));
        assert_eq!(Outcome::of_status(404), Some(Outcome::NotFound));
        assert_eq!(Outcome::of_status(412), Some(Outcome::Invalid));
        assert_eq!(Outcome::of_status(422), Some(Outcome::Invalid));
        assert_eq!(Outcome::of_status(503), None);
    }

    #[test]
    fn the_cte_numbers_its_parameters_after_the_callers() {
        let mut params = SqlParams::new();
        let id = params.push(Uuid::nil(), Type::UUID);
        assert_eq!(id, "$1");
        let sql = logged_cte(
            &Attribution::default(),
            &Event::new("patient.create", "patient"),
            &mut params,
            &LoggedRows {
                source: "created",
                resource: "created.id",
                patient: "created.id",
                details: None,
            },
        );
        assert!(sql.contains("$2") && sql.contains("$10"), "{sql}");
        assert!(!sql.contains("$11"), "{sql}");
        assert_eq!(params.len(), 10);
        assert!(sql.ends_with("FROM created)"), "{sql}");
    }
}
