//! Patient: the JSON API's patients as FHIR R4 resources (read, search), through the same SQL.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::paging::{Count, List};
use domain::patients::model::{
    ContactInfo, Dob, Identifiers, MedicalHistory, Patient, PatientName,
};
use domain::patients::search::{self, Filter, Search, Sort};
use domain::patients::{self, PatientCreate, PatientError, PatientUpdate};
use domain::smart::scopes::{Interaction, Reach, ResourceType};
use edge::http::required_version;
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::query::{self, Common, Prefix};
use crate::{bundle, element_as};
use crate::{FhirState, PublicBase};
pub use fhir_resources::patient::{resource, MEDICAL_HISTORY_EXTENSION};

/// A page's entries stop before their JSON passes this, whatever `_count` says: a Lambda
/// response is at most 6 MB (a medical history may hold 100,000 characters).
pub const PAGE_BUDGET_BYTES: usize = 5_000_000;

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("Patient/{raw_id} is not known"))
}

/// A patient operation's refusal in FHIR's terms (the layer makes it an OperationOutcome):
/// the resource named as FHIR names it; the other refusals as the JSON API words them.
fn fhir_error(error: PatientError, raw_id: &str) -> ApiError {
    match error {
        PatientError::NotFound => not_found(raw_id),
        other => other.into(),
    }
}

/// A Patient answer: the resource, `ETag: W/"<version>"`, `Last-Modified`, and for a creation
/// `Location: [base]/Patient/{id}/_history/{version}`.
fn answer(patient: &Patient, status: StatusCode, location: Option<&str>) -> Response {
    let mut response = (status, Json(resource(patient))).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", patient.version)) {
        headers.insert(header::ETAG, etag);
    }
    let modified = patient
        .updated_at
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(modified) = HeaderValue::from_str(&modified) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    if let Some(base) = location {
        let url = format!("{base}/Patient/{}/_history/{}", patient.id, patient.version);
        if let Ok(url) = HeaderValue::from_str(&url) {
            headers.insert(header::LOCATION, url);
        }
    }
    response
}

/// `GET /fhir/R4/Patient/{id}`: the resource, with its version's ETag and Last-Modified.
pub async fn read(
    State(state): State<FhirState>,
    caller: FhirCaller,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::Patient, Interaction::Read)?;
    // An id that is not a UUID names no patient of this server.
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    crate::within_reach(reach, id).map_err(|_| not_found(&raw_id))?;
    let patient = patients::find(&state.db, id)
        .await
        .map_err(|e| fhir_error(e, &raw_id))?
        .ok_or_else(|| not_found(&raw_id))?;
    Ok(answer(&patient, StatusCode::OK, None))
}

/// The record a Patient resource describes, in the domain's types: the name (its text, else
/// given and family names), the birth date, the first telecom's value, the medical-history
/// extension, the identifiers' systems and values (their use, type, period and assigner are
/// not kept). Client-supplied `id` and `meta` play no part. Each value is checked by its
/// domain type; every refusal is a 422 located at the resource's element.
struct PatientFields {
    name: PatientName,
    dob: Option<Dob>,
    contact_info: Option<ContactInfo>,
    medical_history: Option<MedicalHistory>,
    identifiers: Identifiers,
}

impl PatientFields {
    fn of(patient: &Value) -> ApiResult<Self> {
        let name = &patient["name"][0];
        let text = name["text"].as_str().map(str::to_owned).or_else(|| {
            let given: Vec<&str> = name["given"]
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let words: Vec<&str> = given.into_iter().chain(name["family"].as_str()).collect();
            (!words.is_empty()).then(|| words.join(" "))
        });
        let history = patient["extension"].as_array().and_then(|extensions| {
            extensions
                .iter()
                .find(|e| e["url"] == MEDICAL_HISTORY_EXTENSION)
                .and_then(|e| e["valueString"].as_str())
        });
        let identifiers: Vec<Value> = patient["identifier"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|i| json!({ "system": i["system"], "value": i["value"] }))
                    .collect()
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        // A record without a name cannot be kept: an absent one is refused as an empty one.
        let name = element_as(
            &mut errors,
            "Patient",
            "name",
            json!(text.unwrap_or_default()),
        );
        let birth_date = json!(patient["birthDate"].as_str());
        let dob = element_as(&mut errors, "Patient", "birthDate", birth_date);
        let contact = json!(patient["telecom"][0]["value"].as_str());
        let contact_info = element_as(&mut errors, "Patient", "telecom", contact);
        let medical_history = element_as(&mut errors, "Patient", "extension", json!(history));
        let identifiers = element_as(
            &mut errors,
            "Patient",
            "identifier",
            Value::Array(identifiers),
        );
        match (name, dob, contact_info, medical_history, identifiers) {
            (
                Some(name),
                Some(dob),
                Some(contact_info),
                Some(medical_history),
                Some(identifiers),
            ) => Ok(Self {
                name,
                dob,
                contact_info,
                medical_history,
                identifiers,
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }

    fn into_create(self) -> PatientCreate {
        PatientCreate {
            name: self.name,
            dob: self.dob,
            contact_info: self.contact_info,
            medical_history: self.medical_history,
            identifiers: Some(self.identifiers),
        }
    }

    /// A whole-resource update: what the resource leaves out is cleared.
    fn into_update(self) -> PatientUpdate {
        PatientUpdate {
            name: Some(Some(self.name)),
            dob: Some(self.dob),
            contact_info: Some(self.contact_info),
            medical_history: Some(self.medical_history),
            identifiers: Some(Some(self.identifiers)),
        }
    }
}

/// `POST /fhir/R4/Patient`: 201 with the created resource and its Location.
pub async fn create(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // A patient-scoped token reaches its own patient only: it creates no other.
    if caller.permit(ResourceType::Patient, Interaction::Create)? != Reach::All {
        return Err(ApiError::Forbidden(
            "A patient-scoped token cannot create patients".into(),
        ));
    }
    let create =
        PatientFields::of(&crate::resource_body(&headers, &body, "Patient")?)?.into_create();
    let base = state.base.of(&headers, &uri);
    let Some(criteria) = headers.get("if-none-exist") else {
        let created = patients::insert(&state.db, &audit, &create)
            .await
            .map_err(|e| fhir_error(e, ""))?;
        return Ok(answer(&created, StatusCode::CREATED, Some(&base)));
    };
    // Conditional create: the criteria are a Patient search; none matches: create, one: that
    // one (200, nothing created), more: 412.
    let criteria = criteria
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-None-Exist is not text".into()))?;
    let params = query::params(Some(criteria.trim_start_matches('?')));
    let (mut search, common) = search_of(&params)?;
    if common.refuse(false).is_err() || common.cursor.is_some() {
        return Err(ApiError::BadRequest(format!(
            "If-None-Exist may only hold Patient search parameters this server knows, not {}",
            common.not_applied().join(", ")
        )));
    }
    if search.filters.is_empty() {
        return Err(ApiError::BadRequest(
            "If-None-Exist names no criteria (for example identifier=system|value)".into(),
        ));
    }
    search.limit = 2;
    search.count = Count::None;
    let pool = &state.db;
    let existing = match only_match(pool, &search).await? {
        Some(existing) => existing,
        None => match patients::insert(&state.db, &audit, &create).await {
            Ok(created) => return Ok(answer(&created, StatusCode::CREATED, Some(&base))),
            // Created meanwhile by a request like this one: the identifier is now taken.
            Err(PatientError::IdentifierTaken) => {
                audit.statement_failed();
                only_match(pool, &search)
                    .await?
                    .ok_or_else(|| fhir_error(PatientError::IdentifierTaken, ""))?
            }
            Err(other) => return Err(fhir_error(other, "")),
        },
    };
    audit.describe(|event| {
        event
            .resource(Some(existing.id))
            .patient(Some(existing.id))
            .details(json!({ "if_none_exist": "matched", "created": false }))
    });
    Ok(answer(&existing, StatusCode::OK, None))
}

/// The one patient a conditional create's search finds: None for none, 412 for several.
async fn only_match(pool: &shared::db::DbPool, search: &Search) -> ApiResult<Option<Patient>> {
    let list = patients::run_search(pool, search)
        .await
        .map_err(|e| fhir_error(e, ""))?;
    match <[Patient; 1]>::try_from(list.items) {
        Ok([one]) => Ok(Some(one)),
        Err(data) if data.is_empty() => Ok(None),
        Err(_) => Err(ApiError::PreconditionFailed(
            "More than one patient matches If-None-Exist".into(),
        )),
    }
}

/// `PUT /fhir/R4/Patient/{id}`: replaces the record's fields (what the resource leaves out is
/// cleared), with `If-Match: W/"<version>"` checked (412).
pub async fn update(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::Patient, Interaction::Update)?;
    let patient = crate::resource_body(&headers, &body, "Patient")?;
    if patient["id"].as_str() != Some(raw_id.as_str()) {
        return Err(ApiError::BadRequest(
            "The resource's id must be the id in the URL".into(),
        ));
    }
    let change = PatientFields::of(&patient)?.into_update();
    // updateCreate is false: an id this server did not make names nothing.
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    crate::within_reach(reach, id).map_err(|_| not_found(&raw_id))?;
    let updated = patients::update(&state.db, &audit, id, change, required_version(&headers))
        .await
        .map_err(|e| fhir_error(e, &raw_id))?;
    Ok(answer(&updated, StatusCode::OK, None))
}

/// `DELETE /fhir/R4/Patient/{id}`: the record, its attachments and their files (204), with
/// `If-Match` checked as for an update.
pub async fn delete(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let reach = caller.permit(ResourceType::Patient, Interaction::Delete)?;
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    crate::within_reach(reach, id).map_err(|_| not_found(&raw_id))?;
    patients::delete(
        &state.db,
        &state.storage,
        &audit,
        id,
        required_version(&headers),
    )
    .await
    .map_err(|e| fhir_error(e, &raw_id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The most alternatives (commas) one parameter may list.
const MAX_ALTERNATIVES: usize = 32;

/// The filters of one alternative of a parameter (between commas).
fn alternative(name: &str, modifier: Option<&str>, value: &str) -> ApiResult<Vec<Filter>> {
    let invalid = |text: String| ApiError::BadRequest(text);
    Ok(match (name, modifier) {
        ("name", modifier) => {
            if value.chars().count() > patients::search::MAX_TEXT_CHARS
                || value.split_whitespace().count() > patients::search::MAX_TEXT_WORDS
            {
                return Err(invalid("name is too long".into()));
            }
            vec![if modifier.is_some() {
                Filter::NameExact(value.to_owned())
            } else {
                Filter::NameText(value.to_owned())
            }]
        }
        ("birthdate", _) => {
            let date = query::date_value(value).map_err(invalid)?;
            match (date.prefix, date.bounds()) {
                (Prefix::Ne, (Some(first), Some(last))) => vec![Filter::DobOutside(first, last)],
                (_, (from, to)) => from
                    .map(Filter::DobFrom)
                    .into_iter()
                    .chain(to.map(Filter::DobTo))
                    .collect(),
            }
        }
        ("_lastUpdated", _) => {
            let instant = query::instant_value(value).map_err(invalid)?;
            match (instant.prefix, instant.bounds()) {
                (Prefix::Ne, (Some(start), Some(end))) => vec![Filter::AnyOf(vec![
                    vec![Filter::UpdatedBefore(start)],
                    vec![Filter::UpdatedFrom(end)],
                ])],
                (_, (from, before)) => from
                    .map(Filter::UpdatedFrom)
                    .into_iter()
                    .chain(before.map(Filter::UpdatedBefore))
                    .collect(),
            }
        }
        // `system|value`, `system|` (any value), `|value` (no system: every identifier here
        // has one, so nothing), `value` (any system).
        ("identifier", _) => {
            let (system, value) = match value.split_once('|') {
                Some(("", _)) => return Ok(vec![Filter::Ids(Vec::new())]),
                Some((system, value)) => (Some(system), Some(value).filter(|v| !v.is_empty())),
                None => (None, Some(value)),
            };
            if system.is_some_and(|s| s.len() > 255) || value.is_some_and(|v| v.len() > 255) {
                // Longer than any stored identifier.
                return Ok(vec![Filter::Ids(Vec::new())]);
            }
            vec![Filter::Identifier {
                system: system.map(str::to_owned),
                value: value.map(str::to_owned),
            }]
        }
        _ => unreachable!("only the parameters search_of hands over"),
    })
}

/// The search a FHIR query asks for, in the domain's terms, and the query's common part. (Long because it is one match over the parameters
/// a Patient search takes; each parameter's own parsing is in `alternative` and `query`.)
pub(crate) fn search_of(params: &[query::Param]) -> ApiResult<(Search, Common)> {
    let invalid = |text: String| ApiError::BadRequest(text);
    let mut filters = Vec::new();
    let mut common = Common::new(&PATIENT_PARAMETERS);
    let mut sort = Sort::Name;
    for param in params {
        if common.take(param)? {
            continue;
        }
        let value = param.value.trim();
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("_id", None) => filters.push(Filter::Ids(
                // Any of them; a value that is no UUID matches nothing.
                value
                    .split(',')
                    .filter_map(|id| Uuid::parse_str(id.trim()).ok())
                    .collect(),
            )),
            (name @ ("name" | "birthdate" | "identifier" | "_lastUpdated"), modifier)
                if modifier.is_none() || (name == "name" && modifier == Some("exact")) =>
            {
                // Commas are OR; an empty alternative (`name=`) is no filter.
                let alternatives: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                if alternatives.len() > MAX_ALTERNATIVES {
                    return Err(invalid(format!(
                        "{name} lists more than {MAX_ALTERNATIVES} values"
                    )));
                }
                let mut groups = alternatives
                    .into_iter()
                    .map(|v| alternative(name, modifier, v))
                    .collect::<ApiResult<Vec<_>>>()?;
                match groups.len() {
                    0 => {}
                    1 => filters.append(&mut groups[0]),
                    _ => filters.push(Filter::AnyOf(groups)),
                }
            }
            ("_sort", None) => {
                sort = match value {
                    "name" => Sort::Name,
                    "-name" => Sort::NameDesc,
                    "birthdate" => Sort::Dob,
                    "-birthdate" => Sort::DobDesc,
                    "_lastUpdated" => Sort::UpdatedAt,
                    "-_lastUpdated" => Sort::UpdatedAtDesc,
                    other => {
                        return Err(invalid(format!(
                            "_sort takes one of name, birthdate and _lastUpdated, each with an optional -, not {other:?}"
                        )))
                    }
                }
            }
            _ => common.unknown(param),
        }
    }
    let keyset = query::keyset(common.cursor.as_deref(), List::Patients(sort))?;
    let count = common.total.unwrap_or(Count::Exact);
    Ok((
        Search {
            filters,
            sort,
            skip: 0,
            limit: common.count,
            count,
            keyset,
        },
        common,
    ))
}

/// The search parameters this resource's search applies (the CapabilityStatement lists them).
pub const PATIENT_PARAMETERS: [&str; 6] = [
    "_id",
    "name",
    "birthdate",
    "identifier",
    "_lastUpdated",
    "_sort",
];

/// `GET /fhir/R4/Patient?...`: a searchset Bundle of the JSON API's search, paged by cursor.
pub async fn search(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::Patient, Interaction::Search)?;
    let params = query::params(raw.as_deref());
    let (mut search, common) = search_of(&params)?;
    // A patient-scoped token's search is narrowed to its patient.
    if let Reach::Compartment(patient) = reach {
        search.filters.push(Filter::Ids(vec![patient]));
    }
    common.check(&headers)?;
    audit.describe(|event| event.details(json!({ "filters": search.filter_names() })));
    let page = patients::run_search(&state.db, &search)
        .await
        .map_err(|e| fhir_error(e, ""))?;
    let base = PublicBase::of(&state.base, &headers, &uri);
    // Entries until the page budget; a page cut short goes on from its last entry.
    let (mut entries, mut size, mut shown) = (Vec::new(), 0usize, 0usize);
    for patient in &page.items {
        let entry = bundle::entry(&base, resource(patient));
        let length = entry.to_string().len();
        if shown > 0 && size + length > PAGE_BUDGET_BYTES {
            break;
        }
        size += length;
        shown += 1;
        entries.push(entry);
    }
    let next = if shown < page.items.len() {
        Some(search::cursor_after(search.sort, &page.items[shown - 1]))
    } else {
        page.next
    };
    let shown_ids: Vec<Uuid> = page.items[..shown].iter().map(|p| p.id).collect();
    audit.describe(|event| {
        event.details(json!({
            "filters": search.filter_names(),
            "patient_ids": shown_ids,
        }))
    });
    let bundle = bundle::searchset(
        &base,
        "Patient",
        &params,
        &common.unknown,
        (page.previous.as_deref(), next.as_deref()),
        page.total,
        entries,
    );
    Ok((StatusCode::OK, Json(bundle)).into_response())
}
