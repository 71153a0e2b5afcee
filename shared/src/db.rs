//! The Postgres pool: made once per cold start, outside the handler.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::{ConfigError, DatabaseConfig, DatabaseTls};

pub use deadpool_postgres::{Object as Connection, Pool as DbPool, PoolError, Transaction};

/// Builds the pool; no connection is opened until the first request asks for one.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, ConfigError> {
    let started = std::time::Instant::now();
    let pool = build_pool(config);
    crate::logging::record_init_step("pool", started.elapsed());
    pool
}

fn build_pool(config: &DatabaseConfig) -> Result<Pool, ConfigError> {
    // Lambda freezes the process between invocations and the server or proxy may drop an idle
    // socket meanwhile: `Verified` runs a trivial query before handing out a reused connection.
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
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
    Pool::builder(manager)
        .max_size(config.pool.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool.wait_timeout))
        .create_timeout(Some(config.pool.connect_timeout))
        .recycle_timeout(Some(config.pool.connect_timeout))
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "DB_POOL_MAX_SIZE",
            reason: e.to_string(),
        })
}

/// The application's pool, from DATABASE_SECRET_ARN (AWS) or DATABASE_URL (local).
pub async fn pool_from_env(
    env: &crate::config::Env,
    secrets: &crate::secrets::SecretsClient,
    function_name: &str,
) -> Result<Pool, ConfigError> {
    let config = DatabaseConfig::load(env, secrets, "DATABASE_SECRET_ARN", function_name).await?;
    pool(&config)
}

/// A parameter list, as tokio-postgres takes it.
pub type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// A list's total and one page of it, pipelined on one connection: one round trip for both.
pub async fn count_and_page(
    client: &tokio_postgres::Client,
    count_sql: &str,
    count_params: &Params<'_>,
    page_sql: &str,
    page_params: &Params<'_>,
) -> Result<(i64, Vec<tokio_postgres::Row>), tokio_postgres::Error> {
    let (count, rows) = tokio::try_join!(
        client.query_one(count_sql, count_params),
        client.query(page_sql, page_params),
    )?;
    Ok((count.get(0), rows))
}

/// A parameter with its type: statements sent with `query_typed` need no prepare round trip.
pub type TypedParam = (
    Box<dyn tokio_postgres::types::ToSql + Sync + Send>,
    tokio_postgres::types::Type,
);

/// Borrowed form of typed parameters, as `query_typed` takes them.
pub fn typed(
    params: &[TypedParam],
) -> Vec<(
    &(dyn tokio_postgres::types::ToSql + Sync),
    tokio_postgres::types::Type,
)> {
    params
        .iter()
        .map(|(value, ty)| {
            (
                value.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync),
                ty.clone(),
            )
        })
        .collect()
}

/// A typed parameter from a value.
pub fn param<T: tokio_postgres::types::ToSql + Sync + Send + 'static>(
    value: T,
    ty: tokio_postgres::types::Type,
) -> TypedParam {
    (Box::new(value), ty)
}
