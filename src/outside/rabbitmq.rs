//! RabbitMQ Management HTTP API: the tenant's user, vhost and permission.
//! Every call is a PUT (an upsert), so a retried or duplicated invocation converges.

use std::time::Duration;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::outside::error::{FailureKind, StepError, System, chain, transport_kind};
use crate::tenant::credentials::AdminCredential;
use crate::tenant::plan::QueueType;

/// Reads the admin credential again (from Secrets Manager) after a 401: the credential was
/// rotated while this container was warm.
pub type AdminReload = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<AdminCredential, StepError>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub struct RabbitMq {
    http: reqwest::Client,
    base: Url,
    admin: Arc<RwLock<AdminCredential>>,
    reload: Option<AdminReload>,
    /// How many reloads there were: read lock-free on every call, so only a 401 waits.
    reloads: Arc<AtomicU64>,
    /// Serialises reloads, so concurrent 401s cause one reload, not many.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    error: serde_json::Value,
    /// A string, or (3.10, for `*_already_exists`) a list.
    #[serde(default)]
    reason: serde_json::Value,
}

fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(render).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

impl RabbitMq {
    /// `request_timeout` bounds each call; the orchestrator's deadline bounds the whole.
    pub fn new(
        base: Url,
        admin: AdminCredential,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, StepError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("post-signup/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                StepError::new(
                    System::Rabbitmq,
                    "build HTTP client",
                    FailureKind::Other,
                    chain(&e),
                )
            })?;
        Ok(Self {
            http,
            base,
            admin: Arc::new(RwLock::new(admin)),
            reload: None,
            reloads: Arc::default(),
            reloading: Arc::default(),
        })
    }

    /// On a 401, read the admin credential again once and repeat the call.
    pub fn with_admin_reload(mut self, reload: AdminReload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// `/api/<segments…>`, each segment percent-encoded (a vhost may contain `/`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        url
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let admin = self.admin.read().expect("admin credential lock").clone();
        req.basic_auth(&admin.username, Some(admin.password.expose_secret()))
    }

    async fn send(
        &self,
        action: String,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StepError> {
        let seen = self.reloads.load(Ordering::Acquire);
        let again = req.try_clone();
        let mut resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| transport_error(&action, &e))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && let (Some(reload), Some(again)) = (&self.reload, again)
        {
            // The admin credential may have been rotated since the cold start: read it again
            // (once, however many calls saw the 401) and repeat this call once.
            let guard = self.reloading.lock().await;
            if self.reloads.load(Ordering::Acquire) == seen {
                let fresh = reload().await?;
                *self.admin.write().expect("admin credential lock") = fresh;
                self.reloads.fetch_add(1, Ordering::Release);
                tracing::warn!("rabbitmq answered 401: admin credential read again");
            }
            drop(guard);
            resp = self
                .authorized(again)
                .send()
                .await
                .map_err(|e| transport_error(&action, &e))?;
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ApiError>(&body) {
            Ok(api) if !api.reason.is_null() => render(&api.reason),
            Ok(api) => render(&api.error),
            Err(_) => body,
        };
        Err(
            StepError::from_status(System::Rabbitmq, action, status.as_u16(), &message)
                .with_retry_after(retry_after),
        )
    }

    /// PUT, again if a concurrent PUT created the resource first.
    ///
    /// RabbitMQ 3.10 checks-then-creates: two PUTs racing to create the same user answer one of
    /// them `400 user_already_exists` (seen with ten concurrent duplicate sign-ups). A repeated
    /// PUT is then an update, which converges. Only that answer is retried, at most
    /// `ALREADY_EXISTS_ATTEMPTS` times, and the orchestrator's deadline bounds it all.
    async fn put_converging(
        &self,
        action: String,
        segments: &[&str],
        body: &serde_json::Value,
    ) -> Result<(), StepError> {
        const ALREADY_EXISTS_ATTEMPTS: usize = 4;
        let mut attempt = 1;
        loop {
            let request = self.http.put(self.url(segments)).json(body);
            match self.send(action.clone(), request).await {
                Err(e) if attempt < ALREADY_EXISTS_ATTEMPTS && is_already_exists(&e) => {
                    attempt += 1
                }
                other => return other.map(drop),
            }
        }
    }

    /// Creates or updates the user with this password and no tags (no management access).
    pub async fn put_user(&self, user: &str, password: &SecretString) -> Result<(), StepError> {
        // RabbitMQ 3.10 refuses a user PUT without "tags".
        let body = serde_json::json!({"password": password.expose_secret(), "tags": ""});
        self.put_converging(format!("create user '{user}'"), &["users", user], &body)
            .await
    }

    /// Creates or updates the vhost. `default_queue_type` is honoured by RabbitMQ 3.11+; older
    /// brokers ignore it (status shows what the broker kept).
    pub async fn put_vhost(
        &self,
        vhost: &str,
        description: &str,
        default_queue_type: Option<QueueType>,
    ) -> Result<(), StepError> {
        let mut body = serde_json::json!({"description": description, "tags": ""});
        if let Some(q) = default_queue_type {
            body["default_queue_type"] = q.as_str().into();
        }
        self.put_converging(format!("create vhost '{vhost}'"), &["vhosts", vhost], &body)
            .await
    }

    /// Grants `user` everything on `vhost`, and nothing elsewhere.
    pub async fn put_permission(&self, vhost: &str, user: &str) -> Result<(), StepError> {
        let body = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        self.send(
            format!("grant '{user}' on vhost '{vhost}'"),
            self.http
                .put(self.url(&["permissions", vhost, user]))
                .json(&body),
        )
        .await
        .map(drop)
    }

    /// Sets one limit of a vhost (`max-connections`, `max-queues`): a PUT, so it converges.
    pub async fn put_vhost_limit(
        &self,
        vhost: &str,
        limit: &str,
        value: i64,
    ) -> Result<(), StepError> {
        self.put_limit(Limited::Vhost, vhost, limit, value).await
    }

    /// Sets one limit of a user (`max-connections`, `max-channels`; RabbitMQ 3.8.10+).
    pub async fn put_user_limit(
        &self,
        user: &str,
        limit: &str,
        value: i64,
    ) -> Result<(), StepError> {
        self.put_limit(Limited::User, user, limit, value).await
    }

    /// The vhost's limits, e.g. `{"max-connections": 10}`.
    pub async fn vhost_limits(&self, vhost: &str) -> Result<BTreeMap<String, i64>, StepError> {
        self.limits(Limited::Vhost, vhost).await
    }

    /// The user's limits, e.g. `{"max-channels": 50}`.
    pub async fn user_limits(&self, user: &str) -> Result<BTreeMap<String, i64>, StepError> {
        self.limits(Limited::User, user).await
    }

    async fn put_limit(
        &self,
        kind: Limited,
        name: &str,
        limit: &str,
        value: i64,
    ) -> Result<(), StepError> {
        let body = serde_json::json!({"value": value});
        self.send(
            format!("limit {limit} of {} '{name}' to {value}", kind.noun()),
            self.http
                .put(self.url(&[kind.collection(), name, limit]))
                .json(&body),
        )
        .await
        .map(drop)
    }

    async fn limits(&self, kind: Limited, name: &str) -> Result<BTreeMap<String, i64>, StepError> {
        let rows: Vec<LimitRow> = self
            .get(
                format!("limits of {} '{name}'", kind.noun()),
                &[kind.collection(), name],
            )
            .await?
            .unwrap_or_default();
        Ok(rows.into_iter().flat_map(|r| r.value).collect())
    }

    /// Removes one limit of a vhost (a plan that no longer has it); already gone is fine.
    pub async fn delete_vhost_limit(&self, vhost: &str, limit: &str) -> Result<bool, StepError> {
        self.delete_limit(Limited::Vhost, vhost, limit).await
    }

    /// Removes one limit of a user; already gone is fine.
    pub async fn delete_user_limit(&self, user: &str, limit: &str) -> Result<bool, StepError> {
        self.delete_limit(Limited::User, user, limit).await
    }

    async fn delete_limit(
        &self,
        kind: Limited,
        name: &str,
        limit: &str,
    ) -> Result<bool, StepError> {
        self.delete(
            format!("limit {limit} of {} '{name}'", kind.noun()),
            &[kind.collection(), name, limit],
        )
        .await
    }

    /// Every vhost's limits, by vhost: one request.
    pub async fn all_vhost_limits(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, i64>>, StepError> {
        let rows: Vec<NamedLimits> = self.list("vhost limits", &["vhost-limits"]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.vhost?, r.value)))
            .collect())
    }

    /// Every user's limits, by user: one request.
    pub async fn all_user_limits(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, i64>>, StepError> {
        let rows: Vec<NamedLimits> = self.list("user limits", &["user-limits"]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.user?, r.value)))
            .collect())
    }

    /// The user's open connections, from the broker's connection tracking.
    pub async fn user_connections(&self, user: &str) -> Result<Vec<Connection>, StepError> {
        self.get(
            format!("connections of '{user}'"),
            &["connections", "username", user],
        )
        .await
        .map(Option::unwrap_or_default)
    }

    /// Closes every open connection of the user. The broker's connection tracking answers at
    /// once (the management database's connection list lags by its statistics interval).
    pub async fn close_user_connections(&self, user: &str) -> Result<(), StepError> {
        let request = self
            .http
            .delete(self.url(&["connections", "username", user]))
            .header("X-Reason", "tenant suspended or password rotated");
        match self
            .send(format!("close the connections of '{user}'"), request)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A JSON resource, or `None` when it does not exist.
    async fn get<T: DeserializeOwned>(
        &self,
        what: String,
        segments: &[&str],
    ) -> Result<Option<T>, StepError> {
        let action = format!("read {what}");
        match self
            .send(action.clone(), self.http.get(self.url(segments)))
            .await
        {
            Ok(resp) => resp.json().await.map(Some).map_err(|e| {
                StepError::new(
                    System::Rabbitmq,
                    action,
                    FailureKind::BadResponse,
                    chain(&e),
                )
            }),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A whole collection (`/api/users`, …): one request, however many tenants.
    async fn list<T: DeserializeOwned>(
        &self,
        what: &str,
        segments: &[&str],
    ) -> Result<Vec<T>, StepError> {
        self.get(format!("all {what}"), segments)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Deletes a resource; one that is already gone counts as deleted (`Ok(false)`).
    async fn delete(&self, what: String, segments: &[&str]) -> Result<bool, StepError> {
        match self
            .send(
                format!("delete {what}"),
                self.http.delete(self.url(segments)),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn user(&self, user: &str) -> Result<Option<User>, StepError> {
        self.get(format!("user '{user}'"), &["users", user]).await
    }

    pub async fn vhost(&self, vhost: &str) -> Result<Option<Vhost>, StepError> {
        self.get(format!("vhost '{vhost}'"), &["vhosts", vhost])
            .await
    }

    pub async fn permission(
        &self,
        vhost: &str,
        user: &str,
    ) -> Result<Option<Permission>, StepError> {
        self.get(
            format!("permission of '{user}' on '{vhost}'"),
            &["permissions", vhost, user],
        )
        .await
    }

    pub async fn users(&self) -> Result<Vec<User>, StepError> {
        self.list("users", &["users"]).await
    }

    /// The broker's version and object totals (`GET /api/overview`).
    pub async fn overview(&self) -> Result<Overview, StepError> {
        self.get("overview".to_owned(), &["overview"])
            .await?
            .ok_or_else(|| {
                StepError::new(
                    System::Rabbitmq,
                    "read overview",
                    FailureKind::BadResponse,
                    "no overview (404)",
                )
            })
    }

    pub async fn vhosts(&self) -> Result<Vec<Vhost>, StepError> {
        self.list("vhosts", &["vhosts"]).await
    }

    pub async fn permissions(&self) -> Result<Vec<Permission>, StepError> {
        self.list("permissions", &["permissions"]).await
    }

    /// Deleting a vhost deletes its queues, messages and permissions.
    pub async fn delete_vhost(&self, vhost: &str) -> Result<bool, StepError> {
        self.delete(format!("vhost '{vhost}'"), &["vhosts", vhost])
            .await
    }

    /// Deleting a user closes its connections and drops its permissions.
    pub async fn delete_user(&self, user: &str) -> Result<bool, StepError> {
        self.delete(format!("user '{user}'"), &["users", user])
            .await
    }

    /// The admin credential in use (for a shovel's URIs, which the broker itself connects with).
    pub fn admin_credential(&self) -> AdminCredential {
        self.admin.read().expect("admin credential lock").clone()
    }

    /// The vhost's definitions (queues, exchanges, bindings, policies, parameters), as the
    /// management API exports one vhost: without vhost names, ready to import into another.
    pub async fn definitions(&self, vhost: &str) -> Result<serde_json::Value, StepError> {
        self.get(
            format!("definitions of vhost '{vhost}'"),
            &["definitions", vhost],
        )
        .await?
        .ok_or_else(|| {
            StepError::new(
                System::Rabbitmq,
                format!("read definitions of vhost '{vhost}'"),
                FailureKind::Rejected,
                "the vhost does not exist",
            )
        })
    }

    /// Imports definitions into `vhost` (which must exist): what exists already is kept, so a
    /// repeated import converges.
    pub async fn import_definitions(
        &self,
        vhost: &str,
        definitions: &serde_json::Value,
    ) -> Result<(), StepError> {
        self.send(
            format!("import definitions into vhost '{vhost}'"),
            self.http
                .post(self.url(&["definitions", vhost]))
                .json(definitions),
        )
        .await
        .map(drop)
    }

    /// The queues of a vhost (names only: message counts from the management database lag).
    pub async fn queue_names(&self, vhost: &str) -> Result<Vec<String>, StepError> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let queues: Vec<Named> = self
            .list(&format!("queues of vhost '{vhost}'"), &["queues", vhost])
            .await?;
        Ok(queues.into_iter().map(|q| q.name).collect())
    }

    /// Each queue of `vhost` that holds messages (ready or unacknowledged), with how many, as
    /// the management database last counted them.
    pub async fn queue_depths(&self, vhost: &str) -> Result<Vec<(String, u64)>, StepError> {
        #[derive(Deserialize)]
        struct Depth {
            name: String,
            #[serde(default)]
            messages: u64,
        }
        let queues: Vec<Depth> = self
            .list(&format!("queues of vhost '{vhost}'"), &["queues", vhost])
            .await?;
        Ok(queues
            .into_iter()
            .filter(|q| q.messages > 0)
            .map(|q| (q.name, q.messages))
            .collect())
    }

    /// Declares a dynamic shovel (a runtime parameter of `vhost`): the broker runs it.
    pub async fn put_shovel(
        &self,
        vhost: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), StepError> {
        let body = serde_json::json!({"value": value});
        self.send(
            format!("declare shovel '{name}' in vhost '{vhost}'"),
            self.http
                .put(self.url(&["parameters", "shovel", vhost, name]))
                .json(&body),
        )
        .await
        .map(drop)
    }

    /// Whether the shovel is still declared (one with `src-delete-after` removes itself when
    /// its work is done).
    pub async fn shovel_exists(&self, vhost: &str, name: &str) -> Result<bool, StepError> {
        let found: Option<serde_json::Value> = self
            .get(
                format!("shovel '{name}' in vhost '{vhost}'"),
                &["parameters", "shovel", vhost, name],
            )
            .await?;
        Ok(found.is_some())
    }

    /// The shovels' states in `vhost` (`running`, `starting`, `terminated` with a reason).
    pub async fn shovel_states(&self, vhost: &str) -> Result<Vec<serde_json::Value>, StepError> {
        self.list(&format!("shovels of vhost '{vhost}'"), &["shovels", vhost])
            .await
    }

    pub async fn delete_permission(&self, vhost: &str, user: &str) -> Result<bool, StepError> {
        self.delete(
            format!("permission of '{user}' on '{vhost}'"),
            &["permissions", vhost, user],
        )
        .await
    }
}

/// A RabbitMQ user, as the management API lists it (no password hash kept).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A list on 3.9+, a comma-separated string on older brokers.
    #[serde(default)]
    pub tags: serde_json::Value,
}

/// The part of `GET /api/overview` a cell's usage needs.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Overview {
    #[serde(default)]
    pub rabbitmq_version: String,
    #[serde(default)]
    pub object_totals: ObjectTotals,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ObjectTotals {
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub queues: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Vhost {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// What the broker kept: "undefined" on brokers that ignore the setting (3.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
}

/// What a limit is set on.
#[derive(Clone, Copy)]
enum Limited {
    Vhost,
    User,
}

impl Limited {
    fn noun(self) -> &'static str {
        match self {
            Limited::Vhost => "vhost",
            Limited::User => "user",
        }
    }

    fn collection(self) -> &'static str {
        match self {
            Limited::Vhost => "vhost-limits",
            Limited::User => "user-limits",
        }
    }
}

#[derive(Deserialize)]
struct NamedLimits {
    #[serde(default)]
    vhost: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    value: BTreeMap<String, i64>,
}

/// An open AMQP connection, as connection tracking reports it (name, node, user, vhost).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
}

#[derive(Deserialize)]
struct LimitRow {
    #[serde(default)]
    value: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

fn is_already_exists(e: &StepError) -> bool {
    e.status == Some(400) && e.detail.contains("already_exists")
}

fn transport_error(action: &str, e: &reqwest::Error) -> StepError {
    let kind = match transport_kind(e) {
        _ if e.is_timeout() => FailureKind::Timeout,
        FailureKind::Other if e.is_connect() => FailureKind::Connect,
        kind => kind,
    };
    StepError::new(System::Rabbitmq, action, kind, chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> RabbitMq {
        RabbitMq::new(
            Url::parse(base).unwrap(),
            AdminCredential {
                username: "admin".into(),
                password: SecretString::from("pw"),
            },
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let c = client("http://127.0.0.1:15672");
        assert_eq!(
            c.url(&["vhosts", "/"]).as_str(),
            "http://127.0.0.1:15672/api/vhosts/%2F"
        );
        assert_eq!(
            c.url(&["permissions", "a b", "u"]).as_str(),
            "http://127.0.0.1:15672/api/permissions/a%20b/u"
        );
    }

    #[test]
    fn a_path_prefix_in_the_base_is_kept() {
        let c = client("https://mq.example.com/rabbitmq/");
        assert_eq!(
            c.url(&["users", "x"]).as_str(),
            "https://mq.example.com/rabbitmq/api/users/x"
        );
    }
}
