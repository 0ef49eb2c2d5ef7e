//! The scheduled reconciler: one run of `ops::reconcile` per invocation, with the function's
//! deadline. It never prunes and never removes (that takes an operator, `tenantctl`); a run
//! that could not repair everything is a failed invocation, so the function's Errors metric
//! (and its alarm) is how anyone hears of it.

use lambda_runtime::{Error, LambdaEvent};

use crate::lambda::app::App;
use crate::lambda::trigger::deadline;
use crate::ops::reconcile::{ReconcileOptions, reconcile};
use crate::outside::cognito::UserPool;

/// The reconciler's listings (and their retries) get at most this long, or until shortly before
/// the function's own timeout: the repairs need the rest.
const LIST_BUDGET: std::time::Duration = std::time::Duration::from_secs(240);

pub async fn handle(
    app: &App,
    pool: &UserPool,
    event: LambdaEvent<serde_json::Value>,
    flush: impl FnOnce(),
) -> Result<serde_json::Value, Error> {
    let provisioner = app.provisioner().await.map_err(|e| format!("{e:#}"))?;
    let mut options = ReconcileOptions::new(app.budget(), app.settings.concurrency);
    options.may_remove = false;
    options.list_deadline = deadline(
        tokio::time::Instant::now(),
        LIST_BUDGET,
        event.context.deadline,
    );
    let summary = reconcile(provisioner, pool, options, |_, _| {}).await;
    if let Ok(s) = &summary {
        s.record_metrics();
    }
    flush();
    let summary = summary.map_err(|e| e.to_string())?;
    if summary.failed > 0 {
        return Err(Error::from(format!(
            "reconcile: {} tenant(s) failed: {}",
            summary.failed,
            summary.failures.join("; ")
        )));
    }
    Ok(serde_json::to_value(summary)?)
}
