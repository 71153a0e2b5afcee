//! `/api/v1/smart-clients/`: superusers register, list, read and delete SMART clients (JSON
//! API, audited). A deleted client's tokens stop working with their next request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use domain::smart::clients::{self, ClientMetadata};
use edge::auth::Superuser;
use edge::http::JsonBody;
use serde_json::{json, Value};
use shared::input::parse_uuid;
use shared::trail::AuditEntry;
use shared::{ApiError, ApiResult};

use super::SmartServer;

fn not_found() -> ApiError {
    ApiError::NotFound("SMART client not found".into())
}

/// `POST /api/v1/smart-clients/`: 201 with `client_id`, the metadata and, for
/// `client_secret_basic`, `client_secret` (shown this once).
pub async fn register(
    State(server): State<SmartServer>,
    admin: Superuser,
    audit: AuditEntry,
    JsonBody(metadata): JsonBody<ClientMetadata>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = metadata.parse().map_err(ApiError::Validation)?;
    let (client, secret) = clients::register(&server.db, &audit, admin.user.id, new).await?;
    let mut body = client.metadata();
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        body["client_secret_expires_at"] = json!(0);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /api/v1/smart-clients/`.
pub async fn list(State(server): State<SmartServer>, _admin: Superuser) -> ApiResult<Json<Value>> {
    let clients: Vec<Value> = clients::list(&server.db)
        .await?
        .iter()
        .map(|c| c.metadata())
        .collect();
    Ok(Json(json!({ "data": clients, "count": clients.len() })))
}

/// `GET /api/v1/smart-clients/{client_id}`.
pub async fn read(
    State(server): State<SmartServer>,
    _admin: Superuser,
    Path(client_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid("client_id", &client_id)?;
    let client = clients::find(&server.db, id).await?.ok_or_else(not_found)?;
    Ok(Json(client.metadata()))
}

/// `DELETE /api/v1/smart-clients/{client_id}`: the client, its grants, codes and refresh tokens.
pub async fn delete(
    State(server): State<SmartServer>,
    _admin: Superuser,
    audit: AuditEntry,
    Path(client_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid("client_id", &client_id)?;
    if !clients::delete(&server.db, &audit, id).await? {
        return Err(not_found());
    }
    Ok(Json(
        json!({ "message": "SMART client deleted successfully" }),
    ))
}
