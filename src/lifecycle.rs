//! A tenant's life after sign-up, as library functions beside `provision`: inspect, deprovision,
//! drain the hand-off queue, and reconcile the user pool against what exists. `tenantctl` and
//! the worker/reconciler functions only call these and print.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::cognito::UserPool;
use crate::error::StepError;
use crate::handoff::{HandoffMessage, HandoffQueue};
use crate::provision::{Provisioner, vhost_description};
use crate::rabbitmq::{Permission, User, Vhost};
use crate::tenant::{TENANT_LABEL, TenantId};

// --- status ---------------------------------------------------------------------------------

/// What exists for one tenant. Keys of secrets, never their values.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// Every part exists.
    pub complete: bool,
    /// The parts that do not.
    pub missing: Vec<&'static str>,
    pub rabbitmq: RabbitmqStatus,
    pub kubernetes: KubernetesStatus,
    pub secrets_manager: Option<NamedKeys>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RabbitmqStatus {
    pub user: Option<User>,
    pub vhost: Option<Vhost>,
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubernetesStatus {
    pub namespace: String,
    pub secret: Option<NamedKeys>,
    pub deployment: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamedKeys {
    pub name: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub name: String,
    pub images: Vec<String>,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
    /// `type=status` of each condition (`Available=True`, `Progressing=True`, …).
    pub conditions: Vec<String>,
}

impl DeploymentStatus {
    fn of(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let status = d.status.as_ref();
        Self {
            name: d.metadata.name.clone().unwrap_or_default(),
            images: spec
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| {
                    p.containers
                        .iter()
                        .filter_map(|c| c.image.clone())
                        .collect()
                })
                .unwrap_or_default(),
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
            ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            available_replicas: status.and_then(|s| s.available_replicas).unwrap_or(0),
            updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            conditions: status
                .and_then(|s| s.conditions.as_ref())
                .map(|cs| {
                    cs.iter()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Reads every part of one tenant (seven reads, concurrently).
pub async fn status(p: &Provisioner, tenant: &TenantId) -> Result<TenantStatus, StepError> {
    let sm_name = tenant.secrets_manager_name(&p.secret_prefix);
    let (secret_name, deployment_name) = (tenant.secret_name(), tenant.deployment_name());
    let (user, vhost, permission, secret, deployment, sm) = tokio::join!(
        p.rabbitmq.user(tenant.rabbitmq_user()),
        p.rabbitmq.vhost(tenant.rabbitmq_vhost()),
        p.rabbitmq
            .permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user()),
        Box::pin(p.kubernetes.get::<Secret>(&secret_name)),
        Box::pin(p.kubernetes.get::<Deployment>(&deployment_name)),
        Box::pin(p.secrets.get_json(&sm_name)),
    );
    let (user, vhost, permission) = (user?, vhost?, permission?);
    let secret = secret?.map(|s| NamedKeys {
        name: tenant.secret_name(),
        keys: s.data.unwrap_or_default().into_keys().collect(),
    });
    let deployment = deployment?.as_ref().map(DeploymentStatus::of);
    let secrets_manager = sm?.map(|v| NamedKeys {
        name: sm_name,
        keys: v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    });
    let mut missing = Vec::new();
    let parts: [(&'static str, bool); 6] = [
        ("rabbitmq user", user.is_some()),
        ("rabbitmq vhost", vhost.is_some()),
        ("rabbitmq permission", permission.is_some()),
        ("kubernetes secret", secret.is_some()),
        ("kubernetes deployment", deployment.is_some()),
        ("secrets manager secret", secrets_manager.is_some()),
    ];
    for (part, present) in parts {
        if !present {
            missing.push(part);
        }
    }
    Ok(TenantStatus {
        tenant: tenant.to_string(),
        complete: missing.is_empty(),
        missing,
        rabbitmq: RabbitmqStatus {
            user,
            vhost,
            permission,
        },
        kubernetes: KubernetesStatus {
            namespace: p.namespace().to_owned(),
            secret,
            deployment,
        },
        secrets_manager,
    })
}

// --- deprovision ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct DeprovisionOptions {
    /// Keep the vhost (its queues and messages); only the user and its access go.
    pub retain_data: bool,
    /// Days Secrets Manager keeps the secret recoverable (7–30); `None` deletes at once.
    pub recovery_days: Option<i64>,
}

/// What was deleted (`true`) or already gone (`false`); `None` for what was kept.
#[derive(Debug, Clone, Serialize)]
pub struct DeprovisionReport {
    pub tenant: String,
    pub kubernetes_deployment: bool,
    pub kubernetes_secret: bool,
    pub secrets_manager_secret: bool,
    pub rabbitmq_user: bool,
    pub rabbitmq_permission: bool,
    pub rabbitmq_vhost: Option<bool>,
}

/// Removes a tenant everywhere. Idempotent: what is already gone counts as done. The backend
/// goes first (it stops using the credentials), then the stored credentials, then RabbitMQ.
pub async fn deprovision(
    p: &Provisioner,
    tenant: &TenantId,
    options: DeprovisionOptions,
) -> Result<DeprovisionReport, StepError> {
    let kubernetes_deployment = p
        .kubernetes
        .delete::<Deployment>(&tenant.deployment_name())
        .await?;
    let kubernetes_secret = p.kubernetes.delete::<Secret>(&tenant.secret_name()).await?;
    let secrets_manager_secret = p
        .secrets
        .delete(
            &tenant.secrets_manager_name(&p.secret_prefix),
            options.recovery_days,
        )
        .await?;
    let rabbitmq_permission = p
        .rabbitmq
        .delete_permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user())
        .await?;
    // Deleting the user closes its connections.
    let rabbitmq_user = p.rabbitmq.delete_user(tenant.rabbitmq_user()).await?;
    let rabbitmq_vhost = if options.retain_data {
        None
    } else {
        Some(p.rabbitmq.delete_vhost(tenant.rabbitmq_vhost()).await?)
    };
    tracing::info!(tenant = %tenant, retain_data = options.retain_data, "tenant deprovisioned");
    Ok(DeprovisionReport {
        tenant: tenant.to_string(),
        kubernetes_deployment,
        kubernetes_secret,
        secrets_manager_secret,
        rabbitmq_user,
        rabbitmq_permission,
        rabbitmq_vhost,
    })
}

// --- drain ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainSummary {
    pub received: usize,
    pub provisioned: usize,
    pub failed: usize,
    pub malformed: usize,
    /// `sub: error` of each failure (no secrets: step errors never hold one).
    pub failures: Vec<String>,
}

/// The outcome of one hand-off message.
#[derive(Debug)]
pub enum HandoffOutcome {
    Provisioned(TenantId),
    Malformed(String),
    Failed(TenantId, String),
}

/// Provisions the tenant of one hand-off message by `deadline`.
pub async fn process_handoff(p: &Provisioner, body: &str, deadline: Instant) -> HandoffOutcome {
    let tenant = match HandoffMessage::parse(body) {
        Ok((_, tenant)) => tenant,
        Err(e) => return HandoffOutcome::Malformed(e),
    };
    match Box::pin(p.provision(&tenant, deadline)).await {
        Ok(_) => HandoffOutcome::Provisioned(tenant),
        Err(e) => HandoffOutcome::Failed(tenant, e.to_string()),
    }
}

/// Receives hand-offs until the queue is empty, provisions each (`concurrency` at a time, each
/// with `budget`), and deletes each message whose tenant is complete. A failed message stays
/// on the queue: it comes back after its visibility timeout and, after the queue's
/// `maxReceiveCount`, lands on the dead-letter queue.
pub async fn drain(
    p: &Provisioner,
    queue: &HandoffQueue,
    budget: Duration,
    concurrency: usize,
) -> Result<DrainSummary, StepError> {
    let mut summary = DrainSummary::default();
    let mut seen = HashSet::new();
    loop {
        let batch = queue.receive(10, 1).await?;
        let fresh: Vec<_> = batch
            .into_iter()
            .filter(|m| seen.insert(m.message_id.clone()))
            .collect();
        if fresh.is_empty() {
            return Ok(summary);
        }
        summary.received += fresh.len();
        let results: Vec<_> = futures::stream::iter(fresh)
            .map(|m| async move {
                let outcome = process_handoff(p, &m.body, Instant::now() + budget).await;
                (m, outcome)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for (m, outcome) in results {
            match outcome {
                HandoffOutcome::Provisioned(_) => {
                    queue.delete(&m.receipt_handle).await?;
                    summary.provisioned += 1;
                }
                HandoffOutcome::Malformed(e) => {
                    tracing::error!(message_id = m.message_id, error = e, "malformed hand-off");
                    summary.malformed += 1;
                    summary
                        .failures
                        .push(format!("message {}: {e}", m.message_id));
                }
                HandoffOutcome::Failed(tenant, e) => {
                    summary.failed += 1;
                    summary.failures.push(format!("{tenant}: {e}"));
                }
            }
        }
    }
}

// --- reconcile ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Also remove orphans (tenants whose user is gone).
    pub prune: bool,
    pub concurrency: usize,
    /// Budget of each tenant's provisioning.
    pub budget: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileSummary {
    /// Users in the pool.
    pub pool_users: usize,
    /// Users that need a tenant (confirmed).
    pub users: usize,
    pub complete: usize,
    /// Incomplete or missing tenants provisioned in this run (in a dry run: would be).
    pub repaired: usize,
    pub failed: usize,
    /// Tenants of this installation whose user no longer exists.
    pub orphans: Vec<String>,
    pub pruned: usize,
    pub dry_run: bool,
    /// `sub: missing parts` of each tenant that was (or would be) repaired.
    pub incomplete: Vec<String>,
    pub failures: Vec<String>,
    pub elapsed_ms: f64,
}

/// What exists, from bulk listings (a handful of calls, however many tenants).
#[derive(Debug, Default)]
pub struct Inventory {
    users: HashSet<String>,
    vhosts: BTreeMap<String, Option<String>>,
    permissions: HashSet<(String, String)>,
    kube_secrets: HashSet<String>,
    kube_deployments: HashSet<String>,
    sm_secrets: HashSet<String>,
}

impl Inventory {
    pub async fn load(p: &Provisioner) -> Result<Self, StepError> {
        let (users, vhosts, permissions, secrets, deployments, sm) = tokio::join!(
            p.rabbitmq.users(),
            p.rabbitmq.vhosts(),
            p.rabbitmq.permissions(),
            Box::pin(p.kubernetes.list_metadata::<Secret>(TENANT_LABEL)),
            Box::pin(p.kubernetes.list_metadata::<Deployment>(TENANT_LABEL)),
            Box::pin(p.secrets.list_names(&p.secret_prefix)),
        );

        Ok(Self {
            users: users?.into_iter().map(|u| u.name).collect(),
            vhosts: vhosts?
                .into_iter()
                .map(|v| (v.name, v.description))
                .collect(),
            permissions: permissions?
                .into_iter()
                .map(|p| (p.vhost, p.user))
                .collect(),
            kube_secrets: secrets?
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect(),
            kube_deployments: deployments?
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect(),
            sm_secrets: sm?.into_iter().collect(),
        })
    }

    /// The parts of `tenant` that are missing (empty: complete).
    pub fn missing(&self, p: &Provisioner, tenant: &TenantId) -> Vec<&'static str> {
        let mut missing = Vec::new();
        let checks: [(&'static str, bool); 6] = [
            ("rabbitmq user", self.users.contains(tenant.rabbitmq_user())),
            (
                "rabbitmq vhost",
                self.vhosts.contains_key(tenant.rabbitmq_vhost()),
            ),
            (
                "rabbitmq permission",
                self.permissions.contains(&(
                    tenant.rabbitmq_vhost().to_owned(),
                    tenant.rabbitmq_user().to_owned(),
                )),
            ),
            (
                "kubernetes secret",
                self.kube_secrets.contains(&tenant.secret_name()),
            ),
            (
                "kubernetes deployment",
                self.kube_deployments.contains(&tenant.deployment_name()),
            ),
            (
                "secrets manager secret",
                self.sm_secrets
                    .contains(&tenant.secrets_manager_name(&p.secret_prefix)),
            ),
        ];
        for (part, present) in checks {
            if !present {
                missing.push(part);
            }
        }
        missing
    }

    /// Every tenant of this installation that has any part: vhosts marked with this
    /// installation, tenant-labelled objects in the namespace, secrets under the prefix.
    pub fn tenants(&self, p: &Provisioner) -> BTreeSet<TenantId> {
        let mut out = BTreeSet::new();
        for (name, description) in &self.vhosts {
            if let Ok(t) = TenantId::parse(name)
                && description.as_deref() == Some(vhost_description(&t, &p.secret_prefix).as_str())
            {
                out.insert(t);
            }
        }
        let strip = |name: &str, prefix: &str| name.strip_prefix(prefix).map(str::to_owned);
        let from_kube = self
            .kube_secrets
            .iter()
            .filter_map(|n| strip(n, "tenant-"))
            .chain(
                self.kube_deployments
                    .iter()
                    .filter_map(|n| strip(n, "backend-")),
            );
        let from_sm = self
            .sm_secrets
            .iter()
            .filter_map(|n| strip(n, &p.secret_prefix));
        out.extend(
            from_kube
                .chain(from_sm)
                .filter_map(|s| TenantId::parse(&s).ok()),
        );
        out
    }
}

/// Compares the user pool with what exists: provisions every confirmed user's missing or
/// incomplete tenant (`concurrency` at a time), reports orphans and, with `prune`, removes them.
/// `on_progress(done, total)` hears progress through the repairs.
pub async fn reconcile(
    p: &Provisioner,
    pool: &UserPool,
    options: ReconcileOptions,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<ReconcileSummary, StepError> {
    let started = Instant::now();
    let (users, inventory) = tokio::join!(pool.users(|_| {}), Inventory::load(p));
    let (users, inventory) = (users?, inventory?);
    let mut summary = ReconcileSummary {
        pool_users: users.len(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let all_subs: HashSet<TenantId> = users
        .iter()
        .filter_map(|u| u.sub.as_deref())
        .filter_map(|s| TenantId::parse(s).ok())
        .collect();
    let mut to_repair = Vec::new();
    for user in users.iter().filter(|u| u.needs_tenant()) {
        let Some(tenant) = user.sub.as_deref().and_then(|s| TenantId::parse(s).ok()) else {
            summary
                .failures
                .push(format!("user '{}': no valid sub", user.username));
            summary.failed += 1;
            continue;
        };
        summary.users += 1;
        let missing = inventory.missing(p, &tenant);
        if missing.is_empty() {
            summary.complete += 1;
        } else {
            summary
                .incomplete
                .push(format!("{tenant}: missing {}", missing.join(", ")));
            to_repair.push(tenant);
        }
    }
    summary.orphans = inventory
        .tenants(p)
        .into_iter()
        .filter(|t| !all_subs.contains(t))
        .map(|t| t.to_string())
        .collect();

    if options.dry_run {
        summary.repaired = to_repair.len();
    } else {
        let total = to_repair.len();
        let mut done = 0;
        on_progress(done, total);
        let mut results = futures::stream::iter(to_repair)
            .map(|tenant| async move {
                let deadline = Instant::now() + options.budget;
                let result = Box::pin(p.provision(&tenant, deadline)).await;
                (tenant, result)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((tenant, result)) = results.next().await {
            done += 1;
            on_progress(done, total);
            match result {
                Ok(_) => summary.repaired += 1,
                Err(e) => {
                    summary.failed += 1;
                    summary.failures.push(format!("{tenant}: {e}"));
                }
            }
        }
        if options.prune {
            for orphan in &summary.orphans {
                let Ok(tenant) = TenantId::parse(orphan) else {
                    continue;
                };
                let opts = DeprovisionOptions {
                    retain_data: false,
                    recovery_days: Some(7),
                };
                match deprovision(p, &tenant, opts).await {
                    Ok(_) => summary.pruned += 1,
                    Err(e) => {
                        summary.failed += 1;
                        summary.failures.push(format!("prune {tenant}: {e}"));
                    }
                }
            }
        }
    }
    summary.elapsed_ms = (started.elapsed().as_secs_f64() * 1e3 * 10.0).round() / 10.0;
    tracing::info!(
        users = summary.users,
        complete = summary.complete,
        repaired = summary.repaired,
        failed = summary.failed,
        orphans = summary.orphans.len(),
        pruned = summary.pruned,
        dry_run = summary.dry_run,
        "reconciled"
    );
    Ok(summary)
}
