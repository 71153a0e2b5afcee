//! Registered SMART clients (RFC 7591 metadata): what a registration must hold, and the rows.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::db::DbPool;
use shared::trail::AuditEntry;
use shared::{FieldError, StoreError};
use tokio_postgres::Row;
use uuid::Uuid;

use super::scopes::{Context, Scope, Scopes};

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A public app (in a browser or on a device): PKCE only.
    None,
    /// A confidential app holding a secret, sent as HTTP Basic.
    ClientSecretBasic,
    /// A client assertion signed with a key of its JWK Set (SMART's asymmetric authentication).
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::None, Self::ClientSecretBasic, Self::PrivateKeyJwt]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    RefreshToken,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::AuthorizationCode,
            Self::ClientCredentials,
            Self::RefreshToken,
        ]
        .into_iter()
        .find(|g| g.as_str() == text)
    }
}

/// A registration as sent: RFC 7591's names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    pub client_name: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub jwks: Option<Value>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    pub scope: String,
    #[serde(default)]
    pub launch_url: Option<String>,
}

/// A registration that holds together.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: AuthMethod,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub scope: Scopes,
    pub launch_url: Option<String>,
}

/// An absolute URL a browser or a server may be sent to: `https`, or `http` on a loopback
/// address (a native app's or a developer's); no fragment, no credentials.
pub fn check_url(raw: &str) -> Result<url::Url, &'static str> {
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URL")?;
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials");
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("must use https (http only on a loopback address)"),
        _ => Err("must be an https URL"),
    }
}

pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A JWK Set of public keys a client signs its assertions with: each key with a `kid`, RSA or
/// EC, and no private member.
fn check_jwks(jwks: &Value) -> Result<(), String> {
    let keys = jwks["keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .ok_or("must be a JWK Set with at least one key")?;
    for key in keys {
        let kid = key["kid"].as_str().filter(|k| !k.is_empty());
        let Some(kid) = kid else {
            return Err("every key needs a kid".into());
        };
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| key.get(*m).is_some())
        {
            return Err(format!(
                "key {kid} holds private material: send the public key only"
            ));
        }
        if !matches!(key["kty"].as_str(), Some("RSA" | "EC")) {
            return Err(format!("key {kid}: kty must be RSA or EC"));
        }
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone())
            .map_err(|e| format!("key {kid} is not a JWK: {e}"))?;
        jsonwebtoken::DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("key {kid} is not usable: {e}"))?;
    }
    Ok(())
}

impl ClientMetadata {
    /// The registration, or every field that is wrong, named.
    pub fn parse(self) -> Result<NewClient, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut refuse = |field: &str, msg: String| {
            errors.push(FieldError::new(&["body", field], msg, "value_error"));
        };
        let client_name = self.client_name.trim().to_owned();
        if client_name.is_empty() || client_name.chars().count() > 200 {
            refuse("client_name", "must hold 1 to 200 characters".into());
        }
        let auth_method = match self.token_endpoint_auth_method.as_deref() {
            // RFC 7591's default.
            None => AuthMethod::ClientSecretBasic,
            Some(text) => AuthMethod::parse(text).unwrap_or_else(|| {
                refuse(
                    "token_endpoint_auth_method",
                    "must be none, client_secret_basic or private_key_jwt".into(),
                );
                AuthMethod::None
            }),
        };
        let mut grant_types = Vec::new();
        for text in self
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into()])
        {
            match GrantType::parse(&text) {
                Some(g) if !grant_types.contains(&g) => grant_types.push(g),
                Some(_) => {}
                None => refuse(
                    "grant_types",
                    format!("{text} is not one of authorization_code, client_credentials, refresh_token"),
                ),
            }
        }
        let code = grant_types.contains(&GrantType::AuthorizationCode);
        let credentials = grant_types.contains(&GrantType::ClientCredentials);
        if grant_types.is_empty() {
            refuse("grant_types", "must name at least one grant type".into());
        }
        if grant_types.contains(&GrantType::RefreshToken) && !code {
            refuse(
                "grant_types",
                "refresh_token comes with authorization_code".into(),
            );
        }
        if credentials && auth_method != AuthMethod::PrivateKeyJwt {
            refuse(
                "grant_types",
                "client_credentials (SMART Backend Services) needs token_endpoint_auth_method private_key_jwt".into(),
            );
        }
        if code && self.redirect_uris.is_empty() {
            refuse(
                "redirect_uris",
                "authorization_code needs at least one redirect URI".into(),
            );
        }
        if self.redirect_uris.len() > 20 {
            refuse("redirect_uris", "at most 20".into());
        }
        for uri in &self.redirect_uris {
            if let Err(why) = check_url(uri) {
                refuse("redirect_uris", format!("{uri}: {why}"));
            }
        }
        match (&self.jwks, &self.jwks_uri) {
            (Some(_), Some(_)) => refuse("jwks", "send jwks or jwks_uri, not both".into()),
            (None, None) if auth_method == AuthMethod::PrivateKeyJwt => refuse(
                "jwks",
                "private_key_jwt needs the client's public keys: jwks or jwks_uri".into(),
            ),
            (Some(jwks), None) => {
                if let Err(why) = check_jwks(jwks) {
                    refuse("jwks", why);
                }
            }
            (None, Some(uri)) => {
                if let Err(why) = check_url(uri) {
                    refuse("jwks_uri", why.into());
                }
            }
            (None, None) => {}
        }
        if auth_method != AuthMethod::PrivateKeyJwt
            && (self.jwks.is_some() || self.jwks_uri.is_some())
        {
            refuse(
                "token_endpoint_auth_method",
                "keys are only used with private_key_jwt".into(),
            );
        }
        if let Some(launch_url) = &self.launch_url {
            if let Err(why) = check_url(launch_url) {
                refuse("launch_url", why.into());
            }
            if !code {
                refuse(
                    "launch_url",
                    "an EHR launch needs authorization_code".into(),
                );
            }
        }
        let scope = match Scopes::registered(&self.scope) {
            Ok(scope) => scope,
            Err(outside) => {
                refuse("scope", outside.to_string());
                Scopes::default()
            }
        };
        if scope.is_empty() && self.scope.split_ascii_whitespace().next().is_none() {
            refuse("scope", "must name at least one scope".into());
        }
        for s in scope.iter() {
            let system = matches!(s, Scope::Resource(r) if r.context == Context::System);
            if system && !credentials {
                refuse("scope", format!("{s} needs the client_credentials grant"));
            }
            if !system && !code {
                refuse("scope", format!("{s} needs the authorization_code grant"));
            }
        }
        if errors.is_empty() {
            Ok(NewClient {
                client_name,
                redirect_uris: self.redirect_uris,
                grant_types,
                auth_method,
                jwks: self.jwks,
                jwks_uri: self.jwks_uri,
                scope,
                launch_url: self.launch_url,
            })
        } else {
            Err(errors)
        }
    }
}

/// A registered client as stored.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: Uuid,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: AuthMethod,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub scope: Scopes,
    pub launch_url: Option<String>,
    secret_hash: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

const CLIENT_COLUMNS: &str = "client_id, client_name, redirect_uris, grant_types, \
    token_endpoint_auth_method, jwks, jwks_uri, scope, launch_url, secret_hash, created_at";

impl Client {
    fn from_row(row: &Row) -> Self {
        let grant_types: Vec<String> = row.get(3);
        let secret_hash: Option<String> = row.get(9);
        Self {
            client_id: row.get(0),
            client_name: row.get(1),
            redirect_uris: row.get(2),
            grant_types: grant_types
                .iter()
                .filter_map(|g| GrantType::parse(g))
                .collect(),
            auth_method: AuthMethod::parse(row.get(4)).unwrap_or(AuthMethod::None),
            jwks: row.get(5),
            jwks_uri: row.get(6),
            scope: Scopes::requested(row.get(7)),
            launch_url: row.get(8),
            secret_hash: secret_hash.and_then(|h| hex_decode(&h)),
            created_at: row.get(10),
        }
    }

    /// The registration as answered (RFC 7591's names; never the secret).
    pub fn metadata(&self) -> Value {
        let mut out = json!({
            "client_id": self.client_id,
            "client_name": self.client_name,
            "redirect_uris": self.redirect_uris,
            "grant_types": self.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
            "token_endpoint_auth_method": self.auth_method.as_str(),
            "scope": self.scope.to_string(),
            "client_id_issued_at": self.created_at.timestamp(),
        });
        if let Some(jwks) = &self.jwks {
            out["jwks"] = jwks.clone();
        }
        if let Some(uri) = &self.jwks_uri {
            out["jwks_uri"] = json!(uri);
        }
        if let Some(url) = &self.launch_url {
            out["launch_url"] = json!(url);
        }
        out
    }

    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Whether `secret` is this client's (constant time over the digests).
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Some(stored) = &self.secret_hash else {
            return false;
        };
        let given = shared::opaque::digest(secret);
        stored.len() == given.len()
            && stored
                .iter()
                .zip(&given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Registers `new`; answers the client and, for `client_secret_basic`, its secret (shown once).
pub async fn register(
    pool: &DbPool,
    audit: &AuditEntry,
    created_by: Uuid,
    new: NewClient,
) -> Result<(Client, Option<String>), StoreError> {
    let client_id = Uuid::new_v4();
    audit.describe(|event| {
        event.resource(Some(client_id)).details(json!({
            "client_name": new.client_name,
            "scope": new.scope.to_string(),
            "token_endpoint_auth_method": new.auth_method.as_str(),
        }))
    });
    let secret = (new.auth_method == AuthMethod::ClientSecretBasic).then(shared::opaque::new_value);
    let secret_hash = secret.as_deref().map(|s| hex(&shared::opaque::digest(s)));
    let grant_types: Vec<&str> = new.grant_types.iter().map(|g| g.as_str()).collect();
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO smart_clients (client_id, client_name, redirect_uris, grant_types,
                    token_endpoint_auth_method, jwks, jwks_uri, scope, launch_url, secret_hash,
                    created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {CLIENT_COLUMNS}"
            ),
            &[
                &client_id,
                &new.client_name,
                &new.redirect_uris,
                &grant_types,
                &new.auth_method.as_str(),
                &new.jwks,
                &new.jwks_uri,
                &new.scope.to_string(),
                &new.launch_url,
                &secret_hash,
                &created_by,
            ],
        )
        .await?;
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok((Client::from_row(&row), secret))
}

pub async fn list(pool: &DbPool) -> Result<Vec<Client>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM smart_clients ORDER BY created_at, client_id"
        ))
        .await?;
    Ok(client
        .query(&statement, &[])
        .await?
        .iter()
        .map(Client::from_row)
        .collect())
}

pub async fn find(pool: &DbPool, client_id: Uuid) -> Result<Option<Client>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM smart_clients WHERE client_id = $1"
        ))
        .await?;
    Ok(client
        .query_opt(&statement, &[&client_id])
        .await?
        .as_ref()
        .map(Client::from_row))
}

/// Deletes the client and, by the foreign keys, every grant, code and refresh token it held:
/// its access tokens stop working with the next request. False when there was none.
pub async fn delete(
    pool: &DbPool,
    audit: &AuditEntry,
    client_id: Uuid,
) -> Result<bool, StoreError> {
    let mut connection = pool.get().await?;
    let tx = connection.transaction().await?;
    let deleted = tx
        .execute(
            "DELETE FROM smart_clients WHERE client_id = $1",
            &[&client_id],
        )
        .await?;
    if deleted == 0 {
        return Ok(false);
    }
    audit.insert(&tx).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: Value) -> ClientMetadata {
        serde_json::from_value(value).unwrap()
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors
            .into_iter()
            .map(|e| e.loc[1].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_public_app_with_a_loopback_redirect_registers() {
        let new = metadata(json!({
            "client_name": "Growth charts",
            "redirect_uris": ["http://127.0.0.1:5000/callback", "https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "scope": "launch/patient patient/*.rs openid fhirUser offline_access",
        }))
        .parse()
        .unwrap();
        assert_eq!(new.auth_method, AuthMethod::None);
        assert_eq!(new.grant_types, vec![GrantType::AuthorizationCode]);
    }

    #[test]
    fn bad_metadata_names_each_field() {
        let errors = metadata(json!({
            "client_name": "x",
            "redirect_uris": ["/relative", "http://app.example/cb"],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": "system/*.rs patient/Observation.rs",
        }))
        .parse()
        .unwrap_err();
        assert_eq!(
            fields(errors),
            ["redirect_uris", "redirect_uris", "jwks", "scope"]
        );
    }

    #[test]
    fn a_jwks_with_a_private_key_is_refused() {
        let errors = metadata(json!({
            "client_name": "x",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "EC", "kid": "1", "crv": "P-384", "x": "a", "y": "b", "d": "c"}]},
            "scope": "system/*.rs",
        }))
        .parse()
        .unwrap_err();
        assert_eq!(fields(errors), ["jwks"]);
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://app.example/cb?x=1").is_ok());
        assert!(check_url("http://localhost:3000/cb").is_ok());
        assert!(check_url("http://[::1]/cb").is_ok());
        assert!(check_url("http://app.example/cb").is_err());
        assert!(check_url("https://app.example/cb#frag").is_err());
        assert!(check_url("javascript:alert(1)").is_err());
        assert!(check_url("https://user:pw@app.example/").is_err());
    }
}
