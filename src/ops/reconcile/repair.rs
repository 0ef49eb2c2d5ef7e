//! The repairs of a run: converge each tenant that differs from its record (writing the record
//! first for one that has none), give every tenant the seat it should hold, and `adopt`.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use serde::Serialize;
use tokio::time::Instant;

use super::*;
use crate::ops::converge::{ConvergeOptions, converge};
use crate::ops::provision::Provisioner;
use crate::outside::error::{FailureKind, StepError};
use crate::outside::registry::{Created, ListFilter};
use crate::tenant::TenantId;
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};

/// Converges each tenant of `work` (`options.concurrency` at a time), writing the record first
/// for one that has none (or, if someone wrote it meanwhile, taking theirs).
pub(super) async fn run(
    p: &Provisioner,
    work: Vec<Work>,
    options: &ReconcileOptions,
    summary: &mut ReconcileSummary,
    on_progress: &mut impl FnMut(usize, usize),
) {
    let total = work.len();
    let mut done = 0;
    on_progress(done, total);
    let converge_options = if options.may_remove {
        ConvergeOptions::new(options.budget)
    } else {
        ConvergeOptions::no_removal(options.budget)
    }
    .held_by("reconciler");
    // A tenant another holder is converging is left to it (it applies the newest record).
    let converge_options = ConvergeOptions {
        lease_wait: Duration::ZERO,
        ..converge_options
    };
    let mut results = futures::stream::iter(work)
        .map(|w| async move {
            // `recorded`: this run wrote the record.
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
            Ok(()) => summary.repaired += 1,
            Err(e) if e.kind == FailureKind::Busy => summary.busy.push(sub),
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("{sub}: {e}"));
            }
        }
    }
}

/// Every tenant whose vhost exists (or is kept) holds a seat in its cell's count: tenants that
/// do not (recorded before cells were declared) are counted as they are. Then each cell's free
/// capacity is published (`CellFreeVhosts`).
pub(super) async fn seats(
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
            Ok(Some(_)) => summary.seated += 1,
            Ok(None) => {}
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
                    // Ready vhosts made ahead are free for the next sign-ups.
                    let free =
                        u64::from(capacity).saturating_sub(v.tenants.saturating_sub(v.pooled()));
                    crate::metrics::cell_free_vhosts(&v.cell.name, free);
                    tracing::info!(cell = %v.cell.name, state = v.state.as_str(), seats = v.tenants, capacity, free, "cell capacity");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cells' counters not read"),
    }
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
