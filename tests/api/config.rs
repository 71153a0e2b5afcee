use api_tests::{invoke, stack_var, ApiRequest, TestDb};
use serde_json::json;
use shared::config::{ConfigError, DatabaseConfig, Env};
use shared::secrets::SecretsClient;

async fn put_secret(value: serde_json::Value) -> String {
    // The local Secrets Manager server (moto) started by scripts/test.
    stack_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let client = aws_sdk_secretsmanager::Client::new(&shared::aws::sdk_config().await);
    let name = format!("carevault/test/{}", uuid::Uuid::new_v4());
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("create a secret in the local Secrets Manager");
    created.arn().expect("an ARN").to_owned()
}

#[tokio::test]
async fn database_secret_from_secrets_manager_reaches_the_config_and_connects() {
    let db = TestDb::new().await;
    let arn = put_secret(json!({
        "engine": "postgres",
        "username": db.config.user,
        "password": "not-needed-with-trust-auth",
        "host": db.config.host,
        "port": db.config.port,
        "dbname": db.name,
    }))
    .await;
    let env = Env::from_pairs([
        ("DATABASE_SECRET_ARN", arn.as_str()),
        ("DATABASE_TLS", "disable"),
    ]);

    let config = DatabaseConfig::load(&env, &SecretsClient::new(), "DATABASE_SECRET_ARN", "t")
        .await
        .expect("config from the secret");
    assert_eq!(config.dbname, db.name);
    assert_eq!(config.port, db.config.port);
    assert_eq!(
        config.password.as_deref(),
        Some("not-needed-with-trust-auth")
    );
    assert!(
        !format!("{config:?}").contains("not-needed-with-trust-auth"),
        "Debug hides the password"
    );

    // The whole cold start of a function, from the secret to a served request.
    let state = utils::UtilsState::from_env(&env).await.expect("cold start");
    let response = invoke(
        utils::router(state),
        ApiRequest::get("/api/v1/utils/health-check"),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn database_host_setting_overrides_the_secret_host_for_rds_proxy() {
    let arn = put_secret(
        json!({"username": "app", "password": "pw", "host": "db.internal", "port": 5432}),
    )
    .await;
    let env = Env::from_pairs([
        ("DATABASE_SECRET_ARN", arn.as_str()),
        ("DATABASE_HOST", "proxy.internal"),
        ("DATABASE_NAME", "carevault"),
    ]);
    let config = DatabaseConfig::load(&env, &SecretsClient::new(), "DATABASE_SECRET_ARN", "t")
        .await
        .unwrap();
    assert_eq!(config.host, "proxy.internal");
    assert_eq!(config.dbname, "carevault");
    assert_eq!(
        config.tls,
        shared::config::DatabaseTls::Require,
        "TLS by default toward AWS"
    );
}

#[tokio::test]
async fn a_missing_or_malformed_secret_fails_naming_the_setting() {
    stack_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let env = Env::from_pairs([("DATABASE_SECRET_ARN", "carevault/test/does-not-exist")]);
    let err = utils::UtilsState::from_env(&env)
        .await
        .err()
        .expect("must fail");
    assert!(
        matches!(
            err,
            ConfigError::Secret {
                name: "DATABASE_SECRET_ARN",
                ..
            }
        ),
        "{err}"
    );

    let arn = put_secret(json!({"user": "wrong-shape"})).await;
    let env = Env::from_pairs([("DATABASE_SECRET_ARN", arn.as_str())]);
    let err = utils::UtilsState::from_env(&env)
        .await
        .err()
        .expect("must fail");
    let message = err.to_string();
    assert!(
        message.contains("DATABASE_SECRET_ARN") && message.contains("username"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_settings_fail_the_cold_start_naming_the_setting() {
    for (name, value) in [
        ("DB_POOL_MAX_SIZE", "lots"),
        ("DB_POOL_MAX_SIZE", "0"),
        ("DB_CONNECT_TIMEOUT_MS", "-5"),
        ("DATABASE_URL", "mysql://nope"),
        ("DATABASE_TLS", "sometimes"),
    ] {
        let env = Env::from_pairs([(name, value)]);
        let err = utils::UtilsState::from_env(&env)
            .await
            .err()
            .expect("must fail");
        assert!(err.to_string().contains(name), "{name}={value}: {err}");
    }
}

#[tokio::test]
async fn production_refuses_the_default_superuser_password() {
    let env = Env::from_pairs([("ENVIRONMENT", "production")]);
    let err = migrate::MigrateConfig::from_env(&env, &SecretsClient::new())
        .await
        .err()
        .expect("must fail");
    assert!(
        matches!(
            err,
            ConfigError::DefaultSecret {
                name: "FIRST_SUPERUSER_PASSWORD",
                ..
            }
        ),
        "{err}"
    );

    let env = Env::from_pairs([("ENVIRONMENT", "prod")]);
    let err = migrate::MigrateConfig::from_env(&env, &SecretsClient::new())
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("ENVIRONMENT"), "{err}");
}
