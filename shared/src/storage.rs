//! S3: the client and presigner (built once per cold start), object checks and deletes, and the
//! deletion queue that makes sure no file outlives its row. Presigning is local computation.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use crate::config::{ConfigError, Env};
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub bucket: String,
    /// S3_ENDPOINT_URL: this client's endpoint, over the SDK's AWS_ENDPOINT_URL_S3.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), which local S3 servers need.
    pub force_path_style: bool,
    pub upload_url_ttl: Duration,
    pub download_url_ttl: Duration,
    /// Largest `size` a client may declare: S3's single-PUT limit by default.
    pub max_upload_bytes: u64,
    /// Lower-case MIME types accepted on upload; empty: any well-formed type.
    pub allowed_mime_types: Vec<String>,
}

pub const S3_SINGLE_PUT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

impl StorageConfig {
    /// S3_BUCKET, S3_ENDPOINT_URL, S3_FORCE_PATH_STYLE, UPLOAD_URL_EXPIRE_SECONDS (900, at most 3600),
    /// DOWNLOAD_URL_EXPIRE_SECONDS (300, at most 3600), MAX_UPLOAD_BYTES (5 GiB), ALLOWED_MIME_TYPES.
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
                S3_SINGLE_PUT_LIMIT,
                1..=S3_SINGLE_PUT_LIMIT,
            )?,
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

    fn presigning(ttl: Duration) -> ApiResult<PresigningConfig> {
        PresigningConfig::expires_in(ttl)
            .map_err(|e| ApiError::internal(format!("presigning config: {e}")))
    }

    /// A PUT URL whose signature covers the Content-Type (and Content-Length when known) and
    /// `If-None-Match: *`: the bucket refuses bytes of another type or size, any change to the
    /// URL, and any PUT once the key holds an object, so a URL can write its key once and never
    /// replace a confirmed file (nor recreate one whose row is gone, see the sweep).
    pub async fn presign_upload(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
    ) -> ApiResult<Presigned> {
        let ttl = self.config.upload_url_ttl;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .if_none_match("*");
        if let Some(size) = size {
            request = request.content_length(size as i64);
        }
        let presigned = request
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(|e| {
                ApiError::internal(format!("presigning an upload: {}", DisplayErrorContext(e)))
            })?;
        // Exactly the headers the signature covers (the SDK also adds a trace header nobody must send).
        let signed = signed_headers(presigned.uri());
        Ok(Presigned {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .filter(|(name, _)| signed.iter().any(|s| s.eq_ignore_ascii_case(name)))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// A GET URL whose response carries the given Content-Type and Content-Disposition.
    pub async fn presign_download(
        &self,
        key: &str,
        content_type: &str,
        disposition: &str,
    ) -> ApiResult<Presigned> {
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
            .map_err(|e| {
                ApiError::internal(format!("presigning a download: {}", DisplayErrorContext(e)))
            })?;
        Ok(Presigned {
            url: presigned.uri().to_owned(),
            headers: Vec::new(),
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// The object under `key`: Ok(None) when there is none; Err when S3 cannot be asked.
    pub async fn head(&self, key: &str) -> Result<Option<StoredObject>, String> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(StoredObject {
                size: head.content_length().unwrap_or(0),
                etag: head.e_tag().map(|e| e.trim_matches('"').to_owned()),
                content_type: head.content_type().map(str::to_owned),
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

/// Deletes objects just queued by a committed change (a deleted attachment or patient), now
/// rather than at the next sweep. Never fails the request: whatever S3 or the database refuses
/// stays queued, and the scheduled sweep retries it.
pub async fn drain_deletions(pool: &DbPool, storage: &Storage, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    if let Err(error) = delete_queued(pool, storage, keys).await {
        tracing::warn!(%error, "queued object deletions left for the sweep");
    }
}

/// The scheduled retry: deletes the oldest `batch` queued objects. Returns (deleted, still queued).
pub async fn drain_queue(
    pool: &DbPool,
    storage: &Storage,
    batch: i64,
) -> ApiResult<(usize, usize)> {
    let keys = pool
        .get()
        .await?
        .query(
            "SELECT object_key FROM object_deletions ORDER BY queued_at LIMIT $1",
            &[&batch],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    delete_queued(pool, storage, keys).await
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
