//! The hand-off queue's consumer: one message (the worker's batch item) or a drain of the queue
//! (`tenantctl drain`), each converging the tenant to its record.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Serialize;
use tokio::time::Instant;

use crate::ops::converge::{ConvergeOptions, converge, record_or_new};
use crate::ops::pool::{RefillOptions, refill};
use crate::ops::provision::Provisioner;
use crate::outside::error::{FailureKind, StepError};
use crate::outside::sqs::{HandoffMessage, HandoffQueue, RefillRequest};
use crate::tenant::TenantId;
use crate::tenant::record::{LastOutcome, Phase};

#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainSummary {
    pub received: usize,
    pub provisioned: usize,
    /// Offboarded meanwhile: acknowledged, not provisioned.
    pub skipped: usize,
    pub failed: usize,
    pub malformed: usize,
    /// Requests to refill a cell's pool of vhosts made ahead, done.
    pub refills: usize,
    /// Tenants that found no open cell with room: sent back to the queue to wait for one
    /// (`NO_ROOM_WAIT`), not failed.
    pub waiting: Vec<String>,
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
    /// No open cell has room: the hand-off waits for one (sent again later), never a failure.
    NoRoom(TenantId, HandoffMessage),
    Failed(TenantId, String),
    /// A refill request: the cell's pool topped up (`made` vhosts), or why not (left to the
    /// reconciler; never retried from the queue).
    Refilled {
        cell: String,
        made: usize,
        failures: Vec<String>,
    },
}

/// At most this many vhosts made ahead per refill request.
pub const REFILL_PER_REQUEST: usize = 50;

/// How long a hand-off that found no cell with room waits before it is tried again.
pub const NO_ROOM_WAIT: Duration = Duration::from_secs(300);

/// Finishes the tenant of one hand-off message by `deadline`: converges it to its record,
/// writing the record first if the registry was down at sign-up.
pub async fn process_handoff(p: &Provisioner, body: &str, deadline: Instant) -> HandoffOutcome {
    if let Some(request) = RefillRequest::parse(body) {
        let options = RefillOptions {
            max_per_run: REFILL_PER_REQUEST,
            deadline,
            ..RefillOptions::new(Duration::ZERO)
        };
        let cell = request.refill_pool;
        return match refill(p, Some(&cell), options).await {
            Ok(reports) => HandoffOutcome::Refilled {
                cell,
                made: reports.iter().map(|r| r.made + r.finished).sum(),
                failures: reports.into_iter().flat_map(|r| r.failures).collect(),
            },
            Err(e) => HandoffOutcome::Refilled {
                cell,
                made: 0,
                failures: vec![e.to_string()],
            },
        };
    }
    let (message, tenant) = match HandoffMessage::parse(body) {
        Ok(parsed) => parsed,
        Err(e) => return HandoffOutcome::Malformed(e),
    };
    let pool = message.user_pool_id.as_deref();
    let record =
        match tokio::time::timeout_at(deadline, record_or_new(p, &tenant, pool, "worker")).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.kind == FailureKind::NoRoom => {
                return HandoffOutcome::NoRoom(tenant, message);
            }
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
    // A sign-up that handed off may still hold the lease for a moment (at most its 5 s and a
    // margin): wait that long; a tenant held longer fails this message, which comes back.
    let options = ConvergeOptions {
        lease_wait: Duration::from_secs(8).min(budget / 3),
        ..ConvergeOptions::no_removal(budget)
    };
    match converge(p, &record, options).await {
        Ok(_) => HandoffOutcome::Provisioned(tenant),
        Err(e) if e.kind == FailureKind::Busy => HandoffOutcome::Failed(tenant, e.to_string()),
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
                HandoffOutcome::Refilled { failures, .. } => {
                    queue.delete(&m.receipt_handle).await?;
                    summary.refills += 1;
                    summary.failures.extend(failures);
                }
                HandoffOutcome::NoRoom(tenant, message) => {
                    // Waits on the queue for a cell, as a new message: never dead-lettered.
                    queue.send_later(&message, NO_ROOM_WAIT).await?;
                    queue.delete(&m.receipt_handle).await?;
                    summary.waiting.push(tenant.to_string());
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
