//! On Lambda: answers CloudFormation custom resource requests and direct invocations.
//! Elsewhere (scripts/dev, scripts/test): migrates once and exits.

use std::time::SystemTime;

use lambda_runtime::{service_fn, LambdaEvent};
use migrate::MigrateConfig;
use shared::config::Env;
use shared::logging::exit_on_init_error;
use shared::secrets::SecretsClient;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::logging::log_panics_without_their_message();
    let started = std::time::Instant::now();
    let env = Env::from_process();
    let config = MigrateConfig::from_env(&env, &SecretsClient::from_env(&env)).await;
    if env.get("AWS_LAMBDA_RUNTIME_API").is_none() {
        let report = exit_on_init_error(migrate::run(&exit_on_init_error(config)).await);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    // A configuration error is answered to each event (a custom resource must hear FAILED).
    let config = &config.map_err(|e| e.to_string());
    shared::logging::cold_start_complete(started);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let time_left = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            migrate::handle_event(config, event.payload, time_left)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
