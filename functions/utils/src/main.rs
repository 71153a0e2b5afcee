#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { utils::UtilsState::from_env(&env).await },
        utils::router,
    )
    .await
}
