//! Converging a tenant to its record: read the record, apply it to every system, record it
//! converged; an offboarded tenant's parts are removed (access first). Nothing here reads
//! desired state from the objects it repairs.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::ops::provision::{Provisioner, Report};
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::registry::{Created, Taken};
use crate::tenant::TenantId;
use crate::tenant::drift::DeploymentStatus;
use crate::tenant::lease::{self, Fence};
use crate::tenant::record::{Phase, TenantRecord};

pub(crate) fn rejected(system: System, action: &str, detail: impl Into<String>) -> StepError {
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
    /// Who converges (`operator`, `worker`, `reconciler`): the lease's holder.
    pub holder: &'static str,
    /// How long to wait for a tenant another holder is converging (0: not at all). An
    /// operator waits; the safety net leaves the tenant to its holder, which applies the
    /// newest record before it lets go.
    pub lease_wait: Duration,
}

impl ConvergeOptions {
    /// An operator's convergence (removal included).
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            rollout_wait: Duration::ZERO,
            recovery_days: Some(7),
            may_remove: true,
            holder: "operator",
            lease_wait: Duration::from_secs(30),
        }
    }

    /// The worker's and the scheduled reconciler's: never removes anything, never waits.
    pub fn no_removal(budget: Duration) -> Self {
        Self {
            may_remove: false,
            holder: "worker",
            lease_wait: Duration::ZERO,
            ..Self::new(budget)
        }
    }

    /// The same, held as `holder`.
    pub fn held_by(self, holder: &'static str) -> Self {
        Self { holder, ..self }
    }

    /// How long the lease is taken for: the work's own bounds, and the margin for its last
    /// write.
    fn hold_for(&self) -> Duration {
        self.budget + self.rollout_wait + crate::tenant::lease::MARGIN
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

impl Converged {
    /// Nothing done (yet): the record as it is.
    fn nothing(tenant: &TenantId, record: &TenantRecord) -> Self {
        Self {
            tenant: tenant.to_string(),
            version: record.version,
            state: record.state,
            report: None,
            removed: None,
            closed_connections: 0,
        }
    }
}

/// Makes every system what the tenant's record says, as the one holder of its lease, then
/// records it converged (the same write gives the lease back). The record applied is the one
/// read when the lease was taken — never `record`, which may be old: a record that has moved on
/// since `record` was read and is converged already was applied by its own holder, and nothing
/// is done. If the record moves on meanwhile (another change), it converges again to the newer
/// one (a few times at most), so an older intent never lands after a newer one.
pub async fn converge(
    p: &Provisioner,
    record: &TenantRecord,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    let tenant = record.tenant()?;
    let (fresh, fence) = take_lease(p, &tenant, &options).await?;
    if fresh.version != record.version && fresh.converged() {
        p.registry.give_back_lease(&tenant, &fence).await?;
        tracing::info!(tenant = %tenant, read = record.version, current = fresh.version, "the record moved on and is applied already: nothing to do");
        return Ok(Converged::nothing(&tenant, &fresh));
    }
    let result = converge_held(p, &tenant, *fresh, &fence, options).await;
    if result.is_err() {
        // Best effort: a lease not given back runs out at its deadline anyway.
        let _ = p.registry.give_back_lease(&tenant, &fence).await;
    }
    result
}

/// Takes the tenant's lease (waiting up to `options.lease_wait` for another holder): the record
/// as it is now, and the fence its writes carry.
pub async fn take_lease(
    p: &Provisioner,
    tenant: &TenantId,
    options: &ConvergeOptions,
) -> Result<(Box<TenantRecord>, Fence), StepError> {
    let holder = lease::holder_name(options.holder);
    let waited = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let until = SystemTime::now() + options.hold_for();
        match p.registry.take_lease(tenant, &holder, until).await? {
            Taken::Held(record, fence) => return Ok((record, fence)),
            Taken::NoRecord => {
                return Err(rejected(
                    System::Registry,
                    &format!("take tenant {tenant}"),
                    "no record of this tenant: `tenantctl provision --sub` records a new one, `tenantctl adopt` records existing tenants",
                ));
            }
            Taken::Busy(held) => {
                if waited.elapsed() + pause > options.lease_wait {
                    return Err(StepError::new(
                        System::Registry,
                        format!("take tenant {tenant}"),
                        FailureKind::Busy,
                        lease::Busy::from(held).to_string(),
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// `converge`'s work, the lease held: apply, record converged (fenced), re-read if it moved on.
async fn converge_held(
    p: &Provisioner,
    tenant: &TenantId,
    mut record: TenantRecord,
    fence: &Fence,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    for _ in 0..3 {
        // A seat change on the way grows the version (`record` follows it).
        let done = converge_once(p, tenant, &mut record, fence, options).await?;
        let marked = p
            .registry
            .record_converged(
                tenant,
                record.version,
                record.state != Phase::Offboarded,
                Some(fence),
            )
            .await?;
        if marked {
            return Ok(done);
        }
        match p.registry.get(tenant).await? {
            Some(newer) if newer.lease_fence != fence.fence => return Err(lost(tenant)),
            Some(newer) if newer.version != record.version => record = newer,
            _ => {
                p.registry.give_back_lease(tenant, fence).await?;
                return Ok(done);
            }
        }
    }
    Err(StepError::new(
        System::Registry,
        format!("converge tenant {tenant}"),
        FailureKind::Conflict,
        "the record kept changing while it was applied; run it again",
    ))
}

/// A holder whose lease ran out (and was taken over) stops: nothing more is written.
fn lost(tenant: &TenantId) -> StepError {
    StepError::new(
        System::Registry,
        format!("converge tenant {tenant}"),
        FailureKind::Conflict,
        "its lease ran out before it finished and another holder took the tenant; nothing more was written by this one",
    )
}

/// Before each write that changes the world: the lease must still be this holder's to use.
pub(crate) fn still_held(tenant: &TenantId, fence: &Fence) -> Result<(), StepError> {
    if fence.valid_at(SystemTime::now()) {
        Ok(())
    } else {
        Err(lost(tenant))
    }
}

/// One application of `record`. Its seat changes (given back, taken again, resized) are
/// versioned writes conditioned on `record.version`: each that lands grows `record.version` by
/// one, as it did in the registry, so the convergence is recorded at the version it ends on.
async fn converge_once(
    p: &Provisioner,
    tenant: &TenantId,
    record: &mut TenantRecord,
    fence: &Fence,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    still_held(tenant, fence)?;
    let mut done = Converged::nothing(tenant, record);
    let Some(state) = record.desired() else {
        if !options.may_remove {
            return Err(rejected(
                System::Registry,
                &format!("finish offboarding tenant {tenant}"),
                "the offboarding is not finished; an operator finishes it (`tenantctl deprovision --sub` again)",
            ));
        }
        let removed = remove(p, tenant, record, options.recovery_days).await?;
        still_held(tenant, fence)?;
        if removed.rabbitmq_vhost.is_some() && p.registry.release_seat(record).await? {
            // The vhost is gone: its seat in the cell is free again (once).
            record.version += 1;
            record.seat_connections = None;
        }
        done.removed = Some(removed);
        done.version = record.version;
        return Ok(done);
    };
    // A restored tenant whose vhost was removed takes a seat again (its cell must have room);
    // a plan change moves its seat's connection count with it.
    if let Some(seated) = p.placement.reseat(record).await? {
        record.version += 1;
        record.seat_connections = Some(seated);
    }
    if let Some(resized) = p.placement.resize_seat(record).await? {
        record.version += 1;
        record.seat_connections = Some(resized);
    }
    done.version = record.version;
    let report = Box::pin(p.provision_with(
        tenant,
        &record.cell,
        &state,
        Instant::now() + options.budget.min(fence.remaining()),
    ))
    .await
    .map_err(|e| e.into_step("provision"))?;
    done.report = Some(report);
    if record.is_pending("plan") {
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
        .filter(|_| record.is_pending("rotate") || record.is_pending("restore"))
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
pub(crate) async fn remove(
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
