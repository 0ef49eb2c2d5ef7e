//! The Lambda handler: classify the event, provision within the deadline, return the event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;

use futures::FutureExt as _;

use crate::lambda::app::App;
use crate::lambda::event::{Action, EventError, classify};
use crate::ops::placement::PlacementError;
use crate::ops::provision::Mode;
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::registry::{Created, Taken};
use crate::outside::sqs::HandoffMessage;
use crate::tenant::TenantId;
use crate::tenant::lease::{self, Fence};
use crate::tenant::plan::TenantState;
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};

/// Kept back from the Lambda deadline so the error still reaches the runtime API in time.
const LAMBDA_DEADLINE_MARGIN: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The provisioning deadline: the budget from `start`, or the Lambda deadline if sooner.
///
/// A Lambda deadline that has already passed when the invocation starts is not a real one
/// (Lambda hands its deadline out with the event; `cargo lambda watch` sends a placeholder):
/// the budget applies then, and Lambda still enforces the function's own timeout.
pub fn deadline(start: Instant, budget: Duration, lambda_deadline_ms: u64) -> Instant {
    let by_budget = start + budget;
    let now = now_ms();
    if lambda_deadline_ms <= now {
        return by_budget;
    }
    let left =
        Duration::from_millis(lambda_deadline_ms - now).saturating_sub(LAMBDA_DEADLINE_MARGIN);
    by_budget.min(Instant::now() + left)
}

/// The error an invocation returns to Cognito: only for an event this function cannot accept.
/// A valid sign-up is never answered with an error — Cognito shows its text to a person whose
/// account is already confirmed, and never calls again — whatever failed: the confirmed user
/// is itself the intent, which the person's first `GET /tenant` and the reconciler finish.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The event is not one this function accepts; retrying cannot help. The message names the
    /// field, which is the caller's own input.
    #[error("{0}")]
    InvalidEvent(#[from] EventError),
}

impl InvocationError {
    pub fn kind(&self) -> &'static str {
        match self {
            InvocationError::InvalidEvent(_) => "InvalidEvent",
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        Self {
            error_type: e.kind().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// How an invocation ended, for logs and for `tenantctl provision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    Skipped,
    Provisioned,
    HandedOff,
    /// Not finished and the hand-off failed, but the tenant's record is written: the
    /// reconciler finishes it.
    Recorded,
    /// Neither the record nor the hand-off could be written (the registry and SQS both away):
    /// the confirmed user in the pool is the intent. The person's first `GET /tenant` hands it
    /// off, and the reconciler provisions every confirmed user without a record. Counted
    /// (`Onboardings`, outcome `unrecorded`) and alarmed.
    Unrecorded,
}

/// Cognito requires the event back, unchanged: it is returned as received (raw JSON), not
/// re-serialised from the typed view.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    handle_reporting(app, event)
        .await
        .map(|(payload, _)| payload)
}

/// As [`handle`], also saying how it finished.
pub async fn handle_reporting(
    app: &App,
    event: LambdaEvent<Value>,
) -> Result<(Value, Finish), InvocationError> {
    let (start, cold) = app.begin();
    let (payload, context) = event.into_parts();
    let request_id = context.request_id.as_str();
    let action = classify(&payload).inspect_err(|e| {
        tracing::error!(request_id, error = %e, "refused event");
        crate::metrics::onboarding("invalid", start.elapsed(), cold);
    })?;
    let tenant = match action {
        Action::Skip { trigger_source } => {
            tracing::info!(request_id, trigger_source, "nothing to provision");
            crate::metrics::onboarding("skipped", start.elapsed(), cold);
            return Ok((payload, Finish::Skipped));
        }
        Action::Provision(tenant) => tenant,
    };
    let deadline = deadline(start, app.budget(), context.deadline);
    let work_deadline = app.work_deadline(deadline);
    tracing::info!(
        request_id,
        tenant = %tenant,
        budget_ms = deadline.saturating_duration_since(start).as_millis() as u64,
        cold_start_ms = Instant::now().saturating_duration_since(start).as_millis() as u64,
        "provisioning"
    );
    let pool = payload
        .get("userPoolId")
        .and_then(Value::as_str)
        .map(str::to_owned);

    let (record, fence, provisioned) =
        record_and_provision(app, request_id, &tenant, pool.as_deref(), work_deadline).await;
    if let Some(r) = record.as_ref().filter(|r| r.state == Phase::Offboarded) {
        tombstoned(app, &tenant, r, fence.as_ref(), deadline).await;
        tracing::warn!(request_id, tenant = %tenant, "the tenant is offboarded: not provisioned (tenantctl restore brings it back)");
        crate::metrics::onboarding("skipped", start.elapsed(), cold);
        return Ok((payload, Finish::Skipped));
    }
    let sign_up = SignUp {
        app,
        request_id,
        tenant: &tenant,
        pool: pool.as_deref(),
        record: record.as_ref(),
        fence,
        deadline,
    };
    match provisioned {
        Ok(()) => {
            sign_up.record_provisioned().await;
            crate::metrics::onboarding("provisioned", start.elapsed(), cold);
            Ok((payload, Finish::Provisioned))
        }
        Err(problem) => {
            let finish = sign_up.hand_off(problem, (start, cold)).await;
            finish.map(|finish| (payload, finish))
        }
    }
}

/// One sign-up being answered: who, and by when.
#[derive(Clone, Copy)]
struct SignUp<'a> {
    app: &'a App,
    request_id: &'a str,
    tenant: &'a TenantId,
    pool: Option<&'a str>,
    /// The tenant's record, if it was written (or found) in time.
    record: Option<&'a TenantRecord>,
    /// The tenant's lease, if this sign-up holds it.
    fence: Option<Fence>,
    deadline: Instant,
}

impl SignUp<'_> {
    /// A provisioned sign-up's record says so (the reconciler records it if this fails).
    async fn record_provisioned(&self) {
        // Only a holder records: a duplicate that waited for its holder has nothing to add.
        if self.fence.is_none() {
            return;
        }
        let Self {
            app,
            request_id,
            tenant,
            deadline,
            ..
        } = *self;
        if let Some(r) = self.record {
            let marking =
                app.registry
                    .record_converged(tenant, r.version, true, self.fence.as_ref());
            match tokio::time::timeout_at(deadline, marking).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(request_id, tenant = %tenant, error = %e, "outcome not recorded; the reconciler records it")
                }
                Err(_) => {
                    tracing::warn!(request_id, tenant = %tenant, "outcome not recorded in time; the reconciler records it")
                }
            }
        }
    }

    /// A sign-up not finished in time: handed off, so the worker finishes it within seconds, and
    /// the outcome recorded. The person is never answered with an error: a tenant neither
    /// recorded nor handed off is logged, counted and alarmed, and finished from the pool.
    async fn hand_off(
        &self,
        (problem, detail): (String, String),
        (start, cold): (Instant, bool),
    ) -> Result<Finish, InvocationError> {
        let Self {
            app,
            request_id,
            tenant,
            pool,
            record,
            fence,
            deadline,
        } = *self;
        let message = HandoffMessage::new(tenant, pool);
        let handoff = app.handoff.send(&message, deadline).await;
        let (outcome, finish) = match &handoff {
            Ok(attempts) => {
                tracing::warn!(request_id, tenant = %tenant, problem, attempts, "tenant handed off");
                (LastOutcome::HandedOff, Finish::HandedOff)
            }
            Err(e) if record.is_some() => {
                tracing::error!(request_id, tenant = %tenant, problem, handoff_error = %e, "tenant not provisioned and not handed off; recorded, the reconciler finishes it");
                (LastOutcome::Failed, Finish::Recorded)
            }
            Err(e) => {
                tracing::error!(request_id, tenant = %tenant, problem, handoff_error = %e, "tenant neither recorded nor handed off; the person's first GET /tenant or the reconciler finishes it");
                (LastOutcome::Failed, Finish::Unrecorded)
            }
        };
        let answer = match finish {
            Finish::HandedOff => "handed-off",
            Finish::Recorded => "recorded",
            _ => "unrecorded",
        };
        crate::metrics::onboarding(answer, start.elapsed(), cold);
        if record.is_some() {
            // The worker takes the tenant next: the lease is given back, not left to run out.
            let recording = async {
                let (recorded, given_back) = tokio::join!(
                    app.registry
                        .record_unfinished(tenant, outcome, Some(&detail)),
                    async {
                        match &fence {
                            Some(f) => app.registry.give_back_lease(tenant, f).await,
                            None => Ok(()),
                        }
                    }
                );
                recorded.and(given_back)
            };
            match tokio::time::timeout_at(deadline, recording).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(request_id, tenant = %tenant, error = %e, "outcome not recorded")
                }
                Err(_) => {
                    tracing::warn!(request_id, tenant = %tenant, "outcome not recorded in time")
                }
            }
            // The record is durable intent: the reconciler finishes this tenant even if the
            // hand-off failed, so the person is not told it failed.
            return Ok(finish);
        }
        // Not even recorded: the person is still not failed (see `Finish::Unrecorded`).
        Ok(finish)
    }
}

/// The sign-up's two halves at once: the record (a conditional create; with cells, the
/// placement) and the provisioning, whose credentials wait for the record's answer (the gate).
/// Returns the record, if written or found, and how the provisioning ended: `Err((problem,
/// detail))` when it did not finish.
async fn record_and_provision(
    app: &App,
    request_id: &str,
    tenant: &TenantId,
    pool: Option<&str>,
    work_deadline: Instant,
) -> (
    Option<TenantRecord>,
    Option<Fence>,
    Result<(), (String, String)>,
) {
    // The record first: a conditional create, beside every other step (it needs no cold-start
    // call), so a duplicate or a retry converges on one item and an operator's earlier decision
    // (a tombstone, a rotation) is what gets provisioned. Once it is written the tenant's intent
    // is durable: whatever is not finished now is finished without the person.
    //
    // One writer per tenant: the new record carries the trigger's lease (no extra write on the
    // fast path); a record that exists already (a retry, a duplicate) is applied only once its
    // lease is taken, which reads it fresh.
    let (fresh, ours, holder, until) = leased_record(app, tenant, pool, work_deadline);
    let created = Box::pin(record_first(app, &fresh, work_deadline)).shared();
    let placed = created.clone();
    let claimed = Box::pin(claim(app, tenant, created.clone(), ours, &holder, until)).shared();
    let held_back = AtomicBool::new(false);
    let busy = AtomicBool::new(false);
    let gate = gate(
        created.clone(),
        claimed.clone(),
        app.settings.registry_wait,
        tenant,
        (&held_back, &busy),
    );
    let provisioning = tokio::time::timeout_at(work_deadline, async {
        let provisioner = app
            .provisioner()
            .await
            .map_err(|e| (format!("{e:#}"), "cold start: unfinished".to_owned()))?;
        // With cells, the placement decides the broker and the vhost (one made ahead that it
        // claimed, or the tenant's own): the broker calls wait for it. Without, the one
        // broker's calls start at once and only the credentials wait for the record.
        let (broker, tenant) = if app.placement.counts() {
            let placed = placed.await.map_err(|e| {
                let detail = match &e {
                    PlacementError::NoRoom(_) => "placement: no cell with room".to_owned(),
                    PlacementError::Registry(s) => format!("registry: {}", s.kind.name()),
                };
                (e.to_string(), detail)
            })?;
            let record = placed.record();
            let in_vhost = record
                .tenant()
                .map_err(|e| (e.to_string(), "registry: bad record".to_owned()))?;
            (provisioner.brokers.get(&record.cell).await, in_vhost)
        } else {
            (provisioner.brokers.first().await, tenant.clone())
        };
        let broker = broker.map_err(|e| (e.to_string(), format!("cell: {}", e.kind.name())))?;
        // A claim that left the cell's pool low asks the worker to refill it, beside the
        // broker calls (never in their way: a refill missed is the reconciler's).
        let refill = async {
            if tenant.pooled()
                && app.placement.refill_due(&broker.cell)
                && let Err(e) = app
                    .handoff
                    .request_refill(&broker.cell, work_deadline)
                    .await
            {
                tracing::warn!(cell = %broker.cell, error = %e, "could not ask for the pool to be refilled; the reconciler refills it");
            }
        };
        let (provisioned, ()) = tokio::join!(
            Box::pin(provisioner.provision_gated(
                &tenant,
                broker,
                gate,
                Mode::SignUp,
                work_deadline,
            )),
            refill
        );
        match &provisioned {
            Ok(report) => report,
            Err(e) => &e.report,
        }
        .record_metrics();
        provisioned
            .map(drop)
            .map_err(|e| (e.to_string(), e.outcome_detail()))
    });
    let (created, provisioned) = tokio::join!(created, provisioning);
    let provisioned = provisioned.unwrap_or_else(|_| {
        Err((
            "the cold-start calls did not finish in time".to_owned(),
            "cold start: unfinished".to_owned(),
        ))
    });
    let record = recorded(created, request_id, tenant);
    let provisioned = match provisioned {
        // A duplicate of a sign-up another invocation is applying: nothing written here; it
        // is done when that holder is done.
        Ok(()) if busy.load(Ordering::SeqCst) => {
            if holder_finished(app, tenant, work_deadline).await {
                Ok(())
            } else {
                Err((
                    "another holder is applying this tenant: no credentials written".to_owned(),
                    "registry: busy".to_owned(),
                ))
            }
        }
        Ok(()) if held_back.load(Ordering::SeqCst) => Err((
            "the registry did not answer in time: no credentials written".to_owned(),
            "registry: timeout".to_owned(),
        )),
        other => other,
    };
    let (record, fence) = lease_held(claimed.now_or_never(), record, ours, &holder);
    (record, fence, provisioned)
}

/// The record the sign-up's create wrote or found, if any (why not is logged).
fn recorded(
    created: Result<Created, PlacementError>,
    request_id: &str,
    tenant: &TenantId,
) -> Option<TenantRecord> {
    match created {
        Ok(c) => Some(c.record().clone()),
        Err(PlacementError::NoRoom(cells)) => {
            tracing::error!(request_id, tenant = %tenant, cells, "no open cell has room for a new tenant: handed off; open or add a cell");
            None
        }
        Err(e) => {
            tracing::warn!(request_id, tenant = %tenant, error = %e, "tenant not recorded; the worker or the reconciler records it");
            None
        }
    }
}

/// The lease this sign-up holds, and the record as it read it (what was applied): from its
/// claim if that answered, else from a new record that carries its lease.
fn lease_held(
    claim: Option<Claim>,
    record: Option<TenantRecord>,
    ours: Fence,
    holder: &str,
) -> (Option<TenantRecord>, Option<Fence>) {
    match (claim, record) {
        (Some(Claim::Held(applied, fence)), Some(_)) => (Some(*applied), Some(fence)),
        (_, Some(r))
            if r.lease_fence == ours.fence && r.lease_holder.as_deref() == Some(holder) =>
        {
            (Some(r), Some(ours))
        }
        (_, r) => (r, None),
    }
}

/// The credentials' gate: the state to write once this sign-up holds the tenant's lease, or
/// `None`, marking why: busy (another holder applies the tenant) or held back (the registry
/// did not answer the create within `wait`). Taking the lease of a record that existed is one
/// more call, bounded by the provisioning's own deadline.
async fn gate(
    created: impl Future<Output = Result<Created, PlacementError>>,
    claimed: impl Future<Output = Claim>,
    wait: Duration,
    tenant: &TenantId,
    (held_back, busy): (&AtomicBool, &AtomicBool),
) -> Option<TenantState> {
    let answered = matches!(tokio::time::timeout(wait, created).await, Ok(Ok(_)));
    let claim = if answered {
        claimed.await
    } else {
        Claim::Unknown
    };
    match claim {
        Claim::Held(r, _) => r.desired(),
        // Another holder applies this tenant now: it applies the newest record.
        Claim::Busy(holder) => {
            tracing::info!(tenant = %tenant, holder, "tenant busy: its holder applies it");
            busy.store(true, Ordering::SeqCst);
            None
        }
        // The registry is slow or down. Its record may say offboarded, or hold a newer
        // password generation (a replayed event of an old tenant): nothing that grants
        // access is written blind. The tenant is handed off; the worker reads (or
        // writes) the record and finishes it.
        Claim::Unknown => {
            held_back.store(true, Ordering::SeqCst);
            None
        }
    }
}

/// A new tenant's record as a sign-up writes it: carrying the sign-up's lease (fence 1, until
/// its deadline and the margin), so taking the lease costs no write of its own. Also the
/// holder's name and the lease's end, for a record that exists already.
fn leased_record(
    app: &App,
    tenant: &TenantId,
    pool: Option<&str>,
    work_deadline: Instant,
) -> (TenantRecord, Fence, String, SystemTime) {
    let until =
        SystemTime::now() + work_deadline.saturating_duration_since(Instant::now()) + lease::MARGIN;
    let holder = lease::holder_name("sign-up");
    let fresh = TenantRecord::new(tenant, pool, &app.plans, "sign-up");
    let (fresh, ours) = lease::first_lease(fresh, &holder, until);
    (fresh, ours, holder, until)
}

/// The lease, once the record's answer is in: ours with a new record; for one that existed
/// (a retry, a duplicate), taken if free — which reads it fresh — or someone else's.
async fn claim(
    app: &App,
    tenant: &TenantId,
    created: impl Future<Output = Result<Created, PlacementError>>,
    ours: Fence,
    holder: &str,
    until: SystemTime,
) -> Claim {
    match created.await {
        Ok(Created::New(r)) => Claim::Held(Box::new(r), ours),
        Ok(Created::Existing(_)) => match app.registry.take_lease(tenant, holder, until).await {
            Ok(Taken::Held(r, f)) => Claim::Held(r, f),
            Ok(Taken::Busy(held)) => Claim::Busy(held.holder),
            Ok(Taken::NoRecord) | Err(_) => Claim::Unknown,
        },
        Err(_) => Claim::Unknown,
    }
}

/// Waits (until `deadline`) for the holder of a tenant's lease to apply its record: `true`
/// once the record is converged and the lease given back.
async fn holder_finished(app: &App, tenant: &TenantId, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(50);
    loop {
        if let Ok(Ok(Some(r))) = tokio::time::timeout_at(deadline, app.registry.get(tenant)).await
            && r.converged()
            && r.lease_holder.is_none()
        {
            return true;
        }
        if Instant::now() + pause >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// What the sign-up holds of its tenant's lease.
#[derive(Debug, Clone)]
enum Claim {
    /// The lease, and the record read with it.
    Held(Box<TenantRecord>, Fence),
    /// Someone else's.
    Busy(String),
    /// No answer (the registry is slow or down), or no record.
    Unknown,
}

/// The conditional create, retried on transient failures and bounded by `deadline` (the
/// attempt in flight too).
/// Records the new tenant (with cells: places it, see `placement`), retrying transient
/// failures inside the deadline.
async fn record_first(
    app: &App,
    record: &TenantRecord,
    deadline: Instant,
) -> Result<Created, PlacementError> {
    let started = Instant::now();
    let writing = crate::outside::retry::until("registry.place", deadline, || async {
        match app.placement.place(record).await {
            Ok(created) => Ok(Ok(created)),
            Err(PlacementError::NoRoom(cells)) => Ok(Err(cells)),
            Err(PlacementError::Registry(e)) => Err(e),
        }
    });
    match tokio::time::timeout_at(deadline, writing).await {
        Ok((Ok(Ok(created)), _)) => {
            crate::metrics::registry_write(started.elapsed());
            Ok(created)
        }
        Ok((Ok(Err(cells)), _)) => Err(PlacementError::NoRoom(cells)),
        Ok((Err(e), _)) => Err(e.into()),
        Err(_) => Err(StepError::new(
            System::Registry,
            format!("record tenant {}", record.sub),
            FailureKind::Timeout,
            "no answer before the deadline",
        )
        .into()),
    }
}

/// A sign-up event for a tenant the record says is offboarded (a late retry, a replayed event):
/// nothing that grants access was written; the vhost PUT, which does not wait for the record,
/// may have made an empty vhost, removed here unless the record keeps the tenant's data.
/// Only as the lease's holder, which read the record fresh: a copy read before an operator's
/// `restore` must not remove the restored tenant's vhost. The lease is given back after.
async fn tombstoned(
    app: &App,
    tenant: &TenantId,
    record: &TenantRecord,
    fence: Option<&Fence>,
    deadline: Instant,
) {
    let Some(fence) = fence else {
        return;
    };
    if !record.retain_data {
        remove_tombstoned_vhost(app, tenant, record, deadline).await;
    }
    if let Ok(Err(e)) =
        tokio::time::timeout_at(deadline, app.registry.give_back_lease(tenant, fence)).await
    {
        tracing::warn!(tenant = %tenant, error = %e, "lease not given back; it runs out by itself");
    }
}

async fn remove_tombstoned_vhost(
    app: &App,
    tenant: &TenantId,
    record: &TenantRecord,
    deadline: Instant,
) {
    let Ok(Ok(p)) = tokio::time::timeout_at(deadline, app.provisioner()).await else {
        return;
    };
    // The record's vhost: one made ahead, if the tenant claimed one.
    let Ok(vhost) = record.tenant() else {
        return;
    };
    let removing = async {
        p.brokers
            .get(&record.cell)
            .await?
            .rabbitmq
            .delete_vhost(vhost.rabbitmq_vhost())
            .await
    };
    if let Ok(Err(e)) = tokio::time::timeout_at(deadline, removing).await {
        tracing::warn!(tenant = %tenant, error = %e, "could not remove the vhost of an offboarded tenant; the reconciler does");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(4500);

    #[test]
    fn the_sooner_deadline_wins() {
        let start = Instant::now();
        let now = now_ms();
        assert_eq!(
            deadline(start, BUDGET, 0),
            start + BUDGET,
            "no Lambda deadline"
        );
        assert_eq!(
            deadline(start, BUDGET, now + 60_000),
            start + BUDGET,
            "the budget is sooner"
        );
        let near = deadline(start, BUDGET, now + 1_000);
        assert!(
            near < start + Duration::from_millis(1000),
            "Lambda deadline minus the margin"
        );
        let almost = deadline(start, BUDGET, now + 50);
        assert!(
            almost <= Instant::now() + Duration::from_millis(1),
            "inside the margin: no time left"
        );
        let past = deadline(start, BUDGET, now.saturating_sub(5_000));
        assert_eq!(
            past,
            start + BUDGET,
            "a deadline already past is a placeholder"
        );
    }
}
