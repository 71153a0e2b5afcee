//! The databases: one template migrated once per run, and a copy of it for each test.

use std::sync::atomic::{AtomicU64, Ordering};

use shared::config::{DatabaseConfig, Env};
use shared::db::DbPool;
use tokio::sync::OnceCell;

use crate::stack::stack_var;

/// The server's admin URL (a database we may CREATE DATABASE from).
pub fn admin_url() -> String {
    stack_var("CAREVAULT_TEST_ADMIN_URL")
}

pub async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
}

/// Connection settings for database `dbname` on the test server.
pub fn database_config(dbname: &str) -> DatabaseConfig {
    let env = Env::from_pairs([("DATABASE_URL", admin_url())]);
    let mut config =
        DatabaseConfig::from_url_env(&env, "carevault-tests").expect("a valid admin URL");
    config.dbname = dbname.to_owned();
    config
}

pub const FIRST_SUPERUSER: &str = "admin@example.com";
/// The local default, so the samples in events/ work against scripts/dev too.
pub const FIRST_SUPERUSER_PASSWORD: &str = "changethis";

pub fn migrate_config(dbname: &str) -> migrate::MigrateConfig {
    migrate::MigrateConfig {
        database: database_config(dbname),
        audit_retention_days: 2_190,
        app_login: None,
        function_logins: Vec::new(),
        app_statement_timeout_ms: 5_000,
        token_keys: None,
        first_superuser: shared::domain::EmailAddress::parse(FIRST_SUPERUSER.into()).unwrap(),
        first_superuser_password: shared::domain::Password::parse(FIRST_SUPERUSER_PASSWORD.into())
            .unwrap(),
    }
}

/// The template's name carries a hash of what it is made from (the migrations and the first
/// superuser), so a change to either makes a new one.
fn template_name() -> String {
    let mut files: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
            .expect("migrations folder")
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    let mut inputs: Vec<Vec<u8>> = vec![FIRST_SUPERUSER.into(), FIRST_SUPERUSER_PASSWORD.into()];
    for file in files {
        inputs.push(file.file_name().unwrap().as_encoded_bytes().to_vec());
        inputs.push(std::fs::read(&file).unwrap());
    }
    // FNV-1a: stable across runs and processes (std's hasher is randomly seeded).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in inputs.iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("carevault_template_{hash:016x}")
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Migrates the template database once per run (and once across concurrent runs, by lock).
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let admin = admin_client().await;
            admin
                .execute("SELECT pg_advisory_lock(4242)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                // One statement per call: CREATE/DROP DATABASE cannot run in a transaction block.
                for sql in [
                    format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                    format!("CREATE DATABASE {building}"),
                ] {
                    admin.batch_execute(&sql).await.unwrap();
                }
                // Each function's login, as migrate makes them in AWS (roles belong to the
                // server: made here, under the lock, not by every test that migrates).
                let mut config = migrate_config(&building);
                config.function_logins = migrate::FUNCTION_GROUPS
                    .into_iter()
                    .map(|group| migrate::FunctionLogin {
                        group,
                        login: migrate::AppLogin {
                            username: function_login(group),
                            password: FUNCTION_LOGIN_PASSWORD.to_owned(),
                        },
                    })
                    .collect();
                migrate::run(&config)
                    .await
                    .expect("migrate the template database");
                // Renamed only when complete: a run killed half-way leaves no broken template.
                admin
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(4242)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database of its own for one test, dropped when the test ends (pass or fail).
pub struct TestDb {
    pub name: String,
    pub config: DatabaseConfig,
    pub pool: DbPool,
}

impl TestDb {
    /// A copy of the migrated template: schema and first superuser, no other rows.
    pub async fn new() -> Self {
        let template = template().await;
        Self::create(&format!("TEMPLATE {template}")).await
    }

    /// An empty database (no schema), for migration tests.
    pub async fn empty() -> Self {
        Self::create("").await
    }

    async fn create(options: &str) -> Self {
        let name = format!(
            "carevault_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("create the test database");
        Self::attach(name)
    }

    /// The single number a query answers, such as a `count(*)`.
    pub async fn number(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    fn attach(name: String) -> Self {
        let config = database_config(&name);
        let pool = shared::db::pool(&config).expect("test pool");
        Self { name, config, pool }
    }

    pub async fn client(&self) -> shared::db::Connection {
        self.pool.get().await.expect("test database connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let name = self.name.clone();
        // Drop runs outside async context: a short-lived thread with its own runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    admin_client()
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
    }
}

pub fn db_url(dbname: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{dbname}")
}

/// The login the tests' function `group` (one of `migrate::FUNCTION_GROUPS`) connects as: a
/// member of the group's role only, so a statement the group was not granted fails in the tests
/// as it would in AWS.
pub fn function_login(group: &str) -> String {
    format!("carevault_{group}_test_login")
}

const FUNCTION_LOGIN_PASSWORD: &str = "carevault-test-login";

/// Connection settings (libpq key=value) for database `dbname` as function `group`'s login.
pub fn function_db_url(dbname: &str, group: &str) -> String {
    let admin = database_config(dbname);
    format!(
        "host={} port={} user={} password={FUNCTION_LOGIN_PASSWORD} dbname={dbname}",
        admin.host,
        admin.port,
        function_login(group)
    )
}
