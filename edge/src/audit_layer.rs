//! The audit layer: one tower layer around every audited route of every HTTP function, so every
//! answer leaves exactly one event (the request's [`AuditEntry`] entry, `shared::trail`), refusals
//! by extractors (a bad token, a wrong role, a malformed body) included. When the answer comes
//! back the layer writes the event with the outcome its status means, before the answer
//! leaves: if the event cannot be written the answer is 503, without the data.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use axum::RequestExt;
use futures_util::FutureExt;
use shared::audit::{self, Attribution};
use shared::db::DbPool;
use shared::trail::{AuditEntry, RouteEvent};
use shared::{ApiError, StoreError};
use tower::{Layer, Service};
use uuid::Uuid;

use crate::http::{panic_answer, RequestMeta};

/// Makes the layer of each audited route.
#[derive(Clone)]
pub struct AuditTrail {
    pool: DbPool,
    interface: Option<&'static str>,
}

impl AuditTrail {
    /// The trail of the JSON API's routes.
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            interface: None,
        }
    }

    /// The trail of another interface's routes (`"fhir"`): each of its events says so in its
    /// details (`interface`), refusals before the handler included.
    pub fn of_interface(pool: DbPool, interface: &'static str) -> Self {
        Self {
            pool,
            interface: Some(interface),
        }
    }

    /// The layer for one route's handler.
    pub fn on(&self, route: RouteEvent) -> AuditLayer {
        AuditLayer {
            pool: self.pool.clone(),
            route,
            interface: self.interface,
        }
    }
}

#[derive(Clone)]
pub struct AuditLayer {
    pool: DbPool,
    route: RouteEvent,
    interface: Option<&'static str>,
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            pool: self.pool.clone(),
            route: self.route,
            interface: self.interface,
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    pool: DbPool,
    route: RouteEvent,
    interface: Option<&'static str>,
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
        let (pool, route, interface) = (self.pool.clone(), self.route, self.interface);
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
            let mut event = route.event(&path_ids);
            if let Some(interface) = interface {
                event = event.details(serde_json::json!({ "interface": interface }));
            }
            let who = Attribution {
                request_id: meta.request_id,
                source_ip: meta.source_ip,
                user_agent: meta.user_agent,
                ..Attribution::default()
            };
            let audit = AuditEntry::new(who, event);
            request.extensions_mut().insert(audit.clone());
            // A panic is this request's 500, audited as any failure (unwinding leaves nothing
            // of the handler's that the layer uses: the entry is the layer's own clone).
            let response = AssertUnwindSafe(inner.call(request))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    audit.outcome(audit::Outcome::Error);
                    Ok(panic_answer())
                })?;
            Ok(record(&pool, &audit, response).await)
        })
    }
}

/// Writes the request's event unless its own statement did; 503 without the answer when the
/// trail cannot take it.
async fn record(pool: &DbPool, audit: &AuditEntry, response: Response) -> Response {
    let status = response.status();
    let Some((who, event)) = audit.to_write(status.as_u16()) else {
        return response;
    };
    // Refused without a valid token: nobody is known, so the refusal is counted, not kept as
    // an event of its own (the trail cannot be flooded by anyone with a network path).
    let anonymous = status.as_u16() == 401 && who.actor_id.is_none() && who.actor_email.is_none();
    let written = match pool.get().await {
        Ok(client) if anonymous => audit::count_refusal(&client, &who, event.action).await,
        Ok(client) => audit::insert::<tokio_postgres::Client>(&client, &who, &event).await,
        Err(e) => Err(StoreError::Unavailable(format!("audit trail: {e}"))),
    };
    match written {
        Ok(()) => response,
        Err(error) => ApiError::from(error).into_response(),
    }
}
