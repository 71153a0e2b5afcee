//! /fhir/R4: HL7 FHIR R4 (4.0.1), JSON only, over the same data, roles, SQL and audit trail as
//! the JSON API. This function serves the CapabilityStatement, Patient read, search, create
//! (conditional too), update and delete, DocumentReference read, search, create and delete,
//! Binary (a redirect to the file, `$presigned-url`) and
//! AuditEvent read and search for superusers;
//! every error leaves as an OperationOutcome.

mod audit_event;
mod bundle;
mod capability;
mod document;
mod export;
pub mod fuzzing;
mod group;
mod outcome;
mod patient;
mod practitioner;
mod query;

// What each search applies; the CapabilityStatement must list exactly these (a test checks).
pub use audit_event::AUDIT_EVENT_PARAMETERS;
pub use document::DOCUMENT_PARAMETERS;
pub use group::GROUP_PARAMETERS;
pub use patient::PATIENT_PARAMETERS;

use axum::extract::{FromRef, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::routing::get;
use axum::Router;
use edge::audit_layer::AuditTrail;
use edge::auth::AuthContext;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::queue::JobQueue;
use shared::storage::{Storage, StorageConfig};
use shared::trail::RouteEvent;
use shared::ApiError;

pub use edge::base::PublicBase;
pub use outcome::FHIR_JSON;

#[derive(Clone, FromRef)]
pub struct FhirState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    pub base: PublicBase,
    /// Signs the URLs Binary answers; checks pending uploads.
    pub storage: Storage,
    /// Where bulk export jobs are queued for the worker.
    pub queue: JobQueue,
}

impl FhirState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        let auth = AuthContext::verifying(env, "carevault-fhir").await?;
        let sdk_config = shared::aws::sdk_config().await;
        Ok(Self {
            db: auth.pool.clone(),
            auth,
            base: PublicBase::from_env(env),
            storage: Storage::new(&sdk_config, storage_config),
            queue: JobQueue::from_env(&sdk_config, env)?,
        })
    }
}

// The same actions as the JSON API's routes: one audit trail, whichever interface was used.
use domain::attachments::{
    ATTACHMENT_CREATE, ATTACHMENT_DELETE, ATTACHMENT_DOWNLOAD, ATTACHMENT_LIST, ATTACHMENT_READ,
};
use domain::audit_events::AUDIT_READ;
use domain::exports::{EXPORT_CANCEL, EXPORT_KICK_OFF, EXPORT_STATUS};
use domain::groups::{GROUP_CREATE, GROUP_DELETE, GROUP_READ, GROUP_SEARCH, GROUP_UPDATE};
use domain::patients::{
    PATIENT_CREATE, PATIENT_DELETE, PATIENT_READ, PATIENT_SEARCH, PATIENT_UPDATE,
};
const AUDIT_EVENT_READ: RouteEvent = AUDIT_READ.resource_from("id");
const PRACTITIONER_READ: RouteEvent = RouteEvent::new("user.read", "user").resource_from("id");
const ATTACHMENT_URL: RouteEvent =
    RouteEvent::new("attachment.presigned_url", "attachment").resource_from("id");

/// Everything under /fhir/R4, nested as one service so that its own fallbacks (an unknown
/// resource type, a method not allowed) answer OperationOutcomes too, not the JSON API's 404.
pub fn router(state: FhirState) -> Router {
    let trail = AuditTrail::of_interface(state.db.clone(), "fhir");
    let fhir = Router::new()
        .route("/metadata", get(capability::capability_statement))
        .route(
            "/.well-known/smart-configuration",
            get(capability::smart_configuration),
        )
        .route(
            "/Patient",
            get(patient::search.layer(trail.on(PATIENT_SEARCH)))
                .post(patient::create.layer(trail.on(PATIENT_CREATE))),
        )
        .route(
            "/Patient/{id}",
            get(patient::read.layer(trail.on(PATIENT_READ)))
                .put(patient::update.layer(trail.on(PATIENT_UPDATE)))
                .delete(patient::delete.layer(trail.on(PATIENT_DELETE))),
        )
        .route(
            "/Group",
            get(group::search.layer(trail.on(GROUP_SEARCH)))
                .post(group::create.layer(trail.on(GROUP_CREATE))),
        )
        .route(
            "/Group/{id}",
            get(group::read.layer(trail.on(GROUP_READ)))
                .put(group::update.layer(trail.on(GROUP_UPDATE)))
                .delete(group::delete.layer(trail.on(GROUP_DELETE))),
        )
        .route(
            "/$export",
            get(export::system.layer(trail.on(EXPORT_KICK_OFF)))
                .post(export::system.layer(trail.on(EXPORT_KICK_OFF))),
        )
        .route(
            "/Patient/$export",
            get(export::patients.layer(trail.on(EXPORT_KICK_OFF)))
                .post(export::patients.layer(trail.on(EXPORT_KICK_OFF))),
        )
        .route(
            "/Group/{id}/$export",
            get(export::group.layer(trail.on(EXPORT_KICK_OFF)))
                .post(export::group.layer(trail.on(EXPORT_KICK_OFF))),
        )
        .route(
            "/$export-status/{id}",
            get(export::status.layer(trail.on(EXPORT_STATUS)))
                .delete(export::cancel.layer(trail.on(EXPORT_CANCEL))),
        )
        .route(
            "/Practitioner/{id}",
            get(practitioner::read.layer(trail.on(PRACTITIONER_READ))),
        )
        .route(
            "/AuditEvent",
            get(audit_event::search.layer(trail.on(AUDIT_READ))),
        )
        .route(
            "/AuditEvent/{id}",
            get(audit_event::read.layer(trail.on(AUDIT_EVENT_READ))),
        )
        .route(
            "/DocumentReference",
            get(document::search.layer(trail.on(ATTACHMENT_LIST)))
                .post(document::create.layer(trail.on(ATTACHMENT_CREATE))),
        )
        .route(
            "/DocumentReference/{id}",
            get(document::read.layer(trail.on(ATTACHMENT_READ)))
                .delete(document::delete.layer(trail.on(ATTACHMENT_DELETE))),
        )
        .route(
            "/Binary/{id}",
            get(document::read_binary.layer(trail.on(ATTACHMENT_DOWNLOAD))),
        )
        .route(
            "/Binary/{id}/$presigned-url",
            get(document::presigned_url.layer(trail.on(ATTACHMENT_URL))),
        )
        .fallback(unsupported)
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("This interaction is not supported here".into())
        })
        .with_state(state)
        // Inside the OperationOutcome rendering: a panic on a route without audit answers one.
        .layer(edge::http::catch_panics())
        .layer(axum::middleware::map_response(
            outcome::as_operation_outcome,
        ));
    Router::new().nest_service("/fhir/R4", fhir)
}

async fn unsupported(request: Request) -> ApiError {
    // Nested: the path here is what follows /fhir/R4.
    let path = request.uri().path();
    let resource = path.trim_start_matches('/').split('/').next().unwrap_or("");
    ApiError::NotFound(format!(
        "This server does not serve {} (see /fhir/R4/metadata for what it does)",
        if resource.is_empty() { path } else { resource }
    ))
}

/// Ok when `patient` is within `reach`; each interaction answers what names nothing (404) for
/// the rest, so a patient-scoped token learns nothing of other patients.
pub(crate) fn within_reach(
    reach: domain::smart::scopes::Reach,
    patient: uuid::Uuid,
) -> Result<(), ()> {
    match reach {
        domain::smart::scopes::Reach::Compartment(own) if own != patient => Err(()),
        _ => Ok(()),
    }
}

/// `application/fhir+json`, the only format served.
pub(crate) fn fhir_json() -> HeaderValue {
    HeaderValue::from_static(FHIR_JSON)
}

/// One element of a resource as the domain type `T`, checked by that type's own rules; a
/// refusal is added to `errors`, located at the element (`["Patient", "birthDate"]`).
pub(crate) fn element_as<T: serde::de::DeserializeOwned>(
    errors: &mut Vec<shared::FieldError>,
    resource_type: &str,
    element: &str,
    value: serde_json::Value,
) -> Option<T> {
    shared::input::value_as(value, &[resource_type.into(), element.into()])
        .map_err(|e| errors.push(e))
        .ok()
}

/// A request body as a FHIR resource: JSON (400 otherwise; `application/fhir+json` or
/// `application/json`) of `resource_type` (400 for another).
pub(crate) fn resource_body(
    headers: &HeaderMap,
    body: &[u8],
    resource_type: &str,
) -> shared::ApiResult<serde_json::Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.is_empty() && !content_type.contains("json") {
        return Err(ApiError::UnsupportedMediaType(
            "Send the resource as application/fhir+json".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("The body is not JSON: {e}")))?;
    if value["resourceType"] != resource_type {
        return Err(ApiError::BadRequest(format!(
            "Expected a {resource_type}, not {}",
            value["resourceType"]
        )));
    }
    Ok(value)
}
