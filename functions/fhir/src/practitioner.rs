//! Practitioner: CareVault's users as the `fhirUser` of SMART's ID tokens
//! (`[base]/Practitioner/{user id}`), read-only. A signed-in caller reads their own (a SMART
//! token needs `fhirUser` or a Practitioner scope); superusers read anyone's. Anyone else's id is
//! 404, as for an id that names nothing.

use axum::extract::{Path, State};
use axum::Json;
use domain::smart::scopes::{Interaction, ResourceType, Scope};
use domain::users::User;
use edge::smart::FhirCaller;
use serde_json::{json, Value};
use shared::{ApiError, ApiResult};
use uuid::Uuid;

use crate::FhirState;

fn not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("Practitioner/{raw_id} is not known"))
}

/// The FHIR Practitioner of a user: its name, its email, whether it is active.
pub fn resource(user: &User) -> Value {
    let mut resource = json!({
        "resourceType": "Practitioner",
        "id": user.id,
        "active": user.is_active,
        "telecom": [{ "system": "email", "value": user.email }],
    });
    if let Some(name) = user.full_name.as_deref().filter(|n| !n.trim().is_empty()) {
        resource["name"] = json!([{ "text": name }]);
    }
    resource
}

/// `GET /fhir/R4/Practitioner/{id}`.
pub async fn read(
    State(state): State<FhirState>,
    caller: FhirCaller,
    Path(raw_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let me = caller.user()?;
    let id = Uuid::parse_str(&raw_id).map_err(|_| not_found(&raw_id))?;
    let own = id == me.id;
    match &caller.smart {
        // A session token: one's own, or anyone's for a superuser.
        None if own || me.is_superuser => {}
        // A SMART token: its fhirUser, or what a Practitioner scope of a superuser reaches.
        Some(smart) if own && smart.grant.scopes.contains(Scope::FhirUser) => {}
        Some(_) if (own || me.is_superuser) => {
            caller.permit(ResourceType::Practitioner, Interaction::Read)?;
        }
        _ => return Err(not_found(&raw_id)),
    }
    let user = domain::users::find_by_id(&state.db, id)
        .await?
        .ok_or_else(|| not_found(&raw_id))?;
    Ok(Json(resource(&user)))
}
