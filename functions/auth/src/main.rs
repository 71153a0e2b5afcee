#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { auth::AuthState::from_env(&env).await },
        auth::router,
    )
    .await
}
