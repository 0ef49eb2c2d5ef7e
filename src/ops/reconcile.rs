//! The reconciler: the safety net that makes every confirmed user's tenant what its record says.
//!
//! It reads intent only from the registry and observations only from bulk listings (a handful
//! of calls, however many tenants), judges each tenant with a pure function ([`judge`], table-
//! tested below), then acts. It never provisions an offboarded tenant (a tombstone), never
//! takes a disabled user's tenant for a new one, and prunes only behind guards: a record, the
//! user absent on a re-check of that one user, a minimum age, and a maximum fraction of the
//! installation per run — otherwise the whole prune is refused and nothing is deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::ops::converge::{ConvergeOptions, converge};
use crate::ops::provision::Provisioner;
use crate::outside::cognito::{PoolUser, UserPool};
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::registry::{Created, ListFilter};
use crate::tenant::drift::{DeploymentStatus, Observed, drift};
use crate::tenant::id::vhost_description;
use crate::tenant::plan::{GENERATION_ANNOTATION, TenantState};
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};
use crate::tenant::transition::{Change, transition};
use crate::tenant::verdict::{UserView, Verdict, judge};
use crate::tenant::{TENANT_LABEL, TenantId};

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
    /// `sub: why` of each tenant that was (or would be) repaired.
    pub incomplete: Vec<String>,
    pub failures: Vec<String>,
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

/// One cell's broker, from bulk listings.
#[derive(Debug, Default)]
struct BrokerListing {
    users: HashSet<String>,
    vhosts: BTreeMap<String, Option<String>>,
    permissions: HashSet<(String, String)>,
    vhost_limits: BTreeMap<String, BTreeMap<String, i64>>,
    user_limits: BTreeMap<String, BTreeMap<String, i64>>,
}

/// One cluster's tenant objects, from bulk listings.
#[derive(Debug, Default)]
struct ClusterListing {
    /// Secret name → the state its labels and annotations carry (for adoption only) and the
    /// password generation it holds.
    secrets: HashMap<String, (TenantState, Option<u32>)>,
    deployments: HashMap<String, DeploymentStatus>,
}

/// What exists, from bulk listings: each cell's broker, each cluster's objects (the default
/// cluster and the cells' own), and Secrets Manager (shared by every cell).
#[derive(Debug, Default)]
pub struct Inventory {
    /// By cell name; a cell whose broker could not be listed holds its error, and its tenants
    /// are left alone in this run (reported, never judged on missing data).
    brokers: BTreeMap<String, Result<BrokerListing, StepError>>,
    /// By cluster name, likewise.
    clusters: BTreeMap<String, Result<ClusterListing, StepError>>,
    sm_secrets: HashSet<String>,
}

/// Retries a whole listing on transient failures until `deadline`.
async fn listing<T, F, Fut>(name: &str, deadline: Instant, op: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    crate::outside::retry::until(name, deadline, op).await.0
}

async fn list_broker(
    p: &Provisioner,
    cell: &str,
    deadline: Instant,
) -> Result<BrokerListing, StepError> {
    let r = &p.brokers.get(cell).await?.rabbitmq;
    let (users, vhosts, permissions, vhost_limits, user_limits) = tokio::join!(
        listing("rabbitmq.users", deadline, || r.users()),
        listing("rabbitmq.vhosts", deadline, || r.vhosts()),
        listing("rabbitmq.permissions", deadline, || r.permissions()),
        listing("rabbitmq.vhost-limits", deadline, || r.all_vhost_limits()),
        listing("rabbitmq.user-limits", deadline, || r.all_user_limits()),
    );
    Ok(BrokerListing {
        users: users?.into_iter().map(|u| u.name).collect(),
        vhosts: vhosts?
            .into_iter()
            .map(|v| (v.name, v.description))
            .collect(),
        permissions: permissions?
            .into_iter()
            .map(|p| (p.vhost, p.user))
            .collect(),
        vhost_limits: vhost_limits?,
        user_limits: user_limits?,
    })
}

async fn list_cluster(
    p: &Provisioner,
    cluster: &str,
    deadline: Instant,
) -> Result<ClusterListing, StepError> {
    let k = p.clusters.get(cluster).await?;
    let (secrets, deployments) = tokio::join!(
        listing("kubernetes.secrets", deadline, || {
            k.list_metadata::<Secret>(TENANT_LABEL)
        }),
        listing("kubernetes.deployments", deadline, || {
            k.list::<Deployment>(TENANT_LABEL)
        }),
    );
    let secrets = secrets?
        .into_iter()
        .filter_map(|o| {
            let m = o.metadata;
            let state = TenantState::from_meta(&p.plans, m.labels.as_ref(), m.annotations.as_ref());
            let generation = m
                .annotations
                .as_ref()
                .and_then(|a| a.get(GENERATION_ANNOTATION))
                .and_then(|g| g.parse().ok());
            Some((m.name?, (state, generation)))
        })
        .collect();
    let deployments = deployments?
        .iter()
        .filter_map(|d| Some((d.metadata.name.clone()?, DeploymentStatus::of(d))))
        .collect();
    Ok(ClusterListing {
        secrets,
        deployments,
    })
}

/// The listings that failed, by name, with why.
fn failed_listings<T>(
    listings: &BTreeMap<String, Result<T, StepError>>,
) -> Vec<(String, StepError)> {
    listings
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| (name.clone(), e.clone())))
        .collect()
}

impl Inventory {
    pub async fn load(p: &Provisioner, deadline: Instant) -> Result<Self, StepError> {
        let names = p.brokers.cells().names();
        let cluster_names = p.clusters.names();
        let brokers = futures::future::join_all(
            names
                .iter()
                .map(|cell| Box::pin(list_broker(p, cell, deadline))),
        );
        let clusters = futures::future::join_all(
            cluster_names
                .iter()
                .map(|c| Box::pin(list_cluster(p, c, deadline))),
        );
        let (brokers, clusters, sm) = tokio::join!(
            brokers,
            clusters,
            Box::pin(listing("secrets-manager.list", deadline, || {
                p.secrets.list_names(&p.secret_prefix)
            })),
        );
        let brokers: BTreeMap<String, Result<BrokerListing, StepError>> =
            names.iter().map(|n| (*n).to_owned()).zip(brokers).collect();
        if brokers.values().all(Result::is_err)
            && let Some(Err(e)) = brokers.values().next()
        {
            return Err(e.clone());
        }
        let clusters: BTreeMap<String, Result<ClusterListing, StepError>> = cluster_names
            .iter()
            .map(|n| (*n).to_owned())
            .zip(clusters)
            .collect();
        // The default cluster is where every tenant without a cluster of its own lives: not
        // listing it is as good as listing nothing.
        if let Some(Err(e)) = clusters.get(p.clusters.default_name()) {
            return Err(e.clone());
        }
        Ok(Self {
            brokers,
            clusters,
            sm_secrets: sm?.into_iter().collect(),
        })
    }

    fn cluster_of_cell(&self, p: &Provisioner, cell: &str) -> Option<&ClusterListing> {
        self.clusters.get(p.clusters.name_of(cell))?.as_ref().ok()
    }

    /// The clusters that could not be listed, with why.
    pub fn unlisted_clusters(&self) -> Vec<(String, StepError)> {
        failed_listings(&self.clusters)
    }

    /// The clusters other than `cell`'s that hold a Secret or Deployment of `tenant`.
    pub fn backend_elsewhere(&self, p: &Provisioner, tenant: &TenantId, cell: &str) -> Vec<String> {
        let home = p.clusters.name_of(cell);
        self.clusters
            .iter()
            .filter(|(name, _)| name.as_str() != home)
            .filter_map(|(name, r)| {
                let l = r.as_ref().ok()?;
                (l.secrets.contains_key(&tenant.secret_name())
                    || l.deployments.contains_key(&tenant.deployment_name()))
                .then(|| name.clone())
            })
            .collect()
    }

    /// The cells whose broker could not be listed, with why.
    pub fn unlisted(&self) -> Vec<(String, StepError)> {
        failed_listings(&self.brokers)
    }

    /// The cells whose broker holds a vhost of this installation for `tenant`.
    pub fn vhost_cells(&self, p: &Provisioner, tenant: &TenantId) -> Vec<String> {
        let ours = vhost_description(tenant, &p.secret_prefix);
        self.brokers
            .iter()
            .filter_map(|(c, r)| {
                let l = r.as_ref().ok()?;
                (l.vhosts.get(tenant.rabbitmq_vhost())?.as_deref() == Some(ours.as_str()))
                    .then(|| c.clone())
            })
            .collect()
    }

    /// The cell `tenant` lives in: its record's, or (no record) the one holding its vhost, or
    /// the first.
    pub fn home(
        &self,
        p: &Provisioner,
        tenant: &TenantId,
        record: Option<&TenantRecord>,
    ) -> String {
        match record {
            Some(r) => p
                .brokers
                .resolve(&r.cell)
                .map_or_else(|| r.cell.clone(), |c| c.name.clone()),
            None => self
                .vhost_cells(p, tenant)
                .into_iter()
                .next()
                .unwrap_or_else(|| p.brokers.cells().first().name.clone()),
        }
    }

    /// One tenant's parts, as the listings saw them (its cell's broker and cluster); `None`
    /// when either was not listed.
    pub fn observed(&self, p: &Provisioner, tenant: &TenantId, cell: &str) -> Option<Observed> {
        let broker = self.brokers.get(cell)?.as_ref().ok()?;
        let cluster = self.cluster_of_cell(p, cell)?;
        let (vhost, user) = (tenant.rabbitmq_vhost(), tenant.rabbitmq_user());
        let secret = cluster.secrets.get(&tenant.secret_name());
        let deployment = cluster.deployments.get(&tenant.deployment_name());
        Some(Observed {
            user: broker.users.contains(user),
            vhost: broker.vhosts.contains_key(vhost),
            permission: broker
                .permissions
                .contains(&(vhost.to_owned(), user.to_owned())),
            secret: secret.is_some(),
            deployment: deployment.is_some(),
            secrets_manager: self
                .sm_secrets
                .contains(&tenant.secrets_manager_name(&p.secret_prefix)),
            vhost_limits: Some(broker.vhost_limits.get(vhost).cloned().unwrap_or_default()),
            user_limits: Some(broker.user_limits.get(user).cloned().unwrap_or_default()),
            secret_generation: secret.and_then(|(_, g)| *g),
            deployment_replicas: deployment.map(|d| d.replicas),
            deployment_resources: deployment.and_then(|d| d.resources.clone()),
        })
    }

    /// The state a tenant's objects carry: read once, by adoption, to write its first record.
    pub fn labelled_state(&self, p: &Provisioner, tenant: &TenantId) -> TenantState {
        self.clusters
            .values()
            .filter_map(|r| r.as_ref().ok())
            .find_map(|l| l.secrets.get(&tenant.secret_name()))
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| TenantState::new(&p.plans))
    }

    /// Every tenant of this installation that has any part: vhosts marked with this
    /// installation, tenant-labelled objects in the namespace, secrets under the prefix.
    pub fn tenants(&self, p: &Provisioner) -> BTreeSet<TenantId> {
        let mut out = BTreeSet::new();
        for listing in self.brokers.values().filter_map(|r| r.as_ref().ok()) {
            for (name, description) in &listing.vhosts {
                if let Ok(t) = TenantId::parse(name)
                    && description.as_deref()
                        == Some(vhost_description(&t, &p.secret_prefix).as_str())
                {
                    out.insert(t);
                }
            }
        }
        let strip = |name: &str, prefix: &str| name.strip_prefix(prefix).map(str::to_owned);
        let from_kube = self
            .clusters
            .values()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|l| {
                l.secrets
                    .keys()
                    .filter_map(|n| strip(n, "tenant-"))
                    .chain(l.deployments.keys().filter_map(|n| strip(n, "backend-")))
            });
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

/// How the reconciler sees a pool user.
pub fn user_view(user: Option<&PoolUser>) -> UserView {
    match user {
        None => UserView::Absent,
        Some(u) if !u.needs_tenant() => UserView::Unconfirmed,
        Some(u) if !u.enabled => UserView::Disabled,
        Some(_) => UserView::Confirmed,
    }
}

fn refused(detail: String) -> StepError {
    StepError::new(System::Registry, "prune", FailureKind::Rejected, detail)
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
    let mut by_sub: HashMap<TenantId, &PoolUser> = HashMap::new();
    for u in &users {
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
    let records: HashMap<TenantId, TenantRecord> = records
        .into_iter()
        .filter_map(|r| Some((r.tenant().ok()?, r)))
        .collect();
    let mut tenants: BTreeSet<TenantId> = inventory.tenants(p);
    tenants.extend(records.keys().cloned());
    tenants.extend(by_sub.keys().cloned());

    enum Work {
        Converge(TenantRecord),
        /// A record to write: in the cell given (adoption: where its vhost is), or placed.
        Record((TenantRecord, Option<String>)),
    }
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
    let mut work = Vec::new();
    let mut orphans = Vec::new();
    for tenant in &tenants {
        let record = records.get(tenant);
        let user = user_view(by_sub.get(tenant).copied());
        if user == UserView::Confirmed || user == UserView::Disabled {
            summary.users += usize::from(user == UserView::Confirmed);
        }
        let home = inventory.home(p, tenant, record);
        let elsewhere: Vec<String> = inventory
            .vhost_cells(p, tenant)
            .into_iter()
            .filter(|c| *c != home)
            .collect();
        if record.is_some() && !elsewhere.is_empty() {
            summary.strays.push(format!(
                "{tenant}: a vhost on {} (lives in {home})",
                elsewhere.join(", ")
            ));
        }
        let backend_elsewhere = inventory.backend_elsewhere(p, tenant, &home);
        if record.is_some() && !backend_elsewhere.is_empty() {
            summary.strays.push(format!(
                "{tenant}: a backend in cluster {} (lives in {home}, cluster {})",
                backend_elsewhere.join(", "),
                p.clusters.name_of(&home)
            ));
        }
        let Some(observed) = inventory.observed(p, tenant, &home) else {
            continue; // its cell was not listed (reported above)
        };
        let lines = record
            .map(|r| drift(&p.plans, r, &observed))
            .unwrap_or_default();
        match judge(record, user, &lines, observed.any()) {
            Verdict::Complete => summary.complete += 1,
            Verdict::Repair(why) => {
                let record = record.expect("judged with a record");
                if record.state == Phase::Offboarded && !options.may_remove {
                    summary.unfinished_offboardings.push(tenant.to_string());
                    continue;
                }
                summary.incomplete.push(format!(
                    "{tenant}: {}",
                    why.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                work.push(Work::Converge(record.clone()));
            }
            Verdict::Record { adopt } => {
                let pool_id = Some(pool.id());
                let new = if adopt {
                    let mut r = TenantRecord::from_state(
                        tenant,
                        pool_id,
                        &inventory.labelled_state(p, tenant),
                        "adopted",
                    );
                    if observed.missing().is_empty() {
                        // Onboarded before the registry existed: recorded as provisioned,
                        // without a second TenantOnboarded.
                        r.outcome = LastOutcome::Provisioned;
                        r.provisioned_at = Some(r.created_at.clone());
                    }
                    r
                } else {
                    TenantRecord::new(tenant, pool_id, &p.plans, "reconciler")
                };
                let new = (new, adopt.then(|| home.clone()));
                summary.incomplete.push(format!(
                    "{tenant}: no record ({})",
                    if adopt { "adopting what exists" } else { "new" }
                ));
                work.push(Work::Record(new));
            }
            Verdict::Tombstone => summary.tombstones.push(tenant.to_string()),
            Verdict::Disabled => summary.disabled.push(tenant.to_string()),
            Verdict::Orphan => {
                summary.orphans.push(tenant.to_string());
                orphans.push(record.expect("judged with a record").clone());
            }
            Verdict::Unrecorded => summary.unrecorded.push(tenant.to_string()),
            Verdict::Ignore => {}
        }
    }

    // The prune's guards are checked before anything is done: a refused run changes nothing.
    let to_prune = if options.prune {
        prune_candidates(pool, &records, orphans, &options)?
    } else {
        Vec::new()
    };
    if options.dry_run {
        summary.repaired = work.len();
    } else {
        let total = work.len();
        let mut done = 0;
        on_progress(done, total);
        let converge_options = if options.may_remove {
            ConvergeOptions::new(options.budget)
        } else {
            ConvergeOptions::no_removal(options.budget)
        };
        let mut results = futures::stream::iter(work)
            .map(|w| async move {
                // The record to converge to; for a tenant without one, written first (or, if
                // someone wrote it meanwhile, theirs): `recorded` says this run wrote it.
                let (sub, recorded, record) = match w {
                    Work::Converge(r) => (r.sub.clone(), false, Ok(r)),
                    Work::Record((r, cell)) => {
                        let created = match &cell {
                            Some(cell) => p.placement.record_in(&r, cell).await,
                            None => p.placement.place(&r).await.map_err(|e| e.into_step(&r.sub)),
                        };
                        match created {
                            Ok(Created::New(r)) => (r.sub.clone(), true, Ok(r)),
                            Ok(Created::Existing(r)) => (r.sub.clone(), false, Ok(r)),
                            Err(e) => (r.sub.clone(), false, Err(e)),
                        }
                    }
                };
                let result = match record {
                    Ok(r) => converge(p, &r, converge_options).await.map(drop),
                    Err(e) => Err(e),
                };
                (sub, recorded, result)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((sub, recorded, result)) = results.next().await {
            done += 1;
            on_progress(done, total);
            summary.recorded += usize::from(recorded);
            match result {
                Ok(_) => summary.repaired += 1,
                Err(e) => {
                    summary.failed += 1;
                    summary.failures.push(format!("{sub}: {e}"));
                }
            }
        }
        if options.prune {
            summary.pruned = prune(p, pool, to_prune, &options, &mut summary).await;
        }
        seat_repair(p, &records, &mut summary).await;
    }
    summary.elapsed_ms = (started.elapsed().as_secs_f64() * 1e3 * 10.0).round() / 10.0;
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
    Ok(summary)
}

/// Every tenant whose vhost exists (or is kept) holds a seat in its cell's count: tenants that
/// do not (recorded before cells were declared) are counted as they are. Then each cell's free
/// capacity is published (`CellFreeVhosts`).
async fn seat_repair(
    p: &Provisioner,
    records: &HashMap<TenantId, TenantRecord>,
    summary: &mut ReconcileSummary,
) {
    if !p.placement.counts() {
        return;
    }
    let unseated = records.values().filter(|r| {
        r.seat_connections.is_none() && (r.state != Phase::Offboarded || r.retain_data)
    });
    for r in unseated {
        match p.placement.reseat(r).await {
            Ok(true) => summary.seated += 1,
            Ok(false) => {}
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("{}: {e}", r.sub));
            }
        }
    }
    // A seat counts what its tenant's plan grants now (a plan change whose convergence did not
    // get that far).
    for r in records.values().filter(|r| r.seat_connections.is_some()) {
        if let Err(e) = p.placement.resize_seat(r).await {
            summary.failed += 1;
            summary.failures.push(format!("{}: {e}", r.sub));
        }
    }
    match p.placement.views(true).await {
        Ok(views) => {
            for v in views {
                // Open cells only: a draining or closed cell may well be full on purpose.
                if let Some(capacity) = v
                    .cell
                    .capacity
                    .vhosts
                    .filter(|_| v.state == crate::cells::CellState::Open)
                {
                    let free = u64::from(capacity).saturating_sub(v.tenants);
                    crate::metrics::cell_free_vhosts(&v.cell.name, free);
                    tracing::info!(cell = %v.cell.name, state = v.state.as_str(), seats = v.tenants, capacity, free, "cell capacity");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cells' counters not read"),
    }
}

/// The orphans old enough to prune; refuses the whole prune when they are more than the
/// allowed fraction of the installation's tenants (a wrong or empty user pool looks like that).
fn prune_candidates(
    pool: &UserPool,
    records: &HashMap<TenantId, TenantRecord>,
    orphans: Vec<TenantRecord>,
    options: &ReconcileOptions,
) -> Result<Vec<TenantRecord>, StepError> {
    let now = jiff::Timestamp::now();
    let old_enough = |r: &TenantRecord| {
        r.created().is_some_and(|c| {
            now.duration_since(c)
                .try_into()
                .is_ok_and(|age: Duration| age >= options.prune_min_age)
        })
    };
    let eligible: Vec<TenantRecord> = orphans.into_iter().filter(old_enough).collect();
    let installation = records
        .values()
        .filter(|r| r.state != Phase::Offboarded)
        .count();
    let allowed = (installation as f64 * options.prune_max_fraction).floor() as usize;
    if eligible.len() > allowed {
        return Err(refused(format!(
            "refused: the run would prune {} of this installation's {installation} tenants, more than the allowed {:.0} % ({allowed}); nothing was deleted. Check USER_POOL_ID ('{}') — a wrong pool makes every tenant an orphan",
            eligible.len(),
            options.prune_max_fraction * 100.0,
            pool.id()
        )));
    }
    Ok(eligible)
}

/// Offboards each candidate whose user a re-check of that one user still does not find.
async fn prune(
    p: &Provisioner,
    pool: &UserPool,
    eligible: Vec<TenantRecord>,
    options: &ReconcileOptions,
    summary: &mut ReconcileSummary,
) -> usize {
    let mut pruned = 0;
    for record in eligible {
        let Ok(tenant) = record.tenant() else {
            continue;
        };
        // The listing may be stale (or paged past a new user): ask about this one user.
        match pool.find_by_sub(&tenant, options.list_deadline).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("prune {tenant}: {e}"));
                continue;
            }
        }
        let change = Change::Offboard { retain_data: false };
        let result = async {
            let Some(after) = transition(&record, &change, &crate::tenant::record::now())
                .map_err(|e| refused(e.to_string()))?
            else {
                return Ok(());
            };
            p.registry.transition(&record, &after).await?;
            converge(p, &after, ConvergeOptions::new(options.budget))
                .await
                .map(drop)
        }
        .await;
        match result {
            Ok(()) => pruned += 1,
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("prune {tenant}: {e}"));
            }
        }
    }
    pruned
}

/// What `adopt` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdoptReport {
    pub dry_run: bool,
    /// The tenants recorded (in a dry run: that would be).
    pub adopted: Vec<String>,
    /// `sub: error` of each tenant that could not be recorded (the others still are).
    pub failures: Vec<String>,
}

/// Records every tenant of this installation that has parts but no record, from what its
/// objects carry (plan, suspension, password generation): once — a tenant with a record is
/// never adopted again.
pub async fn adopt(
    p: &Provisioner,
    user_pool_id: Option<&str>,
    dry_run: bool,
    deadline: Instant,
) -> Result<AdoptReport, StepError> {
    let everyone = ListFilter::default();
    let (records, inventory) = tokio::join!(
        Box::pin(p.registry.all(&everyone, deadline)),
        Inventory::load(p, deadline),
    );
    let (records, inventory) = (records?, inventory?);
    let known: HashSet<String> = records.into_iter().map(|r| r.sub).collect();
    let mut report = AdoptReport {
        dry_run,
        ..Default::default()
    };
    for (cell, e) in inventory.unlisted() {
        report.failures.push(format!("cell '{cell}': {e}"));
    }
    for (cluster, e) in inventory.unlisted_clusters() {
        report.failures.push(format!("cluster '{cluster}': {e}"));
    }
    for tenant in inventory.tenants(p) {
        if known.contains(tenant.as_str()) {
            continue;
        }
        let home = inventory.home(p, &tenant, None);
        let Some(observed) = inventory.observed(p, &tenant, &home) else {
            continue;
        };
        if !dry_run {
            let mut r = TenantRecord::from_state(
                &tenant,
                user_pool_id,
                &inventory.labelled_state(p, &tenant),
                "adopted",
            );
            if observed.missing().is_empty() {
                r.outcome = LastOutcome::Provisioned;
                r.provisioned_at = Some(r.created_at.clone());
                r.converged_version = r.version;
            }
            match p.placement.record_in(&r, &home).await {
                Ok(Created::New(_)) => {}
                Ok(Created::Existing(_)) => continue,
                Err(e) => {
                    report.failures.push(format!("{tenant}: {e}"));
                    continue;
                }
            }
        }
        report.adopted.push(tenant.to_string());
    }
    Ok(report)
}
