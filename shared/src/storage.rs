//! S3: the client and presigner (built once per cold start), object checks and deletes, and the
//! deletion queue that makes sure no file outlives its row. Presigning is local computation.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::http::HttpRequest;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, Delete,
    ObjectIdentifier,
};

use crate::config::{ConfigError, Env};
use crate::db::DbPool;
use crate::domain::Sha256Digest;
use crate::error::{ApiError, ApiResult};

/// Why S3 did not do what was asked, by what it means to the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// S3 cannot be reached or failed on its side: the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// S3 refused the request as sent (a multipart upload's parts are not what it holds).
    #[error("{0}")]
    Refused(String),
    /// Anything else (a presigning configuration we made wrong): a bug, logged with its cause.
    #[error("{0}")]
    Failed(String),
}

/// The JSON API's answer to a storage failure.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(cause) => Self::Unavailable(cause),
            StorageError::Refused(detail) => Self::Conflict(detail),
            StorageError::Failed(cause) => Self::Internal(cause),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub bucket: String,
    /// S3_ENDPOINT_URL: this client's endpoint, over the SDK's AWS_ENDPOINT_URL_S3.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), which local S3 servers need.
    pub force_path_style: bool,
    pub upload_url_ttl: Duration,
    pub download_url_ttl: Duration,
    /// Largest `size` a client may declare: S3's largest object (5 TiB) by default.
    pub max_upload_bytes: u64,
    /// A declared `size` above this is uploaded in parts (always above S3's 5 GiB single-PUT
    /// limit, whatever the setting).
    pub multipart_threshold_bytes: u64,
    /// A pending upload this long without activity (created, or part URLs issued) and without
    /// its object is abandoned: the sweep removes its row and aborts its multipart upload.
    pub abandoned_after: Duration,
    /// Lower-case MIME types accepted on upload; empty: any well-formed type.
    pub allowed_mime_types: Vec<String>,
}

pub const S3_SINGLE_PUT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest object, and so the largest multipart upload.
pub const S3_MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// S3's smallest part but the last.
pub const S3_MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

impl StorageConfig {
    /// S3_BUCKET, S3_ENDPOINT_URL, S3_FORCE_PATH_STYLE, UPLOAD_URL_EXPIRE_SECONDS (900, at most 3600),
    /// DOWNLOAD_URL_EXPIRE_SECONDS (300, at most 3600), MAX_UPLOAD_BYTES (5 TiB),
    /// MULTIPART_THRESHOLD_BYTES (64 MiB, 5 MiB to 5 GiB), ABANDONED_UPLOAD_HOURS (24),
    /// ALLOWED_MIME_TYPES.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: env.required("S3_BUCKET")?,
            endpoint_url: env.get("S3_ENDPOINT_URL").map(str::to_owned),
            force_path_style: env.bool_or("S3_FORCE_PATH_STYLE", false)?,
            upload_url_ttl: Duration::from_secs(env.number_in(
                "UPLOAD_URL_EXPIRE_SECONDS",
                900,
                1..=3600,
            )?),
            download_url_ttl: Duration::from_secs(env.number_in(
                "DOWNLOAD_URL_EXPIRE_SECONDS",
                300,
                1..=3600,
            )?),
            max_upload_bytes: env.number_in(
                "MAX_UPLOAD_BYTES",
                S3_MAX_OBJECT_BYTES,
                1..=S3_MAX_OBJECT_BYTES,
            )?,
            multipart_threshold_bytes: env.number_in(
                "MULTIPART_THRESHOLD_BYTES",
                64 * 1024 * 1024,
                S3_MIN_PART_BYTES..=S3_SINGLE_PUT_LIMIT,
            )?,
            abandoned_after: Duration::from_secs(
                3600 * env.number_in("ABANDONED_UPLOAD_HOURS", 24, 2..=24 * 30)?,
            ),
            allowed_mime_types: env
                .string_or("ALLOWED_MIME_TYPES", "")
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Storage {
    pub client: aws_sdk_s3::Client,
    pub config: StorageConfig,
}

/// A presigned request: the URL, and the headers the client must send with it.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: SystemTime,
}

/// A key found by listing the bucket.
#[derive(Debug, Clone)]
pub struct ListedObject {
    pub key: String,
    pub last_modified: SystemTime,
}

/// What S3 holds under a key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub size: i64,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    /// With checksum mode: the whole object's SHA-256, or a multipart object's composite.
    pub checksum_sha256: Option<String>,
}

/// A part S3 holds for an open multipart upload.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPart {
    pub part_number: i32,
    pub size: i64,
    pub etag: Option<String>,
    pub checksum_sha256: Option<String>,
}

impl Presigned {
    /// Exactly the headers the signature covers (the SDK also adds a trace header nobody must send).
    fn of(presigned: &PresignedRequest, ttl: Duration) -> Self {
        let signed = signed_headers(presigned.uri());
        Self {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .filter(|(name, _)| signed.iter().any(|s| s.eq_ignore_ascii_case(name)))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            expires_at: SystemTime::now() + ttl,
        }
    }
}

/// Adds the payload's SHA-256 as `x-amz-content-sha256` to a request being presigned, so the
/// signature covers it: the request must then carry it, and a server that checks the payload
/// against it (MinIO, s3s) refuses other bytes before storing them, as S3 does through
/// `x-amz-checksum-sha256`. The canonical payload stays UNSIGNED-PAYLOAD, as for any presigned URL.
fn sign_payload_digest(request: &mut HttpRequest, hex: Option<&str>) {
    if let Some(hex) = hex {
        request
            .headers_mut()
            .insert("x-amz-content-sha256", hex.to_owned());
    }
}

impl Storage {
    /// `AWS_ENDPOINT_URL_S3` (the SDK's standard setting) points the client at a local server.
    pub fn new(sdk_config: &SdkConfig, config: StorageConfig) -> Self {
        let mut builder =
            aws_sdk_s3::config::Builder::from(sdk_config).force_path_style(config.force_path_style);
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        let s3_config = builder.build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            config,
        }
    }

    fn presigning(ttl: Duration) -> Result<PresigningConfig, StorageError> {
        PresigningConfig::expires_in(ttl)
            .map_err(|e| StorageError::Failed(format!("presigning config: {e}")))
    }

    /// A PUT URL whose signature covers the Content-Type (and Content-Length when known) and
    /// `If-None-Match: *`: the bucket refuses bytes of another type or size, any change to the
    /// URL, and any PUT once the key holds an object, so a URL can write its key once and never
    /// replace a confirmed file (nor recreate one whose row is gone, see the sweep). With a
    /// declared SHA-256 it also covers the checksum (see `sign_payload_digest`).
    pub async fn presign_upload(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        sha256: Option<&Sha256Digest>,
    ) -> Result<Presigned, StorageError> {
        let ttl = self.config.upload_url_ttl;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .if_none_match("*")
            .set_content_length(size.map(|s| s as i64))
            .set_checksum_sha256(sha256.map(Sha256Digest::base64));
        if sha256.is_some() {
            request = request.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let hex = sha256.map(Sha256Digest::hex);
        let presigned = request
            .customize()
            .mutate_request(move |request| sign_payload_digest(request, hex.as_deref()))
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(presign_failed("an upload"))?;
        Ok(Presigned::of(&presigned, ttl))
    }

    /// Starts a multipart upload whose parts carry SHA-256 checksums, combined by S3 into the
    /// object's composite checksum. Returns the upload id.
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_type(ChecksumType::Composite)
            .send()
            .await
            .map_err(|e| {
                StorageError::Unavailable(format!(
                    "Storage is unavailable: {}",
                    DisplayErrorContext(e)
                ))
            })?;
        created.upload_id().map(str::to_owned).ok_or_else(|| {
            StorageError::Failed("S3 answered a multipart upload without its id".into())
        })
    }

    /// A PUT URL for one part: its signature covers the part's exact length and SHA-256 (as
    /// S3's checksum and as the payload hash), so the bucket refuses any other bytes.
    pub async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        length: u64,
        sha256: &Sha256Digest,
    ) -> Result<Presigned, StorageError> {
        let ttl = self.config.upload_url_ttl;
        let hex = sha256.hex();
        let presigned = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(length as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256.base64())
            .customize()
            .mutate_request(move |request| sign_payload_digest(request, Some(&hex)))
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(presign_failed("a part"))?;
        Ok(Presigned::of(&presigned, ttl))
    }

    /// The parts S3 holds for an open upload, in part order; Ok(None) when the upload is gone
    /// (completed or aborted).
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<StoredPart>>, String> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = match self
                .client
                .list_parts()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(SdkError::ServiceError(e))
                    if e.raw().status().as_u16() == 404
                        || e.err().meta().code() == Some("NoSuchUpload") =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(DisplayErrorContext(e).to_string()),
            };
            parts.extend(page.parts().iter().filter_map(|part| {
                Some(StoredPart {
                    part_number: part.part_number()?,
                    size: part.size().unwrap_or(0),
                    etag: part.e_tag().map(str::to_owned),
                    checksum_sha256: part.checksum_sha256().map(str::to_owned),
                })
            }));
            match page.next_part_number_marker() {
                Some(next) if page.is_truncated().unwrap_or(false) => {
                    marker = Some(next.to_owned())
                }
                _ => break,
            }
        }
        parts.sort_by_key(|part| part.part_number);
        Ok(Some(parts))
    }

    /// Completes an upload from exactly `parts` (each with the checksum its URL signed), never
    /// over an existing object. Returns S3's composite checksum when it reports one. A refusal
    /// (a part's checksum or ETag not what S3 holds, a part too small) is a 409.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[StoredPart],
    ) -> Result<Option<String>, StorageError> {
        self.complete(key, upload_id, parts, true).await
    }

    /// Completes an upload of bytes the server made itself (an export's file), replacing what
    /// the key holds: a retried chunk writes the same bytes under the same key.
    pub async fn complete_replacing(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[StoredPart],
    ) -> Result<Option<String>, StorageError> {
        self.complete(key, upload_id, parts, false).await
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[StoredPart],
        only_new: bool,
    ) -> Result<Option<String>, StorageError> {
        let parts = parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(part.part_number)
                    .set_e_tag(part.etag.clone())
                    .set_checksum_sha256(part.checksum_sha256.clone())
                    .build()
            })
            .collect();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .set_if_none_match(only_new.then(|| "*".to_owned()))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| match &e {
                SdkError::ServiceError(service) if service.raw().status().is_client_error() => {
                    StorageError::Refused(format!(
                        "Storage refused to complete the upload: {}",
                        service.err().meta().message().unwrap_or("invalid parts")
                    ))
                }
                _ => StorageError::Unavailable(format!(
                    "completing a multipart upload: {}",
                    DisplayErrorContext(e)
                )),
            })?;
        Ok(completed.checksum_sha256().map(str::to_owned))
    }

    /// Uploads one part of an upload the server writes itself, with its SHA-256 checksum (S3
    /// refuses a part whose bytes do not match it).
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        bytes: Vec<u8>,
    ) -> Result<StoredPart, StorageError> {
        use base64::Engine;
        use sha2::Digest;
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes));
        let size = bytes.len() as i64;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&checksum)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| {
                StorageError::Unavailable(format!("uploading a part: {}", DisplayErrorContext(e)))
            })?;
        Ok(StoredPart {
            part_number,
            size,
            etag: uploaded.e_tag().map(str::to_owned),
            checksum_sha256: Some(uploaded.checksum_sha256().unwrap_or(&checksum).to_owned()),
        })
    }

    /// Deletes every object under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, String> {
        let mut deleted = 0;
        loop {
            // Deleted keys leave the listing: each page starts from the top again.
            let (objects, more) = self.list_page(prefix, None).await?;
            let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
            if let Some((key, why)) = self.delete_objects(&keys).await.into_iter().next() {
                return Err(format!("deleting {key}: {why}"));
            }
            deleted += keys.len();
            if !more || keys.is_empty() {
                return Ok(deleted);
            }
        }
    }

    /// Aborts an upload and frees its parts; an upload already gone counts as aborted.
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), String> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if e.raw().status().as_u16() == 404
                    || e.err().meta().code() == Some("NoSuchUpload") =>
            {
                Ok(())
            }
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    /// A GET URL whose response carries the given Content-Type and Content-Disposition.
    pub async fn presign_download(
        &self,
        key: &str,
        content_type: &str,
        disposition: &str,
    ) -> Result<Presigned, StorageError> {
        let ttl = self.config.download_url_ttl;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .response_content_type(content_type)
            .response_content_disposition(disposition)
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(presign_failed("a download"))?;
        Ok(Presigned::of(&presigned, ttl))
    }

    /// The object under `key`: Ok(None) when there is none; Err when S3 cannot be asked.
    pub async fn head(&self, key: &str) -> Result<Option<StoredObject>, String> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(head) => Ok(Some(StoredObject {
                size: head.content_length().unwrap_or(0),
                etag: head.e_tag().map(|e| e.trim_matches('"').to_owned()),
                content_type: head.content_type().map(str::to_owned),
                checksum_sha256: head.checksum_sha256().map(str::to_owned),
            })),
            Err(SdkError::ServiceError(e))
                if e.err().is_not_found() || e.raw().status().as_u16() == 404 =>
            {
                Ok(None)
            }
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    /// One page (at most 1,000) of the keys under `prefix` after `start_after`, in key order,
    /// with when each was written; the last page answers `more: false`.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<(Vec<ListedObject>, bool), String> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|object| {
                Some(ListedObject {
                    key: object.key()?.to_owned(),
                    last_modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or_else(SystemTime::now),
                })
            })
            .collect();
        Ok((objects, page.is_truncated().unwrap_or(false)))
    }

    /// Deletes `keys` (a missing object counts as deleted). Returns the keys that failed, with why.
    pub async fn delete_objects(&self, keys: &[String]) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        // DeleteObjects takes at most 1,000 keys.
        for chunk in keys.chunks(1000) {
            let objects: Result<Vec<_>, _> = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect();
            let delete = objects.and_then(|objects| {
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
            });
            let delete = match delete {
                Ok(delete) => delete,
                Err(e) => {
                    failed.extend(chunk.iter().map(|k| (k.clone(), e.to_string())));
                    continue;
                }
            };
            match self
                .client
                .delete_objects()
                .bucket(&self.config.bucket)
                .delete(delete)
                .send()
                .await
            {
                Ok(output) => failed.extend(output.errors().iter().map(|e| {
                    (
                        e.key().unwrap_or_default().to_owned(),
                        e.message().unwrap_or("delete failed").to_owned(),
                    )
                })),
                Err(e) => {
                    let why = DisplayErrorContext(e).to_string();
                    failed.extend(chunk.iter().map(|k| (k.clone(), why.clone())));
                }
            }
        }
        failed
    }
}

/// A presigning failure (local: a bad configuration, never the client's input) as a 500.
fn presign_failed<E, R>(what: &'static str) -> impl FnOnce(SdkError<E, R>) -> StorageError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |e| StorageError::Failed(format!("presigning {what}: {}", DisplayErrorContext(e)))
}

/// `queued AS (...)`: a CTE queueing for deletion the objects whose keys the query `keys`
/// selects (one text column), in the statement that removes or rejects them; it returns the
/// keys queued as `object_key`. The one statement that writes the deletion queue.
pub fn queue_deletions_cte(keys: &str) -> String {
    format!(
        "queued AS (
            INSERT INTO object_deletions (object_key) {keys}
            ON CONFLICT (object_key) DO UPDATE SET queued_at = now()
            RETURNING object_key
         )"
    )
}

/// The header names listed in a presigned URL's `X-Amz-SignedHeaders`, but `host`.
fn signed_headers(url: &str) -> Vec<String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
        .map(|list| {
            percent_encoding::percent_decode_str(list)
                .decode_utf8_lossy()
                .split(';')
                .filter(|h| *h != "host")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes objects just queued by a committed change (a deleted attachment or patient), and
/// aborts the open multipart uploads queued under the same keys, now rather than at the next
/// sweep. Never fails the request: whatever S3 or the database refuses stays queued, and the
/// scheduled sweep retries it.
pub async fn drain_deletions(pool: &DbPool, storage: &Storage, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let aborts = async {
        let queued = pool
            .get()
            .await?
            .query(
                "SELECT upload_id, object_key FROM multipart_aborts WHERE object_key = ANY($1)",
                &[&keys],
            )
            .await?;
        abort_queued(pool, storage, &queued).await
    };
    if let Err(error) = aborts.await {
        tracing::warn!(%error, "queued multipart aborts left for the sweep");
    }
    if let Err(error) = delete_queued(pool, storage, keys).await {
        tracing::warn!(%error, "queued object deletions left for the sweep");
    }
}

/// The scheduled retry: aborts the oldest `batch` queued multipart uploads and deletes the
/// oldest `batch` queued objects. Returns (done, still queued).
pub async fn drain_queue(
    pool: &DbPool,
    storage: &Storage,
    batch: i64,
) -> ApiResult<(usize, usize)> {
    let client = pool.get().await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&batch];
    let (aborts, keys) = tokio::try_join!(
        client.query(
            "SELECT upload_id, object_key FROM multipart_aborts ORDER BY queued_at LIMIT $1",
            &params,
        ),
        client.query(
            "SELECT object_key FROM object_deletions ORDER BY queued_at LIMIT $1",
            &params,
        ),
    )?;
    drop(client);
    let (aborted, not_aborted) = abort_queued(pool, storage, &aborts).await?;
    let keys = keys.iter().map(|row| row.get(0)).collect();
    let (deleted, not_deleted) = delete_queued(pool, storage, keys).await?;
    Ok((aborted + deleted, not_aborted + not_deleted))
}

/// Aborts queued multipart uploads (rows of upload_id, object_key) and clears those S3
/// confirmed; failures stay queued with the reason. Returns (aborted, still queued).
async fn abort_queued(
    pool: &DbPool,
    storage: &Storage,
    queued: &[tokio_postgres::Row],
) -> ApiResult<(usize, usize)> {
    let (mut aborted, mut failed) = (Vec::new(), 0);
    for row in queued {
        let (upload_id, key): (String, String) = (row.get(0), row.get(1));
        match storage.abort_multipart_upload(&key, &upload_id).await {
            Ok(()) => aborted.push(upload_id),
            Err(why) => {
                failed += 1;
                tracing::warn!(error = %why, "multipart abort failed; kept in the queue for the next sweep");
                pool.get()
                    .await?
                    .execute(
                        "UPDATE multipart_aborts SET attempts = attempts + 1, last_error = $2 WHERE upload_id = $1",
                        &[&upload_id, &why.chars().take(500).collect::<String>()],
                    )
                    .await?;
            }
        }
    }
    if !aborted.is_empty() {
        pool.get()
            .await?
            .execute(
                "DELETE FROM multipart_aborts WHERE upload_id = ANY($1)",
                &[&aborted],
            )
            .await?;
    }
    Ok((aborted.len(), failed))
}

/// Deletes queued `keys` from S3 and clears them from `object_deletions`; keys whose deletion
/// failed stay queued with the reason. Returns (deleted, still queued).
async fn delete_queued(
    pool: &DbPool,
    storage: &Storage,
    keys: Vec<String>,
) -> ApiResult<(usize, usize)> {
    if keys.is_empty() {
        return Ok((0, 0));
    }
    let failed = storage.delete_objects(&keys).await;
    let failed_keys: Vec<&String> = failed.iter().map(|(k, _)| k).collect();
    let deleted: Vec<&String> = keys.iter().filter(|k| !failed_keys.contains(k)).collect();
    let client = pool.get().await?;
    if !deleted.is_empty() {
        client
            .execute(
                "DELETE FROM object_deletions WHERE object_key = ANY($1)",
                &[&deleted],
            )
            .await?;
    }
    for (key, why) in &failed {
        tracing::warn!(error = %why, "object deletion failed; kept in the queue for the next sweep");
        client
            .execute(
                "UPDATE object_deletions SET attempts = attempts + 1, last_error = $2 WHERE object_key = $1",
                &[key, &why.chars().take(500).collect::<String>()],
            )
            .await?;
    }
    Ok((deleted.len(), failed.len()))
}
