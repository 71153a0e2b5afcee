//! /api/v1/patients: create, read, update (PUT and PATCH, partial), delete, and search; the
//! domain's operations (`domain::patients`) answered in the JSON API's terms.

use axum::extract::{FromRef, Path, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::patients::model::Patient;
use domain::patients::search::{Search, SearchParams};
use domain::patients::{
    self, PatientCreate, PatientError, PatientUpdate, PATIENT_CREATE, PATIENT_DELETE, PATIENT_READ,
    PATIENT_SEARCH, PATIENT_UPDATE,
};
use edge::audit_layer::AuditTrail;
use edge::auth::{AuthContext, CurrentUser, Writer};
use edge::http::{required_version, JsonBody, QueryParams};
use serde::Serialize;
use serde_json::json;
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::input::parse_uuid;
use shared::storage::{Storage, StorageConfig};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};

#[derive(Clone, FromRef)]
pub struct PatientsState {
    pub auth: AuthContext,
    /// The database (the same pool the token check uses).
    pub db: DbPool,
    /// To delete a deleted patient's files at once (the queue retries what fails).
    pub storage: Storage,
}

impl PatientsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        let auth = AuthContext::verifying(env, "carevault-patients").await?;
        Ok(Self {
            db: auth.pool.clone(),
            auth,
            storage: Storage::new(&shared::aws::sdk_config().await, storage_config),
        })
    }
}

pub fn router(state: PatientsState) -> Router {
    let trail = AuditTrail::new(state.db.clone());
    Router::new()
        .route(
            "/api/v1/patients",
            get(search_patients.layer(trail.on(PATIENT_SEARCH)))
                .post(create_patient.layer(trail.on(PATIENT_CREATE))),
        )
        .route(
            "/api/v1/patients/{id}",
            get(read_patient.layer(trail.on(PATIENT_READ)))
                .put(update_patient.layer(trail.on(PATIENT_UPDATE)))
                .patch(update_patient.layer(trail.on(PATIENT_UPDATE)))
                .delete(delete_patient.layer(trail.on(PATIENT_DELETE))),
        )
        .with_state(state)
}

/// A patient with its ETag, for `If-Match` on later writes.
struct Tagged(Patient);

impl IntoResponse for Tagged {
    fn into_response(self) -> Response {
        let etag = HeaderValue::from_str(&self.0.etag()).ok();
        let mut response = Json(self.0).into_response();
        if let Some(etag) = etag {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

async fn create_patient(
    State(state): State<PatientsState>,
    _writer: Writer,
    audit: AuditEntry,
    JsonBody(body): JsonBody<PatientCreate>,
) -> ApiResult<Tagged> {
    let patient = patients::insert(&state.db, &audit, &body).await?;
    Ok(Tagged(patient))
}

async fn read_patient(
    State(state): State<PatientsState>,
    _current: CurrentUser,
    Path(raw_id): Path<String>,
) -> ApiResult<Tagged> {
    let id = parse_uuid("patient_id", &raw_id)?;
    let patient = patients::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::from(PatientError::NotFound))?;
    Ok(Tagged(patient))
}

async fn update_patient(
    State(state): State<PatientsState>,
    _writer: Writer,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PatientUpdate>,
) -> ApiResult<Tagged> {
    let id = parse_uuid("patient_id", &raw_id)?;
    let patient = patients::update(&state.db, &audit, id, body, required_version(&headers)).await?;
    Ok(Tagged(patient))
}

async fn delete_patient(
    State(state): State<PatientsState>,
    _writer: Writer,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_uuid("patient_id", &raw_id)?;
    patients::delete(
        &state.db,
        &state.storage,
        &audit,
        id,
        required_version(&headers),
    )
    .await?;
    Ok(Json(json!({ "message": "Patient deleted successfully" })))
}

/// A page of a search: its patients, the count as asked, and where the next page starts.
#[derive(Serialize)]
pub struct PatientList {
    pub data: Vec<Patient>,
    pub count: Option<i64>,
    /// Where the next page starts (`cursor=`); null on the last page.
    pub next_cursor: Option<String>,
}

async fn search_patients(
    State(state): State<PatientsState>,
    _current: CurrentUser,
    audit: AuditEntry,
    QueryParams(params): QueryParams<SearchParams>,
) -> ApiResult<Json<PatientList>> {
    let search = Search::parse(params)?;
    // Which filters (never their values) and which patients were shown.
    audit.describe(|event| event.details(json!({ "filters": search.filter_names() })));
    let page = patients::run_search(&state.db, &search).await?;
    audit.describe(|event| {
        event.details(json!({
            "filters": search.filter_names(),
            "patient_ids": page.items.iter().map(|p| p.id).collect::<Vec<_>>(),
        }))
    });
    Ok(Json(PatientList {
        data: page.items,
        count: page.total,
        next_cursor: page.next,
    }))
}
