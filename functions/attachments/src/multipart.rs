//! Multipart uploads (files above S3's 5 GiB single-PUT limit, up to 5 TiB): part URLs signed
//! for each part's length and SHA-256, the parts S3 holds (to resume), and completion from
//! them, checked before S3 is asked to complete.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::attachments::{self, headers_json, uploads, Attachment, MultipartUpload};
use domain::users::User;
use edge::auth::{Authorized, Writer};
use edge::http::JsonBody;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::domain::{Sha256Digest, WholeNumber};
use shared::storage::StoredPart;
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};

use crate::{load, AttachmentsState};

/// Part URLs one request may ask for: a page of work for a client, a bounded response.
pub const MAX_PART_URLS_PER_REQUEST: usize = 100;

/// The attachment's open multipart upload, or why there is none.
fn open_upload(attachment: &Attachment) -> ApiResult<&MultipartUpload> {
    match &attachment.multipart {
        Some(upload) if attachment.is_pending() => Ok(upload),
        Some(_) => Err(ApiError::Conflict(
            "Attachment upload is already complete".into(),
        )),
        None => Err(ApiError::Conflict(
            "Attachment is not a multipart upload".into(),
        )),
    }
}

#[derive(Deserialize)]
pub struct PartUrlsRequest {
    part_numbers: Vec<WholeNumber>,
    /// Base64 SHA-256 of each part, in the order of `part_numbers`.
    sha256: Vec<Sha256Digest>,
}

#[derive(Serialize)]
pub struct PartUrl {
    part_number: i32,
    url: String,
    method: &'static str,
    /// Send exactly these with the part (the signature covers them).
    headers: serde_json::Map<String, serde_json::Value>,
    size: u64,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct PartUrls {
    parts: Vec<PartUrl>,
}

/// The (number, digest) pairs of a request, validated against the upload's plan.
fn requested_parts(
    request: PartUrlsRequest,
    upload: &MultipartUpload,
) -> ApiResult<Vec<(i32, Sha256Digest)>> {
    let count = request.part_numbers.len();
    if count == 0 || count > MAX_PART_URLS_PER_REQUEST {
        return Err(ApiError::validation(
            &["body", "part_numbers"],
            format!("Between 1 and {MAX_PART_URLS_PER_REQUEST} part numbers per request"),
            "value_error",
        ));
    }
    if request.sha256.len() != count {
        return Err(ApiError::validation(
            &["body", "sha256"],
            "One SHA-256 per part number, in the same order",
            "value_error",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, &WholeNumber(number)) in request.part_numbers.iter().enumerate() {
        if !upload.plan.has_part(number) {
            return Err(ApiError::validation(
                &["body", "part_numbers", &index.to_string()],
                format!(
                    "Part numbers of this upload run from 1 to {}",
                    upload.plan.part_count
                ),
                "value_error",
            ));
        }
        if !seen.insert(number) {
            return Err(ApiError::validation(
                &["body", "part_numbers", &index.to_string()],
                "Each part number once per request",
                "value_error",
            ));
        }
    }
    // In the plan, so within 1..=10,000.
    Ok(request
        .part_numbers
        .into_iter()
        .map(|WholeNumber(n)| n as i32)
        .zip(request.sha256)
        .collect())
}

/// `POST /attachments/{id}/upload-parts`: a short-lived URL per part, each signed for the
/// part's exact length and SHA-256, so S3 refuses any other bytes. The digests are recorded
/// (the object's composite checksum is computed from them) and the upload's activity moves on,
/// so an upload of any duration stays alive while its client works. (Long because recording the
/// digests and signing must happen in this order, in one request: a URL is never handed out for
/// a digest that was not recorded.)
pub async fn issue_part_urls(
    State(state): State<AttachmentsState>,
    Authorized { user, .. }: Writer,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    JsonBody(request): JsonBody<PartUrlsRequest>,
) -> ApiResult<Json<PartUrls>> {
    let attachment = load(&state, &raw_id).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    let upload = open_upload(&attachment)?;
    let parts = requested_parts(request, upload)?;
    may_sign_parts(&state, &attachment, upload, &user, &parts).await?;
    let mut urls = Vec::with_capacity(parts.len());
    for (number, digest) in &parts {
        let size = upload.plan.part_len(*number as u32);
        let presigned = state
            .storage
            .presign_part(
                &attachment.object_key,
                &upload.upload_id,
                *number,
                size,
                digest,
            )
            .await?;
        urls.push(PartUrl {
            part_number: *number,
            url: presigned.url,
            method: "PUT",
            headers: headers_json(presigned.headers),
            size,
            expires_at: presigned.expires_at.into(),
        });
    }
    audit.describe(|event| {
        event.details(json!({ "part_numbers": parts.iter().map(|(n, _)| n).collect::<Vec<_>>() }))
    });
    // Recorded only while the upload is open: a part URL for a completed or deleted upload
    // is refused, not signed into the void.
    if !uploads::record_signed_parts(&state.db, &audit, attachment.id, &parts).await? {
        return Err(ApiError::Conflict(
            "Attachment upload is no longer open".into(),
        ));
    }
    Ok(Json(PartUrls { parts: urls }))
}

/// Part URLs are signed only for the user who opened the upload, or a superuser (an upload
/// from before owners were recorded: any writer); and a part S3 already holds is never signed
/// again for another digest, so nobody replaces its bytes. 403 or 409 otherwise.
async fn may_sign_parts(
    state: &AttachmentsState,
    attachment: &Attachment,
    upload: &MultipartUpload,
    user: &User,
    parts: &[(i32, Sha256Digest)],
) -> ApiResult<()> {
    let (owner, recorded) = uploads::signing_state(&state.db, attachment.id).await?;
    if owner.is_some_and(|owner| owner != user.id) && !user.is_superuser {
        return Err(ApiError::Forbidden(
            "Only the user who opened this upload, or a superuser, may upload its parts".into(),
        ));
    }
    let redigested: Vec<i32> = parts
        .iter()
        .filter(|(n, digest)| recorded.get(n).is_some_and(|d| *d != digest.base64()))
        .map(|(n, _)| *n)
        .collect();
    if redigested.is_empty() {
        return Ok(());
    }
    // Only then ask S3 which parts it holds: a part never sent may be signed for new bytes.
    let stored = stored_parts(state, attachment, upload)
        .await?
        .ok_or_else(|| ApiError::Conflict("Attachment upload is no longer open".into()))?;
    match redigested
        .iter()
        .find(|n| stored.iter().any(|part| part.part_number == **n))
    {
        Some(n) => Err(ApiError::Conflict(format!(
            "Part {n} is stored with the bytes of the SHA-256 it was signed for; it cannot be signed for another"
        ))),
        None => Ok(()),
    }
}

#[derive(Serialize)]
pub struct ListedPart {
    part_number: i32,
    size: i64,
    etag: Option<String>,
    /// As S3 reports it, else the digest the part's URL was signed for (S3 refused any other
    /// bytes).
    checksum_sha256: Option<String>,
}

#[derive(Serialize)]
pub struct UploadProgress {
    size: u64,
    part_size: u64,
    part_count: u32,
    uploaded_bytes: i64,
    parts: Vec<ListedPart>,
    /// What remains to send, in order.
    missing_part_numbers: Vec<u32>,
}

/// The parts S3 holds; a 409 when the upload is no longer open.
async fn stored_parts(
    state: &AttachmentsState,
    attachment: &Attachment,
    upload: &MultipartUpload,
) -> ApiResult<Option<Vec<StoredPart>>> {
    state
        .storage
        .list_parts(&attachment.object_key, &upload.upload_id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("listing parts: {e}")))
}

/// `GET /attachments/{id}/upload-parts`: what S3 already holds, so a client resumes after a
/// crash, a reload or on another machine by sending only the missing parts.
pub async fn list_upload_parts(
    State(state): State<AttachmentsState>,
    _writer: Writer,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<UploadProgress>> {
    let attachment = load(&state, &raw_id).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    let upload = open_upload(&attachment)?;
    let (stored, signed) = tokio::try_join!(stored_parts(&state, &attachment, upload), async {
        uploads::signed_digests(&state.db, attachment.id)
            .await
            .map_err(ApiError::from)
    },)?;
    let stored =
        stored.ok_or_else(|| ApiError::Conflict("Attachment upload is no longer open".into()))?;
    let held: std::collections::HashSet<i32> = stored.iter().map(|p| p.part_number).collect();
    Ok(Json(UploadProgress {
        size: upload.plan.size,
        part_size: upload.plan.part_size,
        part_count: upload.plan.part_count,
        uploaded_bytes: stored.iter().map(|p| p.size).sum(),
        missing_part_numbers: (1..=upload.plan.part_count)
            .filter(|n| !held.contains(&(*n as i32)))
            .collect(),
        parts: stored
            .into_iter()
            .map(|part| ListedPart {
                checksum_sha256: part
                    .checksum_sha256
                    .or_else(|| signed.get(&part.part_number).cloned()),
                part_number: part.part_number,
                size: part.size,
                etag: part.etag,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct ClientPart {
    part_number: WholeNumber,
    #[serde(default)]
    etag: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct CompleteRequest {
    /// The parts as the client saw them; if sent, they must be the parts S3 holds.
    #[serde(default)]
    parts: Option<Vec<ClientPart>>,
}

/// Part numbers for a message: the first 20, then how many more.
fn part_list(numbers: &[u32]) -> String {
    let shown: Vec<String> = numbers.iter().take(20).map(u32::to_string).collect();
    match numbers.len().saturating_sub(20) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// The parts to complete with, each with the checksum its URL signed; a 409 naming what is
/// missing or wrong otherwise, before S3 is asked (S3-compatible servers may destroy an upload
/// whose completion names a missing part).
fn parts_to_complete(
    upload: &MultipartUpload,
    stored: Vec<StoredPart>,
    signed: &HashMap<i32, String>,
    client: Option<&[ClientPart]>,
) -> ApiResult<Vec<StoredPart>> {
    let plan = upload.plan;
    let by_number: HashMap<i32, &StoredPart> = stored.iter().map(|p| (p.part_number, p)).collect();
    let missing: Vec<u32> = (1..=plan.part_count)
        .filter(|n| !by_number.contains_key(&(*n as i32)))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Conflict(format!(
            "Upload incomplete: parts {} have not arrived",
            part_list(&missing)
        )));
    }
    let wrong_size: Vec<u32> = (1..=plan.part_count)
        .filter(|n| by_number[&(*n as i32)].size as u64 != plan.part_len(*n))
        .collect();
    if !wrong_size.is_empty() {
        return Err(ApiError::Conflict(format!(
            "Parts {} are not the planned size; send them again",
            part_list(&wrong_size)
        )));
    }
    if let Some(client) = client {
        let agrees = client.len() == plan.part_count as usize
            && client.iter().enumerate().all(|(i, part)| {
                part.part_number.0 == i as i64 + 1
                    && match (&part.etag, &by_number[&(i as i32 + 1)].etag) {
                        (Some(theirs), Some(ours)) => {
                            theirs.trim_matches('"') == ours.trim_matches('"')
                        }
                        _ => true,
                    }
            });
        if !agrees {
            return Err(ApiError::Conflict(
                "The parts sent are not the parts the upload holds; list them with GET upload-parts"
                    .into(),
            ));
        }
    }
    let mut parts = Vec::with_capacity(plan.part_count as usize);
    let mut resend = Vec::new();
    for number in 1..=plan.part_count {
        let stored = by_number[&(number as i32)];
        let signed = signed.get(&(number as i32));
        // A part S3 reports with another checksum than its latest URL was signed for was sent
        // through an older URL: the client meant other bytes.
        match (signed, &stored.checksum_sha256) {
            (Some(signed), Some(held)) if signed != held => resend.push(number),
            (None, _) => resend.push(number),
            (Some(signed), _) => parts.push(StoredPart {
                checksum_sha256: Some(signed.clone()),
                ..stored.clone()
            }),
        }
    }
    if !resend.is_empty() {
        return Err(ApiError::Conflict(format!(
            "Parts {} do not hold the bytes their latest URLs were signed for; send them again",
            part_list(&resend)
        )));
    }
    Ok(parts)
}

/// `POST /attachments/{id}/complete`: completes the upload from the parts S3 holds (checked
/// against the plan and the signed digests first) and marks the attachment uploaded with its
/// size and composite SHA-256. Safe to retry: an upload S3 already completed is confirmed.
pub async fn complete_upload(
    State(state): State<AttachmentsState>,
    _writer: Writer,
    audit: AuditEntry,
    Path(raw_id): Path<String>,
    body: Option<JsonBody<CompleteRequest>>,
) -> ApiResult<Json<Attachment>> {
    let attachment = load(&state, &raw_id).await?;
    audit.describe(|event| event.patient(Some(attachment.patient_id)));
    if attachment.multipart.is_some() && !attachment.is_pending() {
        // A retry after success.
        return Ok(Json(attachment));
    }
    let upload = open_upload(&attachment)?;
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let (stored, signed) = tokio::try_join!(stored_parts(&state, &attachment, upload), async {
        uploads::signed_digests(&state.db, attachment.id)
            .await
            .map_err(ApiError::from)
    },)?;
    let s3_checksum = match stored {
        // S3 knows no such upload, or (s3s) lists none: completed by an earlier try whose
        // confirmation was lost, or gone.
        None => None,
        Some(parts) if parts.is_empty() => None,
        Some(parts) => {
            let parts = parts_to_complete(upload, parts, &signed, request.parts.as_deref())?;
            Some(
                state
                    .storage
                    .complete_multipart_upload(&attachment.object_key, &upload.upload_id, &parts)
                    .await?,
            )
        }
    };
    let Some(mut object) = state
        .storage
        .head(&attachment.object_key)
        .await
        .map_err(|e| ApiError::Unavailable(format!("checking a completed upload: {e}")))?
    else {
        return Err(match s3_checksum {
            Some(_) => ApiError::Unavailable("the completed object is not visible yet".into()),
            None => ApiError::Conflict(format!(
                "Upload incomplete: parts {} have not arrived",
                part_list(&(1..=upload.plan.part_count).collect::<Vec<_>>())
            )),
        });
    };
    if object.checksum_sha256.is_none() {
        object.checksum_sha256 = s3_checksum.flatten();
    }
    match attachments::confirm(&state.db, &state.storage, &attachment, &object).await? {
        Some(confirmed) => Ok(Json(confirmed)),
        // Confirmed meanwhile (the S3 notification won the race).
        None => Ok(Json(load(&state, &raw_id).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::attachments::PartPlan;

    fn upload(size: u64) -> MultipartUpload {
        MultipartUpload {
            upload_id: "u".into(),
            plan: PartPlan::for_size(size),
        }
    }

    fn part(number: i32, size: i64, checksum: Option<&str>) -> StoredPart {
        StoredPart {
            part_number: number,
            size,
            etag: Some(format!("e{number}")),
            checksum_sha256: checksum.map(str::to_owned),
        }
    }

    #[test]
    fn plans_parts_within_s3_limits() {
        let mib = 1024 * 1024;
        assert_eq!(PartPlan::for_size(0).part_count, 1);
        assert_eq!(PartPlan::for_size(20 * mib).part_size, 8 * mib);
        assert_eq!(PartPlan::for_size(20 * mib).part_count, 3);
        assert_eq!(PartPlan::for_size(20 * mib).part_len(3), 4 * mib);
        let largest = PartPlan::for_size(shared::storage::S3_MAX_OBJECT_BYTES);
        assert!(largest.part_count <= 10_000);
        assert_eq!(largest.part_size % mib, 0);
        assert!(largest.part_size <= 5 * 1024 * mib);
    }

    #[test]
    fn completion_names_missing_and_resent_parts() {
        let upload = upload(20 * 1024 * 1024);
        let signed: HashMap<i32, String> =
            [(1, "a".into()), (2, "b".into()), (3, "c".into())].into();
        let eight = 8 * 1024 * 1024;
        let missing = parts_to_complete(&upload, vec![part(1, eight, None)], &signed, None);
        assert!(
            matches!(missing, Err(ApiError::Conflict(m)) if m.contains("parts 2, 3 have not arrived"))
        );
        let stale = parts_to_complete(
            &upload,
            vec![
                part(1, eight, Some("a")),
                part(2, eight, Some("old")),
                part(3, 4 * 1024 * 1024, None),
            ],
            &signed,
            None,
        );
        assert!(matches!(stale, Err(ApiError::Conflict(m)) if m.contains("Parts 2 ")));
        let complete = parts_to_complete(
            &upload,
            vec![
                part(1, eight, None),
                part(2, eight, None),
                part(3, 4 * 1024 * 1024, None),
            ],
            &signed,
            None,
        )
        .unwrap();
        assert_eq!(complete[2].checksum_sha256.as_deref(), Some("c"));
    }
}
