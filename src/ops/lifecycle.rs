//! A tenant's life after sign-up, as library functions beside `provision`: inspect and list,
//! change plan, suspend and resume, rotate the password, offboard and restore, drain the
//! hand-off queue. Every change is a guarded transition of the tenant's record first
//! (`crate::outside::registry`), then a convergence of every system to the record; nothing here reads
//! desired state from the objects it repairs. `tenantctl` and the worker only call these.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::ops::provision::{Provisioner, Report, desired_limits};
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::rabbitmq::{Permission, User, Vhost};
use crate::outside::registry::{Created, ListFilter};
use crate::outside::sqs::{HandoffMessage, HandoffQueue};
use crate::tenant::TenantId;
use crate::tenant::plan::{GENERATION_ANNOTATION, Plans, TenantState};
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};
use crate::tenant::transition::Change;

// --- status ---------------------------------------------------------------------------------

/// What exists for one tenant. Keys of secrets, never their values.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// The tenant's record (the intent); `None` for a tenant the registry does not know.
    pub record: Option<TenantRecord>,
    /// Where what exists differs from the record (empty: as recorded).
    pub drift: Vec<String>,
    /// Every part exists.
    pub complete: bool,
    /// `complete` (and not suspended), `suspended`, `offboarded`, `incomplete`, or
    /// `unrecorded`.
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
    /// The cluster the tenant's cell runs its backends in.
    pub cluster: String,
    pub namespace: String,
    pub secret: Option<NamedKeys>,
    /// The password generation the Secret holds (its annotation).
    pub secret_generation: Option<u32>,
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
    /// The first container's resources, as the API server keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
}

impl DeploymentStatus {
    /// Every wanted replica is updated and available, and the Deployment says Available.
    pub fn ready(&self) -> bool {
        self.replicas > 0
            && self.available_replicas >= self.replicas
            && self.updated_replicas >= self.replicas
            && self.conditions.iter().any(|c| c == "Available=True")
    }

    pub fn of(d: &Deployment) -> Self {
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
            resources: spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| serde_json::to_value(r).ok()),
        }
    }
}

/// Reads the record and every part of one tenant (concurrently), and names the drift.
pub async fn status(p: &Provisioner, tenant: &TenantId) -> Result<TenantStatus, StepError> {
    let sm_name = tenant.secrets_manager_name(&p.secret_prefix);
    let (secret_name, deployment_name) = (tenant.secret_name(), tenant.deployment_name());
    // The record says which cell's broker holds the tenant (none: the first cell).
    let record = p.registry.get(tenant).await?;
    let cell = record.as_ref().map_or_else(
        || p.brokers.cells().first().name.clone(),
        |r| r.cell.clone(),
    );
    let broker = p.brokers.get(&cell).await?;
    let kubernetes = p.clusters.of_cell(&cell).await?;
    let rabbitmq = &broker.rabbitmq;
    let (user, vhost, permission, secret, deployment, sm) = tokio::join!(
        rabbitmq.user(tenant.rabbitmq_user()),
        rabbitmq.vhost(tenant.rabbitmq_vhost()),
        rabbitmq.permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user()),
        Box::pin(kubernetes.get::<Secret>(&secret_name)),
        Box::pin(kubernetes.get::<Deployment>(&deployment_name)),
        Box::pin(p.secrets.get_json(&sm_name)),
    );
    let (user, vhost, permission) = (user?, vhost?, permission?);
    let (secret, deployment) = (secret?, deployment?);
    let (vhost_limits, user_limits) = tokio::join!(
        rabbitmq.vhost_limits(tenant.rabbitmq_vhost()),
        rabbitmq.user_limits(tenant.rabbitmq_user()),
    );
    let (vhost_limits, user_limits) = (vhost_limits?, user_limits?);
    let secret_generation = secret.as_ref().and_then(|s| generation_of(&s.metadata));
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
    let observed = Observed {
        user: user.is_some(),
        vhost: vhost.is_some(),
        permission: permission.is_some(),
        secret: secret.is_some(),
        deployment: deployment.is_some(),
        secrets_manager: secrets_manager.is_some(),
        vhost_limits: Some(vhost_limits.clone()),
        user_limits: Some(user_limits.clone()),
        secret_generation,
        deployment_replicas: deployment.as_ref().map(|d| d.replicas),
        deployment_resources: deployment.as_ref().and_then(|d| d.resources.clone()),
    };
    let missing = observed.missing();
    let complete = missing.is_empty();
    let drift = match &record {
        Some(r) => drift(&p.plans, r, &observed),
        None => vec!["no record: `tenantctl adopt` records it from what exists".to_owned()],
    };
    let state = record
        .as_ref()
        .and_then(TenantRecord::desired)
        .unwrap_or_else(|| TenantState::new(&p.plans));
    let ready = deployment.as_ref().is_some_and(DeploymentStatus::ready) && !state.suspended;
    let name = match record.as_ref().map(|r| r.state) {
        None => "unrecorded",
        Some(Phase::Offboarded) => "offboarded",
        Some(_) => state_name(complete, state.suspended),
    };
    Ok(TenantStatus {
        tenant: tenant.to_string(),
        record,
        drift,
        complete,
        state: name,
        ready,
        plan: state.plan.clone(),
        suspended: state.suspended,
        password_generation: state.generation,
        missing,
        rabbitmq: RabbitmqStatus {
            user,
            vhost,
            permission,
            vhost_limits,
            user_limits,
        },
        kubernetes: KubernetesStatus {
            cluster: p.clusters.name_of(&cell).to_owned(),
            namespace: p.namespace().to_owned(),
            secret,
            secret_generation,
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

fn generation_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<u32> {
    meta.annotations
        .as_ref()?
        .get(GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

// --- observed state and drift -------------------------------------------------------------

/// What exists of one tenant, from single reads (`status`) or bulk listings (the reconciler).
/// `None` where a value is not known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub user: bool,
    pub vhost: bool,
    pub permission: bool,
    pub secret: bool,
    pub deployment: bool,
    pub secrets_manager: bool,
    pub vhost_limits: Option<BTreeMap<String, i64>>,
    pub user_limits: Option<BTreeMap<String, i64>>,
    pub secret_generation: Option<u32>,
    pub deployment_replicas: Option<i32>,
    pub deployment_resources: Option<serde_json::Value>,
}

impl Observed {
    fn parts(&self) -> [(&'static str, bool); 6] {
        [
            ("rabbitmq user", self.user),
            ("rabbitmq vhost", self.vhost),
            ("rabbitmq permission", self.permission),
            ("kubernetes secret", self.secret),
            ("kubernetes deployment", self.deployment),
            ("secrets manager secret", self.secrets_manager),
        ]
    }

    /// The parts that do not exist (empty: complete).
    pub fn missing(&self) -> Vec<&'static str> {
        self.parts()
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(part, _)| part)
            .collect()
    }

    /// Whether anything at all exists.
    pub fn any(&self) -> bool {
        self.parts().iter().any(|(_, present)| *present)
    }
}

/// Where `observed` differs from what `record` asks for, one line each (pure: the reconciler's
/// and `status`'s judgement, table-tested below).
pub fn drift(plans: &Plans, record: &TenantRecord, observed: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let Some(state) = record.desired() else {
        // Offboarded: everything that grants access must be gone; the vhost too unless kept.
        for (part, present) in observed.parts() {
            let kept = part == "rabbitmq vhost" && record.retain_data;
            if present && !kept {
                out.push(format!("offboarded, but its {part} exists"));
            }
        }
        return out;
    };
    for part in observed.missing() {
        out.push(format!("missing {part}"));
    }
    let plan = plans.for_state(&state);
    let (vhost_limits, user_limits) = desired_limits(plan, &state);
    if observed.vhost
        && let Some(now) = &observed.vhost_limits
        && now != &vhost_limits
    {
        out.push(format!(
            "vhost limits {} (plan {}: {})",
            limits_text(now),
            plan.name,
            limits_text(&vhost_limits)
        ));
    }
    if observed.user
        && let Some(now) = &observed.user_limits
        && now != &user_limits
    {
        out.push(format!(
            "user limits {} (plan {}: {})",
            limits_text(now),
            plan.name,
            limits_text(&user_limits)
        ));
    }
    if observed.secret
        && let Some(g) = observed.secret_generation
        && g != state.generation
    {
        out.push(format!(
            "kubernetes secret holds password generation {g} (recorded: {})",
            state.generation
        ));
    }
    if let Some(replicas) = observed.deployment_replicas {
        let wanted = if state.suspended {
            0
        } else {
            plan.backend.replicas
        };
        if replicas != wanted {
            out.push(format!("backend replicas {replicas} (wanted {wanted})"));
        }
    }
    if observed.deployment
        && let Some(wanted) = &plan.backend.resources
    {
        let wanted = serde_json::to_value(wanted).ok();
        if observed.deployment_resources != wanted {
            out.push(format!("backend resources differ from plan {}", plan.name));
        }
    }
    if !record.converged() {
        out.push(format!(
            "change not applied everywhere yet: {}",
            record.pending.as_deref().unwrap_or("provision")
        ));
    } else if record.outcome != LastOutcome::Provisioned {
        out.push(
            format!("recorded outcome is {:?}, not provisioned", record.outcome).to_lowercase(),
        );
    }
    out
}

fn limits_text(limits: &BTreeMap<String, i64>) -> String {
    if limits.is_empty() {
        return "none".to_owned();
    }
    limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

// --- the record -----------------------------------------------------------------------------

fn rejected(system: System, action: &str, detail: impl Into<String>) -> StepError {
    StepError::new(system, action, FailureKind::Rejected, detail)
}

/// The tenant's record; a tenant without one is an error that says what to do.
pub async fn record_of(p: &Provisioner, tenant: &TenantId) -> Result<TenantRecord, StepError> {
    p.registry.get(tenant).await?.ok_or_else(|| {
        rejected(
            System::Registry,
            &format!("read tenant {tenant}"),
            "no record of this tenant: `tenantctl provision --sub` records a new one, `tenantctl adopt` records existing tenants",
        )
    })
}

/// The tenant's record, created as a new tenant's when it has none (the registry was down at
/// sign-up, or an admin-created user): whoever finishes a tenant writes its record.
pub async fn record_or_new(
    p: &Provisioner,
    tenant: &TenantId,
    user_pool_id: Option<&str>,
    origin: &str,
) -> Result<TenantRecord, StepError> {
    if let Some(r) = p.registry.get(tenant).await? {
        return Ok(r);
    }
    let fresh = TenantRecord::new(tenant, user_pool_id, &p.plans, origin);
    let placed = p
        .placement
        .place(&fresh)
        .await
        .map_err(|e| e.into_step(tenant.as_str()))?;
    Ok(match placed {
        Created::New(r) | Created::Existing(r) => r,
    })
}

// --- converge -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct ConvergeOptions {
    /// Budget of the provisioning (or removal) itself.
    pub budget: Duration,
    /// How long a rotation waits for the backend to roll before it closes the connections
    /// still using the old password (0: check once, finish on a later run).
    pub rollout_wait: Duration,
    /// Days Secrets Manager keeps a removed tenant secret recoverable; `None`: at once.
    pub recovery_days: Option<i64>,
    /// Whether this identity removes things (operators). The worker and the scheduled
    /// reconciler do not: an offboarding left half-done is theirs to report, an operator's to
    /// finish (`tenantctl deprovision` again).
    pub may_remove: bool,
}

impl ConvergeOptions {
    /// An operator's convergence (removal included).
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            rollout_wait: Duration::ZERO,
            recovery_days: Some(7),
            may_remove: true,
        }
    }

    /// The worker's and the scheduled reconciler's: never removes anything.
    pub fn no_removal(budget: Duration) -> Self {
        Self {
            may_remove: false,
            ..Self::new(budget)
        }
    }
}

/// What a convergence did.
#[derive(Debug, Clone, Serialize)]
pub struct Converged {
    pub tenant: String,
    /// The record version now applied everywhere.
    pub version: u64,
    pub state: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovalReport>,
    /// Connections closed because they used an old password (rotation) or the tenant is
    /// suspended.
    pub closed_connections: usize,
}

/// Makes every system what `record` says, then records it as converged. If the record moved
/// on meanwhile (another change), converges again to the newer one (a few times at most), so
/// an older intent never lands after a newer one unnoticed.
pub async fn converge(
    p: &Provisioner,
    record: &TenantRecord,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    let tenant = record.tenant()?;
    let mut record = record.clone();
    for _ in 0..3 {
        let done = converge_once(p, &tenant, &record, options).await?;
        let marked = p
            .registry
            .record_converged(&tenant, record.version, record.state != Phase::Offboarded)
            .await?;
        if marked {
            return Ok(done);
        }
        match p.registry.get(&tenant).await? {
            Some(newer) if newer.version != record.version => record = newer,
            _ => return Ok(done),
        }
    }
    Err(StepError::new(
        System::Registry,
        format!("converge tenant {tenant}"),
        FailureKind::Conflict,
        "the record kept changing while it was applied; run it again",
    ))
}

async fn converge_once(
    p: &Provisioner,
    tenant: &TenantId,
    record: &TenantRecord,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    let mut done = Converged {
        tenant: tenant.to_string(),
        version: record.version,
        state: record.state,
        report: None,
        removed: None,
        closed_connections: 0,
    };
    let Some(state) = record.desired() else {
        if !options.may_remove {
            return Err(rejected(
                System::Registry,
                &format!("finish offboarding tenant {tenant}"),
                "the offboarding is not finished; an operator finishes it (`tenantctl deprovision --sub` again)",
            ));
        }
        let removed = remove(p, tenant, record, options.recovery_days).await?;
        if removed.rabbitmq_vhost.is_some() {
            // The vhost is gone: its seat in the cell is free again (once).
            p.registry.release_seat(record).await?;
        }
        done.removed = Some(removed);
        return Ok(done);
    };
    // A restored tenant whose vhost was removed takes a seat again (its cell must have room);
    // a plan change moves its seat's connection count with it.
    p.placement.reseat(record).await?;
    p.placement.resize_seat(record).await?;
    let report = Box::pin(p.provision_with(
        tenant,
        &record.cell,
        &state,
        Instant::now() + options.budget,
    ))
    .await
    .map_err(|e| e.into_step("provision"))?;
    done.report = Some(report);
    if record.pending.as_deref() == Some("plan") {
        let name = tenant.secrets_manager_name(&p.secret_prefix);
        p.secrets.tag_plan(&name, &state.plan).await?;
    }
    if state.suspended {
        // The limit keeps new connections out; the open ones are closed here.
        p.brokers
            .get(&record.cell)
            .await?
            .rabbitmq
            .close_user_connections(tenant.rabbitmq_user())
            .await?;
    } else if let Some(rotated) = record
        .rotated()
        .filter(|_| matches!(record.pending.as_deref(), Some("rotate" | "restore")))
    {
        done.closed_connections =
            close_old_connections(p, tenant, &record.cell, rotated, options.rollout_wait).await?;
    }
    Ok(done)
}

/// After a rotation: once the backend's new pods (which read the new password) are available,
/// closes the user's connections — RabbitMQ keeps connections open across a password change.
/// Connection tracking (exact, immediate) does not say when a connection was opened, and the
/// management database that does lags by its statistics interval, so every connection of the
/// user is closed: the new pods reconnect once, with the new password; anything still holding
/// the old one cannot. A backend that has not rolled yet is an error that names the re-run.
async fn close_old_connections(
    p: &Provisioner,
    tenant: &TenantId,
    cell: &str,
    rotated: jiff::Timestamp,
    wait: Duration,
) -> Result<usize, StepError> {
    wait_rolled(p, tenant, cell, wait, "the new password").await?;
    let rabbitmq = &p.brokers.get(cell).await?.rabbitmq;
    let open = rabbitmq
        .user_connections(tenant.rabbitmq_user())
        .await?
        .len();
    rabbitmq
        .close_user_connections(tenant.rabbitmq_user())
        .await?;
    tracing::info!(tenant = %tenant, rotated = %rotated, closed = open, "connections closed after rotation");
    Ok(open)
}

/// Waits until the tenant's backend runs its current spec (a Deployment whose observed
/// generation is its generation, every replica ready), at most `wait`; then an error that
/// names what the roll was for and the re-run.
pub(crate) async fn wait_rolled(
    p: &Provisioner,
    tenant: &TenantId,
    cell: &str,
    wait: Duration,
    what: &str,
) -> Result<(), StepError> {
    let started = Instant::now();
    let kubernetes = p.clusters.of_cell(cell).await?;
    loop {
        let d = kubernetes
            .get::<Deployment>(&tenant.deployment_name())
            .await?;
        // The status must be of the applied spec (observedGeneration), not the one before it.
        let rolled = d.as_ref().is_some_and(|d| {
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            let current = observed.is_some() && observed >= d.metadata.generation;
            let status = DeploymentStatus::of(d);
            current && (status.replicas == 0 || status.ready())
        });
        if rolled {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(StepError::new(
                System::Kubernetes,
                format!("roll the backend of tenant {tenant}"),
                FailureKind::Timeout,
                format!(
                    "the backend has not rolled to {what} within {} s; run it again to finish",
                    wait.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// --- changes --------------------------------------------------------------------------------

/// A change and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub tenant: String,
    pub change: &'static str,
    /// The record changed (`false`: it already said so; this run finished applying it).
    pub changed: bool,
    pub before: TenantRecord,
    pub after: TenantRecord,
    pub converged: Converged,
}

/// An operator's change: a guarded transition of the record (a concurrent change is refused
/// with "changed meanwhile" and nothing is done), then every system converges to it. A change
/// the record already holds but has not applied everywhere (a half-done rotate) is finished.
pub async fn change(
    p: &Provisioner,
    tenant: &TenantId,
    change: Change,
    options: ConvergeOptions,
) -> Result<ChangeReport, StepError> {
    let action = format!("{} tenant {tenant}", change.name());
    if let Change::Plan(plan) = &change
        && p.plans.get(plan).is_none()
    {
        let known: Vec<&str> = p.plans.names().collect();
        return Err(rejected(
            System::Registry,
            &action,
            format!("no plan '{plan}' (plans: {})", known.join(", ")),
        ));
    }
    let before = record_of(p, tenant).await?;
    let next =
        crate::tenant::transition::transition(&before, &change, &crate::tenant::record::now())
            .map_err(|e| rejected(System::Registry, &action, e.to_string()))?;
    let (after, changed) = match next {
        Some(after) => {
            p.registry.transition(&before, &after).await?;
            (after, true)
        }
        None => (before.clone(), false),
    };
    let converged = converge(p, &after, options).await?;
    tracing::info!(tenant = %tenant, change = change.name(), changed, version = after.version, "tenant changed");
    Ok(ChangeReport {
        tenant: tenant.to_string(),
        change: change.name(),
        changed,
        before,
        after,
        converged,
    })
}

// --- removal --------------------------------------------------------------------------------

/// What was deleted (`true`) or already gone (`false`); `None` for what was kept.
#[derive(Debug, Clone, Serialize)]
pub struct RemovalReport {
    pub tenant: String,
    pub rabbitmq_permission: bool,
    pub rabbitmq_user: bool,
    pub kubernetes_deployment: bool,
    pub kubernetes_secret: bool,
    pub secrets_manager_secret: bool,
    pub rabbitmq_vhost: Option<bool>,
}

/// Removes an offboarded tenant's parts. Access goes first — the permission, then the user
/// (which closes its connections) — so a failure half-way never leaves a working login; then
/// the backend, the stored credentials and, unless kept, the vhost with its messages.
/// Idempotent: what is already gone counts as done.
async fn remove(
    p: &Provisioner,
    tenant: &TenantId,
    record: &TenantRecord,
    recovery_days: Option<i64>,
) -> Result<RemovalReport, StepError> {
    let retain_data = record.retain_data;
    let rabbitmq = &p.brokers.get(&record.cell).await?.rabbitmq;
    let rabbitmq_permission = rabbitmq
        .delete_permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user())
        .await?;
    let rabbitmq_user = rabbitmq.delete_user(tenant.rabbitmq_user()).await?;
    let kubernetes = p.clusters.of_cell(&record.cell).await?;
    let kubernetes_deployment = kubernetes
        .delete::<Deployment>(&tenant.deployment_name())
        .await?;
    let kubernetes_secret = kubernetes.delete::<Secret>(&tenant.secret_name()).await?;
    let secrets_manager_secret = p
        .secrets
        .delete(
            &tenant.secrets_manager_name(&p.secret_prefix),
            recovery_days,
        )
        .await?;
    let rabbitmq_vhost = if retain_data {
        None
    } else {
        Some(rabbitmq.delete_vhost(tenant.rabbitmq_vhost()).await?)
    };
    tracing::info!(tenant = %tenant, retain_data, "tenant removed");
    Ok(RemovalReport {
        tenant: tenant.to_string(),
        rabbitmq_permission,
        rabbitmq_user,
        kubernetes_deployment,
        kubernetes_secret,
        secrets_manager_secret,
        rabbitmq_vhost,
    })
}

// --- provision (operator) -------------------------------------------------------------------

/// An operator's `provision --sub`: converges the tenant to its record, recording a new
/// tenant's first if it has none. An offboarded tenant is refused: `restore` brings it back.
pub async fn provision_recorded(
    p: &Provisioner,
    tenant: &TenantId,
    user_pool_id: Option<&str>,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    let record = record_or_new(p, tenant, user_pool_id, "operator").await?;
    if record.state == Phase::Offboarded && record.converged() {
        return Err(rejected(
            System::Registry,
            &format!("provision tenant {tenant}"),
            "the tenant is offboarded: `tenantctl restore --sub` brings it back on purpose",
        ));
    }
    converge(p, &record, options).await
}

// --- list -----------------------------------------------------------------------------------

/// One tenant in `list`: its record, in short.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    pub tenant: String,
    pub state: Phase,
    pub plan: String,
    pub generation: u32,
    pub cell: String,
    pub outcome: LastOutcome,
    /// Its latest change is applied everywhere.
    pub converged: bool,
    pub created_at: String,
}

impl From<&TenantRecord> for TenantRow {
    fn from(r: &TenantRecord) -> Self {
        Self {
            tenant: r.sub.clone(),
            state: r.state,
            plan: r.plan.clone(),
            generation: r.generation,
            cell: r.cell.clone(),
            outcome: r.outcome,
            converged: r.converged(),
            created_at: r.created_at.clone(),
        }
    }
}

/// Every recorded tenant matching `filter`, from the registry alone (no broker or cluster
/// call), sorted by tenant id.
pub async fn list(
    p: &Provisioner,
    filter: &ListFilter,
    deadline: Instant,
) -> Result<Vec<TenantRow>, StepError> {
    let mut rows: Vec<TenantRow> = p
        .registry
        .all(filter, deadline)
        .await?
        .iter()
        .map(TenantRow::from)
        .collect();
    rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(rows)
}

// --- drain ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainSummary {
    pub received: usize,
    pub provisioned: usize,
    /// Offboarded meanwhile: acknowledged, not provisioned.
    pub skipped: usize,
    pub failed: usize,
    pub malformed: usize,
    /// `sub: error` of each failure (no secrets: step errors never hold one).
    pub failures: Vec<String>,
}

/// The outcome of one hand-off message.
#[derive(Debug)]
pub enum HandoffOutcome {
    Provisioned(TenantId),
    /// The record says the tenant is offboarded: nothing to provision.
    Skipped(TenantId),
    Malformed(String),
    Failed(TenantId, String),
}

/// Finishes the tenant of one hand-off message by `deadline`: converges it to its record,
/// writing the record first if the registry was down at sign-up.
pub async fn process_handoff(p: &Provisioner, body: &str, deadline: Instant) -> HandoffOutcome {
    let (message, tenant) = match HandoffMessage::parse(body) {
        Ok(parsed) => parsed,
        Err(e) => return HandoffOutcome::Malformed(e),
    };
    let pool = message.user_pool_id.as_deref();
    let record =
        match tokio::time::timeout_at(deadline, record_or_new(p, &tenant, pool, "worker")).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return HandoffOutcome::Failed(tenant, e.to_string()),
            Err(_) => {
                return HandoffOutcome::Failed(tenant, "ran out of time reading its record".into());
            }
        };
    if record.state == Phase::Offboarded {
        // Removing is an operator's (the worker may not delete): an unfinished offboarding is
        // reported by the reconciler and finished by `tenantctl deprovision`.
        tracing::info!(tenant = %tenant, converged = record.converged(), "hand-off of an offboarded tenant: not provisioned");
        return HandoffOutcome::Skipped(tenant);
    }
    let budget = deadline.saturating_duration_since(Instant::now());
    match converge(p, &record, ConvergeOptions::no_removal(budget)).await {
        Ok(_) => HandoffOutcome::Provisioned(tenant),
        Err(e) => {
            let detail = format!("{}: {:?}", e.system, e.kind).to_lowercase();
            if let Err(re) = p
                .registry
                .record_unfinished(&tenant, LastOutcome::Failed, Some(&detail))
                .await
            {
                tracing::warn!(tenant = %tenant, error = %re, "could not record the failure");
            }
            HandoffOutcome::Failed(tenant, e.to_string())
        }
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
                HandoffOutcome::Skipped(_) => {
                    queue.delete(&m.receipt_handle).await?;
                    summary.skipped += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::transition::transition;

    fn plans() -> Plans {
        Plans::embedded().unwrap()
    }

    fn record() -> TenantRecord {
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let mut r = TenantRecord::new(&t, None, &plans(), "sign-up");
        r.converged_version = r.version;
        r.outcome = LastOutcome::Provisioned;
        r
    }

    /// What a tenant provisioned exactly as `record` says looks like.
    fn as_recorded(record: &TenantRecord) -> Observed {
        let plans = plans();
        let state = record.desired().unwrap();
        let plan = plans.for_state(&state);
        let (v, u) = desired_limits(plan, &state);
        Observed {
            user: true,
            vhost: true,
            permission: true,
            secret: true,
            deployment: true,
            secrets_manager: true,
            vhost_limits: Some(v),
            user_limits: Some(u),
            secret_generation: Some(state.generation),
            deployment_replicas: Some(if state.suspended {
                0
            } else {
                plan.backend.replicas
            }),
            deployment_resources: plan
                .backend
                .resources
                .as_ref()
                .map(|r| serde_json::to_value(r).unwrap()),
        }
    }

    #[test]
    fn a_tenant_as_recorded_has_no_drift() {
        let r = record();
        assert_eq!(drift(&plans(), &r, &as_recorded(&r)), Vec::<String>::new());
    }

    #[test]
    fn drift_names_each_difference() {
        let plans = plans();
        let r = record();
        let suspended = {
            let mut s = transition(&r, &Change::Suspend, "t").unwrap().unwrap();
            s.converged_version = s.version;
            s
        };
        // A suspended tenant whose objects still say active (a repair from defaults did that).
        let active_objects = as_recorded(&r);
        let lines = drift(&plans, &suspended, &active_objects);
        assert!(
            lines.iter().any(|l| l.starts_with("vhost limits")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("backend replicas")),
            "{lines:?}"
        );

        let mut extra_limit = as_recorded(&r);
        extra_limit
            .vhost_limits
            .as_mut()
            .unwrap()
            .insert("max-channels".into(), 9);
        assert_eq!(drift(&plans, &r, &extra_limit).len(), 1);

        let mut old_password = as_recorded(&r);
        let rotated = {
            let mut x = transition(&r, &Change::Rotate, "t").unwrap().unwrap();
            x.converged_version = x.version;
            x
        };
        old_password.secret_generation = Some(0);
        let lines = drift(&plans, &rotated, &old_password);
        assert!(lines[0].contains("generation 0 (recorded: 1)"), "{lines:?}");

        let mut lost = as_recorded(&r);
        lost.secret = false;
        assert_eq!(drift(&plans, &r, &lost), ["missing kubernetes secret"]);

        let pending = transition(&r, &Change::Rotate, "t").unwrap().unwrap();
        let lines = drift(&plans, &pending, &as_recorded(&pending));
        assert_eq!(lines, ["change not applied everywhere yet: rotate"]);
    }

    #[test]
    fn an_offboarded_tenant_drifts_by_what_is_left() {
        let plans = plans();
        let r = record();
        let everything = as_recorded(&r);
        let gone = transition(&r, &Change::Offboard { retain_data: true }, "t")
            .unwrap()
            .unwrap();
        let lines = drift(&plans, &gone, &everything);
        assert_eq!(lines.len(), 5, "all but the kept vhost: {lines:?}");
        let only_vhost = Observed {
            vhost: true,
            ..Default::default()
        };
        assert!(drift(&plans, &gone, &only_vhost).is_empty());
        let dropped = transition(&gone, &Change::Offboard { retain_data: false }, "t")
            .unwrap()
            .unwrap();
        assert_eq!(
            drift(&plans, &dropped, &only_vhost),
            ["offboarded, but its rabbitmq vhost exists"]
        );
    }
}
