//! SMART Backend Services' client authentication: a JWT the client signs with one of its keys
//! (RS384 or ES384), checked against the JWK Set it registered, inline or at its `jwks_uri`.
//! Every refusal is `invalid_client` and the trail alone says which check failed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::smart::clients::{self, AuthMethod, Client};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use super::oauth::OAuthError;
use super::SmartServer;

/// The signing algorithms an assertion may use (discovery lists them).
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS384, Algorithm::ES384];
/// An assertion expires at most this far ahead (SMART Backend Services).
const MAX_LIFETIME_SECS: u64 = 300;
/// A `jwks_uri` is re-read for an unknown `kid` at most this often.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// A key read from a `jwks_uri` is trusted this long, then read again: a key the client removed
/// (compromised, rotated out) stops verifying within this time.
const CACHED_KEYS_LIVE: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The key sets read from clients' `jwks_uri`s, by client.
#[derive(Default)]
pub struct JwksCache(Mutex<HashMap<Uuid, (JwkSet, Instant)>>);

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: u64,
    jti: String,
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

/// The client whose valid assertion this is. `audiences`: the endpoint's own URL and the token
/// endpoint's (RFC 7523: the token endpoint names the authorization server).
pub async fn verify(
    server: &SmartServer,
    assertion: &str,
    audiences: &[&str],
) -> Result<Client, OAuthError> {
    let refuse = OAuthError::invalid_client;
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| refuse("the assertion is not a JWT"))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(refuse("the assertion's alg is not RS384 or ES384"));
    }
    let kid = header
        .kid
        .ok_or_else(|| refuse("the assertion has no kid"))?;
    // Who it claims to be, to find the keys that must have signed it.
    let claimed: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| refuse("the assertion's claims are not JSON"))?;
    let client_id = claimed
        .iss
        .as_deref()
        .and_then(|iss| Uuid::parse_str(iss).ok())
        .ok_or_else(|| refuse("the assertion's iss is not a client id"))?;
    let client = clients::find(&server.db, client_id)
        .await?
        .filter(|c| c.auth_method == AuthMethod::PrivateKeyJwt)
        .ok_or_else(|| refuse("no private_key_jwt client has this id"))?;
    let jwk = key_of(server, &client, &kid)
        .await
        .ok_or_else(|| refuse("the assertion's kid is not among the client's keys"))?;
    if jwk
        .common
        .key_algorithm
        .is_some_and(|alg| alg.to_string() != format!("{:?}", header.alg))
    {
        return Err(refuse("the key is registered for another alg"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| refuse("the key is not usable"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(audiences);
    validation.set_issuer(&[client_id.to_string()]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud", "jti"]);
    validation.leeway = 5;
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| {
            OAuthError::invalid_client(format!("the assertion does not verify: {:?}", e.kind()))
        })?
        .claims;
    if claims.sub != claims.iss {
        return Err(refuse("the assertion's sub is not its iss"));
    }
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    if claims.exp > now + MAX_LIFETIME_SECS + 5 {
        return Err(refuse("the assertion's exp is more than 5 minutes ahead"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(refuse("the assertion's jti is empty or too long"));
    }
    let expires_at = chrono::DateTime::from_timestamp(claims.exp as i64, 0)
        .ok_or_else(|| refuse("the assertion's exp is out of range"))?;
    if !domain::smart::grants::first_use_of_assertion(
        &server.db,
        client_id,
        &claims.jti,
        expires_at,
    )
    .await?
    {
        return Err(refuse("the assertion's jti was used before"));
    }
    Ok(client)
}

/// The client's key `kid`: from its inline JWK Set, or its `jwks_uri` (cached; re-read on an
/// unknown `kid` at most once a minute).
async fn key_of(server: &SmartServer, client: &Client, kid: &str) -> Option<Jwk> {
    let find = |set: &JwkSet| set.find(kid).cloned();
    if let Some(jwks) = &client.jwks {
        return find(&serde_json::from_value(jwks.clone()).ok()?);
    }
    let uri = client.jwks_uri.as_deref()?;
    let cached = server
        .jwks_cache
        .0
        .lock()
        .ok()?
        .get(&client.client_id)
        .cloned();
    if let Some((set, fetched_at)) = &cached {
        let age = fetched_at.elapsed();
        if let Some(key) = find(set).filter(|_| age < CACHED_KEYS_LIVE) {
            return Some(key);
        }
        if age < REFETCH_AT_MOST_EVERY {
            return None;
        }
    }
    let fetched = fetch(server, uri).await;
    let mut cache = server.jwks_cache.0.lock().ok()?;
    match fetched {
        Some(set) => {
            let key = find(&set);
            cache.insert(client.client_id, (set, Instant::now()));
            key
        }
        None => {
            // Not again for a minute, whatever the next assertion names; no stale key is kept.
            cache.insert(
                client.client_id,
                (JwkSet { keys: Vec::new() }, Instant::now()),
            );
            None
        }
    }
}

/// Whether `ip` is on the public internet (not loopback, private, link-local, CGNAT, unique
/// local, unspecified, multicast or documentation).
fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
                && v6.to_ipv4_mapped().is_none_or(|v4| is_public(v4.into()))
        }
    }
}

/// GET `uri` (https, or http on loopback, as registered), at most 64 KiB in 5 seconds, no
/// redirects. Its host is resolved here and must be public (outside a local environment); the
/// request goes to that checked address, so a second resolution cannot point it elsewhere.
async fn fetch(server: &SmartServer, uri: &str) -> Option<JwkSet> {
    let url = clients::check_url(uri).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default()?;
    let addresses: Vec<std::net::SocketAddr> = tokio::time::timeout(
        FETCH_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .ok()?
    .ok()?
    .collect();
    let address = addresses
        .into_iter()
        .find(|a| server.private_jwks_uris || is_public(a.ip()))
        .or_else(|| {
            tracing::warn!("a client's jwks_uri resolves to no public address");
            None
        })?;
    let response = server
        .jwks_client(&host, address)?
        .get(uri)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| tracing::warn!(error = %e, "a client's jwks_uri could not be read"))
        .ok()?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "a client's jwks_uri answered an error");
        return None;
    }
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            tracing::warn!("a client's jwks_uri answered more than 64 KiB");
            return None;
        }
    }
    serde_json::from_slice(&body).ok()
}
