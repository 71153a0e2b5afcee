//! One request's entry in the audit trail as it is being recorded. The audit layer of the
//! HTTP edge (`edge::audit_layer`) wraps every audited route so every answer leaves exactly one
//! event, refusals by extractors (a bad token, a wrong role, a malformed body) included.
//!
//! Per request the layer puts an [`AuditEntry`] into the request's extensions, already holding the
//! route's event (action, resource and patient ids from the path) and where the request came
//! from. The token extractor adds the actor once a token is valid; a handler may describe its
//! event further (details, the patient it turned out to concern). When the answer comes back
//! the layer writes the event with the outcome its status means, before the answer leaves: if
//! the event cannot be written the answer is 503, without the data. A write that recorded its
//! event in its own statement (`AuditEntry::logged_cte`) and succeeded is not recorded twice.

use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::audit::{self, Attribution, Event, LoggedRows, Outcome};
use crate::db::SqlParams;
#[cfg(feature = "axum")]
use crate::error::ApiError;
use crate::error::StoreError;

/// What a route records, known before its handler runs: the action and resource type, and
/// which path parameters name the resource and the patient.
#[derive(Debug, Clone, Copy)]
pub struct RouteEvent {
    pub action: &'static str,
    pub resource_type: &'static str,
    resource_param: Option<&'static str>,
    patient_param: Option<&'static str>,
}

impl RouteEvent {
    pub const fn new(action: &'static str, resource_type: &'static str) -> Self {
        Self {
            action,
            resource_type,
            resource_param: None,
            patient_param: None,
        }
    }

    /// The path parameter holding the resource's id.
    pub const fn resource_from(mut self, param: &'static str) -> Self {
        self.resource_param = Some(param);
        self
    }

    /// The path parameter holding the patient's id.
    pub const fn patient_from(mut self, param: &'static str) -> Self {
        self.patient_param = Some(param);
        self
    }

    /// The route's event for one request, its ids taken from the path's parameters (name,
    /// value as a UUID if it is one).
    pub fn event(&self, path: &[(String, Option<Uuid>)]) -> Event {
        let id_of = |param: Option<&str>| {
            param.and_then(|p| path.iter().find(|(n, _)| n == p).and_then(|(_, id)| *id))
        };
        Event::new(self.action, self.resource_type)
            .resource(id_of(self.resource_param))
            .patient(id_of(self.patient_param))
    }
}

/// One request's event as it is being recorded: shared by the layer, the token extractor and
/// the handler.
#[derive(Clone)]
pub struct AuditEntry(Arc<Mutex<Recording>>);

struct Recording {
    who: Attribution,
    event: Event,
    /// The outcome the handler stated, over the one the answer's status means.
    outcome: Option<Outcome>,
    /// The handler's own statement carries the event.
    in_statement: bool,
}

impl AuditEntry {
    /// The request's entry before its handler runs: who asked from where, and the route's event.
    pub fn new(who: Attribution, event: Event) -> Self {
        Self(Arc::new(Mutex::new(Recording {
            who,
            event,
            outcome: None,
            in_statement: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A panic elsewhere cannot leave the recording half-changed in a way that matters here.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds to the event what the handler learned (details, the patient concerned...).
    pub fn describe(&self, change: impl FnOnce(Event) -> Event) {
        let mut recording = self.lock();
        let event = recording.event.clone();
        recording.event = change(event);
    }

    /// States the outcome where the status does not tell it (a recovery request for an
    /// unknown address answers 200 but found nobody).
    pub fn outcome(&self, outcome: Outcome) {
        self.lock().outcome = Some(outcome);
    }

    /// The request acts as this user (a token was valid, or a login just proved who it is).
    pub fn actor(&self, id: Uuid, email: &str) {
        let mut recording = self.lock();
        recording.who.actor_id = Some(id);
        recording.who.actor_email = Some(email.to_owned());
    }

    /// The user the request acts as, once known.
    pub fn actor_id(&self) -> Option<Uuid> {
        self.lock().who.actor_id
    }

    /// Someone not authenticated named this account (a failed login): kept only when it is a
    /// syntactically valid email address, so a password typed into the email box never is.
    pub fn attempted_account(&self, raw: &str) {
        if let Ok(email) = crate::domain::EmailAddress::parse(raw.to_owned()) {
            self.lock().who.actor_email = Some(email.as_str().to_owned());
        }
    }

    /// The event as it stands and who it is by, for a statement that writes it itself
    /// (`domain::users::replace_password_hash`); if the request succeeds, the layer adds nothing.
    pub fn for_statement(&self) -> (Attribution, Event) {
        let mut recording = self.lock();
        recording.in_statement = true;
        (recording.who.clone(), recording.event.clone())
    }

    /// The statement that was to write the event failed, and the request goes on to succeed
    /// another way (a conditional create that finds the record made meanwhile): the layer
    /// writes the event after all.
    pub fn statement_failed(&self) {
        self.lock().in_statement = false;
    }

    /// The event as a CTE named `logged` of the change's own statement.
    pub fn logged_cte(&self, params: &mut SqlParams, rows: &LoggedRows<'_>) -> String {
        let (who, event) = self.for_statement();
        audit::logged_cte(&who, &event, params, rows)
    }

    /// What the trail is to take once the answer's status is known: nothing for our own
    /// failure (logged where it happened, not an access to audit) or for a success whose own
    /// statement wrote the event; else who and the event with its outcome.
    pub fn to_write(&self, status: u16) -> Option<(Attribution, Event)> {
        let recording = self.lock();
        let outcome = recording.outcome.or_else(|| Outcome::of_status(status))?;
        if recording.in_statement && outcome == Outcome::Success && (200..300).contains(&status) {
            return None;
        }
        Some((
            recording.who.clone(),
            recording.event.clone().outcome(outcome),
        ))
    }

    /// Writes the event inside the change's transaction.
    pub async fn insert(&self, client: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let (who, event) = self.for_statement();
        audit::insert(client, &who, &event).await
    }
}

/// A handler's `audit: AuditEntry` argument. (Here, not in the edge, because the orphan rule puts a
/// trait's impl with its type or its trait.)
#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuditEntry {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuditEntry>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal("a handler asked for its audit event outside the audit layer")
            })
    }
}
