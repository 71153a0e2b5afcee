//! S3: the client and the presigner, built once per cold start. Presigning is local computation.

use aws_config::SdkConfig;

use crate::config::{ConfigError, Env};

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub bucket: String,
    /// Path-style addressing (`http://host/bucket/key`), which local S3 servers need.
    pub force_path_style: bool,
}

impl StorageConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: env.required("S3_BUCKET")?,
            force_path_style: env.bool_or("S3_FORCE_PATH_STYLE", false)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Storage {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl Storage {
    /// `AWS_ENDPOINT_URL_S3` (standard SDK setting) points the client at a local server.
    pub fn new(sdk_config: &SdkConfig, config: &StorageConfig) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(sdk_config)
            .force_path_style(config.force_path_style)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            bucket: config.bucket.clone(),
        }
    }
}
