use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::logging::init();
    let state = shared::logging::exit_on_init_error(
        audit::AuditState::from_env(&Env::from_process()).await,
    );
    shared::http::run(audit::router(state)).await
}
