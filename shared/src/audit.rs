//! The audit trail: one event for every request that touches patient data or identity.
//! Writes record their event in the change's own statement (`logged_cte`), so it exists exactly
//! when the change does; reads record theirs before the data is returned, and fail closed (503,
//! no data) when it cannot be written. Refusals (403, 404, 422...) are recorded on their own.
//! Events never hold a password, token or secret.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};
use crate::http::RequestMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    NotFound,
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
        }
    }

    /// What an error answer means for the trail; None for our own failures (5xx), which are
    /// logged, not audited.
    pub fn of_error(error: &ApiError) -> Option<Self> {
        match error {
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => Some(Self::Denied),
            ApiError::NotFound(_) => Some(Self::NotFound),
            ApiError::Validation(_)
            | ApiError::BadRequest(_)
            | ApiError::Conflict(_)
            | ApiError::PreconditionFailed(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::MethodNotAllowed(_) => Some(Self::Invalid),
            ApiError::Unavailable(_) | ApiError::Internal(_) => None,
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

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// Who asked and from where: the actor (when known) and the API Gateway request context.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub meta: RequestMeta,
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        Ok(Self {
            meta,
            ..Default::default()
        })
    }
}

const INSERT_SQL: &str = "INSERT INTO audit_events
    (id, actor_id, actor_email, action, outcome, resource_type, resource_id, patient_id,
     request_id, source_ip, user_agent, details)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

impl Audit {
    /// The same request, now known to come from `user`.
    pub fn by(mut self, user: &CurrentUser) -> Self {
        self.actor_id = Some(user.0.id);
        self.actor_email = Some(user.0.email.clone());
        self
    }

    /// A request by someone not (yet) authenticated who gave this email (a login attempt).
    pub fn claiming(mut self, email: &str) -> Self {
        self.actor_email = Some(email.chars().take(255).collect());
        self
    }

    /// Writes `event` on `client`. A failure is 503: the caller must not go on without its trail.
    pub async fn insert<C: deadpool_postgres::GenericClient>(
        &self,
        client: &C,
        event: &Event,
    ) -> ApiResult<()> {
        client
            .execute(
                INSERT_SQL,
                &[
                    &Uuid::new_v4(),
                    &self.actor_id,
                    &self.actor_email,
                    &event.action,
                    &event.outcome.as_str(),
                    &event.resource_type,
                    &event.resource_id,
                    &event.patient_id,
                    &self.meta.request_id,
                    &self.meta.source_ip,
                    &self.meta.user_agent,
                    &event.details,
                ],
            )
            .await
            .map_err(|e| {
                let cause = e
                    .as_db_error()
                    .map(|db| db.message().to_owned())
                    .unwrap_or_else(|| e.to_string());
                ApiError::Unavailable(format!("audit trail: {cause}"))
            })?;
        Ok(())
    }

    /// Records `event` on a pooled connection of its own.
    pub async fn record(&self, pool: &DbPool, event: &Event) -> ApiResult<()> {
        let client = pool
            .get()
            .await
            .map_err(|e| ApiError::Unavailable(format!("audit trail: {e}")))?;
        self.insert(&client, event).await
    }

    /// For a read: records the outcome of `result` before it is returned. Fails closed: if the
    /// event cannot be written, the answer is 503 and no data.
    pub async fn read<T>(&self, pool: &DbPool, event: Event, result: ApiResult<T>) -> ApiResult<T> {
        let event = match &result {
            Ok(_) => event,
            Err(error) => match Outcome::of_error(error) {
                Some(outcome) => event.outcome(outcome),
                None => return result,
            },
        };
        self.record(pool, &event).await?;
        result
    }

    /// For a write whose success was recorded by its own statement: records a refusal.
    pub async fn refused<T>(
        &self,
        pool: &DbPool,
        event: Event,
        result: ApiResult<T>,
    ) -> ApiResult<T> {
        if let Err(error) = &result {
            if let Some(outcome) = Outcome::of_error(error) {
                self.record(pool, &event.outcome(outcome)).await?;
            }
        }
        result
    }
}

impl Audit {
    /// The audit insert as a CTE of the change's own statement, so the event costs no extra round
    /// trip and exists exactly when the change does: one row per row of `source` (a CTE holding
    /// the changed row). `resource` and `patient` are SQL expressions over `source`; parameters
    /// are numbered from `$first`.
    pub fn logged_cte(
        &self,
        event: &Event,
        source: &str,
        resource: &str,
        patient: &str,
        first: usize,
    ) -> (String, Vec<crate::db::TypedParam>) {
        use tokio_postgres::types::Type;
        let params: Vec<crate::db::TypedParam> = vec![
            (Box::new(self.actor_id), Type::UUID),
            (Box::new(self.actor_email.clone()), Type::TEXT),
            (Box::new(event.action.to_owned()), Type::TEXT),
            (Box::new(event.resource_type.to_owned()), Type::TEXT),
            (Box::new(self.meta.request_id.clone()), Type::TEXT),
            (Box::new(self.meta.source_ip.clone()), Type::TEXT),
            (Box::new(self.meta.user_agent.clone()), Type::TEXT),
            (Box::new(event.details.clone()), Type::JSONB),
        ];
        let n = |i: usize| format!("${}", first + i);
        let sql = format!(
            "logged AS (INSERT INTO audit_events (id, actor_id, actor_email, action, outcome, resource_type,
                 resource_id, patient_id, request_id, source_ip, user_agent, details)
             SELECT gen_random_uuid(), {}, {}, {}, 'success', {}, {resource}, {patient}, {}, {}, {}, {}
             FROM {source})",
            n(0),
            n(1),
            n(2),
            n(3),
            n(4),
            n(5),
            n(6),
            n(7)
        );
        (sql, params)
    }
}
