//! A move's record: begun (a seat taken in the target), each step done, the switch of cell, and
//! the end (the source's seat given back). Each of them bumps `version` (and, as the mover
//! applies what it records, `converged_version` with it), so a change read before the step
//! fails its condition and is read again.

use super::*;

impl Registry {
    /// Starts a move of `record`'s tenant to `seat.cell`: takes a seat there (room and open, as a
    /// placement) and records the move, in one transaction, only if the record is unchanged,
    /// active and not moving already.
    pub async fn begin_move(
        &self,
        record: &TenantRecord,
        from: &str,
        seat: &Seat<'_>,
    ) -> Result<MoveProgress, StepError> {
        use aws_sdk_dynamodb::types::Update;
        let action = format!("start moving tenant {} to cell '{}'", record.sub, seat.cell);
        let progress = MoveProgress {
            from: from.to_owned(),
            to: seat.cell.to_owned(),
            step: "seated".to_owned(),
            started_at: now(),
            source_seat: record.seat_connections,
        };
        let value = serde_dynamo::to_attribute_value(&progress).map_err(unbuilt(&action))?;
        let condition = "#version = :v AND attribute_not_exists(#moving) AND #state = :active";
        let on_record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&record.sub)))
            .update_expression(format!("SET #moving = :moving, {BUMP}"))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&["#moving", BUMP, condition])))
            .expression_attribute_values(":moving", value)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":v", n(record.version))
            .expression_attribute_values(":active", s(Phase::Active.as_str()))
            .build()
            .map_err(unbuilt(&action))?;
        let done = self
            .update_taking_seat(&action, on_record, seat, true)
            .await?;
        if done.failed(0) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Conflict,
                "the record changed meanwhile; run it again",
            ));
        }
        if done.failed(1) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Rejected,
                format!("cell '{}' is full or not open", seat.cell),
            ));
        }
        Ok(progress)
    }

    /// Records a move's next step done.
    pub async fn move_step(
        &self,
        tenant: &TenantId,
        to: &str,
        step: &str,
    ) -> Result<(), StepError> {
        let action = format!("record tenant {tenant}'s move step '{step}'");
        let condition = "#moving.#to = :to";
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .update_expression(format!("SET #moving.#step = :step, {BUMP} REMOVE #event"))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&[
                "#moving.#step #event",
                BUMP,
                condition,
            ])))
            .expression_attribute_values(":step", s(step))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":to", s(to))
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(())
    }

    /// The switch: the tenant lives in `to` from now (its credentials are written for that
    /// cell's broker next). Publishes `TenantMoved`.
    pub async fn switch_cell(
        &self,
        tenant: &TenantId,
        to: &str,
        connections: u64,
    ) -> Result<(), StepError> {
        let action = format!("switch tenant {tenant} to cell '{to}'");
        let condition = "#moving.#to = :to";
        let expression = format!(
            "SET #cell = :to, #seat_connections = :c, #moving.#step = :step, \
             #changed_at = :at, #event = :event, \
             #event_seq = if_not_exists(#event_seq, :zero) + :one, {BUMP}"
        );
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .set_expression_attribute_names(Some(aliases(&[&expression, condition])))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":c", n(connections))
            .expression_attribute_values(":step", s("switched"))
            .expression_attribute_values(":at", s(now()))
            .expression_attribute_values(":event", s(Event::TenantMoved.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(())
    }

    /// The end of a move: the source cell's seat is given back and the move forgotten, once.
    pub async fn finish_move(
        &self,
        tenant: &TenantId,
        progress: &MoveProgress,
    ) -> Result<(), StepError> {
        let action = format!("finish tenant {tenant}'s move to cell '{}'", progress.to);
        let source_seat = progress.source_seat.map(|c| (progress.from.as_str(), c));
        // A failed condition: finished already.
        self.forget_move(&action, tenant, progress, &progress.to, source_seat)
            .await
            .map(drop)
    }

    /// A move forgotten (versioned, `BUMP`) while the tenant lives in `lives_in`, and the seat
    /// of `release` (cell, connections) given back, in one transaction.
    async fn forget_move(
        &self,
        action: &str,
        tenant: &TenantId,
        progress: &MoveProgress,
        lives_in: &str,
        release: Option<(&str, u64)>,
    ) -> Result<Transacted, StepError> {
        use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
        let other = unbuilt(action);
        let condition = "#moving.#to = :to AND #cell = :cell";
        let on_record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(tenant.as_str())))
            .update_expression(format!("SET {BUMP} REMOVE #moving, #event"))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(aliases(&["#moving #event", BUMP, condition])))
            .expression_attribute_values(":to", s(&progress.to))
            .expression_attribute_values(":cell", s(lives_in))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(other)?;
        let mut items = vec![TransactWriteItem::builder().update(on_record).build()];
        if let Some((cell, connections)) = release {
            let on_cell = self
                .count_change(cell, -1, -i128::from(connections))
                .map_err(other)?;
            items.push(TransactWriteItem::builder().update(on_cell).build());
        }
        self.transact(action, items).await
    }

    /// An abandoned move (`tenantctl move --abort`), before its switch: the move forgotten and
    /// the target's seat given back, once, only while the tenant still lives in `from`.
    pub async fn abort_move(
        &self,
        tenant: &TenantId,
        progress: &MoveProgress,
        connections: u64,
    ) -> Result<(), StepError> {
        let action = format!("abort tenant {tenant}'s move to cell '{}'", progress.to);
        let target_seat = Some((progress.to.as_str(), connections));
        match self
            .forget_move(&action, tenant, progress, &progress.from, target_seat)
            .await?
        {
            Transacted::Written => Ok(()),
            Transacted::ConditionsFailed(_) => Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Conflict,
                "the move changed meanwhile (switched, finished or aborted): read it again",
            )),
        }
    }
}
