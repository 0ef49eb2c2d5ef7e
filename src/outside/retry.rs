//! Retries of transient failures, inside the deadline.
//!
//! Cognito never calls the trigger again after an error, so a single reset connection (a pooled
//! keep-alive connection that died while the Lambda sandbox was frozen), a 503 or a throttled
//! AWS call must not end a sign-up. Every write this project makes is idempotent — RabbitMQ
//! PUTs, Kubernetes server-side apply with one field manager, Secrets Manager writes with a
//! value-derived `ClientRequestToken`, SQS sends of the same `sub` — so repeating a call whose
//! outcome we did not see is safe. What is retried is exactly [`StepError::is_transient`]; the
//! backoff is jittered exponential (backon), a server's `Retry-After` is honoured, and no wait
//! is started that would end past the deadline: the deadline decides, not an attempt count.

use std::cell::Cell;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tokio::time::Instant;

use crate::outside::error::StepError;

/// First wait; doubles per attempt (with jitter) up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(20);
const MAX_DELAY: Duration = Duration::from_millis(800);
/// A bound for the pathological case of a server answering 503 instantly forever.
const MAX_RETRIES: usize = 12;
/// A retry is started only if it leaves its attempt at least this long before the deadline: one
/// started just before it would be cut by it, and the step would then report "unfinished"
/// instead of the error it really had (seen under load in CI).
const ATTEMPT_HEADROOM: Duration = Duration::from_millis(100);

/// Runs `op` until it succeeds, fails with a non-transient error, or the next wait would
/// end past `deadline`. Returns the last result and how many attempts were made.
pub async fn until<T, F, Fut>(
    step: &str,
    deadline: Instant,
    mut op: F,
) -> (Result<T, StepError>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let attempts = Cell::new(0u32);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(MAX_RETRIES);
    let result = (|| {
        attempts.set(attempts.get() + 1);
        op()
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(StepError::is_transient)
    .adjust(|e: &StepError, planned: Option<Duration>| {
        // The backoff's plan decides whether there is another attempt at all (its cap); a
        // server's Retry-After only decides how long to wait, and never less than the minimum
        // (`Retry-After: 0` from a struggling server must not become a tight loop).
        let planned = planned?;
        let wait = e.retry_after.map_or(planned, |asked| asked.max(MIN_DELAY));
        (Instant::now() + wait + ATTEMPT_HEADROOM < deadline).then_some(wait)
    })
    .notify(|e: &StepError, wait: Duration| {
        tracing::warn!(
            step,
            attempt = attempts.get(),
            wait_ms = wait.as_millis() as u64,
            error = %e,
            "transient failure, retrying"
        );
    })
    .await;
    (result, attempts.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outside::error::{FailureKind, System};

    fn failing(kind: FailureKind) -> StepError {
        StepError::new(System::Rabbitmq, "put", kind, "boom")
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = Cell::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (result, attempts) = until("s", deadline, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(failing(FailureKind::Reset))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(attempts, 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (result, attempts) = until("s", deadline, || async {
            Err::<(), _>(failing(FailureKind::Forbidden))
        })
        .await;
        assert_eq!(result.unwrap_err().kind, FailureKind::Forbidden);
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn retry_after_never_passes_the_attempt_cap() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (result, attempts) = until("s", deadline, || async {
            Err::<(), _>(failing(FailureKind::Throttled).with_retry_after(Some(Duration::ZERO)))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(
            attempts as usize,
            MAX_RETRIES + 1,
            "the first try and the capped retries"
        );
    }

    #[tokio::test]
    async fn a_zero_retry_after_still_waits_the_minimum() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = Instant::now();
        let calls = Cell::new(0);
        let (result, attempts) = until("s", deadline, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 4 {
                    Err(failing(FailureKind::Throttled).with_retry_after(Some(Duration::ZERO)))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(attempts, 4);
        assert!(
            started.elapsed() >= MIN_DELAY * 3,
            "three waits of at least {MIN_DELAY:?}: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn no_wait_runs_past_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(400);
        let started = Instant::now();
        let (result, attempts) = until("s", deadline, || async {
            Err::<(), _>(
                failing(FailureKind::Throttled).with_retry_after(Some(Duration::from_millis(120))),
            )
        })
        .await;
        assert!(result.is_err());
        assert!(
            Instant::now() <= deadline,
            "returned after {:?}",
            started.elapsed()
        );
        assert_eq!(
            attempts, 3,
            "0, 120, 240 ms: a fourth at 360 ms would leave its attempt 40 ms, under the headroom"
        );
    }
}
