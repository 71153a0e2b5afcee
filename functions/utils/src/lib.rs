//! GET /api/v1/utils/health-check/: is this API able to serve requests right now?
//! GET /api/v1/openapi.json: the API's contract (docs/openapi.json, checked against the code by
//! tests/api/openapi.rs).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::secrets::SecretsClient;
use shared::ApiResult;

#[derive(Clone)]
pub struct UtilsState {
    pub pool: DbPool,
}

impl UtilsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = SecretsClient::from_env(env);
        Ok(Self {
            pool: shared::db::pool_from_env(env, &secrets, "carevault-utils").await?,
        })
    }
}

pub fn router(state: UtilsState) -> Router {
    Router::new()
        .route("/api/v1/utils/health-check", get(health_check))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(state)
}

/// `true` when the database answers; 503 otherwise, so a load balancer or monitor sees it. The
/// pool verifies only connections idle for a while, so the check asks the database itself (an
/// empty query: one round trip, nothing for the server to plan).
async fn health_check(State(state): State<UtilsState>) -> ApiResult<Json<bool>> {
    let connection = state.pool.get().await?;
    connection.simple_query("").await?;
    Ok(Json(true))
}

/// The OpenAPI 3.1 document, compiled into the binary.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
