//! Group: cohorts of patients (`type: person`, `actual: true`) that clinics define and export
//! (`Group/{id}/$export`): create, read, update, delete, and search by `name` and `member`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::groups::{self, Group, GroupError, GroupFilter, GroupName, GroupWrite};
use domain::paging::{Count, List};
use domain::smart::scopes::{Interaction, Reach, ResourceType};
use edge::http::required_version;
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult, FieldError};
use uuid::Uuid;

use crate::query::{self, Common};
use crate::{bundle, FhirState, PublicBase};

/// The search parameters Group's search applies (the CapabilityStatement lists them).
pub const GROUP_PARAMETERS: [&str; 3] = ["_id", "name", "member"];

/// The FHIR Group of a cohort.
pub fn resource(group: &Group) -> Value {
    let mut resource = json!({
        "resourceType": "Group",
        "id": group.id,
        "meta": {
            "versionId": group.version.to_string(),
            "lastUpdated": group.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
        "type": "person",
        "actual": true,
        "name": group.name,
        "quantity": group.quantity,
    });
    match &group.members {
        Some(members) if !members.is_empty() => {
            resource["member"] = json!(members
                .iter()
                .map(|id| json!({ "entity": { "reference": format!("Patient/{id}") } }))
                .collect::<Vec<_>>());
        }
        Some(_) => {}
        // A search's entry: the members are read with the group (FHIR's mark for a resource
        // that leaves elements out).
        None => {
            resource["meta"]["tag"] = json!([{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "Members left out: read the Group for them",
            }]);
        }
    }
    resource
}

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("Group/{raw_id} is not known"))
}

fn group_error(error: GroupError, raw_id: &str) -> ApiError {
    match error {
        GroupError::NotFound => not_found(raw_id),
        GroupError::Stale => ApiError::PreconditionFailed(
            "The group changed since the version If-Match names".into(),
        ),
        GroupError::UnknownMembers(ids) if ids.is_empty() => ApiError::validation(
            &["Group", "member"],
            "A member was deleted meanwhile: not a patient of this server any more",
            "value_error",
        ),
        GroupError::UnknownMembers(ids) => ApiError::validation(
            &["Group", "member"],
            format!(
                "Not patients of this server: {}",
                ids.iter()
                    .map(|id| format!("Patient/{id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "value_error",
        ),
        error @ GroupError::TooManyMembers => {
            ApiError::validation(&["Group", "member"], error.to_string(), "value_error")
        }
        GroupError::Store(store) => store.into(),
    }
}

/// A patient reference: `Patient/<id>`, relative or under this server's base.
fn patient_reference(reference: &str, base: &str) -> Option<Uuid> {
    let relative = reference
        .strip_prefix(base)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(reference);
    Uuid::parse_str(relative.strip_prefix("Patient/")?).ok()
}

/// The group a Group resource describes: a cohort of real people (`type: person`,
/// `actual: true`), a name, members referencing patients (422 naming what is wrong).
fn group_write(resource: &Value, base: &str) -> ApiResult<GroupWrite> {
    let mut problems = Vec::new();
    let mut problem = |element: &str, text: String| {
        problems.push(FieldError::new(&["Group", element], text, "value_error"))
    };
    if resource["type"] != "person" {
        problem("type", "Must be person (cohorts of patients)".into());
    }
    if resource["actual"] != true {
        problem("actual", "Must be true (the members are listed)".into());
    }
    let name = match resource["name"]
        .as_str()
        .map(|n| GroupName::try_from(n.to_owned()))
    {
        Some(Ok(name)) => Some(name),
        Some(Err(reason)) => {
            problem("name", reason);
            None
        }
        None => {
            problem("name", "Field required".into());
            None
        }
    };
    let mut members = Vec::new();
    match &resource["member"] {
        Value::Null => {}
        Value::Array(list) => {
            for (at, member) in list.iter().enumerate() {
                if member.get("inactive") == Some(&Value::Bool(true)) {
                    problem("member", format!("[{at}]: inactive members are not kept"));
                    continue;
                }
                match member["entity"]["reference"]
                    .as_str()
                    .and_then(|r| patient_reference(r, base))
                {
                    Some(id) => members.push(id),
                    None => problem(
                        "member",
                        format!("[{at}].entity.reference must be Patient/<id>"),
                    ),
                }
            }
        }
        _ => problem("member", "Must be a list".into()),
    }
    match name {
        Some(name) if problems.is_empty() => Ok(GroupWrite { name, members }),
        _ => Err(ApiError::Validation(problems)),
    }
}

/// A Group answer: the resource, `ETag: W/"<version>"`, and for a creation `Location`.
fn answer(group: &Group, status: StatusCode, location: Option<&str>) -> Response {
    let mut response = (status, Json(resource(group))).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", group.version)) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(base) = location {
        let url = format!("{base}/Group/{}/_history/{}", group.id, group.version);
        if let Ok(url) = HeaderValue::from_str(&url) {
            headers.insert(header::LOCATION, url);
        }
    }
    response
}

/// Groups list patients: a patient-scoped token sees none of them.
fn every_patient(reach: Reach) -> ApiResult<()> {
    match reach {
        Reach::All => Ok(()),
        Reach::Compartment(_) => Err(ApiError::Forbidden(
            "A patient-scoped token cannot reach groups of patients".into(),
        )),
    }
}

/// `POST /fhir/R4/Group`.
pub async fn create(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    every_patient(caller.permit(ResourceType::Group, Interaction::Create)?)?;
    let base = PublicBase::of(&state.base, &headers, &uri);
    let write = group_write(&crate::resource_body(&headers, &body, "Group")?, &base)?;
    let group = groups::create(&state.db, &write)
        .await
        .map_err(|e| group_error(e, ""))?;
    audit.describe(|event| {
        event
            .resource(Some(group.id))
            .details(json!({ "members": group.quantity }))
    });
    Ok(answer(&group, StatusCode::CREATED, Some(&base)))
}

fn group_id(raw_id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw_id).map_err(|_| not_found(raw_id))
}

/// `GET /fhir/R4/Group/{id}`.
pub async fn read(
    State(state): State<FhirState>,
    caller: FhirCaller,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    every_patient(caller.permit(ResourceType::Group, Interaction::Read)?)?;
    let group = groups::find(&state.db, group_id(&raw_id)?)
        .await?
        .ok_or_else(|| not_found(&raw_id))?;
    Ok(answer(&group, StatusCode::OK, None))
}

/// `PUT /fhir/R4/Group/{id}`: replaces the name and members, with `If-Match` checked (412).
pub async fn update(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    every_patient(caller.permit(ResourceType::Group, Interaction::Update)?)?;
    let resource = crate::resource_body(&headers, &body, "Group")?;
    if resource["id"].as_str() != Some(raw_id.as_str()) {
        return Err(ApiError::BadRequest(
            "The resource's id must be the id in the URL".into(),
        ));
    }
    let base = PublicBase::of(&state.base, &headers, &uri);
    let write = group_write(&resource, &base)?;
    let id = group_id(&raw_id)?;
    let group = groups::update(&state.db, id, &write, required_version(&headers))
        .await
        .map_err(|e| group_error(e, &raw_id))?;
    audit.describe(|event| event.details(json!({ "members": group.quantity })));
    Ok(answer(&group, StatusCode::OK, None))
}

/// `DELETE /fhir/R4/Group/{id}`: the group (its members stay patients).
pub async fn delete(
    State(state): State<FhirState>,
    caller: FhirCaller,
    Path(raw_id): Path<String>,
) -> ApiResult<StatusCode> {
    every_patient(caller.permit(ResourceType::Group, Interaction::Delete)?)?;
    if groups::delete(&state.db, group_id(&raw_id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&raw_id))
    }
}

/// `GET /fhir/R4/Group?name=...&member=Patient/<id>`: newest first, paged by cursor.
pub async fn search(
    State(state): State<FhirState>,
    caller: FhirCaller,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    every_patient(caller.permit(ResourceType::Group, Interaction::Search)?)?;
    let base = PublicBase::of(&state.base, &headers, &uri);
    let params = query::params(raw.as_deref());
    let mut common = Common::new(&GROUP_PARAMETERS);
    let mut filter = GroupFilter::default();
    for param in &params {
        if common.take(param)? {
            continue;
        }
        let value = param.value.trim();
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("_id", None) => {
                let ids = value
                    .split(',')
                    .filter_map(|id| Uuid::parse_str(id.trim()).ok())
                    .collect();
                filter.ids = Some(ids);
            }
            ("name", None) if !value.is_empty() => filter.name_starts.push(value.to_owned()),
            ("name", None) => {}
            ("member", None) => {
                match patient_reference(value, &base).or_else(|| Uuid::parse_str(value).ok()) {
                    Some(id) => filter.members.push(id),
                    None => {
                        return Err(ApiError::BadRequest(format!(
                            "member must be a Patient reference (Patient/<id>), not {value:?}"
                        )))
                    }
                }
            }
            _ => common.unknown(param),
        }
    }
    common.check(&headers)?;
    let keyset = query::keyset(common.cursor.as_deref(), List::Groups)?;
    let page = groups::search(
        &state.db,
        &filter,
        keyset,
        common.count,
        common.total.unwrap_or(Count::Exact),
    )
    .await?;
    let entries = page
        .items
        .iter()
        .map(|g| bundle::entry(&base, resource(g)))
        .collect();
    Ok(Json(bundle::searchset(
        &base,
        "Group",
        &params,
        &common.unknown,
        (page.previous.as_deref(), page.next.as_deref()),
        page.total,
        entries,
    ))
    .into_response())
}
