//! The tenant registry's DynamoDB client: one item per tenant (`tenant::record`), one per cell
//! (its state and seat counters).
//!
//! - The trigger writes the item first, with a conditional create, beside the other steps: a
//!   duplicate or a Cognito retry finds the item already there and converges on it.
//! - Every operator change is a transition of the item guarded by its `version` (optimistic
//!   concurrency, as Kubernetes' `resourceVersion`): a concurrent change is refused with
//!   "changed meanwhile", never silently overwritten. Only then are the systems converged.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::cells::CellState;
use crate::outside::aws::sdk_error;
use crate::outside::error::{FailureKind, StepError, System};
use crate::tenant::TenantId;
use crate::tenant::plan::QueueType;
use crate::tenant::record::{Event, LastOutcome, MoveProgress, Phase, TenantRecord, now};

mod lease;
mod moves;
mod pool;
mod seats;
mod tenants;

pub use lease::Taken;
pub use pool::PoolStep;

/// The version bump of a write that changes where or how a tenant is placed (a move step, a
/// seat taken, resized or given back) but not what it should be: `version` and
/// `converged_version` both grow by one, so the record stays exactly as converged as it was,
/// and anything read before the write fails its version condition and reads again. Its values
/// are `:zero` and `:one`.
const BUMP: &str = "#version = #version + :one, \
                    #converged_version = if_not_exists(#converged_version, :zero) + :one";

/// A cell's item in the registry: an operator's state, and the counters placement keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellItem {
    /// `None`: no operator set one (the cells file's state holds).
    pub state: Option<CellState>,
    /// Seats taken: tenants holding one (each has a vhost on the cell's broker, or is about
    /// to) and the vhosts made ahead, ready or being made (see `pool`).
    pub tenants: u64,
    /// The sum of their plans' connection limits when they were placed.
    pub connections: u64,
    /// The vhosts made ahead, ready and unclaimed, by queue type (`pool_ready_<type>`, a
    /// string set: a claim removes one under the condition that it is still there).
    pub ready: BTreeMap<QueueType, Vec<String>>,
    /// Reserved (their seat taken) and not yet made ready: being made, or left unfinished by a
    /// refill that stopped (finished by the next one).
    pub making: Vec<String>,
    /// Retired (no longer claimable) and not yet removed from the broker.
    pub removing: Vec<String>,
    /// Vhosts made ahead that tenants have claimed, ever.
    pub claimed: u64,
}

impl CellItem {
    /// Seats held by tenants (not by vhosts made ahead).
    pub fn tenant_seats(&self) -> u64 {
        let pooled = self.ready.values().map(Vec::len).sum::<usize>()
            + self.making.len()
            + self.removing.len();
        self.tenants.saturating_sub(pooled as u64)
    }

    pub fn ready_of(&self, queue_type: QueueType) -> &[String] {
        self.ready.get(&queue_type).map_or(&[], Vec::as_slice)
    }
}

/// The attribute holding a cell's ready vhosts of `queue_type`.
fn ready_attribute(queue_type: QueueType) -> String {
    format!("pool_ready_{}", queue_type.as_str())
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
    /// A ready vhost made ahead that this placement claims (its seat becomes the tenant's): the
    /// placement is written only if it is still ready.
    pub claim: Option<(&'a str, QueueType)>,
}

/// The result of a placement's transaction.
#[derive(Debug, Clone)]
pub enum Placed {
    /// This call wrote the record and took the seat.
    New(TenantRecord),
    /// The tenant had a record already (a duplicate, a retry): it lives where that one says.
    Existing(TenantRecord),
    /// The cell is full, or not open, or the vhost claimed was claimed first: nothing was
    /// written. The cell as it was, when the registry returned it.
    Refused(Option<CellItem>),
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
    pub state: Option<Phase>,
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
    use crate::tenant::plan::Plans;
    use crate::tenant::transition::{Change, transition};

    #[test]
    fn the_record_round_trips_through_a_dynamodb_item() {
        let plans = Plans::embedded().unwrap();
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let first = TenantRecord::new(&t, Some("us-east-1_x"), &plans, "sign-up");
        let r = transition(&first, &Change::Rotate, "2026-11-30T12:00:00Z")
            .unwrap()
            .unwrap();
        let item: Item = serde_dynamo::to_item(&r).unwrap();
        assert_eq!(item["state"].as_s().unwrap(), "active");
        assert_eq!(item["event"].as_s().unwrap(), "TenantRotated");
        assert!(!item.contains_key("provisioned_at"));
        assert_eq!(decode("t", item).unwrap(), r);
    }

    #[test]
    fn a_record_being_moved_round_trips_through_a_dynamodb_item() {
        let plans = Plans::embedded().unwrap();
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let mut r = TenantRecord::new(&t, Some("us-east-1_x"), &plans, "sign-up");
        r.moving = Some(MoveProgress::example());
        let item: Item = serde_dynamo::to_item(&r).unwrap();
        assert_eq!(decode("t", item).unwrap(), r, "the move round-trips");
    }
}
