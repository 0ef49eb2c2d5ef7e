//! The hand-off worker: an SQS event source delivers batches of hand-offs; each tenant is
//! provisioned with the worker's longer budget, and only the messages that failed are reported
//! back (`batchItemFailures`), so SQS redelivers just those and, after `maxReceiveCount`
//! receives, moves them to the dead-letter queue.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt as _;
use lambda_runtime::LambdaEvent;
use tokio::time::Instant;

use crate::lambda::app::App;
use crate::lambda::trigger::deadline;
use crate::ops::handoff::{HandoffOutcome, NO_ROOM_WAIT, process_handoff};

pub async fn handle(
    app: &App,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, std::convert::Infallible> {
    let start = app.invocation_start();
    let (event, context) = event.into_parts();
    let deadline = deadline(start, app.budget(), context.deadline);
    let mut response = SqsBatchResponse::default();
    let ids = |records: &[aws_lambda_events::event::sqs::SqsMessage]| -> Vec<String> {
        records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect()
    };
    let provisioner = match tokio::time::timeout_at(deadline, app.provisioner()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cold-start calls failed; the batch is retried"
            );
            response.set_failures(ids(&event.records));
            return Ok(response);
        }
        Err(_) => {
            tracing::error!("cold-start calls ran out of time; the batch is retried");
            response.set_failures(ids(&event.records));
            return Ok(response);
        }
    };
    let outcomes: Vec<_> = futures::stream::iter(event.records)
        .map(|record| async move {
            let body = record.body.clone().unwrap_or_default();
            let outcome = process_handoff(provisioner, &body, deadline).await;
            (record.message_id, outcome)
        })
        .buffer_unordered(app.settings.concurrency)
        .collect()
        .await;
    for (message_id, outcome) in outcomes {
        let Some(message_id) = message_id else {
            continue;
        };
        match outcome {
            HandoffOutcome::Provisioned(tenant) => {
                crate::metrics::handoff_processed("provisioned");
                tracing::info!(message_id, tenant = %tenant, "hand-off provisioned")
            }
            HandoffOutcome::Skipped(tenant) => {
                crate::metrics::handoff_processed("skipped");
                tracing::info!(message_id, tenant = %tenant, "hand-off of an offboarded tenant: skipped")
            }
            HandoffOutcome::Malformed(error) => {
                crate::metrics::handoff_processed("malformed");
                tracing::error!(message_id, error, "malformed hand-off");
                response.add_failure(message_id);
            }
            HandoffOutcome::NoRoom(tenant, message) => {
                // It waits on the queue for a cell (a new, delayed message): the capacity
                // alarm says so; it reaches the dead-letter queue only for a real failure.
                match app.handoff.send_later(&message, NO_ROOM_WAIT).await {
                    Ok(()) => {
                        crate::metrics::handoff_processed("waiting");
                        tracing::warn!(message_id, tenant = %tenant, wait_s = NO_ROOM_WAIT.as_secs(), "no open cell has room: the hand-off waits for one");
                    }
                    Err(e) => {
                        crate::metrics::handoff_processed("failed");
                        tracing::warn!(message_id, tenant = %tenant, error = %e, "no open cell has room, and the hand-off could not be sent again: it comes back");
                        response.add_failure(message_id);
                    }
                }
            }
            HandoffOutcome::Refilled {
                cell,
                made,
                failures,
            } => {
                // Never retried from the queue: what a refill could not do is the next one's
                // or the reconciler's.
                crate::metrics::handoff_processed("refilled");
                if failures.is_empty() {
                    tracing::info!(message_id, cell, made, "pool refilled");
                } else {
                    tracing::warn!(message_id, cell, made, failures = ?failures, "pool refilled in part");
                }
            }
            HandoffOutcome::Failed(tenant, error) => {
                crate::metrics::handoff_processed("failed");
                tracing::warn!(message_id, tenant = %tenant, error, "hand-off not provisioned yet");
                response.add_failure(message_id);
            }
        }
    }
    tracing::info!(
        failed = response.batch_item_failures.len(),
        ms = Instant::now().saturating_duration_since(start).as_millis() as u64,
        "batch done"
    );
    Ok(response)
}
