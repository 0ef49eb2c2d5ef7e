//! The Lambda handler: classify the event, provision within the deadline, return the event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;

use crate::app::App;
use crate::event::{Action, classify};

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

/// The error an invocation returns to Cognito, with a type Lambda reports as `errorType`:
/// `InvalidEvent` (retrying cannot help) or `ProvisioningFailed` (a retry converges).
pub struct InvocationError {
    kind: &'static str,
    message: String,
}

impl InvocationError {
    fn invalid_event(message: String) -> Self {
        Self {
            kind: "InvalidEvent",
            message,
        }
    }

    fn provisioning_failed(message: String) -> Self {
        Self {
            kind: "ProvisioningFailed",
            message,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl std::fmt::Display for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::fmt::Debug for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for InvocationError {}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        Self {
            error_type: e.kind.to_owned(),
            error_message: e.message,
        }
    }
}

/// Cognito requires the event back, unchanged: it is returned as received (raw JSON), not
/// re-serialised from the typed view.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    let start = Instant::now();
    let (payload, context) = event.into_parts();
    let request_id = context.request_id.as_str();
    let action = classify(&payload).map_err(|e| {
        tracing::error!(request_id, error = %e, "refused event");
        InvocationError::invalid_event(e.to_string())
    })?;
    match action {
        Action::Skip { trigger_source } => {
            tracing::info!(request_id, trigger_source, "nothing to provision");
        }
        Action::Provision(tenant) => {
            let deadline = deadline(start, app.budget(), context.deadline);
            tracing::info!(
                request_id,
                tenant = %tenant,
                budget_ms = deadline.saturating_duration_since(start).as_millis() as u64,
                lambda_time_left_ms = context.deadline as i64 - now_ms() as i64,
                "provisioning"
            );
            let provisioned = Box::pin(app.provisioner.provision(&tenant, deadline)).await;
            provisioned.map_err(|e| InvocationError::provisioning_failed(e.to_string()))?;
        }
    }
    Ok(payload)
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
