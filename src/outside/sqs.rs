//! The durable hand-off: a tenant the trigger could not finish in time goes on an SQS queue,
//! and a worker (or `tenantctl drain`) provisions it with a longer budget.
//!
//! Cognito never calls the trigger again after an error and the user is already confirmed, so
//! the trigger hands off instead of failing. The message holds only the `sub` and the user pool
//! id — nothing secret, nothing a retry could not recompute. Sending the same `sub` twice is
//! harmless (provisioning converges), so the send is retried like every other write.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::outside::aws::sdk_error;
use crate::outside::error::{FailureKind, StepError, System};
use crate::tenant::TenantId;

/// The message body: `{"sub": "...", "userPoolId": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffMessage {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pool_id: Option<String>,
}

impl HandoffMessage {
    pub fn new(tenant: &TenantId, user_pool_id: Option<&str>) -> Self {
        Self {
            sub: tenant.as_str().to_owned(),
            user_pool_id: user_pool_id.map(str::to_owned),
        }
    }

    /// Parses a received body; a bad one is named, never quoted at length.
    pub fn parse(body: &str) -> Result<(Self, TenantId), String> {
        let msg: Self = serde_json::from_str(body).map_err(|e| {
            format!("hand-off message is not {{\"sub\", \"userPoolId\"}} JSON: {e}")
        })?;
        let tenant = TenantId::parse(&msg.sub).map_err(|e| format!("hand-off message: sub {e}"))?;
        Ok((msg, tenant))
    }
}

/// A request to top up a cell's pool of vhosts made ahead (the trigger sends one when a claim
/// leaves the pool low; the worker refills): `{"refill_pool": "<cell>"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefillRequest {
    pub refill_pool: String,
}

impl RefillRequest {
    /// `Some` when `body` is a refill request (anything else is a tenant's hand-off).
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }
}

/// One received message: its receipt handle (to delete it) and its body.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct HandoffQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl HandoffQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: &url::Url) -> Self {
        Self {
            client,
            url: url.as_str().to_owned(),
        }
    }

    /// Sends the tenant, retrying transient failures until `deadline`.
    pub async fn send(
        &self,
        message: &HandoffMessage,
        deadline: Instant,
    ) -> Result<u32, StepError> {
        let body = serde_json::to_string(message).map_err(|e| {
            StepError::new(
                System::Sqs,
                "encode hand-off",
                FailureKind::Other,
                e.to_string(),
            )
        })?;
        let action = format!("hand off tenant {}", message.sub);
        // The deadline bounds the attempt in flight too, not only the waits between attempts:
        // an SQS call slower than the time left must not keep Cognito waiting past 5 s.
        let sending = crate::outside::retry::until("sqs.handoff", deadline, || async {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(&body)
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error(System::Sqs, &action, e))
        });
        match tokio::time::timeout_at(deadline, sending).await {
            Ok((result, attempts)) => result.map(|()| attempts),
            Err(_) => Err(StepError::new(
                System::Sqs,
                action,
                FailureKind::Timeout,
                "no answer before the deadline",
            )),
        }
    }

    /// Asks the worker to top up `cell`'s pool, within `deadline` (one attempt: a refill
    /// missed here is the reconciler's).
    pub async fn request_refill(&self, cell: &str, deadline: Instant) -> Result<(), StepError> {
        let action = format!("ask for cell '{cell}''s pool to be refilled");
        let body = serde_json::to_string(&RefillRequest {
            refill_pool: cell.to_owned(),
        })
        .map_err(|e| StepError::new(System::Sqs, &action, FailureKind::Other, e.to_string()))?;
        let sending = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send();
        match tokio::time::timeout_at(deadline, sending).await {
            Ok(r) => r.map(drop).map_err(|e| sdk_error(System::Sqs, &action, e)),
            Err(_) => Err(StepError::new(
                System::Sqs,
                action,
                FailureKind::Timeout,
                "no answer before the deadline",
            )),
        }
    }

    /// Sends the tenant again to be received after `delay` (at most SQS's 15 minutes): a
    /// hand-off that waits (no cell has room) as a new message, so waiting never counts toward
    /// the queue's `maxReceiveCount` and the dead-letter queue keeps only real failures.
    pub async fn send_later(
        &self,
        message: &HandoffMessage,
        delay: std::time::Duration,
    ) -> Result<(), StepError> {
        let action = format!("hand off tenant {} again later", message.sub);
        let body = serde_json::to_string(message)
            .map_err(|e| StepError::new(System::Sqs, &action, FailureKind::Other, e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error(System::Sqs, &action, e))
    }

    /// Up to `max` messages, waiting at most `wait_seconds` for the first.
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<Received>, StepError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .send()
            .await
            .map_err(|e| sdk_error(System::Sqs, "receive hand-offs", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> Result<(), StepError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error(System::Sqs, "delete hand-off", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";

    #[test]
    fn messages_round_trip_and_hold_only_sub_and_pool() {
        let tenant = TenantId::parse(SUB).unwrap();
        let msg = HandoffMessage::new(&tenant, Some("us-east-1_abc"));
        let body = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            body,
            format!(r#"{{"sub":"{SUB}","userPoolId":"us-east-1_abc"}}"#)
        );
        let (back, t) = HandoffMessage::parse(&body).unwrap();
        assert_eq!(back, msg);
        assert_eq!(t, tenant);
    }

    #[test]
    fn bad_messages_are_named() {
        assert!(HandoffMessage::parse("nope").unwrap_err().contains("not {"));
        assert!(
            HandoffMessage::parse(r#"{"sub":"alice"}"#)
                .unwrap_err()
                .contains("not a UUID")
        );
    }
}
