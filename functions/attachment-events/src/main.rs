use lambda_runtime::{service_fn, LambdaEvent};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::logging::log_panics_without_their_message();
    let started = std::time::Instant::now();
    let state = shared::logging::exit_on_init_error(
        attachment_events::EventsState::from_env(&Env::from_process()).await,
    );
    shared::logging::cold_start_complete(started);
    let state = &state;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            attachment_events::handle(state, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
