//! The API's check of a Cognito access token: signature against the pool's JWKS, issuer,
//! expiry, `token_use` and client id; the tenant is the verified token's `sub`.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use url::Url;

use super::{ApiSettings, JWKS_REFRESH_INTERVAL};
use crate::lambda::settings::DEFAULT_CONNECT_TIMEOUT;
use crate::tenant::TenantId;

/// Why a token was refused. Logged; never shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signature, issuer or expiry refused: {0}")]
    Invalid(String),
    #[error("token_use is not access")]
    NotAccessToken,
    #[error("issued to another app client")]
    WrongClient,
    #[error("sub is not a tenant id")]
    BadSub,
    /// The JWKS could not be fetched: not the caller's fault (503, not 401).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    token_use: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// Verifies Cognito access tokens against the pool's JWKS (fetched at cold start, refetched on
/// an unknown `kid` at most every [`JWKS_REFRESH_INTERVAL`]).
pub struct TokenVerifier {
    client_ids: Vec<String>,
    jwks_url: Url,
    http: reqwest::Client,
    /// Made once: the algorithm, issuer and required claims every token is checked against.
    validation: Validation,
    /// The pool's keys by `kid`, decoded once per fetch (not per request).
    keys: RwLock<HashMap<String, DecodingKey>>,
    pub(super) last_fetch: Mutex<Option<Instant>>,
}

impl TokenVerifier {
    pub fn new(settings: &ApiSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT.min(settings.timeout))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Access tokens carry `client_id`, not `aud`: checked in `verify`.
        validation.validate_aud = false;
        validation.leeway = 5;
        Ok(Self {
            client_ids: settings.client_ids.clone(),
            jwks_url: settings.jwks_url.clone(),
            http,
            validation,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        })
    }

    /// Fetches the JWKS unless it was fetched within the refresh interval.
    pub async fn refresh(&self) -> Result<(), AccessTokenError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_INTERVAL) {
            // Fetched (or tried) moments ago. With no keys at all, the last try failed: that is
            // an outage of the key endpoint, not a bad token.
            if self.keys.read().await.is_empty() {
                return Err(AccessTokenError::KeysUnavailable(
                    "the last fetch failed; retried every 30 s".into(),
                ));
            }
            return Ok(());
        }
        *last = Some(Instant::now());
        let unavailable = |e: String| AccessTokenError::KeysUnavailable(e);
        let response = self
            .http
            .get(self.jwks_url.clone())
            .send()
            .await
            .map_err(|e| unavailable(format!("GET jwks: {}", crate::outside::error::chain(&e))))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("GET jwks: {}", response.status())));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| unavailable(format!("jwks body: {e}")))?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
            })
            .collect();
        *self.keys.write().await = keys;
        Ok(())
    }

    /// The tenant a valid access token names.
    pub async fn verify(&self, token: &str) -> Result<TenantId, AccessTokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AccessTokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AccessTokenError::Invalid(format!(
                "algorithm {:?}",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(AccessTokenError::Malformed)?;
        let key = match self.key(&kid).await {
            Some(k) => k,
            None => {
                self.refresh().await?;
                self.key(&kid).await.ok_or(AccessTokenError::UnknownKey)?
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| AccessTokenError::Invalid(format!("{:?}", e.kind())))?
            .claims;
        if claims.token_use != "access" {
            return Err(AccessTokenError::NotAccessToken);
        }
        if !claims
            .client_id
            .as_ref()
            .is_some_and(|c| self.client_ids.contains(c))
        {
            return Err(AccessTokenError::WrongClient);
        }
        TenantId::parse(&claims.sub).map_err(|_| AccessTokenError::BadSub)
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().await.get(kid).cloned()
    }
}
