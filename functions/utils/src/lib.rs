//! GET /api/v1/utils/health-check/: is this API able to serve requests right now?

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use shared::config::{ConfigError, Env};
use shared::db::DbPool;
use shared::secrets::SecretsClient;
use shared::{ApiError, ApiResult};

#[derive(Clone)]
pub struct UtilsState {
    pub pool: DbPool,
}

impl UtilsState {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secrets = SecretsClient::new();
        Ok(Self {
            pool: shared::db::pool_from_env(env, &secrets, "carevault-utils").await?,
        })
    }
}

pub fn router(state: UtilsState) -> Router {
    Router::new()
        .route("/api/v1/utils/health-check", get(health_check))
        .with_state(state)
}

/// `true` when the database answers a query; 503 otherwise, so a load balancer or monitor sees it.
async fn health_check(State(state): State<UtilsState>) -> ApiResult<Json<bool>> {
    let client = state.pool.get().await?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| ApiError::Unavailable(format!("health check query: {e}")))?;
    Ok(Json(true))
}
