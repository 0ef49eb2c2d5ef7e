//! The reconciler: the safety net that makes every confirmed user's tenant what its record says.
//!
//! It reads intent only from the registry and observations only from bulk listings (a handful
//! of calls, however many tenants), judges each tenant with a pure function (`tenant::verdict::judge`,
//! table-tested there), then acts. It never provisions an offboarded tenant (a tombstone), never
//! takes a disabled user's tenant for a new one, and prunes only behind guards: a record, the
//! user absent on a re-check of that one user, a minimum age, and a maximum fraction of the
//! installation per run — otherwise the whole prune is refused and nothing is deleted.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::ops::provision::Provisioner;
use crate::outside::cognito::{PoolUser, UserPool};
use crate::outside::error::StepError;
use crate::outside::registry::ListFilter;
use crate::tenant::TenantId;
use crate::tenant::drift::{Observed, drift};
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};
use crate::tenant::verdict::{UserView, Verdict, judge};

mod inventory;
mod prune;
mod repair;

pub use inventory::Inventory;
pub use repair::{AdoptReport, adopt};

#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Also offboard tenants whose user is gone (behind the guards below).
    pub prune: bool,
    pub concurrency: usize,
    /// Budget of each tenant's convergence.
    pub budget: Duration,
    /// Until when the listings (and their retries) may run.
    pub list_deadline: Instant,
    /// A record younger than this is never pruned.
    pub prune_min_age: Duration,
    /// A run that would prune more than this fraction of the installation's tenants is
    /// refused whole.
    pub prune_max_fraction: f64,
    /// Whether this run may remove things (an operator's `tenantctl reconcile`); the scheduled
    /// function may not, and reports unfinished offboardings instead of finishing them.
    pub may_remove: bool,
    /// At most this many vhosts made ahead per cell in this run.
    pub pool_refill_max: usize,
}

impl ReconcileOptions {
    pub fn new(budget: Duration, concurrency: usize) -> Self {
        Self {
            dry_run: false,
            prune: false,
            concurrency,
            budget,
            list_deadline: Instant::now() + Duration::from_secs(120),
            prune_min_age: Duration::from_secs(24 * 3600),
            prune_max_fraction: 0.1,
            may_remove: true,
            pool_refill_max: 100,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileSummary {
    /// Users in the pool.
    pub pool_users: usize,
    /// Users that need a tenant (confirmed and enabled).
    pub users: usize,
    pub complete: usize,
    /// Tenants converged in this run (in a dry run: would be).
    pub repaired: usize,
    pub failed: usize,
    /// Records written in this run for tenants that had none (new, or adopted).
    pub recorded: usize,
    /// Recorded tenants (active or suspended) whose user is no longer in the pool.
    pub orphans: Vec<String>,
    /// Tenants of this installation with parts but no record and no user: reported only.
    pub unrecorded: Vec<String>,
    /// Offboarded tenants whose user is still confirmed: reported, never provisioned.
    pub tombstones: Vec<String>,
    /// Confirmed users who are disabled: reported, not provisioned.
    pub disabled: Vec<String>,
    /// Offboardings left half-done, when this run may not remove (the scheduled function):
    /// `tenantctl deprovision --sub` (or `tenantctl reconcile`) finishes them.
    pub unfinished_offboardings: Vec<String>,
    /// Tenants with a vhost of this installation on a cell that is not theirs, or a backend in
    /// a cluster that is not their cell's (a move left unfinished, a placement repaired
    /// elsewhere): reported only, never removed by the run.
    pub strays: Vec<String>,
    /// Cells whose broker could not be listed: their tenants were left alone in this run.
    pub unlisted_cells: Vec<String>,
    /// Clusters of cells of their own that could not be listed: those cells' tenants were
    /// left alone in this run.
    pub unlisted_clusters: Vec<String>,
    /// Tenants given the seat in their cell's count they should hold and did not (recorded
    /// before cells were declared, or a restore's seat not yet taken).
    pub seated: usize,
    pub pruned: usize,
    pub dry_run: bool,
    /// Tenants another holder (an operator, the worker) was converging: left to it.
    pub busy: Vec<String>,
    /// `sub: why` of each tenant that was (or would be) repaired.
    pub incomplete: Vec<String>,
    pub failures: Vec<String>,
    /// Each cell's pool of vhosts made ahead, topped up after the repairs (bounded per run).
    pub pools: Vec<crate::ops::pool::PoolRefill>,
    pub elapsed_ms: f64,
}

impl ReconcileSummary {
    /// The run's figures, as metrics.
    pub fn record_metrics(&self) {
        crate::metrics::reconciled(crate::metrics::Reconciled {
            users: self.users,
            repaired: self.repaired,
            failed: self.failed,
            orphans: self.orphans.len(),
            tombstones: self.tombstones.len(),
        });
    }
}

/// How the reconciler sees a pool user.
pub fn user_view(user: Option<&PoolUser>) -> UserView {
    match user {
        None => UserView::Absent,
        Some(u) if !u.needs_tenant() => UserView::Unconfirmed,
        Some(u) if !u.enabled => UserView::Disabled,
        Some(_) => UserView::Confirmed,
    }
}

/// What one run works on: a tenant to converge, or one to record first (in the cell given —
/// adoption: where its vhost is — or placed).
enum Work {
    Converge(TenantRecord),
    Record((TenantRecord, Option<String>)),
}

/// Compares the user pool, the registry and what exists; converges every tenant that differs
/// from its record, records tenants that have none, reports the rest and, with `prune`,
/// offboards orphans behind the guards. `on_progress(done, total)` hears the repairs.
pub async fn reconcile(
    p: &Provisioner,
    pool: &UserPool,
    options: ReconcileOptions,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<ReconcileSummary, StepError> {
    let started = Instant::now();
    let deadline = options.list_deadline;
    let everyone = ListFilter::default();
    let (users, records, inventory) = tokio::join!(
        pool.users(deadline, |_| {}),
        Box::pin(p.registry.all(&everyone, deadline)),
        Inventory::load(p, deadline),
    );
    let (users, records, inventory) = (users?, records?, inventory?);
    let mut summary = ReconcileSummary {
        pool_users: users.len(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let by_sub = users_by_sub(&users, &mut summary);
    let records: HashMap<TenantId, TenantRecord> = records
        .into_iter()
        .filter_map(|r| Some((r.tenant().ok()?, r)))
        .collect();
    let mut tenants: BTreeSet<TenantId> = inventory.tenants(p);
    tenants.extend(records.keys().cloned());
    tenants.extend(by_sub.keys().cloned());
    report_unlisted(&inventory, &mut summary);
    let mut work = Vec::new();
    let mut orphans = Vec::new();
    for tenant in &tenants {
        let record = records.get(tenant);
        // Its vhost as its record names it (one made ahead it claimed), else its `sub`.
        let tenant = &record
            .and_then(|r| r.tenant().ok())
            .unwrap_or_else(|| tenant.clone());
        let user = user_view(by_sub.get(tenant).copied());
        let judged = judge_one(
            p,
            pool,
            &inventory,
            tenant,
            record,
            user,
            &options,
            &mut summary,
        );
        match judged {
            Some(Judged::Work(w)) => work.push(w),
            Some(Judged::Orphan(r)) => orphans.push(r),
            None => {}
        }
    }
    // The prune's guards are checked before anything is done: a refused run changes nothing.
    let to_prune = if options.prune {
        prune::candidates(pool, &records, orphans, &options)?
    } else {
        Vec::new()
    };
    if options.dry_run {
        summary.repaired = work.len();
    } else {
        repair::run(p, work, &options, &mut summary, &mut on_progress).await;
        if options.prune {
            summary.pruned = prune::prune(p, pool, to_prune, &options, &mut summary).await;
        }
        repair::seats(p, &records, &mut summary).await;
        // After the repairs, which may have needed the seats: the pools, within their bound.
        let refill = crate::ops::pool::RefillOptions {
            max_per_run: options.pool_refill_max,
            ..crate::ops::pool::RefillOptions::new(options.budget.max(Duration::from_secs(30)))
        };
        match crate::ops::pool::refill(p, None, refill).await {
            Ok(pools) => {
                for r in &pools {
                    summary.failed += r.failures.len();
                    summary.failures.extend(
                        r.failures
                            .iter()
                            .map(|f| format!("cell '{}' pool: {f}", r.cell)),
                    );
                }
                summary.pools = pools;
            }
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("pools: {e}"));
            }
        }
    }
    summary.elapsed_ms = (started.elapsed().as_secs_f64() * 1e3 * 10.0).round() / 10.0;
    log_summary(&summary);
    Ok(summary)
}

/// The pool's users by tenant; a user who needs a tenant but has no valid `sub` is a failure.
fn users_by_sub<'u>(
    users: &'u [PoolUser],
    summary: &mut ReconcileSummary,
) -> HashMap<TenantId, &'u PoolUser> {
    let mut by_sub = HashMap::new();
    for u in users {
        match u.sub.as_deref().map(TenantId::parse) {
            Some(Ok(t)) => {
                by_sub.insert(t, u);
            }
            _ if u.needs_tenant() => {
                summary.failed += 1;
                summary
                    .failures
                    .push(format!("user '{}': no valid sub", u.username));
            }
            _ => {}
        }
    }
    by_sub
}

/// Cells and clusters that could not be listed: their tenants are left alone in this run.
fn report_unlisted(inventory: &Inventory, summary: &mut ReconcileSummary) {
    for (cell, e) in inventory.unlisted() {
        summary.failed += 1;
        summary.unlisted_cells.push(cell.clone());
        summary.failures.push(format!("cell '{cell}': {e}"));
    }
    for (cluster, e) in inventory.unlisted_clusters() {
        summary.failed += 1;
        summary.unlisted_clusters.push(cluster.clone());
        summary.failures.push(format!("cluster '{cluster}': {e}"));
    }
}

/// What judging one tenant leaves to do.
enum Judged {
    Work(Work),
    Orphan(TenantRecord),
}

/// One tenant: its strays reported, its verdict counted in the summary, and what to do.
#[allow(clippy::too_many_arguments)]
fn judge_one(
    p: &Provisioner,
    pool: &UserPool,
    inventory: &Inventory,
    tenant: &TenantId,
    record: Option<&TenantRecord>,
    user: UserView,
    options: &ReconcileOptions,
    summary: &mut ReconcileSummary,
) -> Option<Judged> {
    if user == UserView::Confirmed || user == UserView::Disabled {
        summary.users += usize::from(user == UserView::Confirmed);
    }
    let home = inventory.home(p, tenant, record);
    if record.is_some() {
        report_strays(p, inventory, tenant, &home, summary);
    }
    // None: its cell was not listed (reported already).
    let observed = inventory.observed(p, tenant, &home)?;
    let drifted = record
        .map(|r| drift(&p.plans, r, &observed))
        .unwrap_or_default();
    match judge(record, user, &drifted, observed.any()) {
        Verdict::Complete => summary.complete += 1,
        Verdict::Repair(why) => {
            let record = record.expect("judged with a record");
            if record.state == Phase::Offboarded && !options.may_remove {
                summary.unfinished_offboardings.push(tenant.to_string());
                return None;
            }
            summary.incomplete.push(format!(
                "{tenant}: {}",
                why.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            return Some(Judged::Work(Work::Converge(record.clone())));
        }
        Verdict::Record { adopt } => {
            let new = new_record(p, pool, inventory, tenant, &observed, adopt);
            summary.incomplete.push(format!(
                "{tenant}: no record ({})",
                if adopt { "adopting what exists" } else { "new" }
            ));
            return Some(Judged::Work(Work::Record((new, adopt.then_some(home)))));
        }
        Verdict::Tombstone => summary.tombstones.push(tenant.to_string()),
        Verdict::Disabled => summary.disabled.push(tenant.to_string()),
        Verdict::Orphan => {
            summary.orphans.push(tenant.to_string());
            return Some(Judged::Orphan(
                record.expect("judged with a record").clone(),
            ));
        }
        Verdict::Unrecorded => summary.unrecorded.push(tenant.to_string()),
        Verdict::Ignore => {}
    }
    None
}

/// A recorded tenant's vhost on a cell, or backend in a cluster, that is not its own.
fn report_strays(
    p: &Provisioner,
    inventory: &Inventory,
    tenant: &TenantId,
    home: &str,
    summary: &mut ReconcileSummary,
) {
    let elsewhere: Vec<String> = inventory
        .vhost_cells(p, tenant)
        .into_iter()
        .filter(|c| c != home)
        .collect();
    if !elsewhere.is_empty() {
        summary.strays.push(format!(
            "{tenant}: a vhost on {} (lives in {home})",
            elsewhere.join(", ")
        ));
    }
    let backend_elsewhere = inventory.backend_elsewhere(p, tenant, home);
    if !backend_elsewhere.is_empty() {
        summary.strays.push(format!(
            "{tenant}: a backend in cluster {} (lives in {home}, cluster {})",
            backend_elsewhere.join(", "),
            p.clusters.name_of(home)
        ));
    }
}

/// The record of a confirmed user's tenant that has none: from what exists (adoption), or new.
fn new_record(
    p: &Provisioner,
    pool: &UserPool,
    inventory: &Inventory,
    tenant: &TenantId,
    observed: &Observed,
    adopt: bool,
) -> TenantRecord {
    let pool_id = Some(pool.id());
    if !adopt {
        return TenantRecord::new(tenant, pool_id, &p.plans, "reconciler");
    }
    let mut r = TenantRecord::from_state(
        tenant,
        pool_id,
        &inventory.labelled_state(p, tenant),
        "adopted",
    );
    if observed.missing().is_empty() {
        // Onboarded before the registry existed: recorded as provisioned, without a second
        // TenantOnboarded.
        r.outcome = LastOutcome::Provisioned;
        r.provisioned_at = Some(r.created_at.clone());
    }
    r
}

fn log_summary(summary: &ReconcileSummary) {
    tracing::info!(
        pool_users = summary.pool_users,
        users = summary.users,
        complete = summary.complete,
        repaired = summary.repaired,
        recorded = summary.recorded,
        failed = summary.failed,
        orphans = summary.orphans.len(),
        unrecorded = summary.unrecorded.len(),
        strays = summary.strays.len(),
        unlisted_cells = summary.unlisted_cells.len(),
        tombstones = summary.tombstones.len(),
        unfinished_offboardings = summary.unfinished_offboardings.len(),
        disabled = summary.disabled.len(),
        pruned = summary.pruned,
        dry_run = summary.dry_run,
        elapsed_ms = summary.elapsed_ms,
        "reconciled"
    );
}
