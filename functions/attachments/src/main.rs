#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { attachments::AttachmentsState::from_env(&env).await },
        attachments::router,
    )
    .await
}
