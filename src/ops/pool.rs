//! Vhosts made ahead: each cell that declares `pool: {size, queue_types}` keeps `size` ready,
//! unclaimed vhosts of each queue type, so a sign-up claims one (in placement's transaction)
//! and creates only its user, permission and limits — the vhost PUT, a blocking cluster-wide
//! operation and the slowest step of a sign-up, is done here, off the sign-up's path.
//!
//! **Refill** (the worker on a refill message, the reconciler every run, `tenantctl pool
//! refill`): for each cell, bounded per run,
//! 1. finishes what a refill left unfinished (reserved, older than `min_age`: made again — a
//!    PUT is an upsert — and made ready; retired: removed from the broker);
//! 2. retires ready vhosts beyond the declared size (the pool shrank or was turned off);
//! 3. tops each queue type up to its size: reserve a seat (the cell open, room left, at most
//!    `max_per_run` being made at once), create the vhost marked as made ahead, make it ready.
//!
//! **Safety.** A vhost is made ready only after the broker has it; a claim takes it out of the
//! ready set in the same transaction that writes the tenant's record naming it, so there is no
//! claimed-but-unrecorded vhost and no vhost claimed twice; a retired vhost is out of the ready
//! set before it is deleted. A vhost made ahead is always new: an offboarded tenant's vhost is
//! deleted, never returned. Its name (`pool-…`) is never a tenant id, so the reconciler never
//! takes it for a tenant or prunes it as an orphan.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use serde::Serialize;
use tokio::time::Instant;

use crate::cells::{Cell, CellState};
use crate::ops::provision::Provisioner;
use crate::outside::error::StepError;
use crate::outside::registry::{CellItem, PoolStep};
use crate::tenant::id::{parse_pool_vhost, pool_vhost_description, pool_vhost_name};
use crate::tenant::plan::QueueType;

/// How a refill runs.
#[derive(Debug, Clone, Copy)]
pub struct RefillOptions {
    /// At most this many vhosts made per cell per run (and reserved at once in a cell).
    pub max_per_run: usize,
    /// A reservation younger than this is a refill in progress elsewhere: left alone.
    pub min_age: Duration,
    /// No new vhost is started after this.
    pub deadline: Instant,
    /// Vhosts created at once per cell.
    pub concurrency: usize,
}

impl RefillOptions {
    pub fn new(budget: Duration) -> Self {
        Self {
            max_per_run: 100,
            min_age: Duration::from_secs(120),
            deadline: Instant::now() + budget,
            concurrency: 4,
        }
    }
}

/// What one cell's refill did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolRefill {
    pub cell: String,
    /// Made and ready in this run.
    pub made: usize,
    /// Reservations a refill left unfinished, finished now.
    pub finished: usize,
    /// Removed from the broker (retired: beyond the pool's size).
    pub removed: usize,
    /// Ready after the run, by queue type.
    pub ready: BTreeMap<&'static str, usize>,
    /// Why a vhost was not made (no room, the cell not open, an error).
    pub stopped: Option<String>,
    pub failures: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn queue_type_named(name: &str) -> Option<QueueType> {
    QueueType::ALL.into_iter().find(|t| t.as_str() == name)
}

/// Refills the pools of `only` (or every declared cell that keeps one, or still holds vhosts
/// made ahead after its pool was turned off).
pub async fn refill(
    p: &Provisioner,
    only: Option<&str>,
    options: RefillOptions,
) -> Result<Vec<PoolRefill>, StepError> {
    let cells = p.brokers.cells();
    if !cells.declared {
        return Ok(Vec::new());
    }
    if let Some(name) = only
        && cells.get(name).is_none()
    {
        return Err(StepError::new(
            crate::outside::error::System::Registry,
            format!("refill cell '{name}''s pool"),
            crate::outside::error::FailureKind::Rejected,
            format!(
                "no cell '{name}' in {} (cells: {})",
                cells.source,
                cells.names().join(", ")
            ),
        ));
    }
    let names: Vec<&str> = cells
        .names()
        .into_iter()
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    let items = p.registry.cell_items(&names).await?;
    let mut out = Vec::new();
    for name in names {
        let cell = cells.get(name).expect("named by the cells");
        let item = items.get(name).cloned().unwrap_or_default();
        let holds_any = item.tenants > item.tenant_seats();
        if cell.pool.is_none() && !holds_any {
            continue;
        }
        let report = refill_cell(p, cell, item, options).await;
        crate::metrics::pool_ready(&report.cell, report.ready.values().sum::<usize>() as u64);
        out.push(report);
    }
    Ok(out)
}

async fn refill_cell(
    p: &Provisioner,
    cell: &Cell,
    item: CellItem,
    options: RefillOptions,
) -> PoolRefill {
    let mut report = PoolRefill {
        cell: cell.name.clone(),
        ..Default::default()
    };
    let broker = match p.brokers.get(&cell.name).await {
        Ok(b) => b,
        Err(e) => {
            report.failures.push(e.to_string());
            return report;
        }
    };
    let rabbitmq = &broker.rabbitmq;
    let description = pool_vhost_description(&p.secret_prefix);
    let registry = &p.registry;
    let open = item.state.unwrap_or(cell.state) == CellState::Open;
    let mut ready: BTreeMap<QueueType, Vec<String>> = item.ready.clone();

    // 1. What a refill left unfinished, once old enough not to be one in progress.
    let old = |name: &str| {
        parse_pool_vhost(name).is_some_and(|(_, made)| {
            now_ms().saturating_sub(made) >= options.min_age.as_millis() as u64
        })
    };
    for name in item.making.iter().filter(|n| old(n)) {
        let Some(t) = parse_pool_vhost(name).and_then(|(t, _)| queue_type_named(t)) else {
            continue;
        };
        let kept = open && cell.pool_size(t) > 0;
        let done = if kept {
            make(rabbitmq, name, &description, t, options.deadline)
                .await
                .map(|()| PoolStep::Ready)
        } else {
            rabbitmq
                .delete_vhost(name)
                .await
                .map(|_| PoolStep::Removed { from_making: true })
        };
        match done {
            Ok(step) => match registry.pool_step(&cell.name, name, t, step).await {
                Ok(true) if step == PoolStep::Ready => {
                    report.finished += 1;
                    ready.entry(t).or_default().push(name.clone());
                }
                Ok(_) => {}
                Err(e) => report.failures.push(e.to_string()),
            },
            Err(e) => report.failures.push(e.to_string()),
        }
    }
    for name in &item.removing {
        let Some(t) = parse_pool_vhost(name).and_then(|(t, _)| queue_type_named(t)) else {
            continue;
        };
        report.removed += remove(p, &cell.name, rabbitmq, name, t, &mut report.failures).await;
    }

    // 2. Beyond the declared size: retired (out of the ready set first), then removed; at most
    // `max_per_run` per run, like the making (a pool turned off empties over a few runs).
    let mut retiring = options.max_per_run;
    for (t, names) in ready.iter_mut() {
        let size = cell.pool_size(*t) as usize;
        while names.len() > size && retiring > 0 {
            retiring -= 1;
            let name = names.pop().expect("longer than size");
            match registry
                .pool_step(&cell.name, &name, *t, PoolStep::Retire)
                .await
            {
                Ok(true) => {
                    report.removed +=
                        remove(p, &cell.name, rabbitmq, &name, *t, &mut report.failures).await;
                }
                Ok(false) => {} // claimed meanwhile: a tenant's now
                Err(e) => report.failures.push(e.to_string()),
            }
        }
    }

    // 3. Up to the size, bounded per run.
    let Some(pool) = cell.pool.as_ref().filter(|_| open) else {
        if cell.pool.is_some() {
            report.stopped = Some(format!("cell '{}' is not open", cell.name));
        }
        report.ready = ready.iter().map(|(t, v)| (t.as_str(), v.len())).collect();
        return report;
    };
    let making_of = |t: QueueType| {
        item.making
            .iter()
            .filter(|n| parse_pool_vhost(n).is_some_and(|(q, _)| q == t.as_str()))
            .filter(|n| !old(n))
            .count()
    };
    let mut wanted: Vec<QueueType> = Vec::new();
    for t in &pool.queue_types {
        let have = ready.get(t).map_or(0, Vec::len) + making_of(*t);
        let missing = (pool.size as usize).saturating_sub(have);
        wanted.extend(std::iter::repeat_n(*t, missing));
    }
    wanted.truncate(options.max_per_run);
    let max_tenants = cell.capacity.vhosts.map_or(u64::MAX, u64::from);
    let open_by_file = cell.state == CellState::Open;
    let description = &description;
    let made = futures::stream::iter(wanted)
        .map(|t| async move {
            if Instant::now() >= options.deadline {
                return (t, Made::Stopped("the run's time is up".to_owned()));
            }
            let name = pool_vhost_name(t.as_str(), now_ms(), uuid::Uuid::new_v4().as_u128() as u32);
            let reserve = PoolStep::Reserve {
                max_tenants,
                max_making: options.max_per_run as u64,
                open_by_file,
            };
            match registry.pool_step(&cell.name, &name, t, reserve).await {
                Ok(true) => {}
                Ok(false) => {
                    let why = format!("no seat left in cell '{}' (or it closed)", cell.name);
                    return (t, Made::Stopped(why));
                }
                Err(e) => return (t, Made::Failed(e.to_string())),
            }
            // A failure leaves the reservation to the next refill (step 1), which makes it.
            if let Err(e) = make(rabbitmq, &name, description, t, options.deadline).await {
                return (t, Made::Failed(e.to_string()));
            }
            match registry
                .pool_step(&cell.name, &name, t, PoolStep::Ready)
                .await
            {
                Ok(_) => (t, Made::Ready(name)),
                Err(e) => (t, Made::Failed(e.to_string())),
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (t, made) in made {
        match made {
            Made::Ready(name) => {
                report.made += 1;
                ready.entry(t).or_default().push(name);
            }
            Made::Stopped(why) => report.stopped = Some(why),
            Made::Failed(why) => report.failures.push(why),
        }
    }
    report.ready = ready.iter().map(|(t, v)| (t.as_str(), v.len())).collect();
    if report.made > 0 || report.finished > 0 || report.removed > 0 {
        tracing::info!(cell = %cell.name, made = report.made, finished = report.finished, removed = report.removed, ready = ?report.ready, "pool refilled");
    }
    report
}

/// How one new vhost of a refill ended.
enum Made {
    Ready(String),
    /// Not started: no seat left, or no time (not a failure).
    Stopped(String),
    Failed(String),
}

/// Creates (or makes again) a vhost made ahead: marked as this installation's pool, with its
/// queue type, retrying transient failures until `deadline`.
async fn make(
    rabbitmq: &crate::outside::rabbitmq::RabbitMq,
    name: &str,
    description: &str,
    t: QueueType,
    deadline: Instant,
) -> Result<(), StepError> {
    crate::outside::retry::until("rabbitmq.vhost", deadline, || {
        rabbitmq.put_vhost(name, description, Some(t))
    })
    .await
    .0
}

/// Removes a retired vhost from the broker, then gives back its seat; 1 when both happened.
async fn remove(
    p: &Provisioner,
    cell: &str,
    rabbitmq: &crate::outside::rabbitmq::RabbitMq,
    name: &str,
    t: QueueType,
    failures: &mut Vec<String>,
) -> usize {
    if let Err(e) = rabbitmq.delete_vhost(name).await {
        failures.push(e.to_string());
        return 0;
    }
    match p
        .registry
        .pool_step(cell, name, t, PoolStep::Removed { from_making: false })
        .await
    {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => {
            failures.push(e.to_string());
            0
        }
    }
}
