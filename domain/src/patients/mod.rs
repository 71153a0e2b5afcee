//! Patients: the record and its identifiers, search, and the writes. Every write puts its audit
//! event in its own statement (or transaction), so the event exists exactly when the change does.

pub mod model;
pub mod search;

use serde::Deserialize;
use serde_json::json;
use shared::audit::LoggedRows;
use shared::db::{DbPool, SqlParams};
use shared::input::present;
use shared::storage::{drain_deletions, Storage};
use shared::trail::{AuditEntry, RouteEvent};
use shared::{ApiError, StoreError};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::paging::{Count, Page};
use model::{
    identifiers_column, ContactInfo, Dob, Identifiers, MedicalHistory, Patient, PatientName,
    PATIENT_COLUMNS,
};
use search::Search;

const PATIENT: &str = "patient";

// What each access is called in the audit trail, whichever interface served it.
pub const PATIENT_CREATE: RouteEvent = RouteEvent::new("patient.create", PATIENT);
pub const PATIENT_SEARCH: RouteEvent = RouteEvent::new("patient.search", PATIENT);
pub const PATIENT_READ: RouteEvent = RouteEvent::new("patient.read", PATIENT)
    .resource_from("id")
    .patient_from("id");
pub const PATIENT_UPDATE: RouteEvent = RouteEvent::new("patient.update", PATIENT)
    .resource_from("id")
    .patient_from("id");
pub const PATIENT_DELETE: RouteEvent = RouteEvent::new("patient.delete", PATIENT)
    .resource_from("id")
    .patient_from("id");

/// Why a patient operation did not happen; each interface answers it in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum PatientError {
    #[error("no such patient")]
    NotFound,
    /// A conditional write named a version the record is no longer at.
    #[error("the patient changed since the version the write expected")]
    Stale,
    /// An identifier (system and value) another patient holds.
    #[error("an identifier belongs to another patient")]
    IdentifierTaken,
    /// An update that would remove the name, which every record has.
    #[error("a patient's name cannot be removed")]
    NameCleared,
    /// The database's or the trail's own failure, classified as the edge answers it (busy,
    /// unavailable, text it cannot store).
    #[error(transparent)]
    Store(#[from] StoreError),
}

store_errors!(PatientError);

pub type PatientResult<T> = Result<T, PatientError>;

/// The JSON API's answer (FastAPI's texts and statuses, as the replaced system gave them). It
/// is the shared edge's default rendering; FHIR maps the error in its own terms.
impl From<PatientError> for ApiError {
    fn from(error: PatientError) -> Self {
        match error {
            PatientError::NotFound => ApiError::NotFound("Patient not found".into()),
            PatientError::Stale => ApiError::PreconditionFailed(
                "The patient was changed by someone else since you read it; reload it and try again"
                    .into(),
            ),
            PatientError::IdentifierTaken => ApiError::Conflict(
                "An identifier sent already belongs to another patient".into(),
            ),
            PatientError::NameCleared => ApiError::validation(
                &["body", "name"],
                "Input should be a valid string",
                "string_type",
            ),
            PatientError::Store(error) => error.into(),
        }
    }
}

/// A new patient's fields (the JSON API's body; FHIR's Patient maps to it).
#[derive(Deserialize)]
pub struct PatientCreate {
    pub name: PatientName,
    #[serde(default)]
    pub dob: Option<Dob>,
    #[serde(default)]
    pub contact_info: Option<ContactInfo>,
    #[serde(default)]
    pub medical_history: Option<MedicalHistory>,
    #[serde(default)]
    pub identifiers: Option<Identifiers>,
}

/// The changed rows of a statement whose CTE `source` returns patients.
fn patient_rows(source: &str) -> LoggedRows<'_> {
    LoggedRows {
        source,
        resource: "id",
        patient: "id",
        details: None,
    }
}

/// Inserts a patient; the row and its audit event in one statement: both or neither, one
/// round trip.
pub async fn insert(
    pool: &DbPool,
    audit: &AuditEntry,
    body: &PatientCreate,
) -> PatientResult<Patient> {
    let mut params = SqlParams::new();
    let values = [
        params.push(Uuid::new_v4(), Type::UUID),
        params.push(body.name.as_str().to_owned(), Type::VARCHAR),
        params.push(body.dob.map(|d| d.0), Type::DATE),
        params.push(
            body.contact_info.as_ref().map(|c| c.as_str().to_owned()),
            Type::VARCHAR,
        ),
        params.push(
            body.medical_history.as_ref().map(|m| m.as_str().to_owned()),
            Type::TEXT,
        ),
    ]
    .join(", ");
    let identifiers = body.identifiers.clone().unwrap_or_default();
    let (systems, identifier_values) = identifiers.columns();
    let systems = params.push(systems, Type::TEXT_ARRAY);
    let identifier_values = params.push(identifier_values, Type::TEXT_ARRAY);
    let logged = audit.logged_cte(&mut params, &patient_rows("created"));
    let client = pool.get().await?;
    let row = client
        .query_typed_one(
            &format!(
                "WITH created AS (
                    INSERT INTO patients (id, name, dob, contact_info, medical_history)
                    VALUES ({values}) RETURNING {PATIENT_COLUMNS}
                 ), identified AS (
                    INSERT INTO patient_identifiers (patient_id, system, value)
                    SELECT created.id, i.system, i.value
                    FROM created, unnest({systems}::text[], {identifier_values}::text[]) AS i (system, value)
                 ), {logged}
                 SELECT * FROM created"
            ),
            &params.typed(),
        )
        .await
        .map_err(identifier_taken)?;
    let mut patient = Patient::from_row(&row);
    patient.identifiers = identifiers.as_slice().to_vec();
    Ok(patient)
}

/// A unique violation of an identifier (a pair another patient holds) as such; any other
/// error as it is.
fn identifier_taken(error: tokio_postgres::Error) -> PatientError {
    if error
        .as_db_error()
        .is_some_and(|db| db.constraint() == Some("patient_identifiers_pkey"))
    {
        PatientError::IdentifierTaken
    } else {
        error.into()
    }
}

/// The patient with this id; None when there is none.
pub async fn find(pool: &DbPool, id: Uuid) -> PatientResult<Option<Patient>> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS}, {} FROM patients p WHERE id = $1",
            identifiers_column("p")
        ))
        .await?;
    Ok(client
        .query_opt(&statement, &[&id])
        .await?
        .as_ref()
        .map(Patient::from_row))
}

/// PUT and PATCH alike: only the fields sent change; `null` clears a nullable field.
#[derive(Deserialize)]
pub struct PatientUpdate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<PatientName>>,
    #[serde(default, deserialize_with = "present")]
    pub dob: Option<Option<Dob>>,
    #[serde(default, deserialize_with = "present")]
    pub contact_info: Option<Option<ContactInfo>>,
    #[serde(default, deserialize_with = "present")]
    pub medical_history: Option<Option<MedicalHistory>>,
    /// When sent, the whole set (null or `[]` clears it).
    #[serde(default, deserialize_with = "present")]
    pub identifiers: Option<Option<Identifiers>>,
}

/// Changes the fields `body` holds, when the record is at version `expected` (if given).
/// (Long because it is one statement: each field's sent/value parameters, the identifiers'
/// difference and the audit event, in one round trip.)
pub async fn update(
    pool: &DbPool,
    audit: &AuditEntry,
    id: Uuid,
    body: PatientUpdate,
    expected: Option<i64>,
) -> PatientResult<Patient> {
    let name = match body.name {
        Some(None) => return Err(PatientError::NameCleared),
        Some(Some(name)) => Some(name),
        None => None,
    };
    let changed = shared::audit::sent_fields(&[
        ("name", name.is_some()),
        ("dob", body.dob.is_some()),
        ("contact_info", body.contact_info.is_some()),
        ("medical_history", body.medical_history.is_some()),
        ("identifiers", body.identifiers.is_some()),
    ]);
    audit.describe(|event| event.details(json!({ "fields": changed })));
    let mut params = SqlParams::new();
    let id_p = params.push(id, Type::UUID);
    let name = params.push(name.as_ref().map(|n| n.as_str().to_owned()), Type::VARCHAR);
    let dob_sent = params.push(body.dob.is_some(), Type::BOOL);
    let dob = params.push(body.dob.flatten().map(|d| d.0), Type::DATE);
    let contact_sent = params.push(body.contact_info.is_some(), Type::BOOL);
    let contact = params.push(
        body.contact_info
            .as_ref()
            .and_then(|c| c.as_ref().map(|c| c.as_str().to_owned())),
        Type::VARCHAR,
    );
    let history_sent = params.push(body.medical_history.is_some(), Type::BOOL);
    let history = params.push(
        body.medical_history
            .as_ref()
            .and_then(|m| m.as_ref().map(|m| m.as_str().to_owned())),
        Type::TEXT,
    );
    let identifiers_sent = params.push(body.identifiers.is_some(), Type::BOOL);
    let sent_identifiers = body
        .identifiers
        .as_ref()
        .map(|sent| sent.clone().unwrap_or_default().as_slice().to_vec());
    let (systems, values) = body.identifiers.flatten().unwrap_or_default().columns();
    let systems = params.push(systems, Type::TEXT_ARRAY);
    let values = params.push(values, Type::TEXT_ARRAY);
    let expected = params.push(expected, Type::INT8);
    // The change and its audit event in one statement: the event exists exactly when a row
    // changed (a 404 or a 412 is recorded as a refusal), at no extra round trip.
    let logged = audit.logged_cte(&mut params, &patient_rows("updated"));
    let client = pool.get().await?;
    let updated = client
        .query_typed_opt(
            &format!(
                "WITH updated AS (
                    UPDATE patients SET
                        name = COALESCE({name}, name),
                        dob = CASE WHEN {dob_sent} THEN {dob} ELSE dob END,
                        contact_info = CASE WHEN {contact_sent} THEN {contact} ELSE contact_info END,
                        medical_history = CASE WHEN {history_sent} THEN {history} ELSE medical_history END,
                        version = version + 1,
                        updated_at = now()
                    WHERE id = {id_p} AND ({expected}::int8 IS NULL OR version = {expected})
                    RETURNING {PATIENT_COLUMNS}
                 ), sent AS (
                    SELECT * FROM unnest({systems}::text[], {values}::text[]) AS i (system, value)
                 ), unlisted AS (
                    -- Pairs kept stay as they are: a pair is never deleted and inserted in
                    -- one statement.
                    DELETE FROM patient_identifiers i USING updated
                    WHERE {identifiers_sent} AND i.patient_id = updated.id
                      AND (i.system, i.value) NOT IN (SELECT system, value FROM sent)
                 ), listed AS (
                    INSERT INTO patient_identifiers (patient_id, system, value)
                    SELECT updated.id, sent.system, sent.value FROM updated, sent
                    WHERE {identifiers_sent} AND NOT EXISTS (
                        SELECT 1 FROM patient_identifiers i
                        WHERE i.system = sent.system AND i.value = sent.value
                          AND i.patient_id = updated.id)
                 ), {logged}
                 SELECT *, {} FROM updated",
                // The identifiers as they were (the statement's snapshot): right unless sent.
                identifiers_column("updated")
            ),
            &params.typed(),
        )
        .await
        .map_err(identifier_taken)?;
    match updated {
        Some(row) => {
            let mut patient = Patient::from_row(&row);
            if let Some(sent) = sent_identifiers {
                patient.identifiers = sent;
            }
            Ok(patient)
        }
        None => Err(missing_or_modified(&client, id).await),
    }
}

/// Whether a patient with this id exists.
pub async fn exists(client: &tokio_postgres::Client, id: Uuid) -> PatientResult<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&id])
        .await?
        .is_some())
}

/// After a conditional write touched nothing: gone, or changed meanwhile.
async fn missing_or_modified(client: &tokio_postgres::Client, id: Uuid) -> PatientError {
    match exists(client, id).await {
        Ok(true) => PatientError::Stale,
        Ok(false) => PatientError::NotFound,
        Err(e) => e,
    }
}

/// Deletes a patient with its attachments and their files, when at version `expected` (if
/// given).
pub async fn delete(
    pool: &DbPool,
    storage: &Storage,
    audit: &AuditEntry,
    id: Uuid,
    expected: Option<i64>,
) -> PatientResult<()> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let version: i64 = transaction
        .query_opt(
            "SELECT version FROM patients WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(PatientError::NotFound)?
        .get(0);
    if expected.is_some_and(|v| v != version) {
        return Err(PatientError::Stale);
    }
    // Attachments before their patient (the foreign key), in the same transaction: a failure
    // anywhere leaves rows and files, a success neither for long. The event alongside the last
    // delete.
    let keys = crate::attachments::delete_of_patient(&transaction, id).await?;
    audit.describe(|event| event.details(json!({ "attachments_deleted": keys.len() })));
    tokio::try_join!(
        async {
            transaction
                .execute("DELETE FROM patients WHERE id = $1", &[&id])
                .await
                .map_err(StoreError::from)
        },
        audit.insert(&transaction),
    )?;
    transaction.commit().await?;
    drop(client);
    // Now, not later; whatever S3 or the database refuses stays queued for the scheduled
    // sweep: the patient is deleted either way.
    drain_deletions(pool, storage, keys).await;
    Ok(())
}

/// The planner's estimate of a search's matches, and whether it says that a bounded walk of the
/// sort order will likely hold the page (`Search::walk_is_likely`, against the table's size):
/// one round trip for both.
pub async fn estimate_walk(
    client: &tokio_postgres::Client,
    search: &Search,
) -> PatientResult<(Option<i64>, bool)> {
    let (estimate_sql, estimate_params) = search.estimate_sql();
    let estimate_typed = estimate_params.typed();
    let (plan, total) = tokio::try_join!(
        client.query_typed_one(&estimate_sql, &estimate_typed),
        client.query_one("SELECT patients FROM patient_totals", &[]),
    )?;
    let estimated = shared::db::plan_rows(&plan.get::<_, serde_json::Value>(0));
    let total: i64 = total.get(0);
    let likely = estimated.is_some_and(|matches| search.walk_is_likely(matches, total));
    Ok((estimated, likely))
}

/// Runs a search (the JSON API's and FHIR's): statements bounded by the matches, whatever
/// their position in the sort order.
pub async fn run_search(pool: &DbPool, search: &Search) -> PatientResult<Page<Patient>> {
    let client = pool.get().await?;
    let mut estimated = None;
    let walk = search.walk_statement(PATIENT_COLUMNS);
    let rows = match &walk {
        // No exact count wanted: the planner's estimate (and the table's size) say whether a
        // bounded walk of the sort order will likely hold the page; if it comes back short
        // anyway, collect the matches.
        Some((walk_sql, walk_params)) => {
            let walk_is_likely;
            (estimated, walk_is_likely) = estimate_walk(&client, search).await?;
            let walked = if walk_is_likely {
                Some(client.query_typed(walk_sql, &walk_params.typed()).await?)
            } else {
                None
            };
            match walked {
                Some(rows) if rows.len() as i64 > search.limit => rows,
                _ => {
                    let (sql, params) = search.statement(PATIENT_COLUMNS);
                    client.query_typed(&sql, &params.typed()).await?
                }
            }
        }
        None => {
            let (sql, params) = search.statement(PATIENT_COLUMNS);
            client.query_typed(&sql, &params.typed()).await?
        }
    };
    if search.count == Count::Estimate && estimated.is_none() {
        let (sql, params) = search.estimate_sql();
        let plan = client.query_typed_one(&sql, &params.typed()).await?;
        estimated = shared::db::plan_rows(&plan.get::<_, serde_json::Value>(0));
    }
    let total_column = PATIENT_COLUMNS.split(',').count();
    let count = match search.count {
        Count::Exact => rows
            .first()
            .and_then(|r| r.get::<_, Option<i64>>(total_column)),
        Count::Estimate => estimated,
        Count::None => None,
    };
    let mut items: Vec<Patient> = rows
        .iter()
        .filter(|row| row.get::<_, Option<Uuid>>(0).is_some())
        .map(Patient::from_row)
        .collect();
    // One row more than the page says whether another page follows.
    let (previous, next) = search.keyset.page(&mut items, search.limit, |patient| {
        search::position(search.sort, patient)
    });
    Ok(Page {
        items,
        previous,
        next,
        total: count,
    })
}
