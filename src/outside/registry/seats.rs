//! Cells' items and seats: each cell's operator state and counters, and every write that takes,
//! resizes or gives back a tenant's seat together with its record, in one transaction.

use super::*;

/// A cell's item as read (its name and `CellItem`); `None` for any other item.
fn decode_cell_item(item: &Item) -> Option<(String, CellItem)> {
    let name = item
        .get("sub")
        .and_then(|v| v.as_s().ok())?
        .strip_prefix(CELL_KEY_PREFIX)?
        .to_owned();
    let number = |field: &str| {
        item.get(field)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(0, |v| v.max(0) as u64)
    };
    let state = item
        .get("cell_state")
        .and_then(|v| v.as_s().ok())
        .and_then(|s| CellState::parse(s));
    let set = |field: &str| {
        let mut names = item
            .get(field)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        names.sort();
        names
    };
    let ready = QueueType::ALL
        .into_iter()
        .map(|t| (t, set(&ready_attribute(t))))
        .filter(|(_, names)| !names.is_empty())
        .collect();
    Some((
        name,
        CellItem {
            state,
            tenants: number("tenants"),
            connections: number("connections"),
            ready,
            making: set("pool_making"),
            removing: set("pool_removing"),
            claimed: number("pool_claimed"),
        },
    ))
}

impl Registry {
    /// The state operators gave each of `names` (`tenantctl cell drain`); a cell missing from the
    /// answer has none yet (its file's state holds).
    pub async fn cell_states(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, CellState>, StepError> {
        Ok(self
            .cell_items(names)
            .await?
            .into_iter()
            .filter_map(|(name, item)| item.state.map(|s| (name, s)))
            .collect())
    }

    /// Each of `names`' item (state and counters), read consistently; a cell with no item is
    /// absent from the answer.
    pub async fn cell_items(&self, names: &[&str]) -> Result<HashMap<String, CellItem>, StepError> {
        let action = format!("read cells of table '{}'", self.table);
        let mut out = HashMap::new();
        for chunk in names.chunks(100) {
            let keys = chunk.iter().map(|n| key(&cell_key(n))).collect::<Vec<_>>();
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(unbuilt(&action))?;
            let got = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error(System::Registry, &action, e))?;
            if got.unprocessed_keys.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(StepError::new(
                    System::Registry,
                    &action,
                    FailureKind::Throttled,
                    "some cell states were not read (throttled); try again",
                ));
            }
            for item in got
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                if let Some((name, cell)) = decode_cell_item(&item) {
                    out.insert(name, cell);
                }
            }
        }
        Ok(out)
    }

    /// `on_record` and a seat taken in `seat.cell`, in one transaction.
    pub(super) async fn update_taking_seat(
        &self,
        action: &str,
        on_record: aws_sdk_dynamodb::types::Update,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<Transacted, StepError> {
        use aws_sdk_dynamodb::types::TransactWriteItem;
        let items = vec![
            TransactWriteItem::builder().update(on_record).build(),
            TransactWriteItem::builder()
                .update(self.take_seat(seat, enforce)?)
                .build(),
        ];
        self.transact(action, items).await
    }

    /// The update that moves `cell`'s counts by these amounts (a seat given back: -1 tenant and
    /// its connections; a plan change: its connections' difference).
    pub(super) fn count_change(
        &self,
        cell: &str,
        tenants: i128,
        connections: i128,
    ) -> Result<aws_sdk_dynamodb::types::Update, aws_sdk_dynamodb::error::BuildError> {
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(cell))))
            .update_expression("ADD #tenants :tenants, #connections :connections")
            .expression_attribute_names("#tenants", "tenants")
            .expression_attribute_names("#connections", "connections")
            .expression_attribute_values(":tenants", AttributeValue::N(tenants.to_string()))
            .expression_attribute_values(":connections", AttributeValue::N(connections.to_string()))
            .build()
    }

    /// `on_record` and `on_cell` together; `false` when the record's condition failed (the
    /// change was made already, or the record moved on) and nothing was written.
    pub(super) async fn record_and_cell(
        &self,
        action: &str,
        on_record: aws_sdk_dynamodb::types::Update,
        on_cell: aws_sdk_dynamodb::types::Update,
    ) -> Result<bool, StepError> {
        use aws_sdk_dynamodb::types::TransactWriteItem;
        let items = vec![
            TransactWriteItem::builder().update(on_record).build(),
            TransactWriteItem::builder().update(on_cell).build(),
        ];
        Ok(matches!(
            self.transact(action, items).await?,
            Transacted::Written
        ))
    }

    /// The update that takes a seat in `seat.cell`, conditioned on room and an open state.
    pub(super) fn take_seat(
        &self,
        seat: &Seat,
        enforce: bool,
    ) -> Result<aws_sdk_dynamodb::types::Update, StepError> {
        let state_condition = if seat.open_by_file {
            "(attribute_not_exists(#cell_state) OR #cell_state = :open)"
        } else {
            "#cell_state = :open"
        };
        // A claim takes the seat its vhost made ahead held already: the tenants' count stays,
        // the vhost leaves the ready set, and only if it is still there (one claimant).
        let (seats, expression) = match seat.claim {
            None => (
                "(attribute_not_exists(#tenants) OR #tenants < :max_tenants)".to_owned(),
                "SET #tenants = if_not_exists(#tenants, :zero) + :one, \
                 #connections = if_not_exists(#connections, :zero) + :c"
                    .to_owned(),
            ),
            Some((_, queue_type)) => {
                let ready = ready_attribute(queue_type);
                (
                    format!("contains(#{ready}, :vhost)"),
                    format!(
                        "SET #connections = if_not_exists(#connections, :zero) + :c, \
                         #pool_claimed = if_not_exists(#pool_claimed, :zero) + :one \
                         DELETE #{ready} :vhosts"
                    ),
                )
            }
        };
        let condition = format!(
            "{seats} AND \
             (attribute_not_exists(#connections) OR #connections <= :room) AND {state_condition}"
        );
        // Refused, the cell comes back as it was: a placement that lost its claim picks again
        // from it without reading the cell again.
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(seat.cell))))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .update_expression(&expression)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":c", n(seat.connections));
        let update = match seat.claim {
            Some((vhost, _)) => update
                .expression_attribute_values(":vhosts", AttributeValue::Ss(vec![vhost.to_owned()]))
                .expression_attribute_values(":vhost", s(vhost)),
            None => update,
        };
        let update = if enforce || seat.claim.is_some() {
            let update = if seat.claim.is_none() {
                update.expression_attribute_values(":max_tenants", n(seat.max_tenants))
            } else {
                update
            };
            update
                .set_expression_attribute_names(Some(aliases(&[&expression, &condition])))
                .condition_expression(condition)
                .expression_attribute_values(
                    ":room",
                    n(seat.max_connections.saturating_sub(seat.connections)),
                )
                .expression_attribute_values(":open", s(CellState::Open.as_str()))
        } else {
            update.set_expression_attribute_names(Some(aliases(&[&expression])))
        };
        update.build().map_err(|e| {
            StepError::new(
                System::Registry,
                format!("place a tenant in cell '{}'", seat.cell),
                FailureKind::Other,
                e.to_string(),
            )
        })
    }

    /// Writes `record` (a new tenant's) in `seat.cell` and takes a seat there, in one
    /// transaction: the record only if the tenant has none, the seat only if the cell has room
    /// and is open. A tenant with a record already comes back as it is (`Existing`); a full or
    /// closed cell refuses and nothing is written.
    pub async fn place(&self, record: &TenantRecord, seat: &Seat<'_>) -> Result<Placed, StepError> {
        self.place_with(record, seat, true).await
    }

    /// As [`Registry::place`], counting the seat whatever the cell's room and state: for a
    /// tenant whose vhost is already on that cell's broker (adoption).
    pub async fn place_anyway(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
    ) -> Result<Placed, StepError> {
        self.place_with(record, seat, false).await
    }

    pub(super) async fn place_with(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<Placed, StepError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let action = format!("place tenant {} in cell '{}'", record.sub, seat.cell);
        let mut placed = record.clone();
        placed.cell = seat.cell.to_owned();
        placed.seat_connections = Some(seat.connections);
        placed.vhost = seat.claim.map(|(vhost, _)| vhost.to_owned());
        if enforce && seat.connections > seat.max_connections {
            return Ok(Placed::Refused(None));
        }
        let item: Item = serde_dynamo::to_item(&placed).map_err(unbuilt(&action))?;
        let other = unbuilt(&action);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sub)")
            .expression_attribute_names("#sub", "sub")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(other)?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder()
                .update(self.take_seat(seat, enforce)?)
                .build(),
        ];
        let reasons = match self.transact(&action, items).await? {
            Transacted::Written => return Ok(Placed::New(placed)),
            Transacted::ConditionsFailed(reasons) => reasons,
        };
        let mut reasons = reasons.into_iter();
        match reasons.next() {
            Some((true, old)) => {
                let existing = match old {
                    Some(item) => decode(&action, item)?,
                    None => self.get(&record.tenant()?).await?.ok_or_else(|| {
                        StepError::new(
                            System::Registry,
                            &action,
                            FailureKind::Conflict,
                            "the record exists and does not; try again",
                        )
                    })?,
                };
                Ok(Placed::Existing(existing))
            }
            // The record's condition held: the seat's did not (full, not open, or the vhost
            // claimed is no longer ready).
            _ => Ok(Placed::Refused(
                reasons
                    .next()
                    .and_then(|(_, item)| item)
                    .and_then(|item| decode_cell_item(&item))
                    .map(|(_, cell)| cell),
            )),
        }
    }

    /// Gives back the seat of a tenant whose vhost is gone: the record stops counting and the
    /// cell's counters go down, once (the record's condition makes a repeat a no-op), and its
    /// version grows by one (`BUMP`). `false`: released already, or the record moved on.
    pub async fn release_seat(&self, record: &TenantRecord) -> Result<bool, StepError> {
        let Some(connections) = record.seat_connections else {
            return Ok(false);
        };
        let action = format!(
            "release tenant {}'s seat in cell '{}'",
            record.sub, record.cell
        );
        // A failed condition: released already.
        self.change_seat(
            record,
            &action,
            (&[], &["#seat_connections"]),
            "attribute_exists(#seat_connections)",
            &[],
            (-1, -i128::from(connections)),
        )
        .await
    }

    /// Makes a tenant's seat count `connections` (its plan changed): the record's count and its
    /// cell's, together, once (the record's condition makes a repeat a no-op). `false`: the
    /// record had moved on (another change, a move) and nothing was written.
    pub async fn resize_seat(
        &self,
        record: &TenantRecord,
        connections: u64,
        max_connections: Option<u64>,
    ) -> Result<bool, StepError> {
        let Some(old) = record.seat_connections else {
            return Ok(false);
        };
        let action = format!(
            "count tenant {}'s seat in cell '{}' as {connections} connections",
            record.sub, record.cell
        );
        let grows = connections.saturating_sub(old);
        let no_room = || {
            StepError::new(
                System::Registry,
                &action,
                FailureKind::Rejected,
                format!(
                    "cell '{}' has no room for {grows} more connections (its capacity.connections is {}): give it room, or move the tenant to a cell that has it",
                    record.cell,
                    max_connections.unwrap_or_default()
                ),
            )
        };
        let Some(max) = max_connections.filter(|_| grows > 0) else {
            return self
                .change_seat(
                    record,
                    &action,
                    (&["#seat_connections = :new"], &[]),
                    "#seat_connections = :old",
                    &[(":new", n(connections)), (":old", n(old))],
                    (0, i128::from(connections) - i128::from(old)),
                )
                .await;
        };
        // Growing: the cell's granted connections must stay within its capacity, checked in
        // the same transaction as the count (a plan upgrade never passes the hard limit).
        let Some(room) = max.checked_sub(grows) else {
            return Err(no_room());
        };
        let other = unbuilt(&action);
        let on_record = self
            .seat_write(
                record,
                (&["#seat_connections = :new"], &[]),
                "#seat_connections = :old AND #cell = :cell",
                &[
                    (":new", n(connections)),
                    (":old", n(old)),
                    (":cell", s(&record.cell)),
                ],
            )
            .map_err(other)?;
        let on_cell = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(&record.cell))))
            .update_expression("ADD #connections :grows")
            .condition_expression("attribute_not_exists(#connections) OR #connections <= :room")
            .expression_attribute_names("#connections", "connections")
            .expression_attribute_values(":grows", n(grows))
            .expression_attribute_values(":room", n(room))
            .build()
            .map_err(other)?;
        use aws_sdk_dynamodb::types::TransactWriteItem;
        let items = vec![
            TransactWriteItem::builder().update(on_record).build(),
            TransactWriteItem::builder().update(on_cell).build(),
        ];
        match self.transact(&action, items).await? {
            Transacted::Written => Ok(true),
            done if done.failed(0) => Ok(false),
            _ => Err(no_room()),
        }
    }

    /// The write of a seat change on a tenant's record: `set` and `remove` (fields), beside the
    /// version bump (`BUMP`) and `event` removed (not a transition), only at the version read
    /// and under `condition` (with `values`).
    pub(super) fn seat_write(
        &self,
        record: &TenantRecord,
        (set, remove): (&[&str], &[&str]),
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<aws_sdk_dynamodb::types::Update, aws_sdk_dynamodb::error::BuildError> {
        let set: Vec<&str> = set.iter().copied().chain([BUMP]).collect();
        let remove: Vec<&str> = remove.iter().copied().chain(["#event"]).collect();
        let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        let condition = format!("{condition} AND #version = :v");
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&record.sub)))
            .set_expression_attribute_names(Some(aliases(&[&expression, &condition])))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_values(":v", n(record.version))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        for (name, value) in values {
            update = update.expression_attribute_values(*name, value.clone());
        }
        update.build()
    }

    /// A seat change (`seat_write`) of a tenant still in its cell, with its cell's counters
    /// moved by `(tenants, connections)`, in one transaction; `false`: a condition failed and
    /// nothing was written.
    pub(super) async fn change_seat(
        &self,
        record: &TenantRecord,
        action: &str,
        fields: (&[&str], &[&str]),
        condition: &str,
        values: &[(&str, AttributeValue)],
        (tenants, connections): (i128, i128),
    ) -> Result<bool, StepError> {
        let condition = format!("{condition} AND #cell = :cell");
        let values: Vec<(&str, AttributeValue)> = values
            .iter()
            .cloned()
            .chain([(":cell", s(&record.cell))])
            .collect();
        let other = unbuilt(action);
        let on_record = self
            .seat_write(record, fields, &condition, &values)
            .map_err(other)?;
        let on_cell = self
            .count_change(&record.cell, tenants, connections)
            .map_err(other)?;
        self.record_and_cell(action, on_record, on_cell).await
    }

    /// Takes a seat for a tenant that holds none, in `seat.cell` (its own; a record still
    /// naming the pre-cells `default` is renamed to it): with `enforce`, under the same room and
    /// state conditions as a placement (a restore after the vhost was removed); without, as it
    /// is (a tenant whose vhost exists there already). Its version grows by one (`BUMP`).
    /// `false`: it holds one already, or the record moved on.
    pub async fn reseat(
        &self,
        record: &TenantRecord,
        seat: &Seat<'_>,
        enforce: bool,
    ) -> Result<bool, StepError> {
        let action = format!("seat tenant {} in cell '{}'", record.sub, seat.cell);
        let on_record = self
            .seat_write(
                record,
                (&["#seat_connections = :c", "#cell = :cell"], &[]),
                "attribute_not_exists(#seat_connections) AND #cell = :was",
                &[
                    (":cell", s(seat.cell)),
                    (":was", s(&record.cell)),
                    (":c", n(seat.connections)),
                ],
            )
            .map_err(unbuilt(&action))?;
        let done = self
            .update_taking_seat(&action, on_record, seat, enforce)
            .await?;
        if done.failed(0) {
            return Ok(false); // seated already (or moved): nothing to take
        }
        if done.failed(1) {
            return Err(StepError::new(
                System::Registry,
                &action,
                FailureKind::Rejected,
                format!(
                    "cell '{}' is full or not open: `tenantctl move --sub {} --to CELL` places it elsewhere",
                    seat.cell, record.sub
                ),
            ));
        }
        Ok(true)
    }

    /// Records an operator's state for a cell; returns the state it had (`None`: none recorded).
    pub async fn set_cell_state(
        &self,
        name: &str,
        state: CellState,
    ) -> Result<Option<CellState>, StepError> {
        let action = format!("set cell '{name}' {}", state.as_str());
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&cell_key(name))))
            .update_expression("SET cell_state = :state, changed_at = :at")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":at", s(now()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error(System::Registry, &action, e))?;
        Ok(out
            .attributes
            .and_then(|a| a.get("cell_state").and_then(|v| v.as_s().ok()).cloned())
            .and_then(|s| CellState::parse(&s)))
    }
}
