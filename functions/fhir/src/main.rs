#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    edge::http::start(
        |env| async move { fhir::FhirState::from_env(&env).await },
        fhir::router,
    )
    .await
}
