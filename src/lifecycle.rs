//! A tenant's life after sign-up, as library functions beside `provision`: inspect and list,
//! change plan, suspend and resume, rotate the password, deprovision, drain the hand-off queue,
//! and reconcile the user pool against what exists. `tenantctl` and the worker/reconciler
//! functions only call these and print.

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
use crate::plan::TenantState;
use crate::provision::Report;
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
    /// `complete` (and not suspended), `suspended`, or `incomplete`.
    pub state: &'static str,
    /// The backend has all its replicas available (a suspended tenant has none).
    pub ready: bool,
    pub plan: String,
    pub suspended: bool,
    pub password_generation: u32,
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
    pub vhost_limits: BTreeMap<String, i64>,
    pub user_limits: BTreeMap<String, i64>,
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
    /// Every wanted replica is updated and available, and the Deployment says Available.
    pub fn ready(&self) -> bool {
        self.replicas > 0
            && self.available_replicas >= self.replicas
            && self.updated_replicas >= self.replicas
            && self.conditions.iter().any(|c| c == "Available=True")
    }

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
    let (secret, deployment) = (secret?, deployment?);
    let state = state_of(p, secret.as_ref(), deployment.as_ref());
    let (vhost_limits, user_limits) = tokio::join!(
        p.rabbitmq.vhost_limits(tenant.rabbitmq_vhost()),
        p.rabbitmq.user_limits(tenant.rabbitmq_user()),
    );
    let secret = secret.map(|s| NamedKeys {
        name: tenant.secret_name(),
        keys: s.data.unwrap_or_default().into_keys().collect(),
    });
    let deployment = deployment.as_ref().map(DeploymentStatus::of);
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
    let complete = missing.is_empty();
    let ready = deployment.as_ref().is_some_and(DeploymentStatus::ready) && !state.suspended;
    Ok(TenantStatus {
        tenant: tenant.to_string(),
        complete,
        state: state_name(complete, state.suspended),
        ready,
        plan: state.plan.clone(),
        suspended: state.suspended,
        password_generation: state.generation,
        missing,
        rabbitmq: RabbitmqStatus {
            user,
            vhost,
            permission,
            vhost_limits: vhost_limits?,
            user_limits: user_limits?,
        },
        kubernetes: KubernetesStatus {
            namespace: p.namespace().to_owned(),
            secret,
            deployment,
        },
        secrets_manager,
    })
}

fn state_name(complete: bool, suspended: bool) -> &'static str {
    match (complete, suspended) {
        (true, false) => "complete",
        (true, true) => "suspended",
        (false, _) => "incomplete",
    }
}

/// The tenant's state as its objects record it: the Secret's labels and annotations, else the
/// Deployment's, else a new tenant's.
fn state_of(
    p: &Provisioner,
    secret: Option<&Secret>,
    deployment: Option<&Deployment>,
) -> TenantState {
    let meta = secret
        .map(|s| &s.metadata)
        .or(deployment.map(|d| &d.metadata));
    match meta {
        Some(m) => TenantState::from_meta(&p.plans, m.labels.as_ref(), m.annotations.as_ref()),
        None => TenantState::new(&p.plans),
    }
}

/// Reads the tenant's recorded state (two reads).
pub async fn tenant_state(p: &Provisioner, tenant: &TenantId) -> Result<TenantState, StepError> {
    let secret = p.kubernetes.get::<Secret>(&tenant.secret_name()).await?;
    if secret.is_some() {
        return Ok(state_of(p, secret.as_ref(), None));
    }
    let deployment = p
        .kubernetes
        .get::<Deployment>(&tenant.deployment_name())
        .await?;
    Ok(state_of(p, None, deployment.as_ref()))
}

/// Provisions the tenant again in `state`, failing with the provisioning error's text.
async fn apply_state(
    p: &Provisioner,
    tenant: &TenantId,
    state: &TenantState,
    budget: Duration,
) -> Result<Report, StepError> {
    Box::pin(p.provision_with(tenant, state, Instant::now() + budget))
        .await
        .map_err(|e| {
            // The first failed step says which system; the text lists them all.
            let system = e
                .failures
                .first()
                .map_or(crate::error::System::Rabbitmq, |f| f.system);
            StepError::new(
                system,
                "provision",
                crate::error::FailureKind::Other,
                e.to_string(),
            )
        })
}

/// Re-provisions the tenant as it is recorded (an operator's `provision --sub`, the worker).
pub async fn reprovision(
    p: &Provisioner,
    tenant: &TenantId,
    budget: Duration,
) -> Result<Report, StepError> {
    let state = tenant_state(p, tenant).await?;
    apply_state(p, tenant, &state, budget).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub tenant: String,
    pub before: TenantState,
    pub after: TenantState,
}

/// Moves the tenant to another plan: limits, replicas and resources follow at once.
pub async fn set_plan(
    p: &Provisioner,
    tenant: &TenantId,
    plan: &str,
    budget: Duration,
) -> Result<Change, StepError> {
    if p.plans.get(plan).is_none() {
        let known: Vec<&str> = p.plans.names().collect();
        return Err(StepError::new(
            crate::error::System::Kubernetes,
            "change plan",
            crate::error::FailureKind::Rejected,
            format!("no plan '{plan}' (plans: {})", known.join(", ")),
        ));
    }
    let change = change_state(p, tenant, budget, |s| s.plan = plan.to_owned()).await?;
    p.secrets
        .tag_plan(&tenant.secrets_manager_name(&p.secret_prefix), plan)
        .await?;
    Ok(change)
}

/// Reads the tenant's state, changes it, and provisions the tenant in the new state.
async fn change_state(
    p: &Provisioner,
    tenant: &TenantId,
    budget: Duration,
    change: impl FnOnce(&mut TenantState),
) -> Result<Change, StepError> {
    let before = tenant_state(p, tenant).await?;
    let mut after = before.clone();
    change(&mut after);
    apply_state(p, tenant, &after, budget).await?;
    Ok(Change {
        tenant: tenant.to_string(),
        before,
        after,
    })
}

/// Suspends the tenant: the backend scales to 0, the vhost takes no connections, and the open
/// ones are closed. Re-provisioning and the reconciler keep it suspended.
pub async fn suspend(
    p: &Provisioner,
    tenant: &TenantId,
    budget: Duration,
) -> Result<Change, StepError> {
    let change = change_state(p, tenant, budget, |s| s.suspended = true).await?;
    // The limit keeps new connections out; the open ones are closed here.
    p.rabbitmq
        .close_user_connections(tenant.rabbitmq_user())
        .await?;
    Ok(change)
}

/// Lifts a suspension: the plan's replicas and connection limit come back.
pub async fn resume(
    p: &Provisioner,
    tenant: &TenantId,
    budget: Duration,
) -> Result<Change, StepError> {
    change_state(p, tenant, budget, |s| s.suspended = false).await
}

/// Gives the tenant a new password (the next generation, still derived, so retries converge):
/// RabbitMQ, the Secret and Secrets Manager (a new version) take it, and the Deployment's
/// credentials checksum changes, so the backend rolls to pods that read the new one. The old
/// password stops working at once; open connections keep going until they reconnect.
pub async fn rotate(
    p: &Provisioner,
    tenant: &TenantId,
    budget: Duration,
) -> Result<Change, StepError> {
    change_state(p, tenant, budget, |s| s.generation += 1).await
}

/// One tenant in `list`.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    pub tenant: String,
    pub plan: String,
    /// `complete`, `suspended` or `incomplete`.
    pub state: &'static str,
    pub ready: bool,
    pub missing: Vec<&'static str>,
}

/// Every tenant of this installation with its plan and state, from bulk listings.
pub async fn list(p: &Provisioner) -> Result<Vec<TenantRow>, StepError> {
    let (inventory, secrets, deployments) = tokio::join!(
        Inventory::load(p),
        Box::pin(p.kubernetes.list::<Secret>(TENANT_LABEL)),
        Box::pin(p.kubernetes.list::<Deployment>(TENANT_LABEL)),
    );
    let (inventory, secrets, deployments) = (inventory?, secrets?, deployments?);
    let by_name = |items: &[Secret]| -> BTreeMap<String, Secret> {
        items
            .iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s.clone())))
            .collect()
    };
    let secrets = by_name(&secrets);
    let deployments: BTreeMap<String, Deployment> = deployments
        .into_iter()
        .filter_map(|d| Some((d.metadata.name.clone()?, d)))
        .collect();
    Ok(inventory
        .tenants(p)
        .into_iter()
        .map(|t| {
            let secret = secrets.get(&t.secret_name());
            let deployment = deployments.get(&t.deployment_name());
            let state = state_of(p, secret, deployment);
            let missing = inventory.missing(p, &t);
            let ready = !state.suspended
                && deployment
                    .map(DeploymentStatus::of)
                    .is_some_and(|d| d.ready());
            TenantRow {
                tenant: t.to_string(),
                plan: state.plan.clone(),
                state: state_name(missing.is_empty(), state.suspended),
                ready,
                missing,
            }
        })
        .collect())
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
    // A hand-off is usually a new tenant, but may be one an operator changed meanwhile.
    let state = match tokio::time::timeout_at(deadline, tenant_state(p, &tenant)).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => return HandoffOutcome::Failed(tenant, e.to_string()),
        Err(_) => {
            return HandoffOutcome::Failed(tenant, "ran out of time reading its state".into());
        }
    };
    match Box::pin(p.provision_with(&tenant, &state, deadline)).await {
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
    /// Each tenant's recorded state, from its Secret's labels and annotations.
    states: BTreeMap<String, TenantState>,
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

        let secrets = secrets?;
        let states = secrets
            .iter()
            .filter_map(|o| {
                let name = o
                    .metadata
                    .name
                    .as_deref()?
                    .strip_prefix("tenant-")?
                    .to_owned();
                let state = TenantState::from_meta(
                    &p.plans,
                    o.metadata.labels.as_ref(),
                    o.metadata.annotations.as_ref(),
                );
                Some((name, state))
            })
            .collect();
        Ok(Self {
            states,
            users: users?.into_iter().map(|u| u.name).collect(),
            vhosts: vhosts?
                .into_iter()
                .map(|v| (v.name, v.description))
                .collect(),
            permissions: permissions?
                .into_iter()
                .map(|p| (p.vhost, p.user))
                .collect(),
            kube_secrets: secrets
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

    /// The tenant's recorded state (a new tenant's when nothing records it).
    pub fn state(&self, p: &Provisioner, tenant: &TenantId) -> TenantState {
        self.states
            .get(tenant.as_str())
            .cloned()
            .unwrap_or_else(|| TenantState::new(&p.plans))
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
            let state = inventory.state(p, &tenant);
            to_repair.push((tenant, state));
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
            .map(|(tenant, state)| async move {
                let deadline = Instant::now() + options.budget;
                let result = Box::pin(p.provision_with(&tenant, &state, deadline)).await;
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
