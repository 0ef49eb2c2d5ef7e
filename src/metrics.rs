//! Metrics as CloudWatch Embedded Metric Format lines (through `metrics_cloudwatch_embedded`):
//! CloudWatch Logs turns each JSON document the function prints into metrics, so nothing is
//! sent with `PutMetricData` on the 5-second path. The Lambda binary installs the collector and
//! flushes one document per invocation to stdout; `tenantctl` installs none, so these calls are
//! no-ops there (its stdout is its own output).
//!
//! Every name and dimension the dashboard and the alarms use is defined here.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "PostSignup";

pub mod name {
    /// Trigger: from the invocation's start (process start on a cold one) to the answer.
    pub const ONBOARDING_DURATION: &str = "OnboardingDuration";
    /// Trigger: one per sign-up, by `Outcome` (provisioned, handed-off, recorded, unrecorded,
    /// skipped, invalid).
    pub const ONBOARDINGS: &str = "Onboardings";
    /// One per step run, by `Step`: how long it took and how many attempts it needed.
    pub const STEP_DURATION: &str = "StepDuration";
    pub const STEP_ATTEMPTS: &str = "StepAttempts";
    /// A container's first invocation.
    pub const COLD_STARTS: &str = "ColdStarts";
    /// Worker: hand-offs by `Outcome` (provisioned, skipped, waiting (no cell with room),
    /// failed, malformed).
    pub const HANDOFFS_PROCESSED: &str = "HandoffsProcessed";
    /// API: a signed-in user with no record handed off by `GET /tenant`, by `Outcome`
    /// (handed-off, failed).
    pub const API_HANDOFFS: &str = "ApiHandoffs";
    /// Reconciler: the run's summary.
    pub const RECONCILE_USERS: &str = "ReconcileUsers";
    pub const RECONCILE_REPAIRED: &str = "ReconcileRepaired";
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    pub const RECONCILE_ORPHANS: &str = "ReconcileOrphans";
    pub const RECONCILE_TOMBSTONES: &str = "ReconcileTombstones";
    /// Registry: the trigger's conditional create (with cells: the placement's transaction).
    pub const REGISTRY_WRITE_DURATION: &str = "RegistryWriteDuration";
    /// A new tenant found no open cell with room (the capacity alarm watches it).
    pub const NO_CELL_WITH_ROOM: &str = "NoCellWithRoom";
    /// Reconciler: each cell's free vhosts (capacity minus seats), by `Cell`.
    pub const CELL_FREE_VHOSTS: &str = "CellFreeVhosts";
    /// Placement: a new tenant placed in a cell that keeps vhosts made ahead of its queue
    /// type, by `Outcome`: claimed, or empty (none ready: its vhost is created; the pool alarm
    /// watches these).
    pub const POOL_CLAIMS: &str = "PoolClaims";
    /// Refill (worker, reconciler, `tenantctl pool refill`): each cell's ready vhosts made
    /// ahead after it, by `Cell`.
    pub const POOL_READY: &str = "PoolReady";
}

/// The dimension names.
pub mod dimension {
    pub const FUNCTION: &str = "Function";
    pub const OUTCOME: &str = "Outcome";
    pub const STEP: &str = "Step";
    pub const CELL: &str = "Cell";
}

/// Installs the EMF collector (the Lambda binary, once at start); `function` becomes the
/// `Function` dimension of every metric (trigger, worker, reconciler, api).
pub fn install(function: &'static str) -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension(dimension::FUNCTION, function)
        .init()
        .inspect_err(|e| tracing::warn!(error = %e, "metrics collector not installed"))
        .ok()?;
    describe();
    Some(collector)
}

/// Units, so CloudWatch charts and alarms read them right.
fn describe() {
    use name::*;
    for n in [ONBOARDING_DURATION, STEP_DURATION, REGISTRY_WRITE_DURATION] {
        describe_histogram!(n, Unit::Milliseconds, "");
    }
    describe_histogram!(STEP_ATTEMPTS, Unit::Count, "");
    for n in [
        ONBOARDINGS,
        COLD_STARTS,
        HANDOFFS_PROCESSED,
        API_HANDOFFS,
        NO_CELL_WITH_ROOM,
        POOL_CLAIMS,
    ] {
        describe_counter!(n, Unit::Count, "");
    }
    for n in [
        RECONCILE_USERS,
        RECONCILE_REPAIRED,
        RECONCILE_FAILED,
        RECONCILE_ORPHANS,
        RECONCILE_TOMBSTONES,
        CELL_FREE_VHOSTS,
        POOL_READY,
    ] {
        describe_gauge!(n, Unit::Count, "");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A sign-up, as the trigger answered it.
pub fn onboarding(outcome: &'static str, took: Duration, cold: bool) {
    histogram!(name::ONBOARDING_DURATION, dimension::OUTCOME => outcome).record(ms(took));
    counter!(name::ONBOARDINGS, dimension::OUTCOME => outcome).increment(1);
    if cold {
        counter!(name::COLD_STARTS).increment(1);
    }
}

/// One finished step of a provisioning: its duration (when it has one) and attempts.
pub fn step(step: &'static str, duration_ms: Option<f64>, attempts: u32) {
    if let Some(d) = duration_ms {
        histogram!(name::STEP_DURATION, dimension::STEP => step).record(d);
    }
    histogram!(name::STEP_ATTEMPTS, dimension::STEP => step).record(f64::from(attempts));
}

pub fn registry_write(took: Duration) {
    histogram!(name::REGISTRY_WRITE_DURATION).record(ms(took));
}

/// A new tenant that no cell could take.
pub fn no_cell_with_room() {
    counter!(name::NO_CELL_WITH_ROOM).increment(1);
}

/// A cell's free vhosts, as the reconciler read its counters.
pub fn cell_free_vhosts(cell: &str, free: u64) {
    gauge!(name::CELL_FREE_VHOSTS, dimension::CELL => cell.to_owned()).set(free as f64);
}

/// A placement in a cell with a pool for its queue type: `claimed` or `empty`.
pub fn pool_claim(outcome: &'static str) {
    counter!(name::POOL_CLAIMS, dimension::OUTCOME => outcome).increment(1);
}

/// A cell's ready vhosts made ahead, after a refill.
pub fn pool_ready(cell: &str, ready: u64) {
    gauge!(name::POOL_READY, dimension::CELL => cell.to_owned()).set(ready as f64);
}

pub fn api_handoff(outcome: &'static str) {
    counter!(name::API_HANDOFFS, dimension::OUTCOME => outcome).increment(1);
}

pub fn handoff_processed(outcome: &'static str) {
    counter!(name::HANDOFFS_PROCESSED, dimension::OUTCOME => outcome).increment(1);
}

/// A reconcile run's figures (numbers only: the run itself lives in `ops::reconcile`).
pub struct Reconciled {
    pub users: usize,
    pub repaired: usize,
    pub failed: usize,
    pub orphans: usize,
    pub tombstones: usize,
}

pub fn reconciled(r: Reconciled) {
    gauge!(name::RECONCILE_USERS).set(r.users as f64);
    gauge!(name::RECONCILE_REPAIRED).set(r.repaired as f64);
    gauge!(name::RECONCILE_FAILED).set(r.failed as f64);
    gauge!(name::RECONCILE_ORPHANS).set(r.orphans as f64);
    gauge!(name::RECONCILE_TOMBSTONES).set(r.tombstones as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// One metric as CloudWatch reads it from an EMF document.
    #[derive(Debug, Clone)]
    struct Read {
        name: String,
        unit: String,
        dimensions: Vec<Vec<String>>,
        value: Value,
        doc: Value,
    }

    /// Parses one EMF document as CloudWatch does (the specification's required members: the
    /// `_aws` metadata with a timestamp and metric directives, each dimension and metric a
    /// top-level member of the document).
    fn parse_emf(line: &str) -> Vec<Read> {
        let doc: Value = serde_json::from_str(line).expect("one JSON object a line");
        let aws = &doc["_aws"];
        assert!(
            aws["Timestamp"].as_u64().is_some(),
            "_aws.Timestamp: {line}"
        );
        let mut out = Vec::new();
        for directive in aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics")
        {
            assert_eq!(directive["Namespace"], NAMESPACE);
            let dimensions: Vec<Vec<String>> = directive["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|set| {
                    set.as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_str().unwrap().to_owned())
                        .collect()
                })
                .collect();
            for d in dimensions.iter().flatten() {
                assert!(doc[d].is_string(), "dimension {d} has a value: {line}");
            }
            for m in directive["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap().to_owned();
                let value = doc[&name].clone();
                assert!(!value.is_null(), "metric {name} has a value: {line}");
                out.push(Read {
                    unit: m["Unit"].as_str().unwrap_or("None").to_owned(),
                    name,
                    dimensions: dimensions.clone(),
                    value,
                    doc: doc.clone(),
                });
            }
        }
        out
    }

    #[test]
    fn the_lines_are_emf_with_our_names_units_and_dimensions() {
        let collector = install("trigger").expect("the only recorder of this test binary");
        onboarding("provisioned", Duration::from_millis(130), true);
        onboarding("handed-off", Duration::from_millis(3900), false);
        handoff_processed("provisioned");
        no_cell_with_room();
        cell_free_vhosts("eu-west-1-a", 42);
        let mut buf = Vec::new();
        collector.flush(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let metrics: Vec<Read> = text.lines().flat_map(parse_emf).collect();
        let find = |name: &str, outcome: Option<&str>| -> Read {
            metrics
                .iter()
                .find(|r| r.name == name && outcome.is_none_or(|o| r.doc[dimension::OUTCOME] == o))
                .unwrap_or_else(|| panic!("{name} {outcome:?} in {text}"))
                .clone()
        };
        let with = |r: &Read, d: &str| r.dimensions.iter().any(|set| set.iter().any(|x| x == d));
        let d = find(name::ONBOARDING_DURATION, Some("provisioned"));
        assert_eq!(d.unit, "Milliseconds");
        assert!(
            with(&d, dimension::OUTCOME) && with(&d, dimension::FUNCTION),
            "{d:?}"
        );
        assert!(d.value.to_string().contains("130"), "{d:?}");
        let n = find(name::ONBOARDINGS, Some("handed-off"));
        assert_eq!((n.unit.as_str(), n.value.as_f64()), ("Count", Some(1.0)));
        let c = find(name::COLD_STARTS, None);
        assert_eq!((c.unit.as_str(), c.value.as_f64()), ("Count", Some(1.0)));
        assert!(
            with(&c, dimension::FUNCTION) && !with(&c, dimension::OUTCOME),
            "{c:?}"
        );
        find(name::HANDOFFS_PROCESSED, Some("provisioned"));
        // What the capacity alarms read: a count, and each cell's free vhosts by `Cell`.
        let full = find(name::NO_CELL_WITH_ROOM, None);
        assert_eq!(
            (full.unit.as_str(), full.value.as_f64()),
            ("Count", Some(1.0))
        );
        let free = find(name::CELL_FREE_VHOSTS, None);
        assert_eq!(
            (free.unit.as_str(), free.value.as_f64()),
            ("Count", Some(42.0))
        );
        assert!(with(&free, dimension::CELL), "{free:?}");
        assert_eq!(free.doc[dimension::CELL], "eu-west-1-a");
        assert!(
            metrics
                .iter()
                .all(|r| r.doc[dimension::FUNCTION] == "trigger"),
            "every document carries the function: {text}"
        );
    }
}
