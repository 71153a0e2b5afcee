//! Settings, read once per cold start from the environment. Every failure names the setting.
//! (Values held in AWS Secrets Manager are read by `secrets`, one layer up.)

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// The value the template ships for every secret; refused outside local development.
pub const DEFAULT_SECRET: &str = "changethis";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {name} is required but not set")]
    Missing { name: &'static str },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("setting {name}: the secret could not be read from Secrets Manager: {reason}")]
    Secret { name: &'static str, reason: String },
    #[error(
        "setting {name} still holds the default value \"{DEFAULT_SECRET}\"; set a real secret before running with ENVIRONMENT={environment}"
    )]
    DefaultSecret {
        name: &'static str,
        environment: &'static str,
    },
}

/// A snapshot of the environment variables, so config code is testable without
/// mutating the process environment. An empty value counts as unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or(ConfigError::Missing { name })
    }

    pub fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: format!("{raw:?} is not valid: {e}"),
            }),
        }
    }

    /// Parses a whole number within `range`, so a typo cannot make a pool of 0 or a 10-year token.
    pub fn number_in<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parse_or(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                name,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    pub fn millis_in(
        &self,
        name: &'static str,
        default_ms: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(name, default_ms, range)
            .map(Duration::from_millis)
    }

    pub fn bool_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name,
                reason: format!("{other:?} is not a boolean (true or false)"),
            }),
        }
    }
}

/// Where the code runs. Anything but `local` refuses default secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Local,
    Staging,
    Production,
}

impl Environment {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string_or("ENVIRONMENT", "local").as_str() {
            "local" => Ok(Self::Local),
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            other => Err(ConfigError::Invalid {
                name: "ENVIRONMENT",
                reason: format!("{other:?} is not one of local, staging, production"),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    /// Refuses the template's default secret anywhere but on a developer's machine.
    pub fn check_not_default(self, name: &'static str, value: &str) -> Result<(), ConfigError> {
        if value == DEFAULT_SECRET && self != Self::Local {
            return Err(ConfigError::DefaultSecret {
                name,
                environment: self.as_str(),
            });
        }
        Ok(())
    }
}

/// TLS toward Postgres: RDS Proxy requires it, localhost does not have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseTls {
    Disable,
    Require,
}

#[derive(Clone)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub tls: DatabaseTls,
    pub pool: PoolSettings,
    pub application_name: String,
    /// Set on each connection (local development and tests, where the API connects as a role
    /// of its own choosing); on AWS the application login carries it (set by `migrate`).
    pub statement_timeout: Option<Duration>,
}

/// Lambda serves one request per instance at a time: a small pool, and bounded waits so that a
/// database outage answers 503 quickly instead of hanging until the function times out.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_size: usize,
    pub connect_timeout: Duration,
    pub wait_timeout: Duration,
}

impl PoolSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_size: env.number_in("DB_POOL_MAX_SIZE", 2usize, 1..=100)?,
            connect_timeout: env.millis_in("DB_CONNECT_TIMEOUT_MS", 3_000, 100..=60_000)?,
            wait_timeout: env.millis_in("DB_POOL_WAIT_TIMEOUT_MS", 5_000, 10..=60_000)?,
        })
    }
}

// Written by hand so the password can never reach a log line through `{:?}`.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres@127.0.0.1:5432/carevault";

impl DatabaseConfig {
    /// The local form: DATABASE_URL (default: the carevault database on 127.0.0.1), no secret.
    pub fn from_url_env(env: &Env, application_name: &str) -> Result<Self, ConfigError> {
        let pool = PoolSettings::from_env(env)?;
        let url = env.string_or("DATABASE_URL", DEFAULT_DATABASE_URL);
        let parsed = tokio_postgres::Config::from_str(&url).map_err(|e| ConfigError::Invalid {
            name: "DATABASE_URL",
            reason: format!("not a PostgreSQL connection URL: {e}"),
        })?;
        let host = parsed
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        Ok(Self {
            host,
            port: parsed.get_ports().first().copied().unwrap_or(5432),
            user: parsed.get_user().unwrap_or("postgres").to_owned(),
            password: parsed
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            dbname: parsed.get_dbname().unwrap_or("postgres").to_owned(),
            tls: parse_tls(env, DatabaseTls::Disable)?,
            pool,
            application_name: application_name.to_owned(),
            statement_timeout: None,
        })
    }

    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(self.pool.connect_timeout)
            .application_name(&self.application_name);
        if let Some(password) = &self.password {
            config.password(password);
        }
        if let Some(timeout) = self.statement_timeout {
            config.options(format!("-c statement_timeout={}", timeout.as_millis()));
        }
        config
    }
}

pub(crate) fn parse_tls(env: &Env, default: DatabaseTls) -> Result<DatabaseTls, ConfigError> {
    match env.get("DATABASE_TLS") {
        None => Ok(default),
        Some("disable") => Ok(DatabaseTls::Disable),
        Some("require") => Ok(DatabaseTls::Require),
        Some(other) => Err(ConfigError::Invalid {
            name: "DATABASE_TLS",
            reason: format!("{other:?} is not one of disable, require"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_number_names_the_setting() {
        let env = Env::from_pairs([("DB_POOL_MAX_SIZE", "lots")]);
        let err = env
            .number_in("DB_POOL_MAX_SIZE", 2usize, 1..=100)
            .unwrap_err();
        assert!(err.to_string().contains("DB_POOL_MAX_SIZE"), "{err}");
    }

    #[test]
    fn out_of_range_is_refused() {
        let env = Env::from_pairs([("DB_POOL_MAX_SIZE", "0")]);
        assert!(env.number_in("DB_POOL_MAX_SIZE", 2usize, 1..=100).is_err());
    }

    #[test]
    fn default_secret_refused_in_production_only() {
        assert!(Environment::Local
            .check_not_default("SECRET_KEY", DEFAULT_SECRET)
            .is_ok());
        let err = Environment::Production
            .check_not_default("SECRET_KEY", DEFAULT_SECRET)
            .unwrap_err();
        assert!(err.to_string().contains("SECRET_KEY"));
    }
}
