//! /api/v1/patients: create, read, update (PUT and PATCH, partial), delete, and search.

pub mod model;
pub mod search;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::audit::{Audit, Event};
use shared::auth::{AuthContext, CurrentUser};
use shared::config::{ConfigError, Env};
use shared::db::{param, typed};
use shared::http::{parse_uuid, present, JsonBody, QueryParams};
use shared::secrets::SecretsClient;
use shared::storage::{drain_deletions, Storage, StorageConfig};
use shared::{ApiError, ApiResult};
use tokio_postgres::types::Type;
use uuid::Uuid;

use model::{ContactInfo, Dob, MedicalHistory, Patient, PatientName, PATIENT_COLUMNS};
use search::{as_typed, CountMode, Search, SearchParams};

#[derive(Clone)]
pub struct PatientsState {
    pub auth: AuthContext,
    /// To delete a deleted patient's files at once (the queue retries what fails).
    pub storage: Storage,
}

impl FromRef<PatientsState> for AuthContext {
    fn from_ref(state: &PatientsState) -> Self {
        state.auth.clone()
    }
}

impl PatientsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let storage_config = StorageConfig::from_env(env)?;
        Ok(Self {
            auth: AuthContext::from_env(env, &SecretsClient::from_env(env), "carevault-patients")
                .await?,
            storage: Storage::new(&shared::aws::sdk_config().await, storage_config),
        })
    }
}

pub fn router(state: PatientsState) -> Router {
    Router::new()
        .route(
            "/api/v1/patients",
            get(search_patients).post(create_patient),
        )
        .route(
            "/api/v1/patients/{id}",
            get(read_patient)
                .put(update_patient)
                .patch(update_patient)
                .delete(delete_patient),
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

const PATIENT: &str = "patient";
pub const PATIENT_CREATE: &str = "patient.create";
pub const PATIENT_READ: &str = "patient.read";
pub const PATIENT_UPDATE: &str = "patient.update";
pub const PATIENT_DELETE: &str = "patient.delete";
pub const PATIENT_SEARCH: &str = "patient.search";

fn not_found() -> ApiError {
    ApiError::NotFound("Patient not found".into())
}

fn modified_meanwhile() -> ApiError {
    ApiError::PreconditionFailed(
        "The patient was changed by someone else since you read it; reload it and try again".into(),
    )
}

/// The version `If-Match` requires: None without the header or with `*` (any version).
/// A header naming no version this record could have fails every comparison (412).
fn required_version(headers: &HeaderMap) -> Option<i64> {
    let value = headers.get(header::IF_MATCH)?.to_str().unwrap_or("").trim();
    if value == "*" {
        return None;
    }
    let version = value
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .find_map(|tag| tag.parse::<i64>().ok());
    Some(version.unwrap_or(-1))
}

#[derive(Deserialize)]
struct PatientCreate {
    name: PatientName,
    #[serde(default)]
    dob: Option<Dob>,
    #[serde(default)]
    contact_info: Option<ContactInfo>,
    #[serde(default)]
    medical_history: Option<MedicalHistory>,
}

async fn create_patient(
    State(state): State<PatientsState>,
    current: CurrentUser,
    audit: Audit,
    body: Result<JsonBody<PatientCreate>, ApiError>,
) -> ApiResult<Tagged> {
    let audit = audit.by(&current);
    let id = Uuid::new_v4();
    let event = Event::new(PATIENT_CREATE, PATIENT)
        .resource(Some(id))
        .patient(Some(id));
    let result = async {
        current.require_writer()?;
        let JsonBody(body) = body?;
        // The row and its audit event in one statement: both or neither, one round trip.
        let (logged, audit_params) =
            audit.logged_cte(&event, "created", "created.id", "created.id", 6);
        let mut params = vec![
            param(id, Type::UUID),
            param(body.name.as_str().to_owned(), Type::VARCHAR),
            param(body.dob.map(|d| d.0), Type::DATE),
            param(
                body.contact_info.as_ref().map(|c| c.as_str().to_owned()),
                Type::VARCHAR,
            ),
            param(
                body.medical_history.as_ref().map(|m| m.as_str().to_owned()),
                Type::TEXT,
            ),
        ];
        params.extend(audit_params);
        let client = state.auth.pool.get().await?;
        let row = client
            .query_typed_one(
                &format!(
                    "WITH created AS (
                        INSERT INTO patients (id, name, dob, contact_info, medical_history)
                        VALUES ($1, $2, $3, $4, $5) RETURNING {PATIENT_COLUMNS}
                     ), {logged}
                     SELECT * FROM created"
                ),
                &typed(&params),
            )
            .await?;
        Ok(Tagged(Patient::from_row(&row)))
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}

async fn read_patient(
    State(state): State<PatientsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Tagged> {
    let audit = audit.by(&current);
    let id = parse_uuid("patient_id", &raw_id);
    let event = Event::new(PATIENT_READ, PATIENT)
        .resource(id.as_ref().ok().copied())
        .patient(id.as_ref().ok().copied());
    let result = async {
        let id = id?;
        let client = state.auth.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&id])
            .await?
            .ok_or_else(not_found)?;
        Ok(Tagged(Patient::from_row(&row)))
    }
    .await;
    audit.read(&state.auth.pool, event, result).await
}

/// PUT and PATCH alike: only the fields sent change; `null` clears a nullable field.
#[derive(Deserialize)]
struct PatientUpdate {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<PatientName>>,
    #[serde(default, deserialize_with = "present")]
    dob: Option<Option<Dob>>,
    #[serde(default, deserialize_with = "present")]
    contact_info: Option<Option<ContactInfo>>,
    #[serde(default, deserialize_with = "present")]
    medical_history: Option<Option<MedicalHistory>>,
}

async fn update_patient(
    State(state): State<PatientsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<PatientUpdate>, ApiError>,
) -> ApiResult<Tagged> {
    let audit = audit.by(&current);
    let id = parse_uuid("patient_id", &raw_id);
    let event = Event::new(PATIENT_UPDATE, PATIENT)
        .resource(id.as_ref().ok().copied())
        .patient(id.as_ref().ok().copied());
    let result = async {
        current.require_writer()?;
        let id = id?;
        let JsonBody(body) = body?;
        let name = match body.name {
            Some(None) => {
                return Err(ApiError::validation(
                    &["body", "name"],
                    "Input should be a valid string",
                    "string_type",
                ))
            }
            Some(Some(name)) => Some(name),
            None => None,
        };
        let changed: Vec<&str> = [
            ("name", name.is_some()),
            ("dob", body.dob.is_some()),
            ("contact_info", body.contact_info.is_some()),
            ("medical_history", body.medical_history.is_some()),
        ]
        .iter()
        .filter(|(_, sent)| *sent)
        .map(|(field, _)| *field)
        .collect();
        // Which fields changed, never their values.
        let event = event.clone().details(json!({ "fields": changed }));
        let expected = required_version(&headers);
        // The change and its audit event in one statement: the event exists exactly when a row
        // changed (not for a 404 or a 412), at no extra round trip.
        let (logged, audit_params) =
            audit.logged_cte(&event, "updated", "updated.id", "updated.id", 10);
        let mut params = vec![
            param(id, Type::UUID),
            param(name.as_ref().map(|n| n.as_str().to_owned()), Type::VARCHAR),
            param(body.dob.is_some(), Type::BOOL),
            param(body.dob.flatten().map(|d| d.0), Type::DATE),
            param(body.contact_info.is_some(), Type::BOOL),
            param(
                body.contact_info
                    .as_ref()
                    .and_then(|c| c.as_ref().map(|c| c.as_str().to_owned())),
                Type::VARCHAR,
            ),
            param(body.medical_history.is_some(), Type::BOOL),
            param(
                body.medical_history
                    .as_ref()
                    .and_then(|m| m.as_ref().map(|m| m.as_str().to_owned())),
                Type::TEXT,
            ),
            param(expected, Type::INT8),
        ];
        params.extend(audit_params);
        let client = state.auth.pool.get().await?;
        let updated = client
            .query_typed_opt(
                &format!(
                    "WITH updated AS (
                        UPDATE patients SET
                            name = COALESCE($2, name),
                            dob = CASE WHEN $3 THEN $4 ELSE dob END,
                            contact_info = CASE WHEN $5 THEN $6 ELSE contact_info END,
                            medical_history = CASE WHEN $7 THEN $8 ELSE medical_history END,
                            version = version + 1,
                            updated_at = now()
                        WHERE id = $1 AND ($9::int8 IS NULL OR version = $9)
                        RETURNING {PATIENT_COLUMNS}
                     ), {logged}
                     SELECT * FROM updated"
                ),
                &typed(&params),
            )
            .await?;
        match updated {
            Some(row) => Ok(Tagged(Patient::from_row(&row))),
            None => Err(missing_or_modified(&client, id).await?),
        }
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}

/// After a conditional write touched nothing: 404 when the patient is gone, else 412.
async fn missing_or_modified(client: &tokio_postgres::Client, id: Uuid) -> ApiResult<ApiError> {
    let exists = client
        .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&id])
        .await?
        .is_some();
    Ok(if exists {
        modified_meanwhile()
    } else {
        not_found()
    })
}

async fn delete_patient(
    State(state): State<PatientsState>,
    current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let audit = audit.by(&current);
    let id = parse_uuid("patient_id", &raw_id);
    let event = Event::new(PATIENT_DELETE, PATIENT)
        .resource(id.as_ref().ok().copied())
        .patient(id.as_ref().ok().copied());
    let result = async {
        current.require_writer()?;
        let id = id?;
        let expected = required_version(&headers);
        let mut client = state.auth.pool.get().await?;
        let transaction = client.transaction().await?;
        let version: i64 = transaction
            .query_opt(
                "SELECT version FROM patients WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .ok_or_else(not_found)?
            .get(0);
        if expected.is_some_and(|v| v != version) {
            return Err(modified_meanwhile());
        }
        // The files go with the rows: their keys are queued in the same transaction, so a
        // failure anywhere leaves both rows and files, and a success leaves neither for long.
        let keys: Vec<String> = transaction
            .query(
                "INSERT INTO object_deletions (object_key)
                 SELECT object_key FROM attachments WHERE patient_id = $1
                 ON CONFLICT (object_key) DO UPDATE SET queued_at = now()
                 RETURNING object_key",
                &[&id],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let event = event
            .clone()
            .details(json!({ "attachments_deleted": keys.len() }));
        // Attachments before their patient (the foreign key); the event alongside the last delete.
        transaction
            .execute("DELETE FROM attachments WHERE patient_id = $1", &[&id])
            .await?;
        tokio::try_join!(
            async {
                transaction
                    .execute("DELETE FROM patients WHERE id = $1", &[&id])
                    .await
                    .map_err(ApiError::from)
            },
            audit.insert(&transaction, &event),
        )?;
        transaction.commit().await?;
        drop(client);
        if !keys.is_empty() {
            // Now, not later: if S3 cannot be reached the keys stay queued for the scheduled sweep.
            drain_deletions(&state.auth.pool, &state.storage, Some(keys), 0).await?;
        }
        Ok(Json(json!({ "message": "Patient deleted successfully" })))
    }
    .await;
    audit.refused(&state.auth.pool, event, result).await
}

#[derive(Serialize)]
struct PatientList {
    data: Vec<Patient>,
    count: Option<i64>,
}

async fn search_patients(
    State(state): State<PatientsState>,
    current: CurrentUser,
    audit: Audit,
    params: Result<QueryParams<SearchParams>, ApiError>,
) -> ApiResult<Json<PatientList>> {
    let audit = audit.by(&current);
    let search = params.and_then(|QueryParams(params)| Search::parse(params));
    let event = Event::new(PATIENT_SEARCH, PATIENT);
    let search = match search {
        Ok(search) => search,
        Err(error) => return audit.read(&state.auth.pool, event, Err(error)).await,
    };
    let result = run_search(&state, &search).await;
    // Which filters (never their values) and which patients were shown.
    let event = match &result {
        Ok(list) => event.details(json!({
            "filters": search.filter_names(),
            "patient_ids": list.data.iter().map(|p| p.id).collect::<Vec<_>>(),
        })),
        Err(_) => event.details(json!({ "filters": search.filter_names() })),
    };
    audit.read(&state.auth.pool, event, result.map(Json)).await
}

async fn run_search(state: &PatientsState, search: &Search) -> ApiResult<PatientList> {
    let client = state.auth.pool.get().await?;
    let (page_sql, page_params) = search.page_sql(PATIENT_COLUMNS);
    let page_typed = as_typed(&page_params);
    let count_statement = search.count_sql();
    let count_typed = count_statement.as_ref().map(|(_, p)| as_typed(p));
    // Page and count pipelined on one connection: one round trip for both.
    let count_future = async {
        match (&count_statement, &count_typed) {
            (Some((sql, _)), Some(typed)) => client.query_typed(sql, typed).await.map(Some),
            _ => Ok(None),
        }
    };
    let (rows, count_rows) =
        tokio::try_join!(client.query_typed(&page_sql, &page_typed), count_future)?;
    let count = match (search.count, count_rows) {
        (CountMode::Exact, Some(rows)) => rows.first().map(|r| r.get::<_, i64>(0)),
        (CountMode::Estimate, Some(rows)) => rows
            .first()
            .and_then(|r| plan_rows(&r.get::<_, serde_json::Value>(0))),
        _ => None,
    };
    Ok(PatientList {
        data: rows.iter().map(Patient::from_row).collect(),
        count,
    })
}

/// The planner's row estimate from `EXPLAIN (FORMAT JSON)`.
fn plan_rows(plan: &serde_json::Value) -> Option<i64> {
    plan.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|rows| rows.round() as i64)
}
