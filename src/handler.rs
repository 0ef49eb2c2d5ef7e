//! The Lambda handler: classify the event, provision within the deadline, return the event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;

use crate::app::App;
use crate::event::{Action, classify};

/// Kept back from the Lambda deadline so the error still reaches the runtime API in time.
const LAMBDA_DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The provisioning deadline: the budget from `start`, or the Lambda deadline if sooner.
pub fn deadline(start: Instant, budget: Duration, lambda_deadline_ms: u64) -> Instant {
    let by_budget = start + budget;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if lambda_deadline_ms == 0 {
        return by_budget;
    }
    let left = Duration::from_millis(lambda_deadline_ms.saturating_sub(now_ms))
        .saturating_sub(LAMBDA_DEADLINE_MARGIN);
    by_budget.min(Instant::now() + left)
}

/// Cognito requires the event back, unchanged: it is returned as received (raw JSON), not
/// re-serialised from the typed view.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
    let start = Instant::now();
    let (payload, context) = event.into_parts();
    let action =
        classify(&payload).inspect_err(|e| tracing::error!(error = %e, "refused event"))?;
    match action {
        Action::Skip { trigger_source } => {
            tracing::info!(trigger_source, "nothing to provision");
        }
        Action::Provision(tenant) => {
            let deadline = deadline(start, app.budget(), context.deadline);
            Box::pin(app.provisioner.provision(&tenant, deadline)).await?;
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sooner_deadline_wins() {
        let start = Instant::now();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(
            deadline(start, Duration::from_millis(4500), 0),
            start + Duration::from_millis(4500)
        );
        let far = deadline(start, Duration::from_millis(4500), now_ms + 60_000);
        assert_eq!(far, start + Duration::from_millis(4500));
        let near = deadline(start, Duration::from_millis(4500), now_ms + 1_000);
        assert!(
            near < start + Duration::from_millis(1000),
            "Lambda deadline minus margin"
        );
        let past = deadline(
            start,
            Duration::from_millis(4500),
            now_ms.saturating_sub(5_000),
        );
        assert!(
            past <= Instant::now(),
            "an expired Lambda deadline leaves no time"
        );
    }
}
