use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::logging::log_panics_without_their_message();
    let started = std::time::Instant::now();
    let state = shared::logging::exit_on_init_error(
        bulk_export::WorkerState::from_env(&Env::from_process()).await,
    );
    shared::logging::cold_start_complete(started);
    let state = &state;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(bulk_export::handle(state, event.payload).await)
    }))
    .await
}
