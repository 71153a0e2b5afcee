#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { audit::AuditState::from_env(&env).await },
        audit::router,
    )
    .await
}
