//! A cell's vhosts made ahead, in its item: each name moves through string sets with
//! conditional updates, so every step happens once and no name is in two places:
//!
//! ```text
//! (reserve: a seat taken) ─▶ pool_making ─(made)─▶ pool_ready_<type> ─(claimed by a placement)─▶ the tenant's record
//!                                                        └─(retired)─▶ pool_removing ─(removed: the seat given back)─▶ ∅
//! ```
//! A claim (`Seat::claim`, in placement's transaction) is the only way out of the ready set to
//! a tenant; a retired vhost can no longer be claimed before it is removed from the broker.

use super::*;

/// One step of a vhost made ahead (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStep {
    /// Take a seat for a new one (room, the cell open, at most `max_making` being made).
    Reserve {
        max_tenants: u64,
        max_making: u64,
        open_by_file: bool,
    },
    /// Made on the broker: ready to be claimed.
    Ready,
    /// Taken out of the ready set, to be removed (the pool shrank, or the cell keeps none).
    Retire,
    /// Removed from the broker (or retiring one never made): its seat is given back.
    Removed { from_making: bool },
}

impl Registry {
    /// Moves `vhost` (of `queue_type`) one step in `cell`'s pool; `false` when its condition
    /// did not hold (it is not where the step starts, or no room for a reservation) and nothing
    /// was written.
    pub async fn pool_step(
        &self,
        cell: &str,
        vhost: &str,
        queue_type: QueueType,
        step: PoolStep,
    ) -> Result<bool, StepError> {
        let verb = match step {
            PoolStep::Reserve { .. } => "reserve",
            PoolStep::Ready => "make ready",
            PoolStep::Retire => "retire",
            PoolStep::Removed { .. } => "give back the seat of",
        };
        let action = format!("{verb} vhost '{vhost}' in cell '{cell}''s pool");
        let ready = format!("#{}", ready_attribute(queue_type));
        let (expression, condition) = match step {
            PoolStep::Reserve { open_by_file, .. } => (
                "SET #tenants = if_not_exists(#tenants, :zero) + :one ADD #pool_making :vhosts"
                    .to_owned(),
                format!(
                    "(attribute_not_exists(#tenants) OR #tenants < :max_tenants) AND \
                     (attribute_not_exists(#pool_making) OR size(#pool_making) < :max_making) AND {}",
                    if open_by_file {
                        "(attribute_not_exists(#cell_state) OR #cell_state = :open)"
                    } else {
                        "#cell_state = :open"
                    }
                ),
            ),
            PoolStep::Ready => (
                format!("DELETE #pool_making :vhosts ADD {ready} :vhosts"),
                "contains(#pool_making, :vhost)".to_owned(),
            ),
            PoolStep::Retire => (
                format!("DELETE {ready} :vhosts ADD #pool_removing :vhosts"),
                format!("contains({ready}, :vhost)"),
            ),
            PoolStep::Removed { from_making } => {
                let from = if from_making {
                    "#pool_making"
                } else {
                    "#pool_removing"
                };
                (
                    format!("SET #tenants = #tenants - :one DELETE {from} :vhosts"),
                    format!("contains({from}, :vhost) AND #tenants >= :one"),
                )
            }
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(cell))))
            .update_expression(&expression)
            .condition_expression(&condition)
            .set_expression_attribute_names(Some(aliases(&[&expression, &condition])))
            .expression_attribute_values(":vhosts", AttributeValue::Ss(vec![vhost.to_owned()]));
        match step {
            PoolStep::Reserve {
                max_tenants,
                max_making,
                ..
            } => {
                update = update
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":max_tenants", n(max_tenants))
                    .expression_attribute_values(":max_making", n(max_making))
                    .expression_attribute_values(":open", s(CellState::Open.as_str()));
            }
            PoolStep::Removed { .. } => {
                update = update
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":vhost", s(vhost));
            }
            PoolStep::Ready | PoolStep::Retire => {
                update = update.expression_attribute_values(":vhost", s(vhost));
            }
        }
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Ok(false),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }
}
