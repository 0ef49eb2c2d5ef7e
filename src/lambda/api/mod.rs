//! `GET /tenant`: the signed-in user's tenant, for the frontend.
//!
//! The frontend has a Cognito access token, not an IAM identity, so it cannot read its
//! credentials from Secrets Manager itself. This handler (`POST_SIGNUP_HANDLER=api`, behind an
//! API Gateway HTTP API with a JWT authorizer, or a function URL) answers for the one tenant the
//! token names. It verifies the token itself as well (signature against the pool's JWKS, issuer,
//! expiry, `token_use`, client id), so it holds when called without API Gateway in front, and
//! the tenant is chosen only from the verified token's `sub`, never from the request.
//!
//! Answers, all `Cache-Control: no-store`:
//! - 200 `ready`: broker URLs, vhost, username, password (from the tenant's Secrets Manager
//!   secret; the record decides whether it is current);
//! - 202 `provisioning` with `Retry-After` while the tenant is handed off or being changed; a
//!   signed-in user with no record at all (its sign-up could write neither its record nor its
//!   hand-off) is handed off here (`HANDOFF_QUEUE_URL`), so the worker finishes it in seconds;
//! - 403 `suspended`; 410 `offboarded`;
//! - 401 for any token problem, with no detail (the reason goes to the log, never the token);
//! - 503 `unavailable` with `Retry-After` when the registry or Secrets Manager does not answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

mod access_token;

pub use access_token::{AccessTokenError, TokenVerifier};

use crate::lambda::settings::{DEFAULT_SECRET_PREFIX, SettingsError, Vars, err, millis, parse_url};
use crate::outside::registry::Registry;
use crate::outside::secrets_manager::SecretsManager;
use crate::outside::sqs::{HandoffMessage, HandoffQueue};
use crate::tenant::TenantId;
use crate::tenant::record::{Phase, TenantRecord};

/// Every variable the API handler reads.
pub mod var {
    pub const USER_POOL_ID: &str = "USER_POOL_ID";
    pub const CLIENT_IDS: &str = "USER_POOL_CLIENT_IDS";
    pub const ISSUER: &str = "COGNITO_ISSUER";
    pub const JWKS_URL: &str = "COGNITO_JWKS_URL";
    pub const REGISTRY_TABLE: &str = "REGISTRY_TABLE";
    pub const SECRET_PREFIX: &str = "TENANT_SECRET_PREFIX";
    pub const CORS_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
    pub const WEB_STOMP_URL: &str = "RABBITMQ_WEB_STOMP_URL";
    pub const CELLS_PATH: &str = "CELLS_PATH";
    pub const REGION: &str = "AWS_REGION";
    pub const TIMEOUT_MS: &str = "API_TIMEOUT_MS";
    pub const HANDOFF_QUEUE_URL: &str = "HANDOFF_QUEUE_URL";
}

/// How long a frontend should wait before asking again while its tenant is being set up.
pub const RETRY_AFTER_SECS: u32 = 2;
/// An unknown `kid` refetches the JWKS at most this often (a stream of forged kids must not
/// turn into a stream of JWKS requests).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub user_pool_id: String,
    /// App clients whose access tokens are accepted (`client_id` claim).
    pub client_ids: Vec<String>,
    pub issuer: String,
    pub jwks_url: Url,
    pub registry_table: String,
    pub secret_prefix: String,
    /// Origins answered with CORS headers (`*` for any); none: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// The tenant's broker's Web-STOMP endpoint, when it has one.
    pub web_stomp_url: Option<Url>,
    /// Each cell's Web-STOMP endpoint (`CELLS_PATH`). With cells declared, a tenant gets its
    /// own cell's or none (a broker without Web-STOMP, as every Amazon MQ broker: a browser
    /// cannot reach it), never another broker's.
    pub cell_web_stomp_urls: std::collections::BTreeMap<String, Url>,
    /// Whether a cells file is declared (then `web_stomp_url` is not used).
    pub cells_declared: bool,
    /// Each outside call (registry, Secrets Manager, JWKS, SQS) gets at most this long.
    pub timeout: Duration,
    /// Where a signed-in user with no record is handed off (`None`: answered 202 only; the
    /// reconciler provisions it).
    pub handoff_queue_url: Option<Url>,
}

impl ApiSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let vars = Vars(&lookup);
        let get = |name: &'static str| vars.get(name);
        let required = |name: &'static str| vars.required(name);
        let user_pool_id = required(var::USER_POOL_ID)?;
        // `us-east-1_AbC123`: the region is part of the id (and of the issuer).
        let pool_region = match user_pool_id.split_once('_') {
            Some((region, rest))
                if !region.is_empty()
                    && !rest.is_empty()
                    && user_pool_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                region.to_owned()
            }
            _ => {
                return Err(err(
                    var::USER_POOL_ID,
                    format!("'{user_pool_id}' is not a user pool id (REGION_ID)"),
                ));
            }
        };
        let client_ids: Vec<String> = required(var::CLIENT_IDS)?
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if client_ids.is_empty() {
            return Err(err(var::CLIENT_IDS, "names no app client"));
        }
        let region = get(var::REGION).unwrap_or(pool_region);
        let issuer = match get(var::ISSUER) {
            Some(i) => i.trim_end_matches('/').to_owned(),
            None => format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"),
        };
        let jwks = get(var::JWKS_URL).unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
        let jwks_url = parse_url(var::JWKS_URL, &jwks, &["http", "https"])?;
        let cors_origins = get(var::CORS_ORIGINS)
            .map(|s| {
                s.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            let ok = origin == "*"
                || Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/"
                });
            if !ok {
                return Err(err(
                    var::CORS_ORIGINS,
                    format!("'{origin}' is not an origin (scheme://host[:port]) or *"),
                ));
            }
        }
        let web_stomp_url = get(var::WEB_STOMP_URL)
            .map(|raw| parse_url(var::WEB_STOMP_URL, &raw, &["ws", "wss"]))
            .transpose()?;
        let cells_declared = get(var::CELLS_PATH).is_some();
        let cell_web_stomp_urls = match get(var::CELLS_PATH) {
            None => Default::default(),
            Some(path) => {
                let cells = crate::cells::Cells::load(std::path::Path::new(&path))
                    .map_err(|e| err(var::CELLS_PATH, e.to_string()))?;
                let mut urls: std::collections::BTreeMap<String, Url> = cells
                    .all()
                    .iter()
                    .filter_map(|c| Some((c.name.clone(), c.web_stomp_url.clone()?)))
                    .collect();
                // A tenant recorded before cells lives in the first cell.
                if let Some(url) = cells.all().first().and_then(|c| c.web_stomp_url.clone()) {
                    urls.insert(crate::cells::DEFAULT_CELL.to_owned(), url);
                }
                urls
            }
        };
        let timeout = millis(
            var::TIMEOUT_MS,
            get(var::TIMEOUT_MS),
            DEFAULT_TIMEOUT,
            100..=25_000,
        )?;
        Ok(Self {
            user_pool_id,
            client_ids,
            issuer,
            jwks_url,
            registry_table: required(var::REGISTRY_TABLE)?,
            secret_prefix: get(var::SECRET_PREFIX).unwrap_or_else(|| DEFAULT_SECRET_PREFIX.into()),
            cors_origins,
            web_stomp_url,
            cell_web_stomp_urls,
            cells_declared,
            timeout,
            handoff_queue_url: get(var::HANDOFF_QUEUE_URL)
                .map(|raw| parse_url(var::HANDOFF_QUEUE_URL, &raw, &["http", "https"]))
                .transpose()?,
        })
    }
}

impl ApiSettings {
    /// The Web-STOMP endpoint a tenant of `cell` is given: with cells declared, its own cell's
    /// or none; without, the one broker's (`RABBITMQ_WEB_STOMP_URL`), if set.
    pub fn web_stomp_url_of(&self, cell: Option<&str>) -> Option<&Url> {
        if self.cells_declared {
            cell.and_then(|c| self.cell_web_stomp_urls.get(c))
        } else {
            self.web_stomp_url.as_ref()
        }
    }
}

/// The part of an API Gateway HTTP API (payload 2.0) or function URL request this reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    #[serde(default)]
    pub raw_path: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    pub request_context: RequestContext,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub http: HttpContext,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HttpContext {
    pub method: String,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The handler's answer (payload 2.0 response). Holds the password when ready: never log it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub is_base64_encoded: bool,
    /// Always empty (this API sets no cookie); present because some emulators require it.
    pub cookies: Vec<String>,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status_code", &self.status_code)
            .field("headers", &self.headers)
            .field("body", &"[REDACTED]")
            .finish()
    }
}

impl HttpResponse {
    fn json(status: u16, body: serde_json::Value) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("cache-control".into(), "no-store".into());
        Self {
            status_code: status,
            headers,
            body: body.to_string(),
            is_base64_encoded: false,
            cookies: Vec::new(),
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Parses the body (tests and tools).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn unauthorized(missing: bool) -> HttpResponse {
    let challenge = if missing {
        "Bearer".to_owned()
    } else {
        "Bearer error=\"invalid_token\"".to_owned()
    };
    HttpResponse::json(401, serde_json::json!({"error": "unauthorized"}))
        .with("www-authenticate", challenge)
}

fn unavailable() -> HttpResponse {
    HttpResponse::json(503, serde_json::json!({"error": "unavailable"}))
        .with("retry-after", RETRY_AFTER_SECS.to_string())
}

fn provisioning() -> HttpResponse {
    HttpResponse::json(202, serde_json::json!({"status": "provisioning"}))
        .with("retry-after", RETRY_AFTER_SECS.to_string())
}

/// What the record says a frontend may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Provisioning,
    Suspended,
    Offboarded,
}

/// Ready once the tenant was provisioned and nothing that changes its credentials or access is
/// still being applied. A plan change in flight keeps the tenant ready: its credentials stay.
pub fn readiness(record: Option<&TenantRecord>) -> Readiness {
    let Some(r) = record else {
        // Confirmed (it has a token) but not yet recorded: the trigger handed it off while the
        // registry was away, and the worker or the reconciler is recording it.
        return Readiness::Provisioning;
    };
    match r.state {
        Phase::Offboarded => Readiness::Offboarded,
        Phase::Suspended => Readiness::Suspended,
        Phase::Active => {
            // A plan change alone leaves the credentials as they are.
            let settled = r.converged() || r.pending_changes().all(|c| c == "plan");
            if r.provisioned_at.is_some() && settled {
                Readiness::Ready
            } else {
                Readiness::Provisioning
            }
        }
    }
}

/// The tenant's Secrets Manager value, as the trigger writes it.
#[derive(Deserialize)]
struct StoredCredentials {
    amqp_url: String,
    username: String,
    password: SecretString,
    vhost: String,
}

/// The broker's AMQP URL without credentials or vhost.
fn broker_url(amqp_url: &str) -> Option<String> {
    let mut url = Url::parse(amqp_url).ok()?;
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    url.set_path("");
    Some(url.to_string().trim_end_matches('/').to_owned())
}

pub struct Api {
    pub settings: ApiSettings,
    verifier: TokenVerifier,
    registry: Registry,
    secrets: SecretsManager,
    handoff: Option<HandoffQueue>,
}

impl Api {
    /// Clients, and the JWKS fetched once (a failure is retried on the first request).
    pub async fn init(settings: ApiSettings, aws: &aws_config::SdkConfig) -> Result<Self, String> {
        let verifier = TokenVerifier::new(&settings)?;
        if let Err(e) = verifier.refresh().await {
            tracing::warn!(error = %e, "jwks not fetched at cold start; the first request retries");
            *verifier.last_fetch.lock().await = None;
        }
        Ok(Self {
            registry: Registry::new(aws_sdk_dynamodb::Client::new(aws), &settings.registry_table),
            secrets: SecretsManager::new(aws_sdk_secretsmanager::Client::new(aws)),
            handoff: settings
                .handoff_queue_url
                .as_ref()
                .map(|url| HandoffQueue::new(aws_sdk_sqs::Client::new(aws), url)),
            verifier,
            settings,
        })
    }

    fn cors(&self, request: &HttpRequest, response: HttpResponse) -> HttpResponse {
        let Some(origin) = request.header("origin") else {
            return response;
        };
        let origin = origin.trim_end_matches('/');
        let allowed = self
            .settings
            .cors_origins
            .iter()
            .any(|o| o == "*" || o == origin);
        if !allowed {
            return response.with("vary", "Origin");
        }
        response
            .with("access-control-allow-origin", origin)
            .with("vary", "Origin")
    }

    /// Answers one request. Never fails: every problem is an HTTP answer.
    pub async fn handle(&self, request: &HttpRequest) -> HttpResponse {
        let method = request.request_context.http.method.to_ascii_uppercase();
        let path = request.raw_path.trim_end_matches('/');
        if path != "/tenant" && !path.ends_with("/tenant") {
            return self.cors(
                request,
                HttpResponse::json(404, serde_json::json!({"error": "not found"})),
            );
        }
        let response = match method.as_str() {
            "OPTIONS" => HttpResponse::json(204, serde_json::json!({}))
                .with("access-control-allow-methods", "GET, OPTIONS")
                .with("access-control-allow-headers", "authorization")
                .with("access-control-max-age", "600"),
            "GET" => self.get_tenant(request).await,
            _ => HttpResponse::json(405, serde_json::json!({"error": "method not allowed"}))
                .with("allow", "GET, OPTIONS"),
        };
        self.cors(request, response)
    }

    async fn get_tenant(&self, request: &HttpRequest) -> HttpResponse {
        let token = request
            .header("authorization")
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            tracing::info!(refused = %AccessTokenError::Missing, "tenant request refused");
            return unauthorized(true);
        };
        let tenant = match self.verifier.verify(token).await {
            Ok(t) => t,
            Err(e @ AccessTokenError::KeysUnavailable(_)) => {
                tracing::error!(error = %e, "tenant request not answered");
                return unavailable();
            }
            Err(e) => {
                tracing::info!(refused = %e, "tenant request refused");
                return unauthorized(false);
            }
        };
        let timeout = self.settings.timeout;
        let record = match tokio::time::timeout(timeout, self.registry.get(&tenant)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(tenant = %tenant, error = %e, "registry read failed");
                return unavailable();
            }
            Err(_) => {
                tracing::error!(tenant = %tenant, "registry read timed out");
                return unavailable();
            }
        };
        if record.is_none() {
            self.hand_off(&tenant).await;
        }
        let state = readiness(record.as_ref());
        tracing::info!(tenant = %tenant, readiness = ?state, "tenant request");
        match state {
            Readiness::Offboarded => {
                HttpResponse::json(410, serde_json::json!({"status": "offboarded"}))
            }
            Readiness::Suspended => {
                HttpResponse::json(403, serde_json::json!({"status": "suspended"}))
            }
            Readiness::Provisioning => provisioning(),
            Readiness::Ready => {
                let cell = record.as_ref().map(|r| r.cell.as_str());
                self.ready(&tenant, cell).await
            }
        }
    }

    /// A signed-in (so confirmed) user with no record: its sign-up wrote neither its record nor
    /// its hand-off. Handing it off here lets the worker record and provision it within seconds
    /// instead of at the next scheduled reconcile. The answer is 202 either way: a hand-off that
    /// fails is logged, and the reconciler provisions every confirmed user without a record.
    /// Polling while the worker is on it may send it again; the worker converges each once
    /// (the tenant's lease), so a repeat is a no-op.
    async fn hand_off(&self, tenant: &TenantId) {
        let Some(queue) = &self.handoff else {
            tracing::warn!(tenant = %tenant, "no record and no hand-off queue: the reconciler provisions it");
            return;
        };
        let message = HandoffMessage::new(tenant, Some(&self.settings.user_pool_id));
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        match queue.send(&message, deadline).await {
            Ok(_) => {
                tracing::warn!(tenant = %tenant, "signed in with no record: handed off");
                crate::metrics::api_handoff("handed-off");
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "signed in with no record and not handed off: the reconciler provisions it");
                crate::metrics::api_handoff("failed");
            }
        }
    }

    async fn ready(&self, tenant: &TenantId, cell: Option<&str>) -> HttpResponse {
        let name = tenant.secrets_manager_name(&self.settings.secret_prefix);
        let read = tokio::time::timeout(self.settings.timeout, self.secrets.get_json(&name)).await;
        let value = match read {
            Ok(Ok(Some(v))) => v,
            // Recorded as provisioned but the secret is not (yet) there: a repair is coming.
            Ok(Ok(None)) => {
                tracing::warn!(tenant = %tenant, "recorded ready but its secret is missing");
                return provisioning();
            }
            Ok(Err(e)) => {
                tracing::error!(tenant = %tenant, error = %e, "tenant secret read failed");
                return unavailable();
            }
            Err(_) => {
                tracing::error!(tenant = %tenant, "tenant secret read timed out");
                return unavailable();
            }
        };
        let Ok(stored) = serde_json::from_value::<StoredCredentials>(value) else {
            tracing::error!(tenant = %tenant, "tenant secret is not the expected JSON");
            return unavailable();
        };
        let Some(amqp) = broker_url(&stored.amqp_url) else {
            tracing::error!(tenant = %tenant, "tenant secret's amqp_url is not a URL");
            return unavailable();
        };
        HttpResponse::json(
            200,
            serde_json::json!({
                "status": "ready",
                "amqp_url": amqp,
                "web_stomp_url": self.settings.web_stomp_url_of(cell).map(Url::as_str),
                "vhost": stored.vhost,
                "username": stored.username,
                "password": stored.password.expose_secret(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[(&str, &str)]) -> Result<ApiSettings, SettingsError> {
        let mut env: HashMap<String, String> = [
            ("USER_POOL_ID", "eu-west-1_AbC123"),
            ("USER_POOL_CLIENT_IDS", "client-a, client-b"),
            ("REGISTRY_TABLE", "tenants"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        ApiSettings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn the_issuer_and_jwks_follow_the_pool() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.issuer,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        );
        assert_eq!(
            s.jwks_url.as_str(),
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123/.well-known/jwks.json"
        );
        assert_eq!(s.client_ids, ["client-a", "client-b"]);
        assert!(s.cors_origins.is_empty());
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (var, value) in [
            ("USER_POOL_ID", "nounderscore"),
            ("USER_POOL_CLIENT_IDS", " , "),
            ("COGNITO_JWKS_URL", "ftp://x/keys"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com/path"),
            ("RABBITMQ_WEB_STOMP_URL", "http://broker:15674/ws"),
            ("API_TIMEOUT_MS", "99999"),
        ] {
            let e = settings(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{value}: {e}");
        }
        let e = settings(&[("REGISTRY_TABLE", " ")]).unwrap_err();
        assert_eq!(e.var, "REGISTRY_TABLE");
    }

    #[test]
    fn with_cells_a_tenant_gets_its_own_cells_web_stomp_url_or_none() {
        let path = std::env::temp_dir().join(format!("api-cells-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "cells:\n  - name: a\n    management_url: http://a:15672\n    amqp_url: amqp://a:5672\n    admin_secret_id: a-admin\n    capacity: {vhosts: 50, connections: 5000}\n    web_stomp_url: wss://a.example.com/ws\n  - name: mq\n    management_url: https://b.mq.eu-west-1.amazonaws.com\n    amqp_url: amqps://b.mq.eu-west-1.amazonaws.com:5671\n    admin_secret_id: b-admin\n    capacity: {vhosts: 50, connections: 5000}\n",
        )
        .unwrap();
        let with_cells = settings(&[
            ("CELLS_PATH", path.to_str().unwrap()),
            ("RABBITMQ_WEB_STOMP_URL", "wss://one.example.com/ws"),
        ])
        .unwrap();
        let _ = std::fs::remove_file(&path);
        let url = |cell| with_cells.web_stomp_url_of(cell).map(Url::as_str);
        assert_eq!(url(Some("a")), Some("wss://a.example.com/ws"));
        assert_eq!(url(Some("default")), Some("wss://a.example.com/ws"));
        assert_eq!(url(Some("mq")), None, "no other broker's URL");
        let one = settings(&[("RABBITMQ_WEB_STOMP_URL", "wss://one.example.com/ws")]).unwrap();
        assert_eq!(
            one.web_stomp_url_of(Some("default")).map(Url::as_str),
            Some("wss://one.example.com/ws")
        );
    }

    fn record(state: Phase) -> TenantRecord {
        let tenant = TenantId::parse("4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f").unwrap();
        let plans = crate::tenant::plan::Plans::embedded().unwrap();
        let mut r = TenantRecord::new(&tenant, None, &plans, "sign-up");
        r.state = state;
        r
    }

    #[test]
    fn readiness_follows_the_record() {
        assert_eq!(readiness(None), Readiness::Provisioning);
        let mut r = record(Phase::Active);
        // Recorded, not yet provisioned (handed off).
        assert_eq!(readiness(Some(&r)), Readiness::Provisioning);
        r.provisioned_at = Some("2026-11-30T00:00:00Z".into());
        r.converged_version = r.version;
        assert_eq!(readiness(Some(&r)), Readiness::Ready);
        // A rotation in flight: the stored password may not be the broker's yet.
        r.version += 1;
        r.pending = Some("rotate".into());
        assert_eq!(readiness(Some(&r)), Readiness::Provisioning);
        // A plan change in flight changes no credentials.
        r.pending = Some("plan".into());
        assert_eq!(readiness(Some(&r)), Readiness::Ready);
        assert_eq!(
            readiness(Some(&record(Phase::Suspended))),
            Readiness::Suspended
        );
        assert_eq!(
            readiness(Some(&record(Phase::Offboarded))),
            Readiness::Offboarded
        );
    }

    #[test]
    fn the_broker_url_carries_no_credentials() {
        assert_eq!(
            broker_url("amqps://u:p%40ss@b-1.mq.eu-west-1.amazonaws.com:5671/4f8e2d3c").unwrap(),
            "amqps://b-1.mq.eu-west-1.amazonaws.com:5671"
        );
        assert_eq!(broker_url("not a url"), None);
    }

    #[test]
    fn a_ready_answer_is_not_printed_with_its_password() {
        let r = HttpResponse::json(200, serde_json::json!({"password": "hunter2"}));
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
