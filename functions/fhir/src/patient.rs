//! Patient: the JSON API's patients as FHIR R4 resources (read, search), through the same SQL.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use patients::model::Patient;
use patients::search::{CountMode, Cursor, Filter, Search, Sort};
use patients::{PatientCreate, PatientUpdate};
use serde_json::{json, Value};
use shared::auth::{CurrentUser, Writer};
use shared::domain::EmailAddress;
use shared::trail::Audit;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::query::{self, Common, Prefix, Total};
use crate::{FhirState, PublicBase};

/// The canonical URL of the extension that carries the record's medical history (free text).
pub const MEDICAL_HISTORY_EXTENSION: &str =
    "https://carevault.dev/fhir/StructureDefinition/medical-history";

/// A page's entries stop before their JSON passes this, whatever `_count` says: a Lambda
/// response is at most 6 MB (a medical history may hold 100,000 characters).
pub const PAGE_BUDGET_BYTES: usize = 5_000_000;

fn telecom(contact: &str) -> Value {
    let trimmed = contact.trim();
    let system = if EmailAddress::parse(trimmed.to_owned()).is_ok() {
        "email"
    } else if trimmed.len() >= 5
        && trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        "phone"
    } else {
        "other"
    };
    json!({ "system": system, "value": trimmed })
}

/// `name[0]`: the text as stored; family and given only when the name splits cleanly (two to
/// four words of letters, the last the family name), never guessed from anything else.
fn human_name(name: &str) -> Value {
    let words: Vec<&str> = name.split_whitespace().collect();
    let clean = (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        });
    if clean {
        let (family, given) = words.split_last().expect("two words or more");
        json!({ "use": "official", "text": name, "family": family, "given": given })
    } else {
        json!({ "use": "official", "text": name })
    }
}

/// The FHIR Patient of a record.
pub fn resource(patient: &Patient) -> Value {
    let mut resource = json!({
        "resourceType": "Patient",
        "id": patient.id,
        "meta": {
            "versionId": patient.version.to_string(),
            "lastUpdated": patient.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
        "name": [human_name(&patient.name)],
    });
    if let Some(dob) = patient.dob {
        resource["birthDate"] = json!(dob.format("%Y-%m-%d").to_string());
    }
    if let Some(contact) = patient
        .contact_info
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        resource["telecom"] = json!([telecom(contact)]);
    }
    if let Some(history) = patient.medical_history.as_deref().filter(|h| !h.is_empty()) {
        resource["extension"] =
            json!([{ "url": MEDICAL_HISTORY_EXTENSION, "valueString": history }]);
    }
    resource
}

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("Patient/{raw_id} is not known"))
}

/// The JSON API's "Patient not found" named as FHIR names the resource.
fn in_fhir_terms(error: ApiError, raw_id: &str) -> ApiError {
    match error {
        ApiError::NotFound(_) => not_found(raw_id),
        other => other,
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
    _current: CurrentUser,
    audit: Audit,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    audit.describe(|event| event.details(json!({ "interface": "fhir" })));
    // An id that is not a UUID names no patient of this server.
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    let patient = patients::find(&state.auth.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw_id))?;
    Ok(answer(&patient, StatusCode::OK, None))
}

/// A request body as a FHIR Patient: JSON (400 otherwise) of resourceType Patient (400).
fn patient_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.is_empty() && !content_type.contains("json") {
        return Err(ApiError::UnsupportedMediaType(
            "Send the resource as application/fhir+json".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("The body is not JSON: {e}")))?;
    if value["resourceType"] != "Patient" {
        return Err(ApiError::BadRequest(format!(
            "Expected a Patient, not {}",
            value["resourceType"]
        )));
    }
    Ok(value)
}

/// The record's fields a Patient carries: the name (its text, else given and family names),
/// the birth date, the first telecom's value, the medical-history extension. Client-supplied
/// `id` and `meta` play no part. Each is checked as the JSON API checks it (422).
fn fields(patient: &Value) -> Value {
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
    json!({
        "name": text,
        "dob": patient["birthDate"].as_str(),
        "contact_info": patient["telecom"][0]["value"].as_str(),
        "medical_history": history,
    })
}

/// serde's refusal of a field, as a business rule the resource breaks (422).
fn rule_broken(error: serde_json::Error) -> ApiError {
    let text = error.to_string();
    let field = ["name", "dob", "contact_info", "medical_history"]
        .into_iter()
        .find(|f| text.contains(&format!("`{f}`")))
        .map(|f| match f {
            "dob" => "birthDate",
            "contact_info" => "telecom",
            "medical_history" => "the medical-history extension",
            other => other,
        });
    ApiError::Validation(vec![shared::FieldError::new(
        &["body", field.unwrap_or("Patient")],
        text,
        "value_error",
    )])
}

/// The record's fields a Patient carries, checked as the JSON API checks them.
fn record<T: serde::de::DeserializeOwned>(patient: &Value) -> ApiResult<T> {
    let mut values = fields(patient);
    if values["name"].is_null() {
        // A record without a name cannot be kept; the JSON API's rule says why.
        values["name"] = json!("");
    }
    serde_json::from_value(values).map_err(rule_broken)
}

/// `POST /fhir/R4/Patient`: 201 with the created resource and its Location.
pub async fn create(
    State(state): State<FhirState>,
    _writer: Writer,
    audit: Audit,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    audit.describe(|event| event.details(json!({ "interface": "fhir" })));
    let create: PatientCreate = record(&patient_body(&headers, &body)?)?;
    let created = patients::insert(&state.auth.pool, &audit, &create).await?;
    let base = state.base.of(&headers, &uri);
    Ok(answer(&created, StatusCode::CREATED, Some(&base)))
}

/// `PUT /fhir/R4/Patient/{id}`: replaces the record's fields (what the resource leaves out is
/// cleared), with `If-Match: W/"<version>"` checked (412).
pub async fn update(
    State(state): State<FhirState>,
    _writer: Writer,
    audit: Audit,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    audit.describe(|event| event.details(json!({ "interface": "fhir" })));
    let patient = patient_body(&headers, &body)?;
    if patient["id"].as_str() != Some(raw_id.as_str()) {
        return Err(ApiError::BadRequest(
            "The resource's id must be the id in the URL".into(),
        ));
    }
    let change: PatientUpdate = record(&patient)?;
    // updateCreate is false: an id this server did not make names nothing.
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    let updated = patients::update(
        &state.auth.pool,
        &audit,
        id,
        change,
        patients::required_version(&headers),
    )
    .await
    .map_err(|e| in_fhir_terms(e, &raw_id))?;
    Ok(answer(&updated, StatusCode::OK, None))
}

/// `DELETE /fhir/R4/Patient/{id}`: the record, its attachments and their files (204), with
/// `If-Match` checked as for an update.
pub async fn delete(
    State(state): State<FhirState>,
    _writer: Writer,
    audit: Audit,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    audit.describe(|event| event.details(json!({ "interface": "fhir" })));
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    patients::delete(
        &state.auth.pool,
        &state.storage,
        &audit,
        id,
        patients::required_version(&headers),
    )
    .await
    .map_err(|e| in_fhir_terms(e, &raw_id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The search a FHIR query asks for, in the JSON API's terms, and the query's common part.
fn search_of(params: &[query::Param]) -> ApiResult<(Search, Common)> {
    let invalid = |text: String| ApiError::BadRequest(text);
    let mut filters = Vec::new();
    let mut common = Common::new();
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
            ("name", modifier @ (None | Some("exact"))) => {
                if value.contains(',') {
                    return Err(invalid(
                        "name does not take several values separated by commas (OR) here; repeat the parameter for AND".into(),
                    ));
                }
                if value.chars().count() > patients::search::MAX_TEXT_CHARS
                    || value.split_whitespace().count() > patients::search::MAX_TEXT_WORDS
                {
                    return Err(invalid("name is too long".into()));
                }
                if value.is_empty() {
                    continue;
                }
                filters.push(if modifier.is_some() {
                    Filter::NameExact(value.to_owned())
                } else {
                    Filter::NameText(value.to_owned())
                });
            }
            ("birthdate", None) => {
                if value.contains(',') {
                    return Err(invalid(
                        "birthdate does not take several values separated by commas (OR) here; repeat the parameter for AND".into(),
                    ));
                }
                let date = query::date_value(value).map_err(invalid)?;
                match (date.prefix, date.bounds()) {
                    (Prefix::Ne, (Some(first), Some(last))) => {
                        filters.push(Filter::DobOutside(first, last))
                    }
                    (_, (from, to)) => {
                        filters.extend(from.map(Filter::DobFrom));
                        filters.extend(to.map(Filter::DobTo));
                    }
                }
            }
            ("_sort", None) => {
                sort = match value {
                    "name" => Sort::Name,
                    "-name" => Sort::NameDesc,
                    "birthdate" => Sort::Dob,
                    "-birthdate" => Sort::DobDesc,
                    other => {
                        return Err(invalid(format!(
                            "_sort takes name, -name, birthdate or -birthdate, not {other:?}"
                        )))
                    }
                }
            }
            _ => common.unknown(param),
        }
    }
    let cursor = match &common.cursor {
        Some(raw) => Some(Cursor::decode(raw, sort).ok_or_else(query::bad_cursor)?),
        None => None,
    };
    let count = match common.total {
        Total::None => CountMode::None,
        Total::Estimate => CountMode::Estimate,
        Total::Accurate => CountMode::Exact,
    };
    Ok((
        Search {
            filters,
            sort,
            skip: 0,
            limit: common.count,
            count,
            cursor,
        },
        common,
    ))
}

/// A link of a search on `resource_type`: the search's own parameters (unknown ones dropped),
/// and the cursor.
pub(crate) fn link(
    base: &str,
    resource_type: &str,
    params: &[query::Param],
    unknown: &[String],
    cursor: Option<&str>,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for param in params {
        let name = match &param.modifier {
            Some(m) => format!("{}:{m}", param.name),
            None => param.name.clone(),
        };
        if param.name != "_cursor" && !unknown.contains(&name) {
            query.append_pair(&name, &param.value);
        }
    }
    if let Some(cursor) = cursor {
        query.append_pair("_cursor", cursor);
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}/{resource_type}")
    } else {
        format!("{base}/{resource_type}?{query}")
    }
}

/// A searchset Bundle: `self` (with the request's own cursor) and `next` links, `total`
/// unless not counted, the entries.
pub(crate) fn bundle(
    base: &str,
    resource_type: &str,
    params: &[query::Param],
    unknown: &[String],
    next: Option<&str>,
    total: Option<i64>,
    entries: Vec<Value>,
) -> Value {
    let own_cursor = params
        .iter()
        .find(|p| p.name == "_cursor")
        .map(|p| p.value.as_str());
    let mut links = vec![
        json!({ "relation": "self", "url": link(base, resource_type, params, unknown, own_cursor) }),
    ];
    if let Some(next) = next {
        links.push(
            json!({ "relation": "next", "url": link(base, resource_type, params, unknown, Some(next)) }),
        );
    }
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset", "link": links });
    if let Some(total) = total {
        bundle["total"] = json!(total);
    }
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// `GET /fhir/R4/Patient?...`: a searchset Bundle of the JSON API's search, paged by cursor.
pub async fn search(
    State(state): State<FhirState>,
    _current: CurrentUser,
    audit: Audit,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = query::params(raw.as_deref());
    let (search, common) = search_of(&params)?;
    common.check(&headers)?;
    audit.describe(|event| {
        event.details(json!({ "interface": "fhir", "filters": search.filter_names() }))
    });
    let list = patients::run_search(&state.auth.pool, &search).await?;
    let base = PublicBase::of(&state.base, &headers, &uri);
    // Entries until the page budget; a page cut short goes on from its last entry.
    let (mut entries, mut size, mut shown) = (Vec::new(), 0usize, 0usize);
    for patient in &list.data {
        let entry = json!({
            "fullUrl": format!("{base}/Patient/{}", patient.id),
            "resource": resource(patient),
            "search": { "mode": "match" },
        });
        let length = entry.to_string().len();
        if shown > 0 && size + length > PAGE_BUDGET_BYTES {
            break;
        }
        size += length;
        shown += 1;
        entries.push(entry);
    }
    let next = if shown < list.data.len() {
        Some(Cursor::after(search.sort, &list.data[shown - 1]).encode())
    } else {
        list.next_cursor.clone()
    };
    let shown_ids: Vec<Uuid> = list.data[..shown].iter().map(|p| p.id).collect();
    audit.describe(|event| {
        event.details(json!({
            "interface": "fhir",
            "filters": search.filter_names(),
            "patient_ids": shown_ids,
        }))
    });
    let bundle = bundle(
        &base,
        "Patient",
        &params,
        &common.unknown,
        next.as_deref(),
        list.count,
        entries,
    );
    Ok((StatusCode::OK, Json(bundle)).into_response())
}
