//! Settings, read from the environment and validated once at cold start. Every error names the
//! variable, so a misconfigured deployment fails on its first invocation with a readable cause.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::cells::cluster::{ClusterAccess, ClusterName};
use crate::cells::{Cell, Cells};

pub const DEFAULT_NAMESPACE: &str = "tenants";
pub const DEFAULT_SECRET_PREFIX: &str = "post-signup/tenants/";
/// Cognito gives a trigger 5 s; leave half a second for the Lambda runtime and the network.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(4500);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Kept back from the budget for the hand-off: one SQS send (tens of milliseconds in a region,
/// with room for one retry).
pub const DEFAULT_HANDOFF_RESERVE: Duration = Duration::from_millis(600);
/// How long the trigger's credential steps wait for the registry's answer (the tenant's
/// recorded state) before going on with a new tenant's: a slow registry must not cost a sign-up.
pub const DEFAULT_REGISTRY_WAIT: Duration = Duration::from_millis(500);

/// Every variable the function reads, for docs and errors.
pub mod var {
    pub const CLUSTER_NAME: &str = "EKS_CLUSTER_NAME";
    pub const ENDPOINT: &str = "EKS_ENDPOINT";
    pub const CA_DATA: &str = "EKS_CA_DATA";
    pub const NAMESPACE: &str = "TENANT_NAMESPACE";
    pub const MANAGEMENT_URL: &str = "RABBITMQ_MANAGEMENT_URL";
    pub const AMQP_URL: &str = "RABBITMQ_AMQP_URL";
    pub const ADMIN_SECRET_ID: &str = "RABBITMQ_ADMIN_SECRET_ID";
    pub const SECRET_PREFIX: &str = "TENANT_SECRET_PREFIX";
    pub const TEMPLATE_PATH: &str = "BACKEND_TEMPLATE_PATH";
    pub const PLANS_PATH: &str = "PLANS_PATH";
    pub const CELLS_PATH: &str = "CELLS_PATH";
    pub const BACKEND_IMAGE: &str = "BACKEND_IMAGE";
    pub const BUDGET_MS: &str = "PROVISION_BUDGET_MS";
    pub const CONNECT_TIMEOUT_MS: &str = "CONNECT_TIMEOUT_MS";
    pub const HANDOFF_QUEUE_URL: &str = "HANDOFF_QUEUE_URL";
    pub const HANDOFF_RESERVE_MS: &str = "HANDOFF_RESERVE_MS";
    pub const USER_POOL_ID: &str = "USER_POOL_ID";
    pub const CONCURRENCY: &str = "RECONCILE_CONCURRENCY";
    pub const REGISTRY_TABLE: &str = "REGISTRY_TABLE";
    pub const REGISTRY_WAIT_MS: &str = "REGISTRY_WAIT_MS";
    /// Read by the AWS SDK itself; checked here because the SDK panics on a blank value.
    pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
}

/// Variables read through a lookup: trimmed, blank as unset, a missing required one named.
pub(crate) struct Vars<'a, F: Fn(&str) -> Option<String>>(pub(crate) &'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    pub(crate) fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &'static str) -> Result<String, SettingsError> {
        self.get(name)
            .ok_or_else(|| err(name, "is required but not set"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("setting {var}: {problem}")]
pub struct SettingsError {
    pub var: &'static str,
    pub problem: String,
}

pub(crate) fn err(var: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        var,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cluster_name: ClusterName,
    pub cluster_access: Option<ClusterAccess>,
    pub namespace: String,
    pub management_url: Url,
    pub amqp_url: Url,
    pub admin_secret_id: String,
    pub secret_prefix: String,
    pub template_path: Option<PathBuf>,
    /// Replaces the template's (first container's) image.
    pub backend_image: Option<String>,
    /// Another plans file than the embedded `deploy/plans.yaml`.
    pub plans_path: Option<PathBuf>,
    /// The cells (brokers): a file's (`CELLS_PATH`), or the implicit one of the `RABBITMQ_*`
    /// settings.
    pub cells: Cells,
    pub budget: Duration,
    pub connect_timeout: Duration,
    /// Where provisioning that cannot finish in time is handed off (SQS).
    pub handoff_queue_url: Url,
    pub handoff_reserve: Duration,
    /// The user pool the reconciler compares against (needed only by the reconciler).
    pub user_pool_id: Option<String>,
    /// How many tenants the reconciler provisions at once.
    pub concurrency: usize,
    /// The tenant registry's DynamoDB table.
    pub registry_table: String,
    pub registry_wait: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment. Each
    /// step checks its own variables; the first problem found is the error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let vars = Vars(&lookup);
        check_aws_endpoint(&lookup)?;
        let (cluster_name, cluster_access) = cluster(&vars)?;
        let namespace = namespace(&vars)?;
        let brokers = brokers(&vars)?;
        let secret_prefix = secret_prefix(&vars)?;
        let template_path = vars.get(var::TEMPLATE_PATH).map(PathBuf::from);
        let backend_image = backend_image(&vars)?;
        let plans_path = vars.get(var::PLANS_PATH).map(PathBuf::from);
        let (budget, connect_timeout) = timeouts(&vars)?;
        let (handoff_queue_url, handoff_reserve) = handoff(&vars, budget)?;
        let user_pool_id = user_pool_id(&vars)?;
        let concurrency = concurrency(&vars)?;
        let (registry_table, registry_wait) = registry(&vars)?;
        Ok(Self {
            cluster_name,
            cluster_access,
            namespace,
            management_url: brokers.management_url,
            amqp_url: brokers.amqp_url,
            admin_secret_id: brokers.admin_secret_id,
            secret_prefix,
            template_path,
            backend_image,
            plans_path,
            cells: brokers.cells,
            budget,
            connect_timeout,
            handoff_queue_url,
            handoff_reserve,
            user_pool_id,
            concurrency,
            registry_table,
            registry_wait,
        })
    }
}

/// Lookups through `Vars` (trimmed, blank as unset).
trait Lookup: Fn(&str) -> Option<String> {}
impl<F: Fn(&str) -> Option<String>> Lookup for F {}

/// `AWS_ENDPOINT_URL`, read raw: set but blank is a mistake, not "unset".
fn check_aws_endpoint(lookup: &impl Lookup) -> Result<(), SettingsError> {
    if let Some(raw) = lookup(var::AWS_ENDPOINT_URL) {
        if raw.trim().is_empty() {
            return Err(err(
                var::AWS_ENDPOINT_URL,
                "is set but empty: unset it or give a URL",
            ));
        }
        parse_url(var::AWS_ENDPOINT_URL, raw.trim(), &["http", "https"])?;
    }
    Ok(())
}

/// The default cluster: its name, and its endpoint and CA when both are given.
fn cluster(
    vars: &Vars<impl Lookup>,
) -> Result<(ClusterName, Option<ClusterAccess>), SettingsError> {
    let name = ClusterName::parse(&vars.required(var::CLUSTER_NAME)?)
        .map_err(|e| err(var::CLUSTER_NAME, e.to_string()))?;
    let access = match (vars.get(var::ENDPOINT), vars.get(var::CA_DATA)) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                var::CA_DATA,
                format!("must be set when {} is set", var::ENDPOINT),
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                var::ENDPOINT,
                format!("must be set when {} is set", var::CA_DATA),
            ));
        }
        (Some(endpoint), Some(ca_data)) => {
            parse_url(var::ENDPOINT, &endpoint, &["https"])?;
            Some(ClusterAccess::parse(&endpoint, &ca_data).map_err(|e| err(var::CA_DATA, e))?)
        }
    };
    Ok((name, access))
}

fn namespace(vars: &Vars<impl Lookup>) -> Result<String, SettingsError> {
    let namespace = vars
        .get(var::NAMESPACE)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if !crate::tenant::id::is_dns1123_label(&namespace) {
        return Err(err(
            var::NAMESPACE,
            format!("'{namespace}' is not a valid namespace name"),
        ));
    }
    Ok(namespace)
}

/// The brokers: the cells file's cells, or the one broker of the single-broker settings.
struct Brokers {
    cells: Cells,
    management_url: Url,
    amqp_url: Url,
    admin_secret_id: String,
}

/// With a cells file the brokers are its cells, and the single-broker settings are optional
/// (the first cell's when unset); without one they are the one broker.
fn brokers(vars: &Vars<impl Lookup>) -> Result<Brokers, SettingsError> {
    let declared = match vars.get(var::CELLS_PATH) {
        Some(path) => Some(
            Cells::load(std::path::Path::new(&path))
                .map_err(|e| err(var::CELLS_PATH, e.to_string()))?,
        ),
        None => None,
    };
    let first = declared.as_ref().map(|c| c.first().clone());
    // The variable if set (and valid), else the first cell's value.
    let url_or_first = |name: &'static str, schemes: &[&str], of: fn(&Cell) -> &Url| match (
        vars.get(name),
        &first,
    ) {
        (None, Some(cell)) => Ok(of(cell).clone()),
        (raw, _) => parse_url(
            name,
            &raw.ok_or_else(|| err(name, "is required but not set"))?,
            schemes,
        ),
    };
    let management_url = url_or_first(var::MANAGEMENT_URL, &["http", "https"], |c| {
        &c.management_url
    })?;
    let amqp_url = url_or_first(var::AMQP_URL, &["amqp", "amqps"], |c| &c.amqp_url)?;
    if !matches!(amqp_url.path(), "" | "/") {
        return Err(err(
            var::AMQP_URL,
            "must not name a vhost: each tenant gets its own",
        ));
    }
    let admin_secret_id = match (vars.get(var::ADMIN_SECRET_ID), &first) {
        (None, Some(cell)) => cell.admin_secret_id.clone(),
        (raw, _) => raw.ok_or_else(|| err(var::ADMIN_SECRET_ID, "is required but not set"))?,
    };
    let cells = match declared {
        Some(cells) => cells,
        None => Cells::implicit(management_url.clone(), amqp_url.clone(), &admin_secret_id),
    };
    Ok(Brokers {
        cells,
        management_url,
        amqp_url,
        admin_secret_id,
    })
}

fn secret_prefix(vars: &Vars<impl Lookup>) -> Result<String, SettingsError> {
    let prefix = vars
        .get(var::SECRET_PREFIX)
        .unwrap_or_else(|| DEFAULT_SECRET_PREFIX.to_owned());
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
        || prefix.len() > 512 - 36
    {
        return Err(err(
            var::SECRET_PREFIX,
            "may hold only letters, digits and /_+=.@-",
        ));
    }
    Ok(prefix)
}

fn backend_image(vars: &Vars<impl Lookup>) -> Result<Option<String>, SettingsError> {
    let image = vars.get(var::BACKEND_IMAGE);
    if let Some(image) = &image
        && (image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(err(
            var::BACKEND_IMAGE,
            "is not an image reference (no spaces, at most 512 characters)",
        ));
    }
    Ok(image)
}

/// The invocation's budget and every client's connect timeout.
fn timeouts(vars: &Vars<impl Lookup>) -> Result<(Duration, Duration), SettingsError> {
    let budget = millis(
        var::BUDGET_MS,
        vars.get(var::BUDGET_MS),
        DEFAULT_BUDGET,
        100..=60_000,
    )?;
    let connect_timeout = millis(
        var::CONNECT_TIMEOUT_MS,
        vars.get(var::CONNECT_TIMEOUT_MS),
        DEFAULT_CONNECT_TIMEOUT,
        10..=10_000,
    )?;
    Ok((budget, connect_timeout))
}

/// The hand-off queue, and the part of the budget kept for sending to it.
fn handoff(vars: &Vars<impl Lookup>, budget: Duration) -> Result<(Url, Duration), SettingsError> {
    let queue_url = parse_url(
        var::HANDOFF_QUEUE_URL,
        &vars.required(var::HANDOFF_QUEUE_URL)?,
        &["http", "https"],
    )?;
    // Unset: the default, but never more than a quarter of a small budget.
    let reserve = millis(
        var::HANDOFF_RESERVE_MS,
        vars.get(var::HANDOFF_RESERVE_MS),
        DEFAULT_HANDOFF_RESERVE.min(budget / 4),
        20..=10_000,
    )?;
    if reserve >= budget {
        return Err(err(
            var::HANDOFF_RESERVE_MS,
            format!(
                "must be less than {} ({} ms)",
                var::BUDGET_MS,
                budget.as_millis()
            ),
        ));
    }
    Ok((queue_url, reserve))
}

fn user_pool_id(vars: &Vars<impl Lookup>) -> Result<Option<String>, SettingsError> {
    let id = vars.get(var::USER_POOL_ID);
    if let Some(id) = &id {
        let ok = id
            .split_once('_')
            .is_some_and(|(region, rest)| !region.is_empty() && !rest.is_empty() && id.len() <= 55)
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(err(
                var::USER_POOL_ID,
                format!("'{id}' is not a user pool id (region_id)"),
            ));
        }
    }
    Ok(id)
}

fn concurrency(vars: &Vars<impl Lookup>) -> Result<usize, SettingsError> {
    match vars.get(var::CONCURRENCY) {
        None => Ok(8),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| err(var::CONCURRENCY, format!("'{v}' is not a number in 1..=64"))),
    }
}

/// The registry's table, and how long the trigger's credential steps wait for its answer.
fn registry(vars: &Vars<impl Lookup>) -> Result<(String, Duration), SettingsError> {
    let table = vars.required(var::REGISTRY_TABLE)?;
    let table_ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !table_ok {
        return Err(err(
            var::REGISTRY_TABLE,
            format!("'{table}' is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"),
        ));
    }
    let wait = millis(
        var::REGISTRY_WAIT_MS,
        vars.get(var::REGISTRY_WAIT_MS),
        DEFAULT_REGISTRY_WAIT,
        10..=5_000,
    )?;
    Ok((table, wait))
}

pub(crate) fn parse_url(
    var: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<Url, SettingsError> {
    let url = Url::parse(value).map_err(|e| err(var, format!("not a URL ({e})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(err(
            var,
            format!("scheme must be one of {}", schemes.join(", ")),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err(var, "has no host"));
    }
    // Credentials come from Secrets Manager; a URL with userinfo would leak them into errors.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(var, "must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(var, "must not have a query or fragment"));
    }
    Ok(url)
}

pub(crate) fn millis(
    var: &'static str,
    value: Option<String>,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, SettingsError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let ms: u64 = value.parse().map_err(|_| {
        err(
            var,
            format!("'{value}' is not a whole number of milliseconds"),
        )
    })?;
    if !range.contains(&ms) {
        return Err(err(
            var,
            format!("{ms} ms is outside {}..={} ms", range.start(), range.end()),
        ));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (var::CLUSTER_NAME, "demo".to_owned()),
            (var::MANAGEMENT_URL, "http://127.0.0.1:15672".to_owned()),
            (var::AMQP_URL, "amqp://rabbitmq.internal:5672".to_owned()),
            (
                var::ADMIN_SECRET_ID,
                "post-signup/rabbitmq-admin".to_owned(),
            ),
            (
                var::HANDOFF_QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/111122223333/post-signup-handoff".to_owned(),
            ),
            (var::REGISTRY_TABLE, "post-signup-tenants".to_owned()),
        ])
    }

    fn load(env: &HashMap<&'static str, String>) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_apply() {
        let s = load(&base()).unwrap();
        assert_eq!(s.namespace, DEFAULT_NAMESPACE);
        assert_eq!(s.secret_prefix, DEFAULT_SECRET_PREFIX);
        assert_eq!(s.budget, DEFAULT_BUDGET);
        assert_eq!(s.cluster_access, None);
        assert_eq!(s.template_path, None);
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for name in [
            var::CLUSTER_NAME,
            var::MANAGEMENT_URL,
            var::AMQP_URL,
            var::ADMIN_SECRET_ID,
            var::HANDOFF_QUEUE_URL,
            var::REGISTRY_TABLE,
        ] {
            let mut env = base();
            env.remove(name);
            assert_eq!(load(&env).unwrap_err().var, name);
            env.insert(name, "  ".into());
            assert_eq!(load(&env).unwrap_err().var, name, "blank counts as missing");
        }
    }

    #[test]
    fn with_a_cells_file_the_single_broker_settings_are_optional() {
        let path = std::env::temp_dir().join(format!("cells-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "cells:\n  - name: a\n    management_url: https://a:15671\n    amqp_url: amqps://a:5671\n    admin_secret_id: post-signup/rabbitmq-admin/a\n    capacity: {vhosts: 1500, connections: 5000}\n",
        )
        .unwrap();
        let mut env = base();
        for name in [var::MANAGEMENT_URL, var::AMQP_URL, var::ADMIN_SECRET_ID] {
            env.remove(name);
        }
        env.insert(var::CELLS_PATH, path.display().to_string());
        let s = load(&env).unwrap();
        assert_eq!(s.management_url.as_str(), "https://a:15671/");
        assert_eq!(s.admin_secret_id, "post-signup/rabbitmq-admin/a");
        assert_eq!(s.cells.names(), ["a"]);
        // Still checked when given.
        env.insert(var::AMQP_URL, "amqp://x:5672/vhost".into());
        assert_eq!(load(&env).unwrap_err().var, var::AMQP_URL);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&'static str, &str)] = &[
            (var::CLUSTER_NAME, "bad name"),
            (var::MANAGEMENT_URL, "not a url"),
            (var::MANAGEMENT_URL, "ftp://host"),
            (var::MANAGEMENT_URL, "http://admin:hunter2@host:15672"),
            (var::AMQP_URL, "http://host"),
            (var::AMQP_URL, "amqp://host/vhost"),
            (var::NAMESPACE, "Tenants"),
            (var::BUDGET_MS, "4.5s"),
            (var::BUDGET_MS, "0"),
            (var::CONNECT_TIMEOUT_MS, "-1"),
            (var::SECRET_PREFIX, "bad prefix"),
            (var::HANDOFF_QUEUE_URL, "queue"),
            (var::HANDOFF_RESERVE_MS, "4500"),
            (var::USER_POOL_ID, "no-underscore"),
            (var::CONCURRENCY, "0"),
            (var::REGISTRY_TABLE, "a b"),
            (var::REGISTRY_WAIT_MS, "0"),
            (var::BACKEND_IMAGE, "my image:1"),
            (var::AWS_ENDPOINT_URL, ""),
            (var::AWS_ENDPOINT_URL, "not a url"),
        ];
        for (name, value) in cases {
            let mut env = base();
            env.insert(name, (*value).to_owned());
            let e = load(&env).unwrap_err();
            assert_eq!(e.var, *name, "{value}");
            assert!(
                !e.to_string().contains("hunter2"),
                "no secret in errors: {e}"
            );
        }
    }

    #[test]
    fn endpoint_and_ca_come_together() {
        let mut env = base();
        env.insert(
            var::ENDPOINT,
            "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
        );
        assert_eq!(load(&env).unwrap_err().var, var::CA_DATA);
        env.insert(var::CA_DATA, "bm90IGEgcGVt".into());
        assert_eq!(
            load(&env).unwrap_err().var,
            var::CA_DATA,
            "base64 of something that is not PEM"
        );
        env.remove(var::ENDPOINT);
        assert_eq!(load(&env).unwrap_err().var, var::ENDPOINT);
    }

    #[test]
    fn budget_is_configurable() {
        let mut env = base();
        env.insert(var::BUDGET_MS, "2500".into());
        assert_eq!(load(&env).unwrap().budget, Duration::from_millis(2500));
    }
}
