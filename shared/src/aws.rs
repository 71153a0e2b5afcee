//! The AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};

/// Region, credentials and endpoint overrides (`AWS_ENDPOINT_URL_S3`,
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`) from the standard AWS environment.
/// Credentials are resolved lazily, on the first signed call.
pub async fn sdk_config() -> SdkConfig {
    let started = std::time::Instant::now();
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    crate::logging::record_init_step("aws_sdk", started.elapsed());
    config
}
