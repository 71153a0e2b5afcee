//! CareVault's SMART on FHIR authorization server (App Launch 2.x and Backend Services) over
//! the same users, roles, keys and audit trail as the JSON API: client registration, the
//! authorize endpoint and the console's consent calls, the token endpoint, revocation and
//! introspection. The FHIR function serves the discovery document and checks the tokens.

mod assertion;
mod authorize;
mod clients;
mod oauth;

pub(crate) use oauth::no_store;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::handler::Handler;
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post};
use axum::Router;
use edge::audit_layer::AuditTrail;
use edge::auth::AuthContext;
use edge::base::PublicBase;
use shared::config::{ConfigError, Env, Environment};
use shared::db::DbPool;
use shared::tokens::Tokens;
use shared::trail::RouteEvent;

/// What the authorization server's handlers share; made once per cold start.
#[derive(Clone)]
pub struct SmartServer {
    pub db: DbPool,
    pub tokens: Arc<Tokens>,
    pub base: PublicBase,
    /// The console's origin: the authorize endpoint sends the user there to sign in.
    pub console: Arc<str>,
    /// A SMART access token's lifetime (a Backend Services token's is at most 5 minutes).
    pub access_ttl: Duration,
    /// A `jwks_uri` may name a loopback or private address: only in a local environment (in
    /// AWS it would reach the Lambda runtime's own API or the VPC).
    pub private_jwks_uris: bool,
    pub jwks_cache: Arc<assertion::JwksCache>,
}

impl FromRef<SmartServer> for AuthContext {
    fn from_ref(server: &SmartServer) -> Self {
        AuthContext {
            pool: server.db.clone(),
            tokens: server.tokens.clone(),
        }
    }
}

/// The absolute URLs of one request's server (behind `FHIR_BASE_URL`, or its own host).
pub struct Endpoints {
    pub fhir_base: String,
    pub token: String,
    pub revocation: String,
    pub introspection: String,
}

impl SmartServer {
    /// SMART_ACCESS_TOKEN_EXPIRE_MINUTES (default 60), FRONTEND_HOST, FHIR_BASE_URL.
    pub fn from_env(env: &Env, auth: &AuthContext) -> Result<Self, ConfigError> {
        let minutes = env.number_in("SMART_ACCESS_TOKEN_EXPIRE_MINUTES", 60u64, 5..=24 * 60)?;
        Ok(Self {
            db: auth.pool.clone(),
            tokens: auth.tokens.clone(),
            base: PublicBase::from_env(env),
            console: Arc::from(
                env.string_or("FRONTEND_HOST", "http://localhost:5173")
                    .trim_end_matches('/'),
            ),
            access_ttl: Duration::from_secs(minutes * 60),
            private_jwks_uris: Environment::from_env(env)? == Environment::Local,
            jwks_cache: Arc::default(),
        })
    }

    /// A client that reads one `jwks_uri` of `host` at the address already checked (rustls, no
    /// redirects, no proxy). Made per fetch: a fetch happens at most once a minute per client.
    pub fn jwks_client(
        &self,
        host: &str,
        address: std::net::SocketAddr,
    ) -> Option<reqwest::Client> {
        reqwest::Client::builder()
            .use_preconfigured_tls(shared::tls::client_config())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .resolve(host, address)
            .build()
            .map_err(|e| tracing::error!(error = %e, "the jwks_uri client could not be built"))
            .ok()
    }

    pub fn endpoints(&self, headers: &HeaderMap, uri: &Uri) -> Endpoints {
        let root = self.base.api_root(headers, uri);
        Endpoints {
            fhir_base: self.base.of(headers, uri),
            token: format!("{root}/api/v1/smart/token"),
            revocation: format!("{root}/api/v1/smart/revoke"),
            introspection: format!("{root}/api/v1/smart/introspect"),
        }
    }
}

const CLIENT: &str = "smart_client";
const CLIENT_REGISTER: RouteEvent = RouteEvent::new("smart.client_register", CLIENT);
const CLIENT_LIST: RouteEvent = RouteEvent::new("smart.client_list", CLIENT);
const CLIENT_READ: RouteEvent =
    RouteEvent::new("smart.client_read", CLIENT).resource_from("client_id");
const CLIENT_DELETE: RouteEvent =
    RouteEvent::new("smart.client_delete", CLIENT).resource_from("client_id");
const AUTHORIZE: RouteEvent = RouteEvent::new("smart.authorize", CLIENT);
const CONSENT_READ: RouteEvent = RouteEvent::new("smart.consent_read", CLIENT);
const CONSENT: RouteEvent = RouteEvent::new("smart.consent", CLIENT);
const TOKEN: RouteEvent = RouteEvent::new("smart.token", CLIENT);
const REVOKE: RouteEvent = RouteEvent::new("smart.revoke", CLIENT);
const INTROSPECT: RouteEvent = RouteEvent::new("smart.introspect", CLIENT);
const APPS: RouteEvent = RouteEvent::new("smart.apps_list", CLIENT);
const LAUNCH: RouteEvent = RouteEvent::new("smart.launch", CLIENT);

pub fn router(server: SmartServer) -> Router {
    let trail = AuditTrail::new(server.db.clone());
    let clients_collection = get(clients::list.layer(trail.on(CLIENT_LIST)))
        .post(clients::register.layer(trail.on(CLIENT_REGISTER)));
    Router::new()
        .route("/api/v1/smart-clients", clients_collection.clone())
        .route("/api/v1/smart-clients/", clients_collection)
        .route(
            "/api/v1/smart-clients/{client_id}",
            get(clients::read.layer(trail.on(CLIENT_READ)))
                .delete(clients::delete.layer(trail.on(CLIENT_DELETE))),
        )
        .route(
            "/api/v1/smart/authorize",
            get(authorize::authorize.layer(trail.on(AUTHORIZE)))
                .post(authorize::authorize.layer(trail.on(AUTHORIZE))),
        )
        .route(
            "/api/v1/smart/authorizations/{id}",
            get(authorize::show.layer(trail.on(CONSENT_READ)))
                .post(authorize::decide.layer(trail.on(CONSENT))),
        )
        .route(
            "/api/v1/smart/token",
            post(token::token.layer(trail.on(TOKEN))),
        )
        .route(
            "/api/v1/smart/revoke",
            post(token::revoke.layer(trail.on(REVOKE))),
        )
        .route(
            "/api/v1/smart/introspect",
            post(token::introspect.layer(trail.on(INTROSPECT))),
        )
        .route(
            "/api/v1/smart/apps",
            get(authorize::launchable_apps.layer(trail.on(APPS))),
        )
        .route(
            "/api/v1/smart/launch",
            post(authorize::launch.layer(trail.on(LAUNCH))),
        )
        .with_state(server)
}
