//! The tenant registry: one DynamoDB item per tenant, the record of what a person decided
//! (intent), never derived from what the safety net repairs.
//!
//! - The trigger writes the item first, with a conditional create, beside the other steps: a
//!   duplicate or a Cognito retry finds the item already there and converges on it.
//! - Every operator change is a transition of the item guarded by its `version` (optimistic
//!   concurrency, as Kubernetes' `resourceVersion`): a concurrent change is refused with
//!   "changed meanwhile", never silently overwritten. Only then are the systems converged.
//! - Writes that publish a lifecycle event set `event` (and bump `event_seq`); every other write
//!   removes it. The table's stream, filtered on `event`, is the event feed (an EventBridge Pipe
//!   in the template): a crash between a write and a publish loses nothing, because the write
//!   *is* the publish.
//! - The outcome fields (provisioned / handed off / failed, with the failing step's kind) are
//!   observations, written with plain updates that never touch the intent fields.

use crate::cells::CellState;
use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

use crate::outside::aws::sdk_error;
use crate::outside::error::{FailureKind, StepError, System};
use crate::tenant::TenantId;
use crate::tenant::plan::{Plans, TenantState};

/// The cell a tenant lives in while there is one broker (the cells issue adds more).
pub const DEFAULT_CELL: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Active,
    Suspended,
    Offboarded,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Offboarded => "offboarded",
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
    pub state: Lifecycle,
    pub plan: String,
    pub generation: u32,
    /// Where the tenant lives (its broker).
    pub cell: String,
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
    /// The transition not yet applied everywhere (`rotate`, `suspend`, …), if any.
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
                Lifecycle::Suspended
            } else {
                Lifecycle::Active
            },
            plan: state.plan.clone(),
            generation: state.generation,
            cell: DEFAULT_CELL.to_owned(),
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
        }
    }

    pub fn tenant(&self) -> Result<TenantId, StepError> {
        TenantId::parse(&self.sub).map_err(|e| {
            StepError::new(
                System::Registry,
                "read tenant record",
                FailureKind::BadResponse,
                format!("item with sub {e}"),
            )
        })
    }

    /// The state the systems converge to; `None` for an offboarded tenant (nothing to provision).
    pub fn desired(&self) -> Option<TenantState> {
        match self.state {
            Lifecycle::Offboarded => None,
            s => Some(TenantState {
                plan: self.plan.clone(),
                suspended: s == Lifecycle::Suspended,
                generation: self.generation,
            }),
        }
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

/// An operator's change to a tenant's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Plan(String),
    Suspend,
    Resume,
    Rotate,
    Offboard { retain_data: bool },
    Restore,
}

impl Change {
    pub fn name(&self) -> &'static str {
        match self {
            Change::Plan(_) => "plan",
            Change::Suspend => "suspend",
            Change::Resume => "resume",
            Change::Rotate => "rotate",
            Change::Offboard { .. } => "offboard",
            Change::Restore => "restore",
        }
    }

    fn event(&self) -> Event {
        match self {
            Change::Plan(_) => Event::TenantPlanChanged,
            Change::Suspend => Event::TenantSuspended,
            Change::Resume => Event::TenantResumed,
            Change::Rotate => Event::TenantRotated,
            Change::Offboard { .. } => Event::TenantOffboarded,
            Change::Restore => Event::TenantRestored,
        }
    }
}

/// Why a change cannot be made to the record as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("tenant {sub} is {state}: {change} is not possible (restore it first)")]
    Offboarded {
        sub: String,
        state: &'static str,
        change: &'static str,
    },
    #[error("tenant {sub} is {state}, not offboarded: nothing to restore")]
    NotOffboarded { sub: String, state: &'static str },
    #[error("tenant {sub} is not suspended: nothing to resume")]
    NotSuspended { sub: String },
    #[error(
        "tenant {sub} is moving to cell '{to}': finish the move first (`tenantctl move --sub {sub} --to {to}`)"
    )]
    Moving { sub: String, to: String },
}

/// What a change does to a record: the new record, or `None` when the record already says so
/// (the command then only finishes converging).
pub fn transition(
    record: &TenantRecord,
    change: &Change,
    at: &str,
) -> Result<Option<TenantRecord>, TransitionError> {
    use Lifecycle::*;
    let sub = record.sub.clone();
    if let Some(m) = &record.moving {
        return Err(TransitionError::Moving {
            sub,
            to: m.to.clone(),
        });
    }
    let offboarded = || TransitionError::Offboarded {
        sub: sub.clone(),
        state: record.state.as_str(),
        change: change.name(),
    };
    let mut next = record.clone();
    match (change, record.state) {
        (Change::Restore, Offboarded) => {
            next.state = Active;
            next.retain_data = false;
            next.offboarded_at = None;
            // The old password may be why the tenant left: a restored tenant never gets it back.
            next.generation += 1;
            next.rotated_at = Some(at.to_owned());
        }
        (Change::Restore, s) => {
            return Err(TransitionError::NotOffboarded {
                sub,
                state: s.as_str(),
            });
        }
        (Change::Offboard { retain_data }, Offboarded) => {
            // Dropping kept data is a further step; data already removed cannot be kept.
            if !record.retain_data || *retain_data {
                return Ok(None);
            }
            next.retain_data = false;
        }
        (_, Offboarded) => return Err(offboarded()),
        (Change::Offboard { retain_data }, _) => {
            next.state = Offboarded;
            next.retain_data = *retain_data;
            next.offboarded_at = Some(at.to_owned());
        }
        (Change::Plan(plan), _) => {
            if &record.plan == plan {
                return Ok(None);
            }
            next.plan = plan.clone();
        }
        (Change::Suspend, Suspended) => return Ok(None),
        (Change::Suspend, Active) => next.state = Suspended,
        (Change::Resume, Suspended) => next.state = Active,
        (Change::Resume, Active) => return Err(TransitionError::NotSuspended { sub }),
        // A rotation recorded but not applied everywhere is finished, not rotated again.
        (Change::Rotate, _)
            if record.pending.as_deref() == Some("rotate") && !record.converged() =>
        {
            return Ok(None);
        }
        (Change::Rotate, _) => {
            next.generation += 1;
            next.rotated_at = Some(at.to_owned());
        }
    }
    next.version = record.version + 1;
    next.changed_at = Some(at.to_owned());
    next.pending = Some(change.name().to_owned());
    next.event = Some(change.event());
    next.event_seq = record.event_seq + 1;
    Ok(Some(next))
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

/// A cell's item in the registry: an operator's state, and the counters placement keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellItem {
    /// `None`: no operator set one (the cells file's state holds).
    pub state: Option<CellState>,
    /// Tenants holding a seat (each has a vhost on the cell's broker, or is about to).
    pub tenants: u64,
    /// The sum of their plans' connection limits when they were placed.
    pub connections: u64,
}

/// A seat asked of one cell: the limits its count must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Seat<'a> {
    pub cell: &'a str,
    pub max_tenants: u64,
    pub max_connections: u64,
    /// The connections this tenant's plan grants.
    pub connections: u64,
    /// Whether the cells file says `open` (the registry's state, when set, wins).
    pub open_by_file: bool,
}

/// The result of a placement's transaction.
#[derive(Debug, Clone)]
pub enum Placed {
    /// This call wrote the record and took the seat.
    New(TenantRecord),
    /// The tenant had a record already (a duplicate, a retry): it lives where that one says.
    Existing(TenantRecord),
    /// The cell is full, or not open: nothing was written.
    Refused,
}

/// The result of the conditional create.
#[derive(Debug, Clone)]
pub enum Created {
    /// This call wrote the item.
    New(TenantRecord),
    /// The item was already there (a retry, a duplicate, or a tenant with a history).
    Existing(TenantRecord),
}

impl Created {
    pub fn record(&self) -> &TenantRecord {
        match self {
            Created::New(r) | Created::Existing(r) => r,
        }
    }
}

/// A page of `list`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<TenantRecord>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<Lifecycle>,
    pub plan: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Registry {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A cell's item in the registry table: `cell#<name>` (no tenant id has a `#`).
const CELL_KEY_PREFIX: &str = "cell#";

fn cell_key(name: &str) -> String {
    format!("{CELL_KEY_PREFIX}{name}")
}

fn key(sub: &str) -> Item {
    HashMap::from([("sub".to_owned(), s(sub))])
}

fn decode(system_action: &str, item: Item) -> Result<TenantRecord, StepError> {
    serde_dynamo::from_item(item).map_err(|e| {
        StepError::new(
            System::Registry,
            system_action,
            FailureKind::BadResponse,
            format!("malformed item: {e}"),
        )
    })
}

/// A request or item that could not be built (a bug, never an outage), for `action`.
fn unbuilt<E: std::fmt::Display>(action: &str) -> impl Fn(E) -> StepError + Copy + '_ {
    move |e| StepError::new(System::Registry, action, FailureKind::Other, e.to_string())
}

/// `#name` → `name` for every alias in `expressions`: every attribute is named through an alias,
/// so no attribute name can collide with DynamoDB's reserved words (`state`, `plan`, …).
fn aliases(expressions: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for e in expressions {
        let mut rest = *e;
        while let Some(i) = rest.find('#') {
            let tail = &rest[i + 1..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(format!("#{}", &tail[..end]), tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

/// How a transaction ended when it was not an error: written, or cancelled because these of
/// its items' conditions failed (each with the item as it was, when one was asked for).
enum Transacted {
    Written,
    ConditionsFailed(Vec<(bool, Option<Item>)>),
}

impl Transacted {
    fn failed(&self, i: usize) -> bool {
        matches!(self, Transacted::ConditionsFailed(r) if r.get(i).is_some_and(|(f, _)| *f))
    }
}

fn is_condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

impl Registry {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The tenant's item, read consistently; `None` when it has none.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, StepError> {
        let action = format!("read tenant {tenant}");
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        out.item.map(|i| decode(&action, i)).transpose()
    }

    /// Writes `record` unless the tenant has an item already; then that item comes back in the
    /// same call (`ReturnValuesOnConditionCheckFailure`), so duplicates converge on one record
    /// with no read first.
    pub async fn create(&self, record: &TenantRecord) -> Result<Created, StepError> {
        let action = format!("record tenant {}", record.sub);
        let item: Item = serde_dynamo::to_item(record).map_err(unbuilt(&action))?;
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sub)")
            .expression_attribute_names("#sub", "sub")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Created::New(record.clone())),
            Err(e) => {
                let old = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        Some(c.item.clone())
                    }
                    _ => None,
                });
                match old {
                    Some(Some(item)) => Ok(Created::Existing(decode(&action, item)?)),
                    Some(None) => {
                        let tenant = record.tenant()?;
                        let existing = self.get(&tenant).await?.ok_or_else(|| {
                            StepError::new(
                                System::Registry,
                                &action,
                                FailureKind::BadResponse,
                                "the item exists and does not",
                            )
                        })?;
                        Ok(Created::Existing(existing))
                    }
                    None => Err(sdk_error(System::Registry, &action, e)),
                }
            }
        }
    }

    /// Writes the intent fields of `after` if the item is still at `before.version`; a
    /// concurrent change gets [`FailureKind::Conflict`] and nothing is written.
    pub async fn transition(
        &self,
        before: &TenantRecord,
        after: &TenantRecord,
    ) -> Result<(), StepError> {
        let action = format!(
            "change tenant {} ({})",
            after.sub,
            after.pending.as_deref().unwrap_or("change")
        );
        let mut set = vec![
            "#state = :state",
            "#plan = :plan",
            "#generation = :generation",
            "#retain_data = :retain",
            "#version = :version",
            "#changed_at = :changed",
            "#event_seq = :seq",
        ];
        let mut remove = Vec::new();
        let mut values: Item = HashMap::from([
            (":state".to_owned(), s(after.state.as_str())),
            (":plan".to_owned(), s(&after.plan)),
            (":generation".to_owned(), n(after.generation.into())),
            (
                ":retain".to_owned(),
                AttributeValue::Bool(after.retain_data),
            ),
            (":version".to_owned(), n(after.version)),
            (":expected".to_owned(), n(before.version)),
            (
                ":changed".to_owned(),
                s(after.changed_at.clone().unwrap_or_else(now)),
            ),
            (":seq".to_owned(), n(after.event_seq)),
        ]);
        let optional = [
            ("#offboarded_at", ":offboarded", after.offboarded_at.clone()),
            ("#rotated_at", ":rotated", after.rotated_at.clone()),
            ("#pending", ":pending", after.pending.clone()),
            (
                "#event",
                ":event",
                after.event.map(|e| e.as_str().to_owned()),
            ),
        ];
        let mut set_owned = Vec::new();
        for (field, placeholder, value) in optional {
            match value {
                Some(v) => {
                    set_owned.push(format!("{field} = {placeholder}"));
                    values.insert(placeholder.to_owned(), s(v));
                }
                None => remove.push(field),
            }
        }
        set.extend(set_owned.iter().map(String::as_str));
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&after.sub)))
            .set_expression_attribute_names(Some(aliases(&[&expression, "#version"])))
            .update_expression(expression)
            .condition_expression("#version = :expected")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Err(StepError::new(
                System::Registry,
                action,
                FailureKind::Conflict,
                format!(
                    "the tenant changed meanwhile (version {} is no longer current); nothing was changed: read it again and retry",
                    before.version
                ),
            )),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }

    /// Records that `version`'s intent is applied everywhere — for a tenant that is not
    /// offboarded (`provisioned`), also the outcome `provisioned`; the first time a tenant is
    /// provisioned this publishes `TenantOnboarded`. `false` when the record has moved on to a
    /// newer version (which stays pending) or is gone.
    pub async fn record_converged(
        &self,
        tenant: &TenantId,
        version: u64,
        provisioned: bool,
    ) -> Result<bool, StepError> {
        let action = format!("record tenant {tenant} converged");
        let at = now();
        let update = |first: bool| {
            let mut set = vec!["#converged_version = :v"];
            let mut remove = vec!["#pending"];
            let mut values: Item = HashMap::from([(":v".to_owned(), n(version))]);
            if provisioned {
                set.extend([
                    "#outcome = :outcome",
                    "#outcome_at = :at",
                    "#provisioned_at = if_not_exists(#provisioned_at, :at)",
                ]);
                remove.push("#outcome_detail");
                values.insert(":outcome".to_owned(), s("provisioned"));
                values.insert(":at".to_owned(), s(&at));
            }
            let mut condition = String::from("attribute_exists(#sub) AND #version = :v");
            if first {
                set.extend([
                    "#event = :event",
                    "#event_seq = if_not_exists(#event_seq, :zero) + :one",
                ]);
                values.insert(":event".to_owned(), s(Event::TenantOnboarded.as_str()));
                values.insert(":zero".to_owned(), n(0));
                values.insert(":one".to_owned(), n(1));
                condition.push_str(" AND attribute_not_exists(#provisioned_at)");
            } else {
                remove.push("#event");
            }
            let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(tenant.as_str())))
                .set_expression_attribute_names(Some(aliases(&[&expression, &condition])))
                .update_expression(expression)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .send()
        };
        // First try: a tenant never provisioned before publishes TenantOnboarded, once.
        if provisioned {
            match update(true).await {
                Ok(_) => return Ok(true),
                Err(e) if e.as_service_error().is_some_and(is_condition_failed) => {}
                Err(e) => return Err(sdk_error(System::Registry, &action, e)),
            }
        }
        match update(false).await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Ok(false),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }

    /// Records an outcome that is not "provisioned": handed off (publishes `TenantHandedOff`)
    /// or failed (with the failing step and its kind).
    pub async fn record_unfinished(
        &self,
        tenant: &TenantId,
        outcome: LastOutcome,
        detail: Option<&str>,
    ) -> Result<(), StepError> {
        let action = format!("record tenant {tenant} outcome");
        let at = now();
        let mut values: Item = HashMap::from([
            (
                ":outcome".to_owned(),
                s(match outcome {
                    LastOutcome::HandedOff => "handed-off",
                    LastOutcome::Failed => "failed",
                    LastOutcome::Pending => "pending",
                    LastOutcome::Provisioned => "provisioned",
                }),
            ),
            (":at".to_owned(), s(&at)),
        ]);
        let mut expression = String::from("SET #outcome = :outcome, #outcome_at = :at");
        if let Some(d) = detail {
            expression.push_str(", #outcome_detail = :detail");
            values.insert(":detail".to_owned(), s(d));
        }
        if outcome == LastOutcome::HandedOff {
            expression.push_str(", #handed_off_at = :at, #event = :event, #event_seq = if_not_exists(#event_seq, :zero) + :one");
            values.insert(":event".to_owned(), s(Event::TenantHandedOff.as_str()));
            values.insert(":zero".to_owned(), n(0));
            values.insert(":one".to_owned(), n(1));
        } else {
            expression.push_str(" REMOVE #event");
        }
        if detail.is_none() {
            expression.push_str(if expression.contains("REMOVE") {
                ", #outcome_detail"
            } else {
                " REMOVE #outcome_detail"
            });
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .set_expression_attribute_names(Some(aliases(&[&expression, "#sub"])))
            .update_expression(expression)
            .condition_expression("attribute_exists(#sub)")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map(drop)
            .or_else(|e| {
                // No item (the registry was down at sign-up): whoever finishes the tenant
                // writes it. An outcome alone is not intent.
                if e.as_service_error().is_some_and(is_condition_failed) {
                    Ok(())
                } else {
                    Err(sdk_error(System::Registry, &action, e))
                }
            })
    }

    /// One page of records (at most `limit`, DynamoDB's own 1 MB page bound too), filtered.
    pub async fn page(
        &self,
        filter: &ListFilter,
        start: Option<&str>,
        limit: i32,
    ) -> Result<Page, StepError> {
        let action = format!("list tenants of table '{}'", self.table);
        // The cells' items (their state) share the table; they are not tenants.
        let mut conditions = vec!["NOT begins_with(#sub, :cell_prefix)"];
        let mut values: Item = HashMap::from([(":cell_prefix".to_owned(), s(CELL_KEY_PREFIX))]);
        if let Some(state) = filter.state {
            conditions.push("#state = :state");
            values.insert(":state".to_owned(), s(state.as_str()));
        }
        if let Some(plan) = &filter.plan {
            conditions.push("#plan = :plan");
            values.insert(":plan".to_owned(), s(plan));
        }
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(limit.clamp(1, 1000))
            .set_exclusive_start_key(start.map(key));
        let expression = conditions.join(" AND ");
        scan = scan
            .set_expression_attribute_names(Some(aliases(&[&expression])))
            .filter_expression(expression)
            .set_expression_attribute_values(Some(values));
        let out = scan
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        let records = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| decode(&action, i))
            .collect::<Result<Vec<_>, _>>()?;
        let next = out
            .last_evaluated_key
            .and_then(|k| k.get("sub").and_then(|v| v.as_s().ok()).cloned());
        Ok(Page { records, next })
    }

    /// The state operators gave each of `names` (`tenantctl cell drain`); a cell missing from the
    /// answer has none yet (its file's state holds).
    pub async fn cell_states(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, CellState>, StepError> {
        Ok(self
            .cell_items(names)
            .await?
            .into_iter()
            .filter_map(|(name, item)| item.state.map(|s| (name, s)))
            .collect())
    }

    /// Each of `names`' item (state and counters), read consistently; a cell with no item is
    /// absent from the answer.
    pub async fn cell_items(&self, names: &[&str]) -> Result<HashMap<String, CellItem>, StepError> {
        let action = format!("read cells of table '{}'", self.table);
        let mut out = HashMap::new();
        for chunk in names.chunks(100) {
            let keys = chunk.iter().map(|n| key(&cell_key(n))).collect::<Vec<_>>();
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(unbuilt(&action))?;
            let got = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error(System::Registry, &action, e))?;
            if got.unprocessed_keys.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(StepError::new(
                    System::Registry,
                    &action,
                    FailureKind::Throttled,
                    "some cell states were not read (throttled); try again",
                ));
            }
            for item in got
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                let name = item.get("sub").and_then(|v| v.as_s().ok()).cloned();
                let Some(name) = name
                    .as_deref()
                    .and_then(|n| n.strip_prefix(CELL_KEY_PREFIX))
                    .map(str::to_owned)
                else {
                    continue;
                };
                let number = |field: &str| {
                    item.get(field)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .map_or(0, |v| v.max(0) as u64)
                };
                let state = item
                    .get("cell_state")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| CellState::parse(s));
                out.insert(
                    name,
                    CellItem {
                        state,
                        tenants: number("tenants"),
                        connections: number("connections"),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Sends one transaction. A cancellation for failed conditions is an answer, not an error;
    /// one for a concurrent transaction on the same items (`TransactionConflict`) is transient.
    async fn transact(
        &self,
        action: &str,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<Transacted, StepError> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        let e = match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => return Ok(Transacted::Written),
            Err(e) => e,
        };
        let reasons = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                c.cancellation_reasons.clone().unwrap_or_default()
            }
            _ => return Err(sdk_error(System::Registry, action, e)),
        };
        let code = |r: &aws_sdk_dynamodb::types::CancellationReason| r.code.clone();
        if reasons
            .iter()
            .any(|r| code(r).as_deref() == Some("ConditionalCheckFailed"))
        {
            return Ok(Transacted::ConditionsFailed(
                reasons
                    .into_iter()
                    .map(|r| (r.code.as_deref() == Some("ConditionalCheckFailed"), r.item))
                    .collect(),
            ));
        }
        let mut err = sdk_error(System::Registry, action, e);
        if reasons
            .iter()
            .any(|r| code(r).as_deref() == Some("TransactionConflict"))
        {
            err.kind = FailureKind::Throttled;
        }
        Err(err)
    }

    /// `on_record` and a seat taken in `seat.cell`, in one transaction.
    async fn update_taking_seat(
        &self,
        action: &str,
        on_record: aws_sdk_dynamodb::types::Update,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<Transacted, StepError> {
        use aws_sdk_dynamodb::types::TransactWriteItem;
        let items = vec![
            TransactWriteItem::builder().update(on_record).build(),
            TransactWriteItem::builder()
                .update(self.take_seat(seat, enforce)?)
                .build(),
        ];
        self.transact(action, items).await
    }

    /// The update that moves `cell`'s counts by these amounts (a seat given back: -1 tenant and
    /// its connections; a plan change: its connections' difference).
    fn count_change(
        &self,
        cell: &str,
        tenants: i128,
        connections: i128,
    ) -> Result<aws_sdk_dynamodb::types::Update, aws_sdk_dynamodb::error::BuildError> {
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(cell))))
            .update_expression("ADD #tenants :tenants, #connections :connections")
            .expression_attribute_names("#tenants", "tenants")
            .expression_attribute_names("#connections", "connections")
            .expression_attribute_values(":tenants", AttributeValue::N(tenants.to_string()))
            .expression_attribute_values(":connections", AttributeValue::N(connections.to_string()))
            .build()
    }

    /// `on_record` and `on_cell` together; `false` when the record's condition failed (the
    /// change was made already, or the record moved on) and nothing was written.
    async fn record_and_cell(
        &self,
        action: &str,
        on_record: aws_sdk_dynamodb::types::Update,
        on_cell: aws_sdk_dynamodb::types::Update,
    ) -> Result<bool, StepError> {
        use aws_sdk_dynamodb::types::TransactWriteItem;
        let items = vec![
            TransactWriteItem::builder().update(on_record).build(),
            TransactWriteItem::builder().update(on_cell).build(),
        ];
        Ok(matches!(
            self.transact(action, items).await?,
            Transacted::Written
        ))
    }

    /// The update that takes a seat in `seat.cell`, conditioned on room and an open state.
    fn take_seat(
        &self,
        seat: &Seat,
        enforce: bool,
    ) -> Result<aws_sdk_dynamodb::types::Update, StepError> {
        let state_condition = if seat.open_by_file {
            "(attribute_not_exists(#cell_state) OR #cell_state = :open)"
        } else {
            "#cell_state = :open"
        };
        let condition = format!(
            "(attribute_not_exists(#tenants) OR #tenants < :max_tenants) AND \
             (attribute_not_exists(#connections) OR #connections <= :room) AND {state_condition}"
        );
        let expression = "SET #tenants = if_not_exists(#tenants, :zero) + :one, \
                          #connections = if_not_exists(#connections, :zero) + :c";
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(seat.cell))))
            .update_expression(expression)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":c", n(seat.connections));
        let update = if enforce {
            update
                .set_expression_attribute_names(Some(aliases(&[expression, &condition])))
                .condition_expression(condition)
                .expression_attribute_values(":max_tenants", n(seat.max_tenants))
                .expression_attribute_values(
                    ":room",
                    n(seat.max_connections.saturating_sub(seat.connections)),
                )
                .expression_attribute_values(":open", s(CellState::Open.as_str()))
        } else {
            update.set_expression_attribute_names(Some(aliases(&[expression])))
        };
        update.build().map_err(|e| {
            StepError::new(
                System::Registry,
                format!("place a tenant in cell '{}'", seat.cell),
                FailureKind::Other,
                e.to_string(),
            )
        })
    }

    /// Writes `record` (a new tenant's) in `seat.cell` and takes a seat there, in one
    /// transaction: the record only if the tenant has none, the seat only if the cell has room
    /// and is open. A tenant with a record already comes back as it is (`Existing`); a full or
    /// closed cell refuses and nothing is written.
    pub async fn place(&self, record: &TenantRecord, seat: &Seat<'_>) -> Result<Placed, StepError> {
        self.place_with(record, seat, true).await
    }

    /// As [`Registry::place`], counting the seat whatever the cell's room and state: for a
    /// tenant whose vhost is already on that cell's broker (adoption).
    pub async fn place_anyway(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
    ) -> Result<Placed, StepError> {
        self.place_with(record, seat, false).await
    }

    async fn place_with(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<Placed, StepError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let action = format!("place tenant {} in cell '{}'", record.sub, seat.cell);
        let mut placed = record.clone();
        placed.cell = seat.cell.to_owned();
        placed.seat_connections = Some(seat.connections);
        if enforce && seat.connections > seat.max_connections {
            return Ok(Placed::Refused);
        }
        let item: Item = serde_dynamo::to_item(&placed).map_err(unbuilt(&action))?;
        let other = unbuilt(&action);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sub)")
            .expression_attribute_names("#sub", "sub")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(other)?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder()
                .update(self.take_seat(seat, enforce)?)
                .build(),
        ];
        let reasons = match self.transact(&action, items).await? {
            Transacted::Written => return Ok(Placed::New(placed)),
            Transacted::ConditionsFailed(reasons) => reasons,
        };
        match reasons.into_iter().next() {
            Some((true, old)) => {
                let existing = match old {
                    Some(item) => decode(&action, item)?,
                    None => self.get(&record.tenant()?).await?.ok_or_else(|| {
                        StepError::new(
                            System::Registry,
                            &action,
                            FailureKind::Conflict,
                            "the record exists and does not; try again",
                        )
                    })?,
                };
                Ok(Placed::Existing(existing))
            }
            // The record's condition held: the seat's did not (full, or not open).
            _ => Ok(Placed::Refused),
        }
    }

    /// Gives back the seat of a tenant whose vhost is gone: the record stops counting and the
    /// cell's counters go down, once (the record's condition makes a repeat a no-op).
    pub async fn release_seat(&self, record: &TenantRecord) -> Result<bool, StepError> {
        let Some(connections) = record.seat_connections else {
            return Ok(false);
        };
        let action = format!(
            "release tenant {}'s seat in cell '{}'",
            record.sub, record.cell
        );
        // A failed condition: released already.
        self.change_seat(
            record,
            &action,
            "REMOVE #seat_connections",
            "attribute_exists(#seat_connections)",
            &[],
            (-1, -i128::from(connections)),
        )
        .await
    }

    /// Makes a tenant's seat count `connections` (its plan changed): the record's count and its
    /// cell's, together, once (the record's condition makes a repeat a no-op). `false`: the
    /// record had moved on (another change, a move) and nothing was written.
    pub async fn resize_seat(
        &self,
        record: &TenantRecord,
        connections: u64,
    ) -> Result<bool, StepError> {
        let Some(old) = record.seat_connections else {
            return Ok(false);
        };
        let action = format!(
            "count tenant {}'s seat in cell '{}' as {connections} connections",
            record.sub, record.cell
        );
        self.change_seat(
            record,
            &action,
            "SET #seat_connections = :new",
            "#seat_connections = :old",
            &[(":new", n(connections)), (":old", n(old))],
            (0, i128::from(connections) - i128::from(old)),
        )
        .await
    }

    /// `update` on the record of a tenant still in its cell (and `condition`), with its cell's
    /// counters moved by `(tenants, connections)`, in one transaction; `false`: a condition
    /// failed and nothing was written.
    async fn change_seat(
        &self,
        record: &TenantRecord,
        action: &str,
        update: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
        (tenants, connections): (i128, i128),
    ) -> Result<bool, StepError> {
        let condition = format!("{condition} AND #cell = :cell");
        let mut on_record = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&record.sub)))
            .update_expression(update)
            .condition_expression(&condition)
            .set_expression_attribute_names(Some(aliases(&[update, &condition])))
            .expression_attribute_values(":cell", s(&record.cell));
        for (name, value) in values {
            on_record = on_record.expression_attribute_values(*name, value.clone());
        }
        let other = unbuilt(action);
        let on_record = on_record.build().map_err(other)?;
        let on_cell = self
            .count_change(&record.cell, tenants, connections)
            .map_err(other)?;
        self.record_and_cell(action, on_record, on_cell).await
    }

    /// Takes a seat for a tenant that holds none, in `seat.cell` (its own; a record still
    /// naming the pre-cells `default` is renamed to it): with `enforce`, under the same room and
    /// state conditions as a placement (a restore after the vhost was removed); without, as it
    /// is (a tenant whose vhost exists there already). `false`: it holds one already.
    pub async fn reseat(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<bool, StepError> {
        use aws_sdk_dynamodb::types::Update;
        let action = format!("seat tenant {} in cell '{}'", record.sub, seat.cell);
        let on_record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&record.sub)))
            .update_expression("SET #seat_connections = :c, #cell = :cell")
            .condition_expression("attribute_not_exists(#seat_connections) AND #cell = :was")
            .expression_attribute_names("#seat_connections", "seat_connections")
            .expression_attribute_names("#cell", "cell")
            .expression_attribute_values(":cell", s(seat.cell))
            .expression_attribute_values(":was", s(&record.cell))
            .expression_attribute_values(":c", n(seat.connections))
            .build()
            .map_err(unbuilt(&action))?;
        let done = self
            .update_taking_seat(&action, on_record, seat, enforce)
            .await?;
        if done.failed(0) {
            return Ok(false); // seated already (or moved): nothing to take
        }
        if done.failed(1) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Rejected,
                format!(
                    "cell '{}' is full or not open: `tenantctl move --sub {} --to CELL` places it elsewhere",
                    seat.cell, record.sub
                ),
            ));
        }
        Ok(true)
    }

    /// Starts a move of `record`'s tenant to `seat.cell`: takes a seat there (room and open, as a
    /// placement) and records the move, in one transaction, only if the record is unchanged,
    /// active and not moving already.
    pub async fn begin_move(
        &self,
        record: &TenantRecord,
        from: &str,
        seat: &Seat<'_>,
    ) -> Result<MoveProgress, StepError> {
        use aws_sdk_dynamodb::types::Update;
        let action = format!("start moving tenant {} to cell '{}'", record.sub, seat.cell);
        let progress = MoveProgress {
            from: from.to_owned(),
            to: seat.cell.to_owned(),
            step: "seated".to_owned(),
            started_at: now(),
            source_seat: record.seat_connections,
        };
        let value = serde_dynamo::to_attribute_value(&progress).map_err(unbuilt(&action))?;
        let condition = "#version = :v AND attribute_not_exists(#moving) AND #state = :active";
        let on_record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&record.sub)))
            .update_expression("SET #moving = :moving")
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&["#moving", condition])))
            .expression_attribute_values(":moving", value)
            .expression_attribute_values(":v", n(record.version))
            .expression_attribute_values(":active", s(Lifecycle::Active.as_str()))
            .build()
            .map_err(unbuilt(&action))?;
        let done = self
            .update_taking_seat(&action, on_record, seat, true)
            .await?;
        if done.failed(0) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Conflict,
                "the record changed meanwhile; run it again",
            ));
        }
        if done.failed(1) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Rejected,
                format!("cell '{}' is full or not open", seat.cell),
            ));
        }
        Ok(progress)
    }

    /// Records a move's next step done.
    pub async fn move_step(
        &self,
        tenant: &TenantId,
        to: &str,
        step: &str,
    ) -> Result<(), StepError> {
        let action = format!("record tenant {tenant}'s move step '{step}'");
        let condition = "#moving.#to = :to";
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .update_expression("SET #moving.#step = :step")
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&["#moving.#step", condition])))
            .expression_attribute_values(":step", s(step))
            .expression_attribute_values(":to", s(to))
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(())
    }

    /// The switch: the tenant lives in `to` from now (its credentials are written for that
    /// cell's broker next). Publishes `TenantMoved`.
    pub async fn switch_cell(
        &self,
        tenant: &TenantId,
        to: &str,
        connections: u64,
    ) -> Result<(), StepError> {
        let action = format!("switch tenant {tenant} to cell '{to}'");
        let condition = "#moving.#to = :to";
        let expression = "SET #cell = :to, #seat_connections = :c, #moving.#step = :step, \
                          #changed_at = :at, #event = :event, \
                          #event_seq = if_not_exists(#event_seq, :zero) + :one";
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&[expression, condition])))
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":c", n(connections))
            .expression_attribute_values(":step", s("switched"))
            .expression_attribute_values(":at", s(now()))
            .expression_attribute_values(":event", s(Event::TenantMoved.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(())
    }

    /// The end of a move: the source cell's seat is given back and the move forgotten, once.
    pub async fn finish_move(
        &self,
        tenant: &TenantId,
        progress: &MoveProgress,
    ) -> Result<(), StepError> {
        let source_connections = progress.source_seat;
        use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
        let action = format!("finish tenant {tenant}'s move to cell '{}'", progress.to);
        let other = unbuilt(&action);
        let condition = "#moving.#to = :to AND #cell = :to";
        let on_record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .update_expression("REMOVE #moving, #event")
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&["#moving #event", condition])))
            .expression_attribute_values(":to", s(&progress.to))
            .build()
            .map_err(other)?;
        let mut items = vec![TransactWriteItem::builder().update(on_record).build()];
        if let Some(c) = source_connections {
            let on_cell = self
                .count_change(&progress.from, -1, -i128::from(c))
                .map_err(other)?;
            items.push(TransactWriteItem::builder().update(on_cell).build());
        }
        // A failed condition: finished already.
        self.transact(&action, items).await.map(drop)
    }

    /// Records an operator's state for a cell; returns the state it had (`None`: none recorded).
    pub async fn set_cell_state(
        &self,
        name: &str,
        state: CellState,
    ) -> Result<Option<CellState>, StepError> {
        let action = format!("set cell '{name}' {}", state.as_str());
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(name))))
            .update_expression("SET cell_state = :state, changed_at = :at")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":at", s(now()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(out
            .attributes
            .and_then(|a| a.get("cell_state").and_then(|v| v.as_s().ok()).cloned())
            .and_then(|s| CellState::parse(&s)))
    }

    /// Every record matching `filter`, page by page; each page is retried on transient
    /// failures until `deadline`.
    pub async fn all(
        &self,
        filter: &ListFilter,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<TenantRecord>, StepError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let (page, _) = crate::outside::retry::until("registry.list", deadline, || {
                self.page(filter, start.as_deref(), 1000)
            })
            .await;
            let page = page?;
            out.extend(page.records);
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TenantRecord {
        let plans = Plans::embedded().unwrap();
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        TenantRecord::new(&t, Some("us-east-1_x"), &plans, "sign-up")
    }

    fn apply(r: &TenantRecord, c: Change) -> Result<Option<TenantRecord>, TransitionError> {
        transition(r, &c, "2026-11-30T12:00:00Z")
    }

    #[test]
    fn a_full_life_is_a_chain_of_transitions_each_with_its_event() {
        let mut r = record();
        let steps = [
            (Change::Plan("business".into()), Event::TenantPlanChanged),
            (Change::Suspend, Event::TenantSuspended),
            (Change::Resume, Event::TenantResumed),
            (Change::Rotate, Event::TenantRotated),
            (
                Change::Offboard { retain_data: true },
                Event::TenantOffboarded,
            ),
            (Change::Restore, Event::TenantRestored),
        ];
        for (i, (change, event)) in steps.into_iter().enumerate() {
            let next = apply(&r, change.clone()).unwrap().expect("a change");
            assert_eq!(next.version, r.version + 1);
            assert_eq!(next.event, Some(event));
            assert_eq!(next.event_seq, i as u64 + 1);
            assert_eq!(next.pending.as_deref(), Some(change.name()));
            r = next;
        }
        assert_eq!(r.state, Lifecycle::Active);
        assert_eq!(r.plan, "business");
        assert_eq!(r.generation, 2, "rotate, then restore: a new password each");
        assert!(!r.retain_data);
    }

    #[test]
    fn invalid_transitions_are_typed_errors() {
        let r = record();
        assert!(matches!(
            apply(&r, Change::Resume),
            Err(TransitionError::NotSuspended { .. })
        ));
        assert!(matches!(
            apply(&r, Change::Restore),
            Err(TransitionError::NotOffboarded { .. })
        ));
        let gone = apply(&r, Change::Offboard { retain_data: false })
            .unwrap()
            .unwrap();
        for c in [
            Change::Suspend,
            Change::Resume,
            Change::Rotate,
            Change::Plan("business".into()),
        ] {
            let e = apply(&gone, c).unwrap_err();
            assert!(e.to_string().contains("restore it first"), "{e}");
        }
    }

    #[test]
    fn a_change_already_recorded_is_no_transition() {
        let r = record();
        assert_eq!(apply(&r, Change::Plan(r.plan.clone())).unwrap(), None);
        let s = apply(&r, Change::Suspend).unwrap().unwrap();
        assert_eq!(apply(&s, Change::Suspend).unwrap(), None);
        let gone = apply(&r, Change::Offboard { retain_data: true })
            .unwrap()
            .unwrap();
        assert_eq!(
            apply(&gone, Change::Offboard { retain_data: true }).unwrap(),
            None
        );
        let dropped = apply(&gone, Change::Offboard { retain_data: false })
            .unwrap()
            .expect("kept data may be dropped later");
        assert!(!dropped.retain_data);
        assert_eq!(
            apply(&dropped, Change::Offboard { retain_data: true }).unwrap(),
            None,
            "removed data cannot be retained after the fact"
        );
    }

    #[test]
    fn no_change_while_a_move_is_recorded() {
        let mut r = record();
        r.moving = Some(MoveProgress {
            from: "a".into(),
            to: "b".into(),
            step: "copied".into(),
            started_at: "2026-11-30T12:00:00Z".into(),
            source_seat: Some(20),
        });
        for c in [
            Change::Suspend,
            Change::Rotate,
            Change::Plan("business".into()),
            Change::Offboard { retain_data: true },
        ] {
            let e = apply(&r, c).unwrap_err();
            assert!(
                e.to_string()
                    .contains("is moving to cell 'b': finish the move first"),
                "{e}"
            );
        }
        let item: Item = serde_dynamo::to_item(&r).unwrap();
        assert_eq!(decode("t", item).unwrap(), r, "the move round-trips");
    }

    #[test]
    fn a_rotation_not_yet_applied_is_finished_not_repeated() {
        let r = record();
        let rotated = apply(&r, Change::Rotate).unwrap().unwrap();
        assert_eq!(apply(&rotated, Change::Rotate).unwrap(), None);
        let mut applied = rotated.clone();
        applied.converged_version = applied.version;
        let again = apply(&applied, Change::Rotate).unwrap().unwrap();
        assert_eq!(again.generation, 2);
    }

    #[test]
    fn desired_state_comes_from_the_record() {
        let r = record();
        let s = apply(&r, Change::Suspend).unwrap().unwrap();
        let d = s.desired().unwrap();
        assert!(d.suspended);
        assert_eq!(d.generation, 0);
        let gone = apply(&s, Change::Offboard { retain_data: false })
            .unwrap()
            .unwrap();
        assert_eq!(gone.desired(), None);
        assert!(!gone.converged());
    }

    #[test]
    fn the_record_round_trips_through_a_dynamodb_item() {
        let r = apply(&record(), Change::Rotate).unwrap().unwrap();
        let item: Item = serde_dynamo::to_item(&r).unwrap();
        assert_eq!(item["state"].as_s().unwrap(), "active");
        assert_eq!(item["event"].as_s().unwrap(), "TenantRotated");
        assert!(!item.contains_key("provisioned_at"));
        assert_eq!(decode("t", item).unwrap(), r);
    }
}
