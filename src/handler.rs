//! The Lambda handler: classify the event, provision within the deadline, return the event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;

use crate::app::App;
use crate::event::{Action, EventError, classify};
use crate::handoff::HandoffMessage;

/// Kept back from the Lambda deadline so the error still reaches the runtime API in time.
const LAMBDA_DEADLINE_MARGIN: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The provisioning deadline: the budget from `start`, or the Lambda deadline if sooner.
///
/// A Lambda deadline that has already passed when the invocation starts is not a real one
/// (Lambda hands its deadline out with the event; `cargo lambda watch` sends a placeholder):
/// the budget applies then, and Lambda still enforces the function's own timeout.
pub fn deadline(start: Instant, budget: Duration, lambda_deadline_ms: u64) -> Instant {
    let by_budget = start + budget;
    let now = now_ms();
    if lambda_deadline_ms <= now {
        return by_budget;
    }
    let left =
        Duration::from_millis(lambda_deadline_ms - now).saturating_sub(LAMBDA_DEADLINE_MARGIN);
    by_budget.min(Instant::now() + left)
}

/// The error an invocation returns to Cognito. Cognito shows `errorMessage` to the person
/// signing up, so it never carries internals: the detail is in the logs, under the request id.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The event is not one this function accepts; retrying cannot help. The message names the
    /// field, which is the caller's own input.
    #[error("{0}")]
    InvalidEvent(#[from] EventError),
    /// Provisioning did not finish and even the hand-off failed: the configured generic message.
    #[error("{0}")]
    ProvisioningFailed(String),
}

impl InvocationError {
    pub fn kind(&self) -> &'static str {
        match self {
            InvocationError::InvalidEvent(_) => "InvalidEvent",
            InvocationError::ProvisioningFailed(_) => "ProvisioningFailed",
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        Self {
            error_type: e.kind().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// How an invocation ended, for logs and for `tenantctl provision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    Skipped,
    Provisioned,
    HandedOff,
}

/// Cognito requires the event back, unchanged: it is returned as received (raw JSON), not
/// re-serialised from the typed view.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    handle_reporting(app, event)
        .await
        .map(|(payload, _)| payload)
}

/// As [`handle`], also saying how it finished.
pub async fn handle_reporting(
    app: &App,
    event: LambdaEvent<Value>,
) -> Result<(Value, Finish), InvocationError> {
    let start = app.invocation_start();
    let (payload, context) = event.into_parts();
    let request_id = context.request_id.as_str();
    let action = classify(&payload).inspect_err(|e| {
        tracing::error!(request_id, error = %e, "refused event");
    })?;
    let tenant = match action {
        Action::Skip { trigger_source } => {
            tracing::info!(request_id, trigger_source, "nothing to provision");
            return Ok((payload, Finish::Skipped));
        }
        Action::Provision(tenant) => tenant,
    };
    let deadline = deadline(start, app.budget(), context.deadline);
    let work_deadline = app.work_deadline(deadline);
    tracing::info!(
        request_id,
        tenant = %tenant,
        budget_ms = deadline.saturating_duration_since(start).as_millis() as u64,
        cold_start_ms = Instant::now().saturating_duration_since(start).as_millis() as u64,
        "provisioning"
    );
    let provisioned = tokio::time::timeout_at(work_deadline, async {
        let provisioner = app.provisioner().await.map_err(|e| format!("{e:#}"))?;
        Box::pin(provisioner.provision(&tenant, work_deadline))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("the cold-start calls did not finish in time".to_owned()));
    let Err(problem) = provisioned else {
        return Ok((payload, Finish::Provisioned));
    };
    // Not finished: hand off, so the worker finishes it. The person is confirmed either way.
    let pool = payload.get("userPoolId").and_then(Value::as_str);
    let message = HandoffMessage::new(&tenant, pool);
    match app.handoff.send(&message, deadline).await {
        Ok(attempts) => {
            tracing::warn!(request_id, tenant = %tenant, problem, attempts, "tenant handed off");
            Ok((payload, Finish::HandedOff))
        }
        Err(e) => {
            tracing::error!(request_id, tenant = %tenant, problem, handoff_error = %e, "tenant not provisioned and not handed off");
            Err(InvocationError::ProvisioningFailed(
                app.settings.failure_message_for(request_id),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(4500);

    #[test]
    fn the_sooner_deadline_wins() {
        let start = Instant::now();
        let now = now_ms();
        assert_eq!(
            deadline(start, BUDGET, 0),
            start + BUDGET,
            "no Lambda deadline"
        );
        assert_eq!(
            deadline(start, BUDGET, now + 60_000),
            start + BUDGET,
            "the budget is sooner"
        );
        let near = deadline(start, BUDGET, now + 1_000);
        assert!(
            near < start + Duration::from_millis(1000),
            "Lambda deadline minus the margin"
        );
        let almost = deadline(start, BUDGET, now + 50);
        assert!(
            almost <= Instant::now() + Duration::from_millis(1),
            "inside the margin: no time left"
        );
        let past = deadline(start, BUDGET, now.saturating_sub(5_000));
        assert_eq!(
            past,
            start + BUDGET,
            "a deadline already past is a placeholder"
        );
    }
}
