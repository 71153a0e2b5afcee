//! AWS Secrets Manager, read at cold start only, never per request.

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::config::{ConfigError, Env};

/// Made on first use, so a function configured with plain environment variables (local
/// development) never loads AWS configuration for it.
#[derive(Default)]
pub struct SecretsClient {
    client: OnceCell<aws_sdk_secretsmanager::Client>,
    /// SECRETS_MANAGER_ENDPOINT_URL: this client's endpoint, over the SDK's
    /// AWS_ENDPOINT_URL_SECRETS_MANAGER (tests point one client at a server that is down).
    endpoint_url: Option<String>,
}

impl SecretsClient {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_env(env: &crate::config::Env) -> Self {
        Self {
            endpoint_url: env.get("SECRETS_MANAGER_ENDPOINT_URL").map(str::to_owned),
            ..Self::default()
        }
    }

    async fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| async {
                // AWS_ENDPOINT_URL_SECRETS_MANAGER points it at the local server in development.
                let sdk_config = crate::aws::sdk_config().await;
                let mut builder = aws_sdk_secretsmanager::config::Builder::from(&sdk_config);
                if let Some(endpoint) = &self.endpoint_url {
                    builder = builder.endpoint_url(endpoint);
                }
                aws_sdk_secretsmanager::Client::from_conf(builder.build())
            })
            .await
    }

    /// Replaces the value of secret `secret_id` with `value` as JSON (the migrate function
    /// filling the token key secrets the stack created empty).
    pub async fn put_json<T: serde::Serialize>(
        &self,
        setting: &'static str,
        secret_id: &str,
        value: &T,
    ) -> Result<(), ConfigError> {
        let text = serde_json::to_string(value).map_err(|e| ConfigError::Secret {
            name: setting,
            reason: e.to_string(),
        })?;
        self.client()
            .await
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(text)
            .send()
            .await
            .map_err(secret_error(setting))?;
        Ok(())
    }

    /// Reads the secret `secret_id` (ARN or name) given by the setting `setting` and parses its JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        setting: &'static str,
        secret_id: &str,
    ) -> Result<T, ConfigError> {
        let started = std::time::Instant::now();
        let output = self
            .client()
            .await
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(secret_error(setting))?;
        crate::logging::record_init_step("secrets", started.elapsed());
        let text = output.secret_string().ok_or(ConfigError::Secret {
            name: setting,
            reason: "the secret has no SecretString".to_owned(),
        })?;
        // serde_json's message names the position and the field, never the secret's text.
        serde_json::from_str(text).map_err(|e| ConfigError::Secret {
            name: setting,
            reason: format!("the secret is not the expected JSON: {e}"),
        })
    }
}

/// The SDK's error of a call about the secret that `setting` names, with its whole cause chain.
fn secret_error<E: std::error::Error>(setting: &'static str) -> impl FnOnce(E) -> ConfigError {
    move |e| ConfigError::Secret {
        name: setting,
        reason: DisplayErrorContext(e).to_string(),
    }
}

/// The application secret: the SMTP credentials (only the functions that send email read it).
/// A `secret_key` left from the HS256 days is ignored.
#[derive(Clone, serde::Deserialize)]
pub struct AppSecret {
    #[serde(default)]
    pub smtp_user: String,
    #[serde(default)]
    pub smtp_password: String,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

impl AppSecret {
    /// From APP_SECRET_ARN (AWS) or SMTP_USER and SMTP_PASSWORD (local).
    pub async fn load(env: &Env, secrets: &SecretsClient) -> Result<Self, ConfigError> {
        match env.get("APP_SECRET_ARN") {
            Some(id) => secrets.json::<AppSecret>("APP_SECRET_ARN", id).await,
            None => Ok(AppSecret {
                smtp_user: env.string_or("SMTP_USER", ""),
                smtp_password: env.string_or("SMTP_PASSWORD", ""),
            }),
        }
    }
}
