//! A tenant's item: read, the conditional create, transitions guarded by `version`, and the
//! outcome observations (converged, handed off, failed).

use super::lease::LEASE_FIELDS;
use super::*;
use crate::tenant::lease::Fence;

impl Registry {
    /// The tenant's item, read consistently; `None` when it has none.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, StepError> {
        let action = format!("read tenant {tenant}");
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        out.item.map(|i| decode(&action, i)).transpose()
    }

    /// Writes `record` unless the tenant has an item already; then that item comes back in the
    /// same call (`ReturnValuesOnConditionCheckFailure`), so duplicates converge on one record
    /// with no read first.
    pub async fn create(&self, record: &TenantRecord) -> Result<Created, StepError> {
        let action = format!("record tenant {}", record.sub);
        let item: Item = serde_dynamo::to_item(record).map_err(unbuilt(&action))?;
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sub)")
            .expression_attribute_names("#sub", "sub")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Created::New(record.clone())),
            Err(e) => {
                let old = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        Some(c.item.clone())
                    }
                    _ => None,
                });
                match old {
                    Some(Some(item)) => Ok(Created::Existing(decode(&action, item)?)),
                    Some(None) => {
                        let tenant = record.tenant()?;
                        let existing = self.get(&tenant).await?.ok_or_else(|| {
                            StepError::new(
                                System::Registry,
                                &action,
                                FailureKind::BadResponse,
                                "the item exists and does not",
                            )
                        })?;
                        Ok(Created::Existing(existing))
                    }
                    None => Err(sdk_error(System::Registry, &action, e)),
                }
            }
        }
    }

    /// Writes the intent fields of `after` if the item is still at `before.version`; a
    /// concurrent change gets [`FailureKind::Conflict`] and nothing is written.
    pub async fn transition(
        &self,
        before: &TenantRecord,
        after: &TenantRecord,
    ) -> Result<(), StepError> {
        let action = format!(
            "change tenant {} ({})",
            after.sub,
            after.pending.as_deref().unwrap_or("change")
        );
        let mut set = vec![
            "#state = :state",
            "#plan = :plan",
            "#generation = :generation",
            "#retain_data = :retain",
            "#version = :version",
            "#changed_at = :changed",
            // Counted where it is kept, not from the copy: another write may have published
            // an event since (`TenantOnboarded`), and two events never share one number.
            "#event_seq = if_not_exists(#event_seq, :zero) + :one",
        ];
        let mut remove = Vec::new();
        let mut values: Item = HashMap::from([
            (":state".to_owned(), s(after.state.as_str())),
            (":plan".to_owned(), s(&after.plan)),
            (":generation".to_owned(), n(after.generation.into())),
            (
                ":retain".to_owned(),
                AttributeValue::Bool(after.retain_data),
            ),
            (":version".to_owned(), n(after.version)),
            (":expected".to_owned(), n(before.version)),
            (
                ":changed".to_owned(),
                s(after.changed_at.clone().unwrap_or_else(now)),
            ),
            (":zero".to_owned(), n(0)),
            (":one".to_owned(), n(1)),
        ]);
        let optional = [
            ("#offboarded_at", ":offboarded", after.offboarded_at.clone()),
            ("#rotated_at", ":rotated", after.rotated_at.clone()),
            ("#pending", ":pending", after.pending.clone()),
            (
                "#event",
                ":event",
                after.event.map(|e| e.as_str().to_owned()),
            ),
        ];
        let mut set_owned = Vec::new();
        for (field, placeholder, value) in optional {
            match value {
                Some(v) => {
                    set_owned.push(format!("{field} = {placeholder}"));
                    values.insert(placeholder.to_owned(), s(v));
                }
                None => remove.push(field),
            }
        }
        set.extend(set_owned.iter().map(String::as_str));
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&after.sub)))
            .set_expression_attribute_names(Some(aliases(&[&expression, "#version"])))
            .update_expression(expression)
            .condition_expression("#version = :expected")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Err(StepError::new(
                System::Registry,
                action,
                FailureKind::Conflict,
                format!(
                    "the tenant changed meanwhile (version {} is no longer current); nothing was changed: read it again and retry",
                    before.version
                ),
            )),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }

    /// Records that `version`'s intent is applied everywhere — for a tenant that is not
    /// offboarded (`provisioned`), also the outcome `provisioned`; the first time a tenant is
    /// provisioned this publishes `TenantOnboarded`. `false` when the record has moved on to a
    /// newer version (which stays pending), is gone, or — with `lease` — is no longer held by
    /// that lease; with `lease`, the same write gives the lease back.
    pub async fn record_converged(
        &self,
        tenant: &TenantId,
        version: u64,
        provisioned: bool,
        lease: Option<&Fence>,
    ) -> Result<bool, StepError> {
        let action = format!("record tenant {tenant} converged");
        let at = now();
        let update = |first: bool| {
            let mut set = vec!["#converged_version = :v"];
            let mut remove = vec!["#pending"];
            let mut values: Item = HashMap::from([(":v".to_owned(), n(version))]);
            if provisioned {
                set.extend([
                    "#outcome = :outcome",
                    "#outcome_at = :at",
                    "#provisioned_at = if_not_exists(#provisioned_at, :at)",
                ]);
                remove.push("#outcome_detail");
                values.insert(":outcome".to_owned(), s("provisioned"));
                values.insert(":at".to_owned(), s(&at));
            }
            let mut condition = String::from("attribute_exists(#sub) AND #version = :v");
            if let Some(fence) = lease {
                condition.push_str(" AND #lease_fence = :fence");
                values.insert(":fence".to_owned(), n(fence.fence));
                remove.push(LEASE_FIELDS);
            }
            if first {
                set.extend([
                    "#event = :event",
                    "#event_seq = if_not_exists(#event_seq, :zero) + :one",
                ]);
                values.insert(":event".to_owned(), s(Event::TenantOnboarded.as_str()));
                values.insert(":zero".to_owned(), n(0));
                values.insert(":one".to_owned(), n(1));
                condition.push_str(" AND attribute_not_exists(#provisioned_at)");
            } else {
                remove.push("#event");
            }
            let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(tenant.as_str())))
                .set_expression_attribute_names(Some(aliases(&[&expression, &condition])))
                .update_expression(expression)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .send()
        };
        // First try: a tenant never provisioned before publishes TenantOnboarded, once.
        if provisioned {
            match update(true).await {
                Ok(_) => return Ok(true),
                Err(e) if e.as_service_error().is_some_and(is_condition_failed) => {}
                Err(e) => return Err(sdk_error(System::Registry, &action, e)),
            }
        }
        match update(false).await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition_failed) => Ok(false),
            Err(e) => Err(sdk_error(System::Registry, &action, e)),
        }
    }

    /// Records an outcome that is not "provisioned": handed off (publishes `TenantHandedOff`)
    /// or failed (with the failing step and its kind).
    pub async fn record_unfinished(
        &self,
        tenant: &TenantId,
        outcome: LastOutcome,
        detail: Option<&str>,
    ) -> Result<(), StepError> {
        let action = format!("record tenant {tenant} outcome");
        let at = now();
        let mut values: Item = HashMap::from([
            (
                ":outcome".to_owned(),
                s(match outcome {
                    LastOutcome::HandedOff => "handed-off",
                    LastOutcome::Failed => "failed",
                    LastOutcome::Pending => "pending",
                    LastOutcome::Provisioned => "provisioned",
                }),
            ),
            (":at".to_owned(), s(&at)),
        ]);
        let mut expression = String::from("SET #outcome = :outcome, #outcome_at = :at");
        if let Some(d) = detail {
            expression.push_str(", #outcome_detail = :detail");
            values.insert(":detail".to_owned(), s(d));
        }
        if outcome == LastOutcome::HandedOff {
            expression.push_str(", #handed_off_at = :at, #event = :event, #event_seq = if_not_exists(#event_seq, :zero) + :one");
            values.insert(":event".to_owned(), s(Event::TenantHandedOff.as_str()));
            values.insert(":zero".to_owned(), n(0));
            values.insert(":one".to_owned(), n(1));
        } else {
            expression.push_str(" REMOVE #event");
        }
        if detail.is_none() {
            expression.push_str(if expression.contains("REMOVE") {
                ", #outcome_detail"
            } else {
                " REMOVE #outcome_detail"
            });
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .set_expression_attribute_names(Some(aliases(&[&expression, "#sub"])))
            .update_expression(expression)
            .condition_expression("attribute_exists(#sub)")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map(drop)
            .or_else(|e| {
                // No item (the registry was down at sign-up): whoever finishes the tenant
                // writes it. An outcome alone is not intent.
                if e.as_service_error().is_some_and(is_condition_failed) {
                    Ok(())
                } else {
                    Err(sdk_error(System::Registry, &action, e))
                }
            })
    }
}
