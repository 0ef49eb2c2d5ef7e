//! `tenantctl move`: a tenant goes to another cell, with its messages.
//!
//! ```text
//! seated     a seat taken in the target cell (room and open, as a placement), the move recorded
//! copied     the target vhost, with the source vhost's definitions imported (queues, exchanges,
//!            bindings, policies: the management API's per-vhost export)
//! shovelled  every queue's messages moved by a dynamic shovel on the target broker
//!            (`src-delete-after: queue-length`: it removes itself when the queue is moved)
//! switched   the record says the target cell (`TenantMoved`); the tenant's user, permission and
//!            limits on the target, its credentials everywhere carry the target's AMQP URL, and
//!            the backend rolls to them
//! drained    once the backend runs the new credentials: the source user removed (nothing can
//!            publish there any more), then a last shovel pass for what arrived meanwhile
//! (done)     the source vhost removed (and, when the cells run backends in different clusters,
//!            the source cluster's Secret and Deployment), its seat given back, the move forgotten
//! ```
//! Each step is recorded in the tenant's record when done, and each is idempotent, so a move
//! that failed anywhere is finished by running the same command again. While a move is
//! recorded every other change of the tenant is refused (the record says why).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::cells::Cell;
use crate::ops::converge::{ConvergeOptions, still_held, take_lease, wait_rolled};
use crate::ops::provision::Provisioner;
use crate::outside::broker_pool::Broker;
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::registry::Seat;
use crate::tenant::TenantId;
use crate::tenant::id::vhost_description;
use crate::tenant::lease::Fence;
use crate::tenant::record::{MoveProgress, Phase, TenantRecord};

#[derive(Debug, Clone, Copy)]
pub struct MoveOptions {
    /// How long to wait for the backend to roll, and for each shovel pass.
    pub wait: Duration,
    /// Budget of the provisioning on the target.
    pub budget: Duration,
}

impl MoveOptions {
    /// The lease a mover holds throughout (each step is a change of the world): its budget,
    /// and its waits for the roll and the shovel passes.
    fn hold(&self, holder: &'static str) -> ConvergeOptions {
        ConvergeOptions {
            budget: self.budget,
            rollout_wait: self.wait * 4,
            holder,
            ..ConvergeOptions::new(self.budget)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub tenant: String,
    pub from: String,
    pub to: String,
    /// The step the move resumed after (`None`: it started here).
    pub resumed_after: Option<String>,
    /// The steps this run did.
    pub steps: Vec<&'static str>,
    /// The queues whose messages were moved.
    pub queues: Vec<String>,
    /// The tenant already lived in the target cell: nothing was done.
    pub already_there: bool,
}

fn refused(tenant: &TenantId, detail: impl Into<String>) -> StepError {
    StepError::new(
        System::Registry,
        format!("move tenant {tenant}"),
        FailureKind::Rejected,
        detail,
    )
}

/// Moves `tenant` to cell `to`, or finishes a move to it that stopped part-way. Each step is
/// recorded when done, so a re-run resumes after the last one.
pub async fn move_tenant(
    p: &Provisioner,
    tenant: &TenantId,
    to: &str,
    options: MoveOptions,
) -> Result<MoveReport, StepError> {
    let cells = p.brokers.cells();
    let Some(target) = cells.get(to) else {
        return Err(refused(
            tenant,
            format!(
                "no cell '{to}' in {} (cells: {})",
                cells.source,
                cells.names().join(", ")
            ),
        ));
    };
    // The mover holds the tenant's lease throughout (each step is a change of the world), and
    // moves the record as it read it with the lease.
    let (record, fence) = take_lease(p, tenant, &options.hold("move")).await?;
    // Its vhost as the record names it (one made ahead keeps its name in the target).
    let tenant = &record.tenant()?;
    let moved = move_held(p, tenant, target, &record, &fence, options).await;
    // Best effort: a lease not given back runs out at its deadline anyway.
    let _ = p.registry.give_back_lease(tenant, &fence).await;
    moved
}

/// `move_tenant`'s work, the lease held.
async fn move_held(
    p: &Provisioner,
    tenant: &TenantId,
    target: &Cell,
    record: &TenantRecord,
    fence: &Fence,
    options: MoveOptions,
) -> Result<MoveReport, StepError> {
    let mut report = MoveReport {
        tenant: tenant.to_string(),
        from: String::new(),
        to: target.name.clone(),
        resumed_after: None,
        steps: Vec::new(),
        queues: Vec::new(),
        already_there: false,
    };
    let progress = match &record.moving {
        Some(m) if m.to == target.name => {
            report.resumed_after = Some(m.step.clone());
            m.clone()
        }
        Some(m) => {
            return Err(refused(
                tenant,
                format!(
                    "a move to cell '{}' is in progress (step '{}'): finish it first (`tenantctl move --sub {tenant} --to {}`)",
                    m.to, m.step, m.to
                ),
            ));
        }
        None => match begin(p, tenant, target, record).await? {
            Begun::AlreadyThere(from) => {
                report.from = from;
                report.already_there = true;
                return Ok(report);
            }
            Begun::Seated(progress) => {
                report.steps.push("seated");
                progress
            }
        },
    };
    report.from = progress.from.clone();
    let mut m = Move {
        p,
        tenant,
        record,
        fence,
        source: p.brokers.get(&progress.from).await?,
        dest: p.brokers.get(&progress.to).await?,
        vhost: tenant.rabbitmq_vhost(),
        step: progress.step.clone(),
        progress: &progress,
        options,
    };
    if m.step == "seated" {
        m.copy().await?;
        report.steps.push("copied");
    }
    if m.step == "copied" {
        report.queues = shovel_all(m.source, m.dest, m.vhost, options.wait).await?;
        m.advance("shovelled").await?;
        report.steps.push("shovelled");
    }
    if m.step == "shovelled" {
        let connections = p.placement.connections_of(&record.plan);
        p.registry
            .switch_cell(tenant, &progress.to, connections)
            .await?;
        m.step = "switched".to_owned();
        report.steps.push("switched");
    }
    if m.step == "switched" {
        for q in m.run_on_target().await? {
            if !report.queues.contains(&q) {
                report.queues.push(q);
            }
        }
        report.steps.push("drained");
    }
    if m.step == "drained" {
        m.remove_source().await?;
        report.steps.push("done");
    }
    tracing::info!(tenant = %tenant, from = %report.from, to = %report.to, steps = ?report.steps, "tenant moved");
    Ok(report)
}

/// What `abort_move` did.
#[derive(Debug, Clone, Serialize)]
pub struct AbortReport {
    pub tenant: String,
    /// Where the tenant stays.
    pub cell: String,
    /// The cell the move was going to, whose vhost and seat are given back.
    pub abandoned: String,
    /// The step the move had reached.
    pub step: String,
}

/// Abandons a move that has not switched yet (`tenantctl move --abort`): what reached the
/// target is shovelled back to the source (where the backend still runs), the target vhost is
/// removed once empty, and the record forgets the move and gives back the target's seat. A
/// move that switched already is finished, not aborted.
pub async fn abort_move(
    p: &Provisioner,
    tenant: &TenantId,
    options: MoveOptions,
) -> Result<AbortReport, StepError> {
    let (record, fence) = take_lease(p, tenant, &options.hold("move --abort")).await?;
    let tenant = &record.tenant()?;
    let aborted = abort_held(p, tenant, &record, &fence, options).await;
    let _ = p.registry.give_back_lease(tenant, &fence).await;
    aborted
}

async fn abort_held(
    p: &Provisioner,
    tenant: &TenantId,
    record: &TenantRecord,
    fence: &Fence,
    options: MoveOptions,
) -> Result<AbortReport, StepError> {
    let Some(progress) = record.moving.clone() else {
        return Err(refused(tenant, "no move is in progress: nothing to abort"));
    };
    if matches!(progress.step.as_str(), "switched" | "drained") {
        return Err(refused(
            tenant,
            format!(
                "the move has switched to cell '{}' already: finish it (`tenantctl move --sub {tenant} --to {}`)",
                progress.to, progress.to
            ),
        ));
    }
    // Back the other way: the target is emptied into the source, then removed.
    let back = Move {
        p,
        tenant,
        record,
        progress: &MoveProgress {
            from: progress.to.clone(),
            to: progress.from.clone(),
            ..progress.clone()
        },
        source: p.brokers.get(&progress.to).await?,
        dest: p.brokers.get(&progress.from).await?,
        vhost: tenant.rabbitmq_vhost(),
        step: progress.step.clone(),
        options,
        fence,
    };
    if back.source.rabbitmq.vhost(back.vhost).await?.is_some() {
        still_held(tenant, fence)?;
        shovel_all(back.source, back.dest, back.vhost, options.wait).await?;
        back.source_emptied().await?;
        still_held(tenant, fence)?;
        back.source.rabbitmq.delete_vhost(back.vhost).await?;
    }
    let connections = p.placement.connections_of(&record.plan);
    p.registry
        .abort_move(tenant, &progress, connections)
        .await?;
    tracing::info!(tenant = %tenant, from = %progress.from, to = %progress.to, step = %progress.step, "move aborted");
    Ok(AbortReport {
        tenant: tenant.to_string(),
        cell: progress.from,
        abandoned: progress.to,
        step: progress.step,
    })
}

/// How a new move starts.
enum Begun {
    /// The tenant lives in the target already (this cell).
    AlreadyThere(String),
    /// A seat taken in the target and the move recorded.
    Seated(MoveProgress),
}

/// Starts a move: only an active tenant whose last change is applied, to a cell with room.
async fn begin(
    p: &Provisioner,
    tenant: &TenantId,
    target: &Cell,
    record: &TenantRecord,
) -> Result<Begun, StepError> {
    match record.state {
        Phase::Active => {}
        Phase::Suspended => {
            return Err(refused(
                tenant,
                "the tenant is suspended: resume it first (a move switches its credentials and rolls its backend)",
            ));
        }
        Phase::Offboarded => {
            return Err(refused(
                tenant,
                "the tenant is offboarded: restore it first (or nothing is there to move)",
            ));
        }
    }
    if !record.converged() {
        return Err(refused(
            tenant,
            format!(
                "its last change ({}) is not applied everywhere yet: finish it first (`tenantctl provision --sub {tenant}`)",
                record.pending.as_deref().unwrap_or("provisioning")
            ),
        ));
    }
    let from = p
        .brokers
        .cells()
        .resolve(&record.cell)
        .map_or_else(|| record.cell.clone(), |c| c.name.clone());
    if from == target.name {
        return Ok(Begun::AlreadyThere(from));
    }
    let views = p.placement.views(true).await?;
    let view = views
        .iter()
        .find(|v| v.cell.name == target.name)
        .expect("every declared cell has a view");
    let connections = p.placement.connections_of(&record.plan);
    let seat = Seat {
        claim: None,
        cell: &target.name,
        max_tenants: target.capacity.vhosts.map_or(u64::MAX, u64::from),
        max_connections: target.capacity.connections.unwrap_or(u64::MAX),
        connections,
        open_by_file: target.state == crate::cells::CellState::Open,
    };
    if !view.has_room(connections, None) {
        return Err(refused(
            tenant,
            format!(
                "cell '{}' takes no tenant now ({})",
                target.name,
                view.why_not(connections)
            ),
        ));
    }
    Ok(Begun::Seated(
        p.registry.begin_move(record, &from, &seat).await?,
    ))
}

/// A move under way: its brokers, and the last step done.
struct Move<'a> {
    p: &'a Provisioner,
    tenant: &'a TenantId,
    record: &'a TenantRecord,
    progress: &'a MoveProgress,
    source: &'a Broker,
    dest: &'a Broker,
    vhost: &'a str,
    step: String,
    options: MoveOptions,
    /// The tenant's lease: each step starts only while it holds.
    fence: &'a Fence,
}

impl Move<'_> {
    /// Records `next` as done.
    async fn advance(&mut self, next: &'static str) -> Result<(), StepError> {
        still_held(self.tenant, self.fence)?;
        self.p
            .registry
            .move_step(self.tenant, &self.progress.to, next)
            .await?;
        self.step = next.to_owned();
        Ok(())
    }

    /// The target vhost, then what the source vhost defines. An import adds and keeps what
    /// exists, so a repeat converges.
    async fn copy(&mut self) -> Result<(), StepError> {
        still_held(self.tenant, self.fence)?;
        let (p, tenant, vhost) = (self.p, self.tenant, self.vhost);
        let queue_type = p
            .plans
            .get(&self.record.plan)
            .and_then(|pl| pl.rabbitmq.default_queue_type);
        self.dest
            .rabbitmq
            .put_vhost(
                vhost,
                &vhost_description(tenant, &p.secret_prefix),
                queue_type,
            )
            .await?;
        let definitions = self.source.rabbitmq.definitions(vhost).await?;
        self.dest
            .rabbitmq
            .import_definitions(vhost, &definitions)
            .await?;
        self.advance("copied").await
    }

    /// After the switch: the target's credentials everywhere and the backend rolled onto them,
    /// then the source user removed (nothing may publish there any more) and what arrived
    /// meanwhile shovelled. Idempotent: the record says the target, so any convergence (this
    /// one, the worker's, the reconciler's) writes the target's credentials. Returns the queues
    /// of the last pass.
    async fn run_on_target(&mut self) -> Result<Vec<String>, StepError> {
        still_held(self.tenant, self.fence)?;
        let (p, tenant, to) = (self.p, self.tenant, &self.progress.to);
        let state = self
            .record
            .desired()
            .ok_or_else(|| refused(tenant, "the tenant is offboarded"))?;
        Box::pin(p.provision_with(tenant, to, &state, Instant::now() + self.options.budget))
            .await
            .map_err(|e| e.into_step("provision on the target cell"))?;
        wait_rolled(
            p,
            tenant,
            to,
            self.options.wait,
            "the target cell's credentials",
        )
        .await?;
        self.source
            .rabbitmq
            .delete_user(tenant.rabbitmq_user())
            .await?;
        let late = shovel_all(self.source, self.dest, self.vhost, self.options.wait).await?;
        self.advance("drained").await?;
        Ok(late)
    }

    /// Nothing is left behind in the source: every queue of the source vhost is empty before
    /// it is removed. Deliveries a backend held unacknowledged come back to their queue when
    /// its connection closes, after the last pass counted it: further passes move them, at
    /// most `EXTRA_PASSES`; then the move stops (recorded at `drained`), saying what is left.
    /// Queue depths come from the management database, which counts every statistics
    /// interval: a depth is trusted only once an interval has passed since the last pass.
    async fn source_emptied(&self) -> Result<(), StepError> {
        const EXTRA_PASSES: u32 = 3;
        // RabbitMQ's default `collect_statistics_interval` (5 s), and a margin.
        const SETTLE: Duration = Duration::from_secs(6);
        let mut passes = 0;
        let mut last_pass = Instant::now();
        loop {
            let left = match self.source.rabbitmq.queue_depths(self.vhost).await {
                Ok(left) => left,
                // Removed already (a re-run after the removal).
                Err(e) if e.status == Some(404) => return Ok(()),
                Err(e) => return Err(e),
            };
            if left.is_empty() {
                return Ok(());
            }
            if last_pass.elapsed() < SETTLE {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if passes == EXTRA_PASSES {
                let what: Vec<String> = left.iter().map(|(q, n)| format!("{q}: {n}")).collect();
                return Err(StepError::new(
                    System::Rabbitmq,
                    format!(
                        "remove vhost '{}' from cell '{}'",
                        self.vhost, self.progress.from
                    ),
                    FailureKind::Rejected,
                    format!(
                        "the move stopped before removing the source: its queues still hold messages ({}) after {EXTRA_PASSES} more passes; nothing was deleted — run the move again",
                        what.join(", ")
                    ),
                ));
            }
            still_held(self.tenant, self.fence)?;
            shovel_all(self.source, self.dest, self.vhost, self.options.wait).await?;
            passes += 1;
            last_pass = Instant::now();
        }
    }

    /// The end: the source vhost goes, and — for a cell with a cluster of its own — the
    /// source cluster's copy of the backend (still holding the source's credentials); then the
    /// source's seat is given back and the move forgotten.
    async fn remove_source(&mut self) -> Result<(), StepError> {
        still_held(self.tenant, self.fence)?;
        let (p, tenant, progress) = (self.p, self.tenant, self.progress);
        self.source_emptied().await?;
        if p.clusters.name_of(&progress.from) != p.clusters.name_of(&progress.to) {
            let old = p.clusters.of_cell(&progress.from).await?;
            old.delete::<Deployment>(&tenant.deployment_name()).await?;
            old.delete::<Secret>(&tenant.secret_name()).await?;
        }
        self.source.rabbitmq.delete_vhost(self.vhost).await?;
        p.registry
            .finish_move(
                tenant,
                &MoveProgress {
                    step: self.step.clone(),
                    ..progress.clone()
                },
            )
            .await?;
        Ok(())
    }
}

/// Moves every queue's messages from the source vhost to the same-named queue of the target's,
/// with one dynamic shovel per queue on the target broker that removes itself once it has moved
/// what the queue held when it started; waits until all are gone (at most `wait`).
async fn shovel_all(
    source: &Broker,
    dest: &Broker,
    vhost: &str,
    wait: Duration,
) -> Result<Vec<String>, StepError> {
    let queues = match source.rabbitmq.queue_names(vhost).await {
        Ok(q) => q,
        Err(e) if e.status == Some(404) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let uri = |b: &Broker| {
        let admin = b.rabbitmq.admin_credential();
        let mut u = b.amqp_base.clone();
        let _ = u.set_username(&admin.username);
        let _ = u.set_password(Some(secrecy::ExposeSecret::expose_secret(&admin.password)));
        if let Ok(mut path) = u.path_segments_mut() {
            path.clear().push(vhost);
        }
        u.to_string()
    };
    let (src, dst) = (uri(source), uri(dest));
    let names: Vec<String> = (0..queues.len())
        .map(|i| format!("post-signup-move-{i}"))
        .collect();
    for (queue, name) in queues.iter().zip(&names) {
        let value = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": src,
            "src-queue": queue,
            "dest-protocol": "amqp091",
            "dest-uri": dst,
            "dest-queue": queue,
            "ack-mode": "on-confirm",
            "src-delete-after": "queue-length",
        });
        dest.rabbitmq.put_shovel(vhost, name, &value).await?;
    }
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for name in &names {
            if dest.rabbitmq.shovel_exists(vhost, name).await? {
                left.push(name.as_str());
            }
        }
        if left.is_empty() {
            return Ok(queues);
        }
        if started.elapsed() >= wait {
            let states = dest.rabbitmq.shovel_states(vhost).await.unwrap_or_default();
            // The shovels not done keep running (a shovel removed mid-way may deliver what it
            // had in flight twice); each removes itself when done, and a re-run declares the
            // same names, so no shovel — nor the credentials in its URIs — outlives the move.
            // A shovel's reason may quote its URI: no password, plain or percent-encoded,
            // leaves this function.
            let hide = |text: &str| {
                [source, dest].iter().fold(text.to_owned(), |t, b| {
                    let admin = b.rabbitmq.admin_credential();
                    hide_password(&t, secrecy::ExposeSecret::expose_secret(&admin.password))
                })
            };
            let why: Vec<String> = states
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}{}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                        s["reason"]
                            .as_str()
                            .map_or(String::new(), |r| format!(" ({})", hide(r)))
                    )
                })
                .collect();
            return Err(StepError::new(
                System::Rabbitmq,
                format!("move the messages of vhost '{vhost}'"),
                FailureKind::Timeout,
                format!(
                    "{} of {} shovels not done within {} s ({}); run the move again to go on",
                    left.len(),
                    names.len(),
                    wait.as_secs(),
                    why.join("; ")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `text` with `password` — as it is, and percent-encoded as a URI's userinfo carries it —
/// replaced by `****`.
fn hide_password(text: &str, password: &str) -> String {
    if password.is_empty() {
        return text.to_owned();
    }
    let mut forms = vec![password.to_owned()];
    // As this crate's URIs carry it (the shovels' own), and fully percent-encoded in either
    // case of hex digits (as another client may have written it).
    let mut u = url::Url::parse("amqp://user@host").expect("a valid URL");
    if u.set_password(Some(password)).is_ok()
        && let Some(encoded) = u.password()
    {
        forms.push(encoded.to_owned());
    }
    for upper in [true, false] {
        forms.push(
            password
                .bytes()
                .map(|b| match b {
                    _ if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        char::from(b).to_string()
                    }
                    _ if upper => format!("%{b:02X}"),
                    _ => format!("%{b:02x}"),
                })
                .collect(),
        );
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.iter().fold(text.to_owned(), |out, form| {
        out.replace(form.as_str(), "****")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_hidden_plain_and_percent_encoded() {
        let password = "p@ss/w:rd%1";
        let reason =
            "failed to connect amqp://admin:p%40ss%2Fw%3Ard%251@broker:5672/x; also p@ss/w:rd%1";
        let hidden = hide_password(reason, password);
        assert!(
            !hidden.contains("p%40ss") && !hidden.contains(password),
            "{hidden}"
        );
        assert_eq!(
            hidden,
            "failed to connect amqp://admin:****@broker:5672/x; also ****"
        );
        assert_eq!(hide_password("nothing here", ""), "nothing here");
    }
}
