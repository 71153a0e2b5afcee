#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::http::start(
        |env| async move { auth::AuthState::from_env(&env).await },
        auth::router,
    )
    .await
}
