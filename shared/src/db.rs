//! The Postgres pool: made once per cold start, outside the handler.

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use crate::config::{parse_tls, ConfigError, DatabaseConfig, DatabaseTls, Env, PoolSettings};
use crate::secrets::SecretsClient;

pub use deadpool_postgres::{Object as Connection, Pool as DbPool, PoolError, Transaction};

/// Builds the pool; no connection is opened until the first request asks for one.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, ConfigError> {
    let started = std::time::Instant::now();
    let pool = build_pool(config);
    crate::logging::record_init_step("pool", started.elapsed());
    pool
}

/// How long after its last checkout a pooled connection is verified again on the next one.
const VERIFY_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

fn build_pool(config: &DatabaseConfig) -> Result<Pool, ConfigError> {
    // Lambda freezes the process between invocations and the server or proxy may drop an idle
    // socket meanwhile: a reused connection last handed out over a second ago is verified with
    // a trivial query before it is handed out again (`pre_recycle` below). One handed out
    // within the second is not (deadpool's `last_used` is the time since its last checkout):
    // a request checks out up to three times (its user, its work, its audit event) and each
    // verification is a round trip. `Fast` still refuses a connection known to be closed.
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let pg_config = config.pg_config();
    let manager = match config.tls {
        DatabaseTls::Disable => Manager::from_config(pg_config, NoTls, manager_config),
        DatabaseTls::Require => Manager::from_config(
            pg_config,
            tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config()),
            manager_config,
        ),
    };
    let verify_timeout = config.pool.connect_timeout;
    Pool::builder(manager)
        .max_size(config.pool.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool.wait_timeout))
        .create_timeout(Some(config.pool.connect_timeout))
        .recycle_timeout(Some(config.pool.connect_timeout))
        .pre_recycle(Hook::async_fn(move |client, metrics| {
            Box::pin(async move {
                if metrics.last_used() < VERIFY_AFTER_IDLE {
                    return Ok(());
                }
                // An error discards the connection and the pool opens a new one. Bounded: a
                // socket the network dropped silently would never answer (the pool's recycle
                // timeout does not cover hooks).
                match tokio::time::timeout(verify_timeout, client.simple_query("")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(HookError::Backend(e)),
                    Err(_) => Err(HookError::message("no answer to the verification query")),
                }
            })
        }))
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "DB_POOL_MAX_SIZE",
            reason: e.to_string(),
        })
}

/// The application's pool, from DATABASE_SECRET_ARN (AWS) or DATABASE_URL (local).
pub async fn pool_from_env(
    env: &Env,
    secrets: &SecretsClient,
    function_name: &str,
) -> Result<Pool, ConfigError> {
    let mut config =
        DatabaseConfig::load(env, secrets, "DATABASE_SECRET_ARN", function_name).await?;
    // DB_STATEMENT_TIMEOUT_MS (default 5,000): no request keeps a query running after its
    // function gave up. With a database secret (AWS) the application login carries it.
    let timeout = env.millis_in("DB_STATEMENT_TIMEOUT_MS", 5_000, 100..=300_000)?;
    if env.get("DATABASE_SECRET_ARN").is_none() {
        config.statement_timeout = Some(timeout);
    }
    pool(&config)
}

/// The parameters of one statement, each with its type (statements sent with `query_typed`
/// need no prepare round trip). `push` answers the value's placeholder, so no caller counts
/// `$n` by hand.
#[derive(Default)]
pub struct SqlParams(Vec<(Box<dyn ToSql + Sync + Send>, Type)>);

impl SqlParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` as a parameter of type `ty`; returns its placeholder (`$3`).
    pub fn push<T: ToSql + Sync + Send + 'static>(&mut self, value: T, ty: Type) -> String {
        self.0.push((Box::new(value), ty));
        format!("${}", self.0.len())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The borrowed form `query_typed` takes.
    pub fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.0
            .iter()
            .map(|(value, ty)| (value.as_ref() as &(dyn ToSql + Sync), ty.clone()))
            .collect()
    }
}

/// The RDS secret JSON format that Secrets Manager generates for a database.
#[derive(serde::Deserialize)]
struct RdsSecret {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
}

impl DatabaseConfig {
    /// `secret_setting` names the env var holding the secret's ARN: `DATABASE_SECRET_ARN`
    /// for the application role, `DATABASE_OWNER_SECRET_ARN` for migrations.
    pub async fn load(
        env: &Env,
        secrets: &SecretsClient,
        secret_setting: &'static str,
        application_name: &str,
    ) -> Result<Self, ConfigError> {
        let Some(secret_id) = env.get(secret_setting) else {
            return Self::from_url_env(env, application_name);
        };
        let pool = PoolSettings::from_env(env)?;
        let tls = parse_tls(env, DatabaseTls::Require)?;
        let secret: RdsSecret = secrets.json(secret_setting, secret_id).await?;
        // DATABASE_HOST names the RDS Proxy endpoint, which the secret does not know.
        let host = env
            .get("DATABASE_HOST")
            .map(str::to_owned)
            .or(secret.host)
            .ok_or(ConfigError::Missing {
                name: "DATABASE_HOST",
            })?;
        Ok(Self {
            host,
            port: env.parse_or("DATABASE_PORT", secret.port.unwrap_or(5432))?,
            user: secret.username,
            password: Some(secret.password),
            dbname: env
                .get("DATABASE_NAME")
                .map(str::to_owned)
                .or(secret.dbname)
                .unwrap_or_else(|| "postgres".to_owned()),
            tls,
            pool,
            application_name: application_name.to_owned(),
            statement_timeout: None,
        })
    }
}

/// The planner's row estimate from `EXPLAIN (FORMAT JSON)` (the `_total=estimate` and
/// `count=estimate` of searches).
pub fn plan_rows(plan: &serde_json::Value) -> Option<i64> {
    plan.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|rows| rows.round() as i64)
}
