//! DocumentReference (read, search) and Binary (read as a redirect, `$presigned-url`): the JSON
//! API's attachments, their bytes still going straight between the client and S3.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::attachments::{
    self, content_disposition, Attachment, AttachmentCreate, AttachmentError, AttachmentField,
    AttachmentFilter, UploadKind, Window,
};
use domain::paging::{Count, List};
use domain::smart::scopes::{Interaction, Reach, ResourceType};
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::query::{self, Common};
use crate::{element_as, FhirState, PublicBase};
pub use fhir_resources::document_reference::{instant, resource};

fn not_found(kind: &str, raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("{kind}/{raw_id} is not known"))
}

/// The attachment `raw_id` names (its pending upload checked against the bucket).
/// The attachment `raw_id`, when the caller reaches its patient: 404 otherwise, as for an id
/// that names nothing.
async fn load(state: &FhirState, kind: &str, raw_id: &str, reach: Reach) -> ApiResult<Attachment> {
    let id = Uuid::parse_str(raw_id).map_err(|_| not_found(kind, raw_id))?;
    attachments::find(&state.db, &state.storage, id)
        .await?
        .filter(|a| crate::within_reach(reach, a.patient_id).is_ok())
        .ok_or_else(|| not_found(kind, raw_id))
}

/// `GET /fhir/R4/DocumentReference/{id}`.
pub async fn read(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let reach = caller.permit(ResourceType::DocumentReference, Interaction::Read)?;
    let attachment = load(&state, "DocumentReference", &raw_id, reach).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    Ok(Json(resource(&attachment, &state.base.of(&headers, &uri))))
}

/// `POST /fhir/R4/DocumentReference`: a pending attachment of `subject` (a Patient), its file
/// `content[0].attachment` (`title` the file name, `contentType`, `size`); 201 with the
/// DocumentReference (docStatus preliminary) and its Location. The bytes go up through
/// `Binary/{id}/$presigned-url?upload=true`, as one PUT of at most 5 GiB (larger files through
/// the JSON API's multipart upload). (Long because each rule of the resource is checked where
/// its element is named, before the one domain call.)
pub async fn create(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::DocumentReference, Interaction::Create)?;
    let document = crate::resource_body(&headers, &body, "DocumentReference")?;
    let rule = |element: &str, text: &str| {
        ApiError::Validation(vec![shared::FieldError::new(
            &["DocumentReference", element],
            text,
            "value_error",
        )])
    };
    if !matches!(document["status"].as_str(), None | Some("current")) {
        return Err(rule("status", "A new DocumentReference is current"));
    }
    let subject = document["subject"]["reference"]
        .as_str()
        .ok_or_else(|| rule("subject", "The subject (a Patient reference) is required"))?;
    let patient_id = patient_reference(subject)
        .ok()
        .filter(|id| !id.is_nil())
        .ok_or_else(|| {
            rule(
                "subject",
                "The subject must reference a Patient of this server",
            )
        })?;
    if crate::within_reach(reach, patient_id).is_err() {
        return Err(ApiError::Forbidden(
            "The token's scopes reach another patient only".into(),
        ));
    }
    let contents = document["content"].as_array().map_or(0, Vec::len);
    if contents != 1 {
        return Err(rule(
            "content",
            "Exactly one content (the file) is required",
        ));
    }
    let file = &document["content"][0]["attachment"];
    if file.get("data").is_some() || file.get("url").is_some() {
        return Err(rule(
            "content",
            "Send the bytes to the upload URL of Binary/{id}/$presigned-url?upload=true, not in the resource",
        ));
    }
    let mut errors = Vec::new();
    let at = |element: &str| format!("content[0].attachment.{element}");
    let file_name = element_as(
        &mut errors,
        "DocumentReference",
        &at("title"),
        file["title"].clone(),
    );
    let mime_type = element_as(
        &mut errors,
        "DocumentReference",
        &at("contentType"),
        file["contentType"].clone(),
    );
    let size = element_as(
        &mut errors,
        "DocumentReference",
        &at("size"),
        file["size"].clone(),
    );
    let (Some(file_name), Some(mime_type), Some(size)) = (file_name, mime_type, size) else {
        return Err(ApiError::Validation(errors));
    };
    let create = AttachmentCreate {
        patient_id,
        file_name,
        mime_type,
        size,
        sha256: None,
        // One PUT: Binary's upload URL (larger files go through the JSON API's multipart).
        upload: Some(UploadKind::Single),
    };
    let created = attachments::create(&state.db, &state.storage, &audit, &create)
        .await
        .map_err(|error| match error {
            AttachmentError::PatientNotFound => rule(
                "subject",
                "The subject must reference a Patient of this server",
            ),
            // Located at the element that carries the field.
            AttachmentError::Refused {
                field,
                message,
                kind,
            } => ApiError::validation(
                &[
                    "DocumentReference",
                    &at(match field {
                        AttachmentField::MimeType => "contentType",
                        AttachmentField::Sha256 => "hash",
                        AttachmentField::Size | AttachmentField::Upload => "size",
                    }),
                ],
                message,
                kind,
            ),
            other => other.into(),
        })?;
    let base = state.base.of(&headers, &uri);
    let id = created.attachment.id;
    let mut response = (
        StatusCode::CREATED,
        Json(resource(&created.attachment, &base)),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{base}/DocumentReference/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `DELETE /fhir/R4/DocumentReference/{id}`: the attachment and its file (204).
pub async fn delete(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<StatusCode> {
    let reach = caller.permit(ResourceType::DocumentReference, Interaction::Delete)?;
    if reach != Reach::All {
        load(&state, "DocumentReference", &raw_id, reach).await?;
    }
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found("DocumentReference", &raw_id))?;
    attachments::delete(&state.db, &state.storage, &audit, id)
        .await?
        .ok_or_else(|| not_found("DocumentReference", &raw_id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A patient reference as FHIR allows it: `id`, `Patient/id` or an absolute URL ending so.
pub(crate) fn patient_reference(raw: &str) -> Result<Uuid, ApiError> {
    let id = raw.trim().rsplit('/').next().unwrap_or("");
    let typed = raw.trim().trim_end_matches(id).trim_end_matches('/');
    if !(typed.is_empty() || typed.ends_with("Patient")) {
        return Err(ApiError::BadRequest(format!(
            "{raw:?} is not a Patient reference"
        )));
    }
    // An id that is no UUID names no patient: no match rather than an error.
    Ok(Uuid::parse_str(id).unwrap_or(Uuid::nil()))
}

/// The attachments a DocumentReference query asks for, in the domain's terms, and the query's
/// common part.
pub(crate) fn filter_of(params: &[query::Param]) -> ApiResult<(AttachmentFilter, Common)> {
    let mut filter = AttachmentFilter::default();
    let mut common = Common::new(&DOCUMENT_PARAMETERS);
    for param in params {
        if common.take(param)? {
            continue;
        }
        let value = param.value.trim();
        match (param.name.as_str(), param.modifier.as_deref()) {
            ("patient" | "subject", None) => {
                let ids = value
                    .split(',')
                    .map(patient_reference)
                    .collect::<Result<Vec<_>, _>>()?;
                // Repeated: AND, so only ids in every list.
                filter.patients = Some(match filter.patients.take() {
                    Some(before) => before.into_iter().filter(|id| ids.contains(id)).collect(),
                    None => ids,
                });
            }
            ("contenttype", None) => {
                let types: Vec<String> = value
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect();
                filter.types = Some(match filter.types.take() {
                    Some(before) => before.into_iter().filter(|t| types.contains(t)).collect(),
                    None => types,
                });
            }
            // A date covers its UTC days, an instant (with its offset) its precision.
            ("date", None) => filter.created.push(
                query::instant_value(value)
                    .map_err(ApiError::BadRequest)?
                    .range(),
            ),
            _ => common.unknown(param),
        }
    }
    Ok((filter, common))
}

/// The search parameters this resource's search applies (the CapabilityStatement lists them).
pub const DOCUMENT_PARAMETERS: [&str; 4] = ["patient", "subject", "contenttype", "date"];

/// `GET /fhir/R4/DocumentReference?...`: by `patient`/`subject`, `contenttype`, `date`,
/// newest first, paged by cursor.
pub async fn search(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::DocumentReference, Interaction::Search)?;
    let params = query::params(raw.as_deref());
    let (mut filter, common) = filter_of(&params)?;
    common.check(&headers)?;
    // A patient-scoped token's search is narrowed to its patient's documents.
    if let Reach::Compartment(patient) = reach {
        filter.patients = Some(match filter.patients.take() {
            Some(asked) => asked.into_iter().filter(|id| *id == patient).collect(),
            None => vec![patient],
        });
    }
    let window = Window::Keyset {
        keyset: query::keyset(common.cursor.as_deref(), List::Documents)?,
        limit: common.count,
    };
    let page = attachments::list(
        &state.db,
        &state.storage,
        &filter,
        window,
        common.total.unwrap_or(Count::Exact),
    )
    .await?;
    let base = PublicBase::of(&state.base, &headers, &uri);
    attachments::describe_listed(&audit, &page.items);
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|a| crate::bundle::entry(&base, resource(a, &base)))
        .collect();
    Ok(Json(crate::bundle::searchset(
        &base,
        "DocumentReference",
        &params,
        &common.unknown,
        (page.previous.as_deref(), page.next.as_deref()),
        page.total,
        entries,
    ))
    .into_response())
}

/// `GET /fhir/R4/Binary/{id}`: 302 to a short-lived download URL (no-store); the bytes never
/// pass through Lambda.
pub async fn read_binary(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Response> {
    let reach = caller.permit(ResourceType::Binary, Interaction::Read)?;
    let attachment = load(&state, "Binary", &raw_id, reach).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    let url = download_url(&state, &attachment).await?;
    let mut response = StatusCode::FOUND.into_response();
    let location = HeaderValue::from_str(&url)
        .map_err(|e| ApiError::internal(format!("presigned URL is not a header value: {e}")))?;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn download_url(state: &FhirState, attachment: &Attachment) -> ApiResult<String> {
    if attachment.is_pending() {
        return Err(ApiError::Conflict(
            "The file has not been uploaded yet".into(),
        ));
    }
    Ok(state
        .storage
        .presign_download(
            &attachment.object_key,
            &attachment.mime_type,
            &content_disposition(&attachment.file_name),
        )
        .await?
        .url)
}

/// `GET /fhir/R4/Binary/{id}/$presigned-url[?upload=true]`: a Parameters resource with the
/// download URL, or (clinicians and superusers, a pending single upload) the upload URL and
/// the headers its signature covers.
pub async fn presigned_url(
    State(state): State<FhirState>,
    caller: FhirCaller,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let upload = query::params(raw.as_deref())
        .iter()
        .any(|p| p.name == "upload" && p.value == "true");
    // The upload URL writes the file of a DocumentReference being created.
    let reach = if upload {
        caller.permit(ResourceType::DocumentReference, Interaction::Create)?
    } else {
        caller.permit(ResourceType::Binary, Interaction::Read)?
    };
    let attachment = load(&state, "Binary", &raw_id, reach).await?;
    audit.describe(|event| {
        event.patient(Some(attachment.patient_id)).details(json!({
            "upload": upload,
        }))
    });
    let mut parameters = Vec::new();
    if upload {
        if !attachment.is_pending() {
            return Err(ApiError::Conflict("The file is already uploaded".into()));
        }
        if attachment.multipart.is_some() {
            return Err(ApiError::Conflict(
                "A multipart upload gets its part URLs from POST /api/v1/attachments/{id}/upload-parts".into(),
            ));
        }
        let declared = attachment
            .declared_sha256
            .clone()
            .map(shared::domain::Sha256Digest::parse)
            .transpose()
            .map_err(ApiError::internal)?;
        let presigned = state
            .storage
            .presign_upload(
                &attachment.object_key,
                &attachment.mime_type,
                attachment.declared_size.map(|s| s as u64),
                declared.as_ref(),
            )
            .await?;
        parameters.push(json!({ "name": "url", "valueUrl": presigned.url }));
        parameters.push(json!({ "name": "method", "valueCode": "PUT" }));
        for (name, value) in presigned.headers {
            parameters.push(json!({ "name": "header", "valueString": format!("{name}: {value}") }));
        }
        parameters.push(json!({
            "name": "expires",
            "valueInstant": instant(presigned.expires_at.into()),
        }));
    } else {
        parameters
            .push(json!({ "name": "url", "valueUrl": download_url(&state, &attachment).await? }));
    }
    let mut response =
        Json(json!({ "resourceType": "Parameters", "parameter": parameters })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
