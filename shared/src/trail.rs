//! The audit layer: one tower layer around every audited route of every HTTP function, so every
//! answer leaves exactly one event, refusals by extractors (a bad token, a wrong role, a
//! malformed body) included.
//!
//! Per request the layer puts an [`Audit`] into the request's extensions, already holding the
//! route's event (action, resource and patient ids from the path) and where the request came
//! from. The token extractor adds the actor once a token is valid; a handler may describe its
//! event further (details, the patient it turned out to concern). When the answer comes back
//! the layer writes the event with the outcome its status means, before the answer leaves: if
//! the event cannot be written the answer is 503, without the data. A write that recorded its
//! event in its own statement (`Audit::logged_cte`) and succeeded is not recorded twice.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;
use tower::{Layer, Service};
use uuid::Uuid;

use crate::audit::{self, Attribution, Event, LoggedRows, Outcome};
use crate::db::{DbPool, SqlParams};
use crate::error::ApiError;
use crate::http::RequestMeta;

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
}

/// One request's event as it is being recorded: shared by the layer, the token extractor and
/// the handler.
#[derive(Clone)]
pub struct Audit(Arc<Mutex<Recording>>);

struct Recording {
    who: Attribution,
    event: Event,
    /// The outcome the handler stated, over the one the answer's status means.
    outcome: Option<Outcome>,
    /// The handler's own statement carries the event.
    in_statement: bool,
}

impl Audit {
    fn new(who: Attribution, event: Event) -> Self {
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
    /// (`crate::users::replace_password_hash`); if the request succeeds, the layer adds nothing.
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

    /// Writes the event inside the change's transaction.
    pub async fn insert(&self, client: &tokio_postgres::Transaction<'_>) -> Result<(), ApiError> {
        let (who, event) = self.for_statement();
        audit::insert(client, &who, &event).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Audit>().cloned().ok_or_else(|| {
            ApiError::internal("a handler asked for its audit event outside the audit layer")
        })
    }
}

/// Makes the layer of each audited route.
#[derive(Clone)]
pub struct AuditTrail {
    pool: DbPool,
}

impl AuditTrail {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// The layer for one route's handler.
    pub fn on(&self, route: RouteEvent) -> AuditLayer {
        AuditLayer {
            pool: self.pool.clone(),
            route,
        }
    }
}

#[derive(Clone)]
pub struct AuditLayer {
    pool: DbPool,
    route: RouteEvent,
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            pool: self.pool.clone(),
            route: self.route,
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    pool: DbPool,
    route: RouteEvent,
}

impl<S> Service<Request> for AuditService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (pool, route) = (self.pool.clone(), self.route);
        Box::pin(async move {
            let meta = RequestMeta::of(request.extensions(), request.headers());
            let path_ids = request
                .extract_parts::<RawPathParams>()
                .await
                .ok()
                .map(|params| {
                    params
                        .iter()
                        .map(|(name, value)| (name.to_owned(), Uuid::parse_str(value).ok()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let id_of = |param: Option<&str>| {
                param.and_then(|p| {
                    path_ids
                        .iter()
                        .find(|(n, _)| n == p)
                        .and_then(|(_, id)| *id)
                })
            };
            let event = Event::new(route.action, route.resource_type)
                .resource(id_of(route.resource_param))
                .patient(id_of(route.patient_param));
            let who = Attribution {
                request_id: meta.request_id,
                source_ip: meta.source_ip,
                user_agent: meta.user_agent,
                ..Attribution::default()
            };
            let audit = Audit::new(who, event);
            request.extensions_mut().insert(audit.clone());
            let response = inner.call(request).await?;
            Ok(record(&pool, &audit, response).await)
        })
    }
}

/// Writes the request's event unless its own statement did; 503 without the answer when the
/// trail cannot take it.
async fn record(pool: &DbPool, audit: &Audit, response: Response) -> Response {
    let status = response.status();
    let (who, event) = {
        let recording = audit.lock();
        let Some(outcome) = recording
            .outcome
            .or_else(|| Outcome::of_status(status.as_u16()))
        else {
            // Our own failure: logged where it happened, not an access to audit.
            return response;
        };
        if recording.in_statement && outcome == Outcome::Success && status.is_success() {
            return response;
        }
        (
            recording.who.clone(),
            recording.event.clone().outcome(outcome),
        )
    };
    // Refused without a valid token: nobody is known, so the refusal is counted, not kept as
    // an event of its own (the trail cannot be flooded by anyone with a network path).
    let anonymous = status.as_u16() == 401 && who.actor_id.is_none() && who.actor_email.is_none();
    let written = match pool.get().await {
        Ok(client) if anonymous => audit::count_refusal(&client, &who, event.action).await,
        Ok(client) => audit::insert::<tokio_postgres::Client>(&client, &who, &event).await,
        Err(e) => Err(ApiError::Unavailable(format!("audit trail: {e}"))),
    };
    match written {
        Ok(()) => response,
        Err(error) => error.into_response(),
    }
}
