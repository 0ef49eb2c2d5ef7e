//! A tenant's lease (`tenant::lease`), taken and given back with conditional writes on its
//! item. Taking it also reads the record, in the same write: the holder applies what the record
//! says at that moment, never an older copy. Lease writes are not transitions: they remove
//! `event`, so the stream publishes nothing for them.

use std::time::SystemTime;

use aws_sdk_dynamodb::types::ReturnValue;

use super::*;
use crate::tenant::lease::{Fence, Held, epoch_ms, holder};

/// The answer to taking a tenant's lease.
#[derive(Debug, Clone)]
pub enum Taken {
    /// This call holds it: the record as that same write left it, and the fence to write with.
    Held(Box<TenantRecord>, Fence),
    /// Someone else holds it.
    Busy(Held),
    /// The tenant has no record.
    NoRecord,
}

impl Registry {
    /// Takes `tenant`'s lease for `holder` until `until`, if it is free or ran out. A refusal
    /// whose item shows the lease ran out meanwhile (between the holder's write and this one)
    /// is asked again at once, once: only a lease held now answers `Busy`.
    pub async fn take_lease(
        &self,
        tenant: &TenantId,
        holder_name: &str,
        until: SystemTime,
    ) -> Result<Taken, StepError> {
        match self.try_take_lease(tenant, holder_name, until).await? {
            Err(_ran_out) => Ok(self
                .try_take_lease(tenant, holder_name, until)
                .await?
                .unwrap_or_else(Taken::Busy)),
            Ok(taken) => Ok(taken),
        }
    }

    /// One conditional write for the lease; `Err(held)`: refused, though the lease the item
    /// shows has run out (`held` is what it shows).
    async fn try_take_lease(
        &self,
        tenant: &TenantId,
        holder_name: &str,
        until: SystemTime,
    ) -> Result<Result<Taken, Held>, StepError> {
        let action = format!("take tenant {tenant}'s lease");
        let now = SystemTime::now();
        let until_ms = epoch_ms(until);
        let expression = "SET #lease_holder = :holder, #lease_until_ms = :until, #lease_since = :since, #lease_fence = if_not_exists(#lease_fence, :zero) + :one REMOVE #event";
        let condition = "attribute_exists(#sub) AND (attribute_not_exists(#lease_until_ms) OR #lease_until_ms <= :now)";
        let values: Item = HashMap::from([
            (":holder".to_owned(), s(holder_name)),
            (":until".to_owned(), n(until_ms)),
            (":since".to_owned(), s(now_text(now))),
            (":now".to_owned(), n(epoch_ms(now))),
            (":zero".to_owned(), n(0)),
            (":one".to_owned(), n(1)),
        ]);
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .set_expression_attribute_names(Some(aliases(&[expression, condition])))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let record = decode(&action, out.attributes.unwrap_or_default())?;
                let fence = Fence {
                    fence: record.lease_fence,
                    until_ms,
                };
                Ok(Ok(Taken::Held(Box::new(record), fence)))
            }
            Err(e) => {
                let old = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        Some(c.item.clone())
                    }
                    _ => None,
                });
                match old {
                    Some(None) => Ok(Ok(Taken::NoRecord)),
                    Some(Some(item)) => {
                        let record = decode(&action, item)?;
                        Ok(match holder(&record, SystemTime::now()) {
                            Some(held) => Ok(Taken::Busy(held)),
                            // Ran out between the holder's write and this one: free now.
                            None => Err(Held {
                                holder: record.lease_holder.unwrap_or_default(),
                                since: record.lease_since.unwrap_or_default(),
                                until_ms: record.lease_until_ms.unwrap_or_default(),
                            }),
                        })
                    }
                    None => Err(sdk_error(System::Registry, &action, e)),
                }
            }
        }
    }

    /// Gives the lease back, if `fence` still holds it (a lease taken over is not ours).
    pub async fn give_back_lease(&self, tenant: &TenantId, fence: &Fence) -> Result<(), StepError> {
        let action = format!("give back tenant {tenant}'s lease");
        let expression = format!("REMOVE {LEASE_FIELDS}, #event");
        let condition = "#lease_fence = :fence";
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .set_expression_attribute_names(Some(aliases(&[&expression, condition])))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":fence", n(fence.fence))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Ok(()),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }
}

/// The lease's fields but its fencing number (which only grows).
pub(super) const LEASE_FIELDS: &str = "#lease_holder, #lease_until_ms, #lease_since";

fn now_text(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at)
        .ok()
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map_or_else(now, |t| t.to_string())
}
