//! `tenantctl cells`: every cell's figures, from bulk listings (each broker's overview and
//! vhost list, one registry scan for all cells), never per tenant.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cells::{CellState, Cells};
use crate::outside::error::StepError;
use crate::outside::rabbitmq::RabbitMq;
use crate::outside::registry::{ListFilter, Registry};
use crate::outside::secrets_manager::SecretsManager;
use crate::tenant::plan::Plans;
use crate::tenant::record::Phase;

/// One cell's figures for `tenantctl cells`: from bulk listings (the broker's overview and
/// vhost list, one registry scan for all cells), never per tenant.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    pub name: String,
    pub state: CellState,
    /// `registry` (an operator's `tenantctl cell …`) or `file` (never changed since).
    pub state_from: &'static str,
    pub management_url: String,
    /// The cluster its tenants' backends run in, when it is one of its own (else the default).
    pub cluster: Option<String>,
    pub broker_version: Option<String>,
    /// What went wrong reading the broker (its kind only), if it did.
    pub broker_error: Option<String>,
    pub vhosts: Usage,
    /// Open connections now, and the sum of the plan limits granted to its active tenants.
    pub connections: Usage,
    pub connections_granted: u64,
    pub tenants: TenantCounts,
    /// The placement's counters: tenants holding a seat, and the connections they were granted
    /// when placed (what new sign-ups are checked against).
    pub seats: Seats,
    /// Its vhosts made ahead, when it keeps them.
    pub pool: Option<PoolReport>,
    /// Declared capacity the broker cannot give (Amazon MQ's limits, with its version).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Seats {
    /// Seats held by tenants.
    pub tenants: u64,
    /// Seats held by vhosts made ahead (ready, or being made).
    pub pooled: u64,
    pub connections: u64,
}

/// A cell's pool of vhosts made ahead: its declared size (per queue type), how many are ready
/// now (by queue type), being made (reserved, not yet ready) and claimed by tenants ever.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolReport {
    pub size: u32,
    pub queue_types: Vec<&'static str>,
    pub ready: std::collections::BTreeMap<&'static str, u64>,
    pub making: u64,
    pub claimed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub used: Option<u64>,
    pub capacity: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantCounts {
    pub active: u64,
    pub suspended: u64,
    pub offboarded: u64,
}

/// Every cell's report. A broker that does not answer is reported as such (the others still
/// are); the registry must answer.
pub async fn cells_report(
    cells: &Cells,
    secrets: &SecretsManager,
    registry: &Registry,
    plans: &Plans,
    connect_timeout: Duration,
    request_timeout: Duration,
    deadline: Instant,
) -> Result<Vec<CellReport>, StepError> {
    let names = cells.names();
    let every = ListFilter::default();
    let (records, items) =
        tokio::try_join!(registry.all(&every, deadline), registry.cell_items(&names))?;
    let brokers = futures::future::join_all(cells.all().iter().map(|cell| async move {
        let admin = secrets.admin_secret(&cell.admin_secret_id).await?;
        let rabbit = RabbitMq::new(
            cell.management_url.clone(),
            admin.credential,
            connect_timeout,
            request_timeout,
        )?;
        let (overview, vhosts) = tokio::try_join!(rabbit.overview(), rabbit.vhosts())?;
        Ok::<_, StepError>((overview, vhosts.len() as u64))
    }))
    .await;
    let mut out = Vec::new();
    for (cell, broker) in cells.all().iter().zip(brokers) {
        // Records made before cells say `default`: they live in the first cell unless the file
        // declares a cell of that name.
        let home = |c: &str| cells.resolve(c).is_some_and(|r| r.name == cell.name);
        let mut tenants = TenantCounts::default();
        let mut granted = 0u64;
        for r in records.iter().filter(|r| home(&r.cell)) {
            match r.state {
                Phase::Active => {
                    tenants.active += 1;
                    granted += plans
                        .get(&r.plan)
                        .map_or(0, |p| u64::from(p.rabbitmq.max_connections));
                }
                Phase::Suspended => tenants.suspended += 1,
                Phase::Offboarded => tenants.offboarded += 1,
            }
        }
        let item = items.get(&cell.name).cloned().unwrap_or_default();
        let (state, state_from) = match item.state {
            Some(s) => (s, "registry"),
            None => (cell.state, "file"),
        };
        let (version, error, vhosts, connections) = match broker {
            Ok((o, v)) => (
                Some(o.rabbitmq_version),
                None,
                Some(v),
                Some(o.object_totals.connections),
            ),
            Err(e) => (
                None,
                Some(format!("{}: {:?}", e.system, e.kind)),
                None,
                None,
            ),
        };
        let version_of_cell = version.clone();
        out.push(CellReport {
            name: cell.name.clone(),
            state,
            state_from,
            management_url: cell.management_url.to_string(),
            cluster: cell.cluster.as_ref().map(|c| c.name.to_string()),
            broker_version: version,
            broker_error: error,
            vhosts: Usage {
                used: vhosts,
                capacity: cell.capacity.vhosts.map(u64::from),
            },
            connections: Usage {
                used: connections,
                capacity: cell.capacity.connections,
            },
            connections_granted: granted,
            tenants,
            seats: Seats {
                tenants: item.tenant_seats(),
                pooled: item.tenants.saturating_sub(item.tenant_seats()),
                connections: item.connections,
            },
            pool: (cell.pool.is_some() || item.tenants > item.tenant_seats()).then(|| PoolReport {
                size: cell.pool.as_ref().map_or(0, |p| p.size),
                queue_types: cell
                    .pool
                    .as_ref()
                    .map(|p| p.queue_types.iter().map(|t| t.as_str()).collect())
                    .unwrap_or_default(),
                ready: item
                    .ready
                    .iter()
                    .map(|(t, v)| (t.as_str(), v.len() as u64))
                    .collect(),
                making: item.making.len() as u64,
                claimed: item.claimed,
            }),
            warnings: crate::cells::sizing::capacity_warnings(cell, version_of_cell.as_deref()),
        });
    }
    Ok(out)
}
