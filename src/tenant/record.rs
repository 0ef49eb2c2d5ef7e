//! The tenant's record: what a person decided (intent), never derived from what the safety net
//! repairs. Pure: its storage is `outside::registry`, its changes `tenant::transition`.
//!
//! - Writes that publish a lifecycle event set `event` (and bump `event_seq`); every other write
//!   removes it. The table's stream, filtered on `event`, is the event feed (an EventBridge Pipe
//!   in the template): a crash between a write and a publish loses nothing, because the write
//!   *is* the publish.
//! - The outcome fields (provisioned / handed off / failed, with the failing step's kind) are
//!   observations, written with plain updates that never touch the intent fields.

use serde::{Deserialize, Serialize};

use crate::tenant::plan::{Plans, TenantState};
use crate::tenant::{TenantId, TenantIdError};

/// The cell of a tenant recorded without cells (a single-broker installation), and of every
/// record made before cells: the implicit cell's name.
pub const DEFAULT_CELL: &str = "default";

/// Where a tenant is in its life: the intent the systems converge to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Active,
    Suspended,
    Offboarded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::Suspended => "suspended",
            Phase::Offboarded => "offboarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "offboarded" => Some(Self::Offboarded),
            _ => None,
        }
    }
}

/// The last thing that happened to the tenant's provisioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastOutcome {
    /// Recorded, not provisioned yet.
    Pending,
    Provisioned,
    HandedOff,
    Failed,
}

/// The lifecycle events published from the registry's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TenantOnboarded,
    TenantHandedOff,
    TenantPlanChanged,
    TenantSuspended,
    TenantResumed,
    TenantRotated,
    TenantOffboarded,
    TenantRestored,
    /// Its credentials now point at another cell's broker (`tenantctl move`).
    TenantMoved,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::TenantOnboarded => "TenantOnboarded",
            Event::TenantHandedOff => "TenantHandedOff",
            Event::TenantPlanChanged => "TenantPlanChanged",
            Event::TenantSuspended => "TenantSuspended",
            Event::TenantResumed => "TenantResumed",
            Event::TenantRotated => "TenantRotated",
            Event::TenantOffboarded => "TenantOffboarded",
            Event::TenantRestored => "TenantRestored",
            Event::TenantMoved => "TenantMoved",
        }
    }
}

/// One tenant's item. Timestamps are RFC 3339 (UTC); no field ever holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pool_id: Option<String>,
    pub state: Phase,
    pub plan: String,
    pub generation: u32,
    /// Where the tenant lives (its broker).
    pub cell: String,
    /// The vhost made ahead that the tenant claimed when it was placed (`pool-…`); `None`: its
    /// vhost is named by its `sub`. Every path reads it through `tenant()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// The tenant holds a seat in its cell's counters (placed there with a conditional count),
    /// with this many connections granted; released when its vhost is removed. `None`: not
    /// counted (the implicit cell of a single-broker installation, or released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_connections: Option<u64>,
    /// A move to another cell in progress (`tenantctl move`): where from, where to, and the
    /// last step done, so a re-run resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveProgress>,
    /// Offboarded with its vhost (and messages) kept: never pruned, never removed by a repair.
    #[serde(default)]
    pub retain_data: bool,
    /// Who wrote the item first: `sign-up`, `worker`, `reconciler`, `adopted`, `operator`.
    pub origin: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offboarded_at: Option<String>,
    /// When the current password generation was made (connections older than this use an old
    /// password and are closed once the backend has rolled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    /// Bumped by every transition; the condition of the next one.
    pub version: u64,
    /// The version whose intent was last fully applied everywhere.
    #[serde(default)]
    pub converged_version: u64,
    /// The transitions not yet applied everywhere, oldest first and comma-separated
    /// (`rotate,plan`), if any: a later change never drops an earlier one that is unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    pub outcome: LastOutcome,
    /// The failing step and its kind (`rabbitmq.vhost: timeout`), never a message or a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_at: Option<String>,
    /// The event this write published (see the module doc), and a per-tenant counter of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    #[serde(default)]
    pub event_seq: u64,
    /// One writer per tenant: who applies the record to the world now (`tenant::lease`), until
    /// when (milliseconds since the epoch) and since when. Only the holder changes the world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_since: Option<String>,
    /// The fencing number: bumped by every taking of the lease, never lowered; a holder's
    /// writes carry it, so a holder whose lease was taken over is refused.
    #[serde(default)]
    pub lease_fence: u64,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

impl TenantRecord {
    /// A tenant as a sign-up starts it: the default plan, active, first password.
    pub fn new(tenant: &TenantId, user_pool_id: Option<&str>, plans: &Plans, origin: &str) -> Self {
        Self::from_state(tenant, user_pool_id, &TenantState::new(plans), origin)
    }

    /// A record of `state` (what `adopt` reads off an existing tenant's objects).
    pub fn from_state(
        tenant: &TenantId,
        user_pool_id: Option<&str>,
        state: &TenantState,
        origin: &str,
    ) -> Self {
        Self {
            sub: tenant.as_str().to_owned(),
            user_pool_id: user_pool_id.map(str::to_owned),
            state: if state.suspended {
                Phase::Suspended
            } else {
                Phase::Active
            },
            plan: state.plan.clone(),
            generation: state.generation,
            cell: DEFAULT_CELL.to_owned(),
            vhost: None,
            seat_connections: None,
            moving: None,
            retain_data: false,
            origin: origin.to_owned(),
            created_at: now(),
            changed_at: None,
            provisioned_at: None,
            handed_off_at: None,
            offboarded_at: None,
            rotated_at: None,
            version: 1,
            converged_version: 0,
            pending: None,
            outcome: LastOutcome::Pending,
            outcome_detail: None,
            outcome_at: None,
            event: None,
            event_seq: 0,
            lease_holder: None,
            lease_until_ms: None,
            lease_since: None,
            lease_fence: 0,
        }
    }

    /// The tenant the record is of: its `sub` parsed (an item written by hand may hold junk).
    pub fn tenant(&self) -> Result<TenantId, BadRecord> {
        TenantId::parse(&self.sub)
            .map(|t| t.in_vhost(self.vhost.as_deref()))
            .map_err(BadRecord)
    }

    /// The state the systems converge to; `None` for an offboarded tenant (nothing to provision).
    pub fn desired(&self) -> Option<TenantState> {
        match self.state {
            Phase::Offboarded => None,
            s => Some(TenantState {
                plan: self.plan.clone(),
                suspended: s == Phase::Suspended,
                generation: self.generation,
            }),
        }
    }

    /// The changes recorded and not yet applied everywhere (`rotate`, `plan`, …), oldest first.
    pub fn pending_changes(&self) -> impl Iterator<Item = &str> {
        self.pending
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|c| !c.is_empty())
    }

    /// Whether `change` (a `Change::name`) is among the changes not yet applied.
    pub fn is_pending(&self, change: &str) -> bool {
        self.pending_changes().any(|c| c == change)
    }

    /// Everything this version asks for has been applied.
    pub fn converged(&self) -> bool {
        self.converged_version >= self.version
    }

    /// The created time as a timestamp (for the prune's minimum age).
    pub fn created(&self) -> Option<jiff::Timestamp> {
        self.created_at.parse().ok()
    }

    pub fn rotated(&self) -> Option<jiff::Timestamp> {
        self.rotated_at.as_deref().and_then(|t| t.parse().ok())
    }
}

/// A move's progress, in the tenant's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveProgress {
    pub from: String,
    pub to: String,
    /// The last step done: `seated`, `copied`, `shovelled`, `switched`, `drained`.
    pub step: String,
    pub started_at: String,
    /// What the tenant's seat in `from` counted (`None`: it held none there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_seat: Option<u64>,
}

#[cfg(test)]
impl MoveProgress {
    /// A move from cell `a` to `b`, its definitions copied (for tests).
    pub(crate) fn example() -> Self {
        Self {
            from: "a".into(),
            to: "b".into(),
            step: "copied".into(),
            started_at: "2026-11-30T12:00:00Z".into(),
            source_seat: Some(20),
        }
    }
}

/// A record whose `sub` is not a tenant id (an item written by hand, or corrupted).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("item with sub {0}")]
pub struct BadRecord(pub TenantIdError);
