//! A provisioning's record of itself: each step's outcome, time and attempts (the `Recorder`
//! that runs the steps inside the deadline), the `Report` of a finished one and the
//! `ProvisionError` of one that was not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::outside::error::StepError;

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub step: &'static str,
    /// Milliseconds from the start of provisioning.
    pub started_ms: f64,
    pub duration_ms: Option<f64>,
    pub outcome: Outcome,
    /// 1, or more when transient failures were retried.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Still running when the deadline came.
    Unfinished,
}

/// What was provisioned, and how long each step took. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant: String,
    /// The cell (broker) it was provisioned in.
    pub cell: String,
    pub rabbitmq_user: String,
    pub rabbitmq_vhost: String,
    pub kubernetes_namespace: String,
    pub kubernetes_secret: String,
    pub kubernetes_deployment: String,
    pub secrets_manager_name: String,
    pub wall_ms: f64,
    /// The three independent branches (rabbitmq, secrets-manager, kubernetes): wall time of each.
    /// Empty when the deadline cut them off.
    pub branches_ms: BTreeMap<&'static str, f64>,
    pub steps: Vec<StepTiming>,
}

impl Report {
    /// Each finished step's duration and attempts, as metrics.
    pub fn record_metrics(&self) {
        for s in self
            .steps
            .iter()
            .filter(|s| s.outcome != Outcome::Unfinished)
        {
            crate::metrics::step(s.step, s.duration_ms, s.attempts);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.tenant, .failures, .unfinished, .budget_ms, .finished))]
pub struct ProvisionError {
    pub tenant: String,
    pub failures: Vec<StepError>,
    pub unfinished: Vec<&'static str>,
    pub finished: Vec<&'static str>,
    pub budget_ms: u128,
    pub report: Report,
}

impl ProvisionError {
    /// As one step error, for callers that converge several systems and report one error: the
    /// first failing system, the whole description.
    pub fn into_step(self, action: &str) -> StepError {
        let system = self
            .failures
            .first()
            .map_or(crate::outside::error::System::Rabbitmq, |f| f.system);
        StepError::new(
            system,
            action,
            crate::outside::error::FailureKind::Other,
            self.to_string(),
        )
    }

    /// The failing steps and their kinds, and the steps the deadline cut off, for the tenant's
    /// record: `rabbitmq.vhost: timeout; unfinished: kubernetes.deployment` (no messages, so
    /// never a secret or a host).
    pub fn outcome_detail(&self) -> String {
        let failed = self
            .report
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Failed)
            .zip(&self.failures)
            .map(|(s, f)| format!("{}: {}", s.step, f.kind.name()));
        let mut parts: Vec<String> = failed.collect();
        if !self.unfinished.is_empty() {
            parts.push(format!("unfinished: {}", self.unfinished.join(", ")));
        }
        parts.join("; ")
    }
}

fn describe(
    tenant: &str,
    failures: &[StepError],
    unfinished: &[&'static str],
    budget_ms: &u128,
    finished: &[&'static str],
) -> String {
    let mut parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    if !unfinished.is_empty() {
        parts.push(format!(
            "did not finish within the {budget_ms} ms budget: {}",
            unfinished.join(", ")
        ));
    }
    let done = if finished.is_empty() {
        "none".to_owned()
    } else {
        finished.join(", ")
    };
    format!(
        "provisioning tenant {tenant} failed: {}. Finished steps: {done}. Nothing was rolled back; a retry converges.",
        parts.join("; ")
    )
}

pub(super) struct Record {
    step: &'static str,
    started: Instant,
    finished: Option<(Instant, bool)>,
    error: Option<StepError>,
    attempts: u32,
}

/// Times each step, retries its transient failures inside the deadline, and remembers which
/// steps were still running if the deadline cuts them off.
pub(super) struct Recorder {
    pub(super) start: Instant,
    deadline: Instant,
    records: Mutex<Vec<Record>>,
}

impl Recorder {
    pub(super) fn new(deadline: Instant) -> Self {
        Self {
            start: Instant::now(),
            deadline,
            records: Mutex::new(Vec::new()),
        }
    }

    pub(super) async fn step<T, F, Fut>(&self, step: &'static str, op: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let started = Instant::now();
        let index = {
            let mut records = self.records.lock().expect("recorder lock");
            records.push(Record {
                step,
                started,
                finished: None,
                error: None,
                attempts: 0,
            });
            records.len() - 1
        };
        let (result, attempts) = crate::outside::retry::until(step, self.deadline, op).await;
        let now = Instant::now();
        let ms = (now - started).as_secs_f64() * 1e3;
        match &result {
            Ok(_) => tracing::info!(
                step,
                duration_ms = ms,
                attempts,
                outcome = "ok",
                "step finished"
            ),
            Err(e) => {
                tracing::warn!(step, duration_ms = ms, attempts, outcome = "failed", error = %e, "step failed")
            }
        }
        if let Some(r) = self.records.lock().expect("recorder lock").get_mut(index) {
            r.attempts = attempts;
            r.finished = Some((now, result.is_ok()));
            r.error = result.as_ref().err().cloned();
        }
        result
    }

    /// Errors of the steps that failed, in the order they started.
    pub(super) fn failures(&self) -> Vec<StepError> {
        self.records
            .lock()
            .expect("recorder lock")
            .iter()
            .filter_map(|r| r.error.clone())
            .collect()
    }

    pub(super) fn timings(&self) -> Vec<StepTiming> {
        let ms = |d: Duration| round_ms(d.as_secs_f64() * 1e3);
        self.records
            .lock()
            .expect("recorder lock")
            .iter()
            .map(|r| StepTiming {
                step: r.step,
                started_ms: ms(r.started - self.start),
                duration_ms: r.finished.map(|(end, _)| ms(end - r.started)),
                outcome: match r.finished {
                    None => Outcome::Unfinished,
                    Some((_, true)) => Outcome::Ok,
                    Some((_, false)) => Outcome::Failed,
                },
                attempts: r.attempts.max(1),
            })
            .collect()
    }
}

pub(super) fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outside::error::{FailureKind, System};

    fn err(kind: FailureKind) -> StepError {
        StepError::new(System::Rabbitmq, "create user 'x'", kind, "boom")
    }

    #[tokio::test]
    async fn the_recorder_keeps_outcomes_attempts_and_unfinished_steps() {
        let rec = Recorder::new(Instant::now() + Duration::from_secs(5));
        let _ = rec.step("a", || async { Ok::<_, StepError>(()) }).await;
        let _ = rec
            .step("b", || async { Err::<(), _>(err(FailureKind::Forbidden)) })
            .await;
        let calls = std::cell::Cell::new(0);
        let _ = rec
            .step("c", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n == 1 {
                        Err(err(FailureKind::Reset))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        let pending = rec.step("d", std::future::pending::<Result<(), StepError>>);
        let _ = tokio::time::timeout(Duration::from_millis(10), pending).await;
        let t = rec.timings();
        let view: Vec<_> = t.iter().map(|s| (s.step, s.outcome, s.attempts)).collect();
        assert_eq!(
            view,
            [
                ("a", Outcome::Ok, 1),
                ("b", Outcome::Failed, 1),
                ("c", Outcome::Ok, 2),
                ("d", Outcome::Unfinished, 1),
            ]
        );
        assert!(t[3].duration_ms.is_none());
        let failures = rec.failures();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].kind, FailureKind::Forbidden);
    }

    #[test]
    fn the_error_text_names_failures_unfinished_and_finished_steps() {
        let text = describe(
            "t-1",
            &[err(FailureKind::Unauthorized)],
            &["kubernetes.deployment"],
            &4500,
            &["rabbitmq.vhost"],
        );
        assert_eq!(
            text,
            "provisioning tenant t-1 failed: rabbitmq: create user 'x': boom; did not finish \
             within the 4500 ms budget: kubernetes.deployment. Finished steps: rabbitmq.vhost. \
             Nothing was rolled back; a retry converges."
        );
        assert!(describe("t", &[], &["x"], &1, &[]).contains("Finished steps: none."));
    }
}
