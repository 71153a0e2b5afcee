#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { users::UsersState::from_env(&env).await },
        users::router,
    )
    .await
}
