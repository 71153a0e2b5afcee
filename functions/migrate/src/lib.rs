//! Applies the embedded migrations and makes sure the first superuser exists. Idempotent: a
//! second run changes nothing. Runs as a CloudFormation custom resource on every deploy, as a
//! directly invoked Lambda, and locally from scripts/dev and scripts/test.

use serde::Serialize;
use shared::config::{ConfigError, DatabaseConfig, Env, Environment};
use shared::domain::{EmailAddress, Password};
use shared::secrets::SecretsClient;

pub mod custom_resource;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Serialises concurrent runs (two deploys, parallel test set-up) on one database.
const MIGRATION_LOCK_KEY: i64 = 0x4341_5245_5641_554c; // "CAREVAUL"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

pub struct MigrateConfig {
    pub database: DatabaseConfig,
    /// AUDIT_RETENTION_DAYS: audit events older than this are purged by the scheduled run
    /// (default 2,190 days: HIPAA's six years of documentation retention).
    pub audit_retention_days: i32,
    pub first_superuser: EmailAddress,
    pub first_superuser_password: Password,
    /// The API functions' database login (DATABASE_APP_SECRET_ARN, RDS JSON format): made a
    /// member of `carevault_app` so it holds only the application's grants. None locally.
    pub app_login: Option<AppLogin>,
    /// Each function group's own database login (DATABASE_FUNCTION_SECRET_ARNS: a JSON object
    /// from group to the ARN of a secret in RDS JSON format), made a member of that group's role
    /// (`carevault_<group>`, V16) so it holds only what the group's statements need. Empty
    /// locally unless given.
    pub function_logins: Vec<FunctionLogin>,
    /// DB_STATEMENT_TIMEOUT_MS (default 5,000): set on the application login, so no request
    /// keeps a query running after its function gave up.
    pub app_statement_timeout_ms: u64,
    /// TOKEN_SIGNING_SECRET_ARN and TOKEN_PUBLIC_KEYS_SECRET_ARN: the token key secrets this
    /// function fills (a new key pair when the signing secret holds none) and rotates.
    pub token_keys: Option<TokenKeySecrets>,
}

pub struct TokenKeySecrets {
    pub secrets: std::sync::Arc<SecretsClient>,
    pub signing_secret_id: String,
    pub public_secret_id: String,
}

/// What to do with the token keys besides making sure they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    None,
    /// A new key signs from now on; the previous ones stay published.
    Rotate,
    /// Only the active key stays (once what the others signed has expired).
    RetireInactive,
}

#[derive(serde::Deserialize)]
pub struct AppLogin {
    pub username: String,
    pub password: String,
}

/// The function groups that have a database role of their own (V16): `carevault_<group>`.
pub const FUNCTION_GROUPS: [&str; 9] = [
    "utils",
    "auth",
    "users",
    "patients",
    "attachments",
    "attachment_events",
    "audit",
    "fhir",
    "bulk_export",
];

/// One function group's login: made a member of the group's role and nothing else.
pub struct FunctionLogin {
    /// One of [`FUNCTION_GROUPS`].
    pub group: &'static str,
    pub login: AppLogin,
}

impl FunctionLogin {
    /// The role that holds the group's grants.
    pub fn role(&self) -> String {
        format!("carevault_{}", self.group)
    }
}

/// DATABASE_FUNCTION_SECRET_ARNS: `{"<group>": "<secret ARN>", ...}`, each group one of
/// [`FUNCTION_GROUPS`]; each secret read as the group's login.
async fn function_logins(
    env: &Env,
    secrets: &SecretsClient,
) -> Result<Vec<FunctionLogin>, ConfigError> {
    const NAME: &str = "DATABASE_FUNCTION_SECRET_ARNS";
    let Some(raw) = env.get(NAME) else {
        return Ok(Vec::new());
    };
    let arns: std::collections::BTreeMap<String, String> =
        serde_json::from_str(raw).map_err(|e| ConfigError::Invalid {
            name: NAME,
            reason: format!("not a JSON object of group to secret ARN: {e}"),
        })?;
    let mut logins = Vec::new();
    for (group, arn) in arns {
        let group = FUNCTION_GROUPS
            .into_iter()
            .find(|known| *known == group)
            .ok_or_else(|| ConfigError::Invalid {
                name: NAME,
                reason: format!("{group:?} is not a function group ({FUNCTION_GROUPS:?})"),
            })?;
        logins.push(FunctionLogin {
            group,
            login: secrets.json(NAME, &arn).await?,
        });
    }
    Ok(logins)
}

impl MigrateConfig {
    /// The schema owner's credentials come from DATABASE_OWNER_SECRET_ARN (AWS) or DATABASE_URL (local).
    pub async fn from_env(env: &Env, secrets: &SecretsClient) -> Result<Self, ConfigError> {
        let environment = Environment::from_env(env)?;
        let database = DatabaseConfig::load(
            env,
            secrets,
            "DATABASE_OWNER_SECRET_ARN",
            "carevault-migrate",
        )
        .await?;
        let first_superuser = EmailAddress::parse(
            env.string_or("FIRST_SUPERUSER", "admin@example.com"),
        )
        .map_err(|reason| ConfigError::Invalid {
            name: "FIRST_SUPERUSER",
            reason,
        })?;
        let raw_password = match env.get("FIRST_SUPERUSER_PASSWORD_SECRET_ARN") {
            Some(secret_id) => {
                #[derive(serde::Deserialize)]
                struct PasswordSecret {
                    password: String,
                }
                let secret: PasswordSecret = secrets
                    .json("FIRST_SUPERUSER_PASSWORD_SECRET_ARN", secret_id)
                    .await?;
                secret.password
            }
            None => env.string_or("FIRST_SUPERUSER_PASSWORD", shared::config::DEFAULT_SECRET),
        };
        environment.check_not_default("FIRST_SUPERUSER_PASSWORD", &raw_password)?;
        let first_superuser_password =
            Password::parse(raw_password).map_err(|reason| ConfigError::Invalid {
                name: "FIRST_SUPERUSER_PASSWORD",
                reason,
            })?;
        let app_login = match env.get("DATABASE_APP_SECRET_ARN") {
            Some(secret_id) => Some(secrets.json("DATABASE_APP_SECRET_ARN", secret_id).await?),
            None => None,
        };
        let function_logins = function_logins(env, secrets).await?;
        let token_keys = match (
            env.get("TOKEN_SIGNING_SECRET_ARN"),
            env.get("TOKEN_PUBLIC_KEYS_SECRET_ARN"),
        ) {
            (Some(signing), Some(public)) => Some(TokenKeySecrets {
                secrets: std::sync::Arc::new(SecretsClient::from_env(env)),
                signing_secret_id: signing.to_owned(),
                public_secret_id: public.to_owned(),
            }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: "TOKEN_SIGNING_SECRET_ARN",
                })
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: "TOKEN_PUBLIC_KEYS_SECRET_ARN",
                })
            }
        };
        Ok(Self {
            database,
            app_login,
            function_logins,
            app_statement_timeout_ms: env.number_in(
                "DB_STATEMENT_TIMEOUT_MS",
                5_000,
                100..=300_000,
            )?,
            token_keys,
            audit_retention_days: env.number_in("AUDIT_RETENTION_DAYS", 2_190, 365..=36_500)?,
            first_superuser,
            first_superuser_password,
        })
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Migrations applied by this run, as `V1__core_schema`.
    pub applied: Vec<String>,
    pub superuser_created: bool,
    /// The token keys: `created`, `rotated`, `retired`, `published` (public keys brought in
    /// line with the private ones), `unchanged`; absent where no key secrets are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_keys: Option<&'static str>,
}

/// Makes sure the signing secret holds a usable key set and the public secret its public
/// halves; applies `change` first.
pub async fn manage_token_keys(
    keys: &TokenKeySecrets,
    change: KeyChange,
) -> Result<&'static str, MigrateError> {
    let secrets = &keys.secrets;
    // A secret the stack created holds `{}`: no key yet.
    let mut signing: shared::tokens::SigningKeys = secrets
        .json("TOKEN_SIGNING_SECRET_ARN", &keys.signing_secret_id)
        .await?;
    let kid = || format!("k{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let mut outcome = "unchanged";
    if !signing.is_usable() {
        signing = shared::tokens::SigningKeys::generate(&kid()).map_err(MigrateError::Migration)?;
        outcome = "created";
    } else if change == KeyChange::Rotate {
        signing.rotate(&kid()).map_err(MigrateError::Migration)?;
        outcome = "rotated";
    } else if change == KeyChange::RetireInactive && signing.keys.len() > 1 {
        signing.retire_inactive();
        outcome = "retired";
    }
    let public = signing.public_jwks().map_err(MigrateError::Migration)?;
    let published: serde_json::Value = secrets
        .json("TOKEN_PUBLIC_KEYS_SECRET_ARN", &keys.public_secret_id)
        .await?;
    let put_signing = || {
        secrets.put_json(
            "TOKEN_SIGNING_SECRET_ARN",
            &keys.signing_secret_id,
            &signing,
        )
    };
    let put_public = || {
        secrets.put_json(
            "TOKEN_PUBLIC_KEYS_SECRET_ARN",
            &keys.public_secret_id,
            &public,
        )
    };
    // A verifier must know a key before any token it signed exists, and a key must stop
    // signing before it stops verifying.
    if outcome == "retired" {
        put_signing().await?;
        put_public().await?;
    } else {
        if published != public {
            put_public().await?;
            if outcome == "unchanged" {
                outcome = "published";
            }
        }
        if matches!(outcome, "created" | "rotated") {
            put_signing().await?;
        }
    }
    Ok(outcome)
}

/// Runs the migrations and creates the first superuser if missing.
pub async fn run(config: &MigrateConfig) -> Result<Report, MigrateError> {
    let mut database = config.database.clone();
    database.pool.max_size = 1;
    let pool = shared::db::pool(&database)?;
    let mut connection = pool
        .get()
        .await
        .map_err(|e| MigrateError::Database(e.to_string()))?;
    let client: &mut tokio_postgres::Client = &mut connection;
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(e.to_string());

    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db_err)?;
    let outcome = migrate_locked(client, config).await;
    // Released even after a failure; the lock also ends with the session.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    outcome
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    config: &MigrateConfig,
) -> Result<Report, MigrateError> {
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| MigrateError::Migration(e.to_string()))?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect();
    let superuser_created = ensure_first_superuser(client, config).await?;
    if let Some(login) = &config.app_login {
        ensure_login(
            client,
            login,
            "carevault_app",
            config.app_statement_timeout_ms,
        )
        .await?;
    }
    for function in &config.function_logins {
        ensure_login(
            client,
            &function.login,
            &function.role(),
            config.app_statement_timeout_ms,
        )
        .await?;
    }
    if !config.function_logins.is_empty() {
        retire_shared_login(client).await?;
    }
    let token_keys = match &config.token_keys {
        Some(keys) => Some(manage_token_keys(keys, KeyChange::None).await?),
        None => None,
    };
    Ok(Report {
        applied,
        superuser_created,
        token_keys,
    })
}

/// The one login every function shared before V16 (`carevault_api`, in `carevault_app`, whose
/// grants reach `users.is_superuser`): once each function logs in as its own group, it can log
/// in no more (its secret is gone from the stack; the cluster would still take its password).
pub const SHARED_LOGIN: &str = "carevault_api";

async fn retire_shared_login(client: &tokio_postgres::Client) -> Result<(), MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(e.to_string());
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin",
            &[&SHARED_LOGIN],
        )
        .await
        .map_err(db_err)?
        .is_some();
    if exists {
        client
            .batch_execute(&format!("ALTER ROLE {SHARED_LOGIN} NOLOGIN"))
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Creates a login role that is a member of `role` (and so holds its grants), or sets its
/// password (the secret may have rotated). DDL takes no parameters: the statement is built by
/// the server with `format(%I, %L)`.
async fn ensure_login(
    client: &tokio_postgres::Client,
    login: &AppLogin,
    role: &str,
    statement_timeout_ms: u64,
) -> Result<(), MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(e.to_string());
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&login.username],
        )
        .await
        .map_err(db_err)?
        .is_some();
    let template = if exists {
        // $3 (the role) is unused here: membership is granted below, in either case.
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text, $3::text)"
    } else {
        "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L IN ROLE %I', $1::text, $2::text, $3::text)"
    };
    let statement: String = client
        .query_one(template, &[&login.username, &login.password, &role])
        .await
        .map_err(db_err)?
        .get(0);
    client.batch_execute(&statement).await.map_err(db_err)?;
    let grant: String = client
        .query_one(
            "SELECT format('GRANT %I TO %I', $2::text, $1::text)",
            &[&login.username, &role],
        )
        .await
        .map_err(db_err)?
        .get(0);
    client.batch_execute(&grant).await.map_err(db_err)?;
    // Every session of the login starts with it: no query outlives the request that sent it.
    let timeout: String = client
        .query_one(
            "SELECT format('ALTER ROLE %I SET statement_timeout = %L', $1::text, $2::text)",
            &[&login.username, &format!("{statement_timeout_ms}ms")],
        )
        .await
        .map_err(db_err)?
        .get(0);
    client.batch_execute(&timeout).await.map_err(db_err)?;
    Ok(())
}

async fn ensure_first_superuser(
    client: &tokio_postgres::Client,
    config: &MigrateConfig,
) -> Result<bool, MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(e.to_string());
    // Only into an empty house: a renamed or deleted bootstrap account is never recreated
    // with its initial password while any superuser exists.
    let any_superuser = client
        .query_opt("SELECT 1 FROM users WHERE is_superuser LIMIT 1", &[])
        .await
        .map_err(db_err)?
        .is_some();
    if any_superuser {
        return Ok(false);
    }
    let hashed = shared::password::hash(&config.first_superuser_password)
        .await
        .map_err(|e| MigrateError::Migration(e.to_string()))?;
    let inserted = client
        .execute(
            "INSERT INTO users (id, email, hashed_password, is_active, is_superuser, role)
             VALUES ($1, $2, $3, true, true, 'clinician')
             ON CONFLICT ((lower(email))) DO NOTHING",
            &[
                &uuid::Uuid::new_v4(),
                &config.first_superuser.as_str(),
                &hashed,
            ],
        )
        .await
        .map_err(db_err)?;
    Ok(inserted == 1)
}

/// One Lambda invocation: a CloudFormation custom resource request (always answered at its
/// ResponseURL) or a direct invocation (answered with the report). `config` is the cold start's
/// result: a configuration error is reported to CloudFormation rather than failing init, so the
/// stack shows the reason instead of waiting an hour for an answer.
pub async fn handle_event(
    config: &Result<MigrateConfig, String>,
    event: serde_json::Value,
    time_left: std::time::Duration,
) -> Result<serde_json::Value, String> {
    let work = || async {
        let config = config.as_ref().map_err(Clone::clone)?;
        let report = run(config).await.map_err(|e| e.to_string())?;
        tracing::info!(applied = ?report.applied, superuser_created = report.superuser_created, "migrated");
        serde_json::to_value(report).map_err(|e| e.to_string())
    };
    if event.get("source").and_then(serde_json::Value::as_str) == Some("aws.events") {
        let config = config.as_ref().map_err(Clone::clone)?;
        let removed = purge_audit_events(config)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(removed, "audit retention purge");
        return Ok(serde_json::json!({ "audit_events_purged": removed }));
    }
    let key_change = if event.get("rotate_token_signing_key") == Some(&serde_json::json!(true)) {
        KeyChange::Rotate
    } else if event.get("retire_token_signing_keys") == Some(&serde_json::json!(true)) {
        KeyChange::RetireInactive
    } else {
        KeyChange::None
    };
    if key_change != KeyChange::None {
        let config = config.as_ref().map_err(Clone::clone)?;
        let keys = config
            .token_keys
            .as_ref()
            .ok_or("TOKEN_SIGNING_SECRET_ARN is not set: no keys to rotate")?;
        let outcome = manage_token_keys(keys, key_change)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(outcome, "token keys");
        return Ok(serde_json::json!({ "token_keys": outcome }));
    }
    if custom_resource::is_custom_resource(&event) {
        let request: custom_resource::CustomResourceRequest = serde_json::from_value(event)
            .map_err(|e| format!("malformed custom resource request: {e}"))?;
        let response = custom_resource::handle(request, time_left, work).await?;
        return serde_json::to_value(response).map_err(|e| e.to_string());
    }
    work().await
}

/// Removes audit events older than the retention period. Only the schema owner can: the
/// application role may not execute the function, and the trigger refuses any other delete.
pub async fn purge_audit_events(config: &MigrateConfig) -> Result<i64, MigrateError> {
    let pool = shared::db::pool(&config.database)?;
    let client = pool
        .get()
        .await
        .map_err(|e| MigrateError::Database(e.to_string()))?;
    let row = client
        .query_one(
            "SELECT carevault_purge_audit_events(make_interval(days => $1))",
            &[&config.audit_retention_days],
        )
        .await
        .map_err(|e| MigrateError::Database(e.to_string()))?;
    Ok(row.get(0))
}
