use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::logging::init();
    let state = shared::logging::exit_on_init_error(
        attachments::AttachmentsState::from_env(&Env::from_process()).await,
    );
    shared::http::run(attachments::router(state)).await
}
