//! Who calls the FHIR API and what they may do there: a CareVault session token (the user's
//! whole role, as before SMART) or a SMART access token (its granted scopes, within its user's
//! role, and for `patient/` scopes only the patient in context). Every interaction asks
//! `FhirCaller::permit` before it touches data.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use domain::smart::scopes::{Interaction, Perms, Reach, ResourceType, ScopeGrant, Scopes};
use domain::users::User;
use serde_json::json;
use shared::domain::Role;
use shared::trail::AuditEntry;
use shared::ApiError;
use uuid::Uuid;

use crate::auth::{AuthContext, CurrentUser};
use crate::base::PublicBase;

/// A SMART token's client and what it was granted.
#[derive(Debug, Clone)]
pub struct SmartAccess {
    pub client_id: Uuid,
    pub grant: ScopeGrant,
}

/// The caller of a FHIR interaction.
#[derive(Debug, Clone)]
pub struct FhirCaller {
    /// The user the request acts for; None for a back-end system (client credentials).
    pub user: Option<User>,
    /// None for a session token.
    pub smart: Option<SmartAccess>,
}

fn forbidden(what: &str) -> ApiError {
    ApiError::Forbidden(format!("The token's scopes do not permit {what}"))
}

/// What a role may do on a resource type (None: any type a `*` scope names), whatever a token's
/// scopes say: the ceiling of what a user's consent can grant.
pub fn role_perms(user: &User, resource: Option<ResourceType>) -> Perms {
    let writer = user.is_superuser || user.role == Role::Clinician;
    let patient_data = if writer { Perms::ALL } else { Perms::READ };
    match resource {
        None
        | Some(ResourceType::Patient | ResourceType::DocumentReference | ResourceType::Group) => {
            patient_data
        }
        Some(ResourceType::AuditEvent) if user.is_superuser => Perms::READ,
        Some(ResourceType::AuditEvent) => Perms::NONE,
        Some(ResourceType::Practitioner | ResourceType::Binary) => Perms::READ,
    }
}

fn role_allows(user: &User, resource: ResourceType, interaction: Interaction) -> bool {
    role_perms(user, Some(resource)).contains(interaction.perm())
}

impl FhirCaller {
    /// How far `interaction` on `resource` may reach for this caller: 403 when its role or its
    /// scopes do not permit it.
    pub fn permit(
        &self,
        resource: ResourceType,
        interaction: Interaction,
    ) -> Result<Reach, ApiError> {
        if let Some(user) = &self.user {
            if !role_allows(user, resource, interaction) {
                return Err(ApiError::Forbidden(
                    "The user doesn't have enough privileges".into(),
                ));
            }
        }
        match &self.smart {
            None => Ok(Reach::All),
            Some(smart) => smart.grant.reach(resource, interaction).ok_or_else(|| {
                forbidden(&format!("{interaction:?} on {}", resource.as_str()).to_lowercase())
            }),
        }
    }

    /// The user; a back-end system's token has none (403 where one is needed).
    pub fn user(&self) -> Result<&User, ApiError> {
        self.user
            .as_ref()
            .ok_or_else(|| ApiError::Forbidden("This interaction needs a user".into()))
    }
}

impl<S> FromRequestParts<S> for FhirCaller
where
    AuthContext: FromRef<S>,
    PublicBase: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = crate::auth::bearer_token(parts)?;
        let context = AuthContext::from_ref(state);
        let invalid = || ApiError::Unauthorized("Could not validate credentials".into());
        // The audience the token claims picks the one check it gets (one signature verified).
        if shared::tokens::claims_session(token) {
            let session = context
                .tokens
                .verify_access(token)
                .await
                .ok_or_else(invalid)?;
            let CurrentUser(user) = CurrentUser::of_session(&context, parts, session).await?;
            return Ok(Self {
                user: Some(user),
                smart: None,
            });
        }
        let audience = PublicBase::from_ref(state).of(&parts.headers, &parts.uri);
        let claims = context
            .tokens
            .verify_smart(token, &audience)
            .await
            .ok_or_else(invalid)?;
        let grant = domain::smart::grants::live(&context.pool, claims.gid)
            .await?
            .ok_or_else(invalid)?;
        let client_id = Uuid::parse_str(&claims.client_id).map_err(|_| invalid())?;
        if grant.client_id != client_id {
            return Err(invalid());
        }
        if let Some(audit) = parts.extensions.get::<AuditEntry>() {
            if let Some(user) = &grant.user {
                audit.actor(user.id, &user.email);
            }
            audit.describe(|event| {
                event.details(json!({
                    "smart_client_id": client_id,
                    "smart_scope": claims.scope,
                }))
            });
        }
        Ok(Self {
            user: grant.user,
            smart: Some(SmartAccess {
                client_id,
                grant: ScopeGrant {
                    scopes: Scopes::requested(&claims.scope),
                    patient: claims.patient,
                },
            }),
        })
    }
}
