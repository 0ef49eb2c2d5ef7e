//! Placement: which cell a new tenant lives in.
//!
//! **A conditional counter, not a soft limit.** Each cell's item in the registry counts the
//! tenants placed there (`tenants`) and the connections their plans grant (`connections`). A
//! tenant's record and its cell's count are written in one DynamoDB transaction whose condition
//! is *room and open*: `tenants < capacity.vhosts`, `connections + the plan's ≤
//! capacity.connections`, state `open`. DynamoDB serialises transactions on an item, so a burst
//! of any size cannot take more seats than a cell has: the count is exact, not estimated, and a
//! cell can be declared at its broker's hard limit. A soft limit below the hard one would be
//! guessed headroom for cache staleness, wasted in calm times and not a guarantee in a burst.
//!
//! **The order to try cells in needs no coordination.** Every container ranks the open cells
//! with room by weighted rendezvous hashing of the tenant id (highest random weight), the
//! weight being the cell's free capacity as a cached read of the counters shows it (refreshed
//! every few seconds, and whenever a cell refuses). Duplicates and Cognito retries of one
//! sign-up compute the same ranking, so they ask the same cell; the transaction's
//! `attribute_not_exists` on the record settles the rest: a second writer gets the first one's
//! record back (`Existing`) and provisions where it says. Tenants spread over cells in
//! proportion to their free capacity, and a new, empty cell takes most of the new sign-ups.
//!
//! **On the critical path** this replaces the trigger's conditional create (one write) with one
//! transaction, and the broker calls wait for it (the vhost's broker is what it decides); the
//! cache read costs nothing warm and runs beside the cold-start calls cold.
//!
//! Without a cells file there is one implicit cell with no declared capacity: tenants are
//! recorded there with the plain conditional create and counted nowhere, as before cells.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;
use tokio::time::Instant;

use crate::cells::{Cell, CellState, Cells};
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::registry::{CellItem, Created, Placed, Registry, Seat};
use crate::tenant::plan::{Plans, QueueType};
use crate::tenant::record::TenantRecord;

/// How long a container trusts its read of the cells' counters before reading them again.
pub const VIEW_TTL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Placement {
    inner: Arc<Inner>,
}

struct Inner {
    cells: Cells,
    registry: Registry,
    plans: Plans,
    view: Mutex<Option<(Instant, HashMap<String, CellItem>)>>,
    /// When this container last asked for each cell's pool to be refilled.
    refills_asked: Mutex<HashMap<String, Instant>>,
}

/// A container asks for a cell's pool to be refilled at most this often.
const REFILL_ASK_EVERY: Duration = Duration::from_secs(10);

/// A cell as placement sees it: its declared capacity, its effective state, its counters.
#[derive(Debug, Clone, PartialEq)]
pub struct CellView<'a> {
    pub cell: &'a Cell,
    pub state: CellState,
    /// Seats taken (tenants, and vhosts made ahead).
    pub tenants: u64,
    pub connections: u64,
    /// Its vhosts made ahead, ready to be claimed, by queue type.
    pub ready: BTreeMap<QueueType, Vec<String>>,
}

impl CellView<'_> {
    fn max_tenants(&self) -> u64 {
        self.cell.capacity.vhosts.map_or(u64::MAX, u64::from)
    }

    fn max_connections(&self) -> u64 {
        self.cell.capacity.connections.unwrap_or(u64::MAX)
    }

    fn ready_of(&self, queue_type: Option<QueueType>) -> &[String] {
        queue_type
            .and_then(|t| self.ready.get(&t))
            .map_or(&[], Vec::as_slice)
    }

    /// Seats held by ready vhosts made ahead: free for any tenant that claims one.
    pub fn pooled(&self) -> u64 {
        self.ready.values().map(Vec::len).sum::<usize>() as u64
    }

    /// Whether a tenant granting `connections` fits: a free seat, or a ready vhost of its
    /// queue type (whose seat it takes).
    pub fn has_room(&self, connections: u64, queue_type: Option<QueueType>) -> bool {
        self.state == CellState::Open
            && (self.tenants < self.max_tenants() || !self.ready_of(queue_type).is_empty())
            && self.connections.saturating_add(connections) <= self.max_connections()
    }

    /// Free capacity, in tenants: free vhosts (ready ones made ahead count as free), scaled
    /// down when connections are the tighter resource.
    pub fn weight(&self) -> f64 {
        let (max_t, max_c) = (self.max_tenants() as f64, self.max_connections() as f64);
        let used = self.tenants.saturating_sub(self.pooled());
        let free_t = (max_t - used as f64).max(0.0) / max_t;
        let free_c = (max_c - self.connections as f64).max(0.0) / max_c;
        free_t.min(free_c) * max_t.min(1e9)
    }

    /// Why a cell takes no tenant (for the log when none does).
    pub fn why_not(&self, connections: u64) -> String {
        if self.state != CellState::Open {
            return format!("{}: {}", self.cell.name, self.state.as_str());
        }
        let vhosts = self
            .cell
            .capacity
            .vhosts
            .map_or("-".to_owned(), |v| v.to_string());
        let conns = self
            .cell
            .capacity
            .connections
            .map_or("-".to_owned(), |v| v.to_string());
        let full = if self.tenants >= self.max_tenants() {
            "full"
        } else if self.connections.saturating_add(connections) > self.max_connections() {
            "connections full"
        } else {
            "room"
        };
        format!(
            "{}: {full} ({}/{vhosts} vhosts, {}/{conns} connections)",
            self.cell.name, self.tenants, self.connections
        )
    }
}

/// A uniform number in (0, 1) from the tenant and the cell: the same everywhere, every time.
fn unit_hash(sub: &str, cell: &str) -> f64 {
    let digest = sha2::Sha256::digest(format!("{sub}\u{0}{cell}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 + 0.5) / (u64::MAX as f64 + 1.0)
}

/// The cells with room for `sub`, best first: weighted rendezvous hashing (each cell scores
/// `weight / -ln(h)`, `h` the tenant's hash with the cell), so a cell is first for a share of
/// tenants proportional to its weight, and the ranking of one tenant changes only as much as
/// the weights do.
pub fn rank<'a>(
    sub: &str,
    views: &[CellView<'a>],
    connections: u64,
    queue_type: Option<QueueType>,
) -> Vec<&'a Cell> {
    let mut scored: Vec<(f64, &'a Cell)> = views
        .iter()
        .filter(|v| v.has_room(connections, queue_type))
        .map(|v| {
            let h = unit_hash(sub, &v.cell.name);
            (v.weight().max(f64::MIN_POSITIVE) / -h.ln(), v.cell)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored.into_iter().map(|(_, c)| c).collect()
}

/// The ready vhost `sub` claims of `ready`, leaving out `lost` (claimed by others meanwhile):
/// the highest hash of the tenant with the vhost, so duplicates and retries of one sign-up ask
/// for the same one and concurrent sign-ups spread over the pool instead of all asking for
/// its first.
fn pick<'v>(sub: &str, ready: &'v [String], lost: &HashSet<String>) -> Option<&'v str> {
    ready
        .iter()
        .filter(|v| !lost.contains(*v))
        .max_by(|a, b| unit_hash(sub, a).total_cmp(&unit_hash(sub, b)))
        .map(String::as_str)
}

/// How many times a placement asks again after the vhost it claimed was claimed first; the
/// last try creates its vhost instead.
const CLAIM_ROUNDS: usize = 4;

/// Placement found no cell with room: the tenant is not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlacementError {
    #[error("no open cell has room for a new tenant ({0})")]
    NoRoom(String),
    #[error(transparent)]
    Registry(#[from] StepError),
}

impl PlacementError {
    /// As a step error, for callers that report one kind of error.
    pub fn into_step(self, tenant: &str) -> StepError {
        match self {
            PlacementError::Registry(e) => e,
            PlacementError::NoRoom(cells) => StepError::new(
                System::Registry,
                format!("place tenant {tenant}"),
                FailureKind::NoRoom,
                format!("no open cell has room ({cells}): open a cell or add one"),
            ),
        }
    }
}

impl Placement {
    pub fn new(cells: Cells, registry: Registry, plans: Plans) -> Self {
        Self {
            inner: Arc::new(Inner {
                cells,
                registry,
                plans,
                view: Mutex::new(None),
                refills_asked: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn cells(&self) -> &Cells {
        &self.inner.cells
    }

    /// Whether tenants are placed (a cells file is declared) or all live in the implicit cell.
    pub fn counts(&self) -> bool {
        self.inner.cells.declared
    }

    /// The default queue type of `plan`'s vhosts (what a vhost made ahead must have to be
    /// claimed for it).
    pub fn queue_type_of(&self, plan: &str) -> Option<QueueType> {
        self.inner
            .plans
            .get(plan)
            .and_then(|p| p.rabbitmq.default_queue_type)
    }

    /// The connections a tenant on `plan` is granted.
    pub fn connections_of(&self, plan: &str) -> u64 {
        self.inner
            .plans
            .get(plan)
            .map_or(0, |p| u64::from(p.rabbitmq.max_connections))
    }

    /// Every cell with its effective state and counters; `fresh` reads the registry even if the
    /// cached read is young.
    pub async fn views(&self, fresh: bool) -> Result<Vec<CellView<'_>>, StepError> {
        let cached = {
            let guard = self.inner.view.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .filter(|(at, _)| !fresh && at.elapsed() < VIEW_TTL)
                .map(|(_, items)| items.clone())
        };
        let items = match cached {
            Some(items) => items,
            None => {
                let names = self.inner.cells.names();
                let items = self.inner.registry.cell_items(&names).await?;
                *self.inner.view.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), items.clone()));
                items
            }
        };
        Ok(self
            .inner
            .cells
            .all()
            .iter()
            .map(|cell| {
                let item = items.get(&cell.name).cloned().unwrap_or_default();
                CellView {
                    cell,
                    state: item.state.unwrap_or(cell.state),
                    tenants: item.tenants,
                    connections: item.connections,
                    ready: item.ready,
                }
            })
            .collect())
    }

    /// Whether this container should ask for `cell`'s pool to be refilled now: some queue
    /// type of its pool is below half its size (as its last read, less its own claims, shows)
    /// and it has not asked in the last `REFILL_ASK_EVERY`.
    pub fn refill_due(&self, cell: &str) -> bool {
        let Some(pool) = self.inner.cells.get(cell).and_then(|c| c.pool.as_ref()) else {
            return false;
        };
        let low = {
            let guard = self.inner.view.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref().and_then(|(_, items)| items.get(cell)) {
                Some(item) => pool
                    .queue_types
                    .iter()
                    .any(|t| (item.ready_of(*t).len() as u64) * 2 < u64::from(pool.size)),
                None => true,
            }
        };
        if !low {
            return false;
        }
        let mut asked = self
            .inner
            .refills_asked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match asked.get(cell) {
            Some(at) if at.elapsed() < REFILL_ASK_EVERY => false,
            _ => {
                asked.insert(cell.to_owned(), Instant::now());
                true
            }
        }
    }

    /// Reads the counters now (the cold start does, beside its other calls).
    pub async fn warm(&self) -> Result<(), StepError> {
        if self.counts() {
            self.views(true).await?;
        }
        Ok(())
    }

    fn forget_view(&self) {
        *self.inner.view.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn note_seat(&self, cell: &str, connections: u64, claimed: Option<(&str, QueueType)>) {
        let mut guard = self.inner.view.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, items)) = guard.as_mut() {
            let item = items.entry(cell.to_owned()).or_default();
            match claimed {
                Some((vhost, t)) => {
                    if let Some(ready) = item.ready.get_mut(&t) {
                        ready.retain(|v| v != vhost);
                    }
                }
                None => item.tenants += 1,
            }
            item.connections += connections;
        }
    }

    fn seat<'s>(
        &self,
        view: &'s CellView<'_>,
        connections: u64,
        claim: Option<(&'s str, QueueType)>,
    ) -> Seat<'s> {
        Seat {
            cell: &view.cell.name,
            max_tenants: view.max_tenants(),
            max_connections: view.max_connections(),
            connections,
            open_by_file: view.cell.state == CellState::Open,
            claim,
        }
    }

    /// Records a new tenant in a cell with room (see the module doc); a tenant with a record
    /// already comes back with it, wherever it lives. With no cells file, the plain create.
    pub async fn place(&self, record: &TenantRecord) -> Result<Created, PlacementError> {
        let registry = &self.inner.registry;
        if !self.counts() {
            return Ok(registry.create(record).await?);
        }
        let connections = self.connections_of(&record.plan);
        let mut refused: Vec<String> = Vec::new();
        for fresh in [false, true] {
            let views = self.views(fresh).await?;
            let order: Vec<_> = rank(
                &record.sub,
                &views,
                connections,
                self.queue_type_of(&record.plan),
            )
            .into_iter()
            .filter(|c| !refused.contains(&c.name))
            .collect();
            for cell in order {
                let view = views
                    .iter()
                    .find(|v| v.cell.name == cell.name)
                    .expect("ranked from these views");
                match self.place_in(record, view, connections, fresh).await? {
                    Some(created) => return Ok(created),
                    None => refused.push(cell.name.clone()),
                }
            }
        }
        // No cell took it. A retry of a sign-up placed before must still find its record.
        if let Some(existing) = registry
            .get(&record.tenant().map_err(StepError::from)?)
            .await?
        {
            return Ok(Created::Existing(existing));
        }
        let views = self.views(true).await?;
        let why = views
            .iter()
            .map(|v| v.why_not(connections))
            .collect::<Vec<_>>()
            .join("; ");
        crate::metrics::no_cell_with_room();
        tracing::error!(tenant = %record.sub, cells = %why, "no open cell has room for a new tenant; open or add a cell");
        Err(PlacementError::NoRoom(why))
    }

    /// One cell's placement transaction for `record`. In a cell keeping vhosts made ahead of
    /// its plan's queue type, it claims one (a cached read that shows none is read again
    /// first); a claim another sign-up won first is asked again from the cell as the refusal
    /// returned it, for `CLAIM_ROUNDS`, then the vhost is created instead. `None`: the cell
    /// refused (full, or not open).
    async fn place_in(
        &self,
        record: &TenantRecord,
        view: &CellView<'_>,
        connections: u64,
        fresh: bool,
    ) -> Result<Option<Created>, StepError> {
        let pooled = self
            .queue_type_of(&record.plan)
            .filter(|t| view.cell.pool_size(*t) > 0);
        let mut ready: Vec<String> = view.ready_of(pooled).to_vec();
        if let Some(t) = pooled
            && ready.is_empty()
            && !fresh
        {
            // A refill may have landed since: read again before creating a vhost (the slow
            // step the pool is for).
            let views = self.views(true).await?;
            let now = views.iter().find(|v| v.cell.name == view.cell.name);
            ready = now
                .map(|v| v.ready_of(Some(t)).to_vec())
                .unwrap_or_default();
        }
        let mut lost: HashSet<String> = HashSet::new();
        for round in 0..=CLAIM_ROUNDS {
            let claim = pooled
                .filter(|_| round < CLAIM_ROUNDS)
                .and_then(|t| pick(&record.sub, &ready, &lost).map(|v| (v, t)));
            match self
                .inner
                .registry
                .place(record, &self.seat(view, connections, claim))
                .await?
            {
                Placed::New(r) => {
                    self.note_seat(&view.cell.name, connections, claim);
                    if pooled.is_some() {
                        crate::metrics::pool_claim(if claim.is_some() {
                            "claimed"
                        } else {
                            "empty"
                        });
                    }
                    return Ok(Some(Created::New(r)));
                }
                Placed::Existing(r) => return Ok(Some(Created::Existing(r))),
                Placed::Refused(as_it_was) => {
                    self.forget_view();
                    let Some((vhost, t)) = claim else {
                        return Ok(None);
                    };
                    // Claimed first by another sign-up (or the cell filled or closed): pick
                    // again from the cell as it was when it refused.
                    lost.insert(vhost.to_owned());
                    ready = match as_it_was {
                        Some(item) => item.ready_of(t).to_vec(),
                        None => ready,
                    };
                }
            }
        }
        Ok(None)
    }

    /// Records a tenant whose vhost already exists in `cell` (adoption, a record lost): it
    /// takes a seat there whatever the room, because it is there.
    pub async fn record_in(&self, record: &TenantRecord, cell: &str) -> Result<Created, StepError> {
        let registry = &self.inner.registry;
        if !self.counts() {
            return registry.create(record).await;
        }
        let connections = self.connections_of(&record.plan);
        let seat = Seat {
            cell,
            max_tenants: u64::MAX,
            max_connections: u64::MAX,
            connections,
            open_by_file: true,
            claim: None,
        };
        // Not conditioned on the cell's state either: an existing vhost is counted as it is.
        match registry.place_anyway(record, &seat).await? {
            Placed::New(r) => Ok(Created::New(r)),
            Placed::Existing(r) => Ok(Created::Existing(r)),
            Placed::Refused(_) => Err(StepError::new(
                System::Registry,
                format!("record tenant {} in cell '{cell}'", record.sub),
                FailureKind::Conflict,
                "refused; try again",
            )),
        }
    }

    /// Gives a seat to a tenant that should hold one and does not: a restored tenant whose
    /// vhost was removed (its seat was given back) takes one only if its cell has room and is
    /// open; a tenant recorded before cells were declared (cell `default`, its vhost on the
    /// first cell's broker) is counted as it is, and its record names the real cell from then.
    /// `Some(connections)`: the seat taken (the record's version grew by one); `None`: nothing
    /// to take, or the record moved on.
    pub async fn reseat(&self, record: &TenantRecord) -> Result<Option<u64>, StepError> {
        if !self.counts() || record.seat_connections.is_some() {
            return Ok(None);
        }
        let cell = self.inner.cells.require(&record.cell)?;
        let views = self.views(true).await?;
        let view = views
            .iter()
            .find(|v| v.cell.name == cell.name)
            .expect("every declared cell has a view");
        let enforce = record.is_pending("restore");
        let connections = self.connections_of(&record.plan);
        let seated = self
            .inner
            .registry
            .reseat(record, &self.seat(view, connections, None), enforce)
            .await?;
        self.forget_view();
        Ok(seated.then_some(connections))
    }

    /// Keeps a tenant's seat counting what its plan grants now (a plan change moves the
    /// cell's connection count with it). A seat that grows is refused past the cell's
    /// `capacity.connections`, with an error naming the cell and the limit. `Some(connections)`:
    /// resized (the record's version grew by one); `None`: nothing to do, or the record moved on.
    pub async fn resize_seat(&self, record: &TenantRecord) -> Result<Option<u64>, StepError> {
        let wanted = self.connections_of(&record.plan);
        match record.seat_connections {
            Some(c) if self.counts() && c != wanted => {
                let max = self
                    .inner
                    .cells
                    .resolve(&record.cell)
                    .and_then(|cell| cell.capacity.connections);
                let resized = self.inner.registry.resize_seat(record, wanted, max).await?;
                self.forget_view();
                Ok(resized.then_some(wanted))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::Cells;

    const FILE: &str = r#"
cells:
  - name: a
    management_url: http://a:15672
    amqp_url: amqp://a:5672
    admin_secret_id: a-admin
    capacity: {vhosts: 1000, connections: 100000}
  - name: b
    management_url: http://b:15672
    amqp_url: amqp://b:5672
    admin_secret_id: b-admin
    capacity: {vhosts: 1000, connections: 100000}
  - name: c
    management_url: http://c:15672
    amqp_url: amqp://c:5672
    admin_secret_id: c-admin
    capacity: {vhosts: 10, connections: 100}
"#;

    fn views(cells: &Cells, counts: &[(u64, u64, CellState)]) -> Vec<CellView<'static>> {
        let cells: &'static Cells = Box::leak(Box::new(cells.clone()));
        cells
            .all()
            .iter()
            .zip(counts)
            .map(|(cell, (t, c, s))| CellView {
                cell,
                state: *s,
                tenants: *t,
                connections: *c,
                ready: BTreeMap::new(),
            })
            .collect()
    }

    fn sub(i: usize) -> String {
        format!("4f8e2b1a-0c3d-4e5f-8a9b-{i:012x}")
    }

    #[test]
    fn one_tenant_ranks_the_same_every_time_and_only_cells_with_room() {
        let cells = Cells::parse("t", FILE).unwrap();
        let open = CellState::Open;
        let v = views(&cells, &[(0, 0, open), (0, 0, open), (10, 0, open)]);
        let first = rank(&sub(1), &v, 10, None);
        assert_eq!(first, rank(&sub(1), &v, 10, None), "deterministic");
        let names: Vec<_> = first.iter().map(|c| c.name.as_str()).collect();
        assert!(!names.contains(&"c"), "full: {names:?}");
        assert_eq!(names.len(), 2);
        let v = views(
            &cells,
            &[(0, 0, CellState::Draining), (0, 99_995, open), (0, 0, open)],
        );
        let names: Vec<_> = rank(&sub(1), &v, 10, None)
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            names,
            ["c"],
            "a draining cell and one without connections left"
        );
    }

    #[test]
    fn tenants_spread_in_proportion_to_free_capacity() {
        let cells = Cells::parse("t", FILE).unwrap();
        let open = CellState::Open;
        // a: 900 free, b: 100 free, c: full.
        let v = views(&cells, &[(100, 0, open), (900, 0, open), (10, 0, open)]);
        let mut first_a = 0;
        for i in 0..4000 {
            if rank(&sub(i), &v, 10, None)[0].name == "a" {
                first_a += 1;
            }
        }
        let share = f64::from(first_a) / 4000.0;
        assert!(
            (0.87..0.93).contains(&share),
            "a's share {share}, expected ~0.9"
        );
    }

    #[test]
    fn a_full_cell_with_ready_vhosts_takes_claims_and_claims_spread_over_the_pool() {
        let cells = Cells::parse("t", FILE).unwrap();
        let mut v = views(
            &cells,
            &[
                (1000, 0, CellState::Open),
                (1000, 0, CellState::Open),
                (10, 0, CellState::Open),
            ],
        );
        let ready: Vec<String> = (0..50).map(|i| format!("pool-quorum-1-{i:08x}")).collect();
        v[0].ready.insert(QueueType::Quorum, ready.clone());
        let q = Some(QueueType::Quorum);
        assert!(
            v[0].has_room(10, q),
            "every seat taken, some by ready vhosts"
        );
        assert!(
            !v[0].has_room(10, Some(QueueType::Classic)),
            "none of its queue type"
        );
        assert!(!v[1].has_room(10, q));
        assert_eq!(rank(&sub(1), &v, 10, q).len(), 1);
        let none = HashSet::new();
        let first = pick(&sub(1), &ready, &none).unwrap();
        assert_eq!(
            Some(first),
            pick(&sub(1), &ready, &none),
            "a retry asks for the same one"
        );
        let lost = HashSet::from([first.to_owned()]);
        assert_ne!(
            pick(&sub(1), &ready, &lost),
            Some(first),
            "and another once it lost it"
        );
        let distinct: HashSet<&str> = (0..40)
            .filter_map(|i| pick(&sub(i), &ready, &none))
            .collect();
        assert!(
            distinct.len() > 20,
            "40 sign-ups over 50 vhosts ask for {} of them",
            distinct.len()
        );
    }

    #[test]
    fn a_cell_says_why_it_takes_no_tenant() {
        let cells = Cells::parse("t", FILE).unwrap();
        let v = views(
            &cells,
            &[
                (1000, 5, CellState::Open),
                (1, 5, CellState::Draining),
                (3, 95, CellState::Open),
            ],
        );
        assert_eq!(
            v[0].why_not(10),
            "a: full (1000/1000 vhosts, 5/100000 connections)"
        );
        assert_eq!(v[1].why_not(10), "b: draining");
        assert_eq!(
            v[2].why_not(10),
            "c: connections full (3/10 vhosts, 95/100 connections)"
        );
    }
}
