#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { patients::PatientsState::from_env(&env).await },
        patients::router,
    )
    .await
}
