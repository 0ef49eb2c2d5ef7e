//! Cells against the stack: its two brokers (RabbitMQ 3.10 and 4.0) declared as two cells in a
//! cells file of the test's own, reported from bulk listings (`tenantctl cells`), and a cell's
//! state changed in the registry (`tenantctl cell drain|open|close`), never in the file.

use post_signup::cells::CellState;
use post_signup::lambda::app::App;
use post_signup::lambda::trigger::Finish;
use post_signup::tenant::TenantId;
use post_signup::tenant::record::Phase;
use serde_json::Value;

use crate::helpers::*;

fn brokers() -> (String, String) {
    stack_brokers()
}

fn cells_file(capacity: u32) -> String {
    cells_file_with(capacity, capacity, 500)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let out = tenantctl_with(args, env, true);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn row<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .and_then(|r| r.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cell {name} in {rows}"))
}

#[tokio::test]
async fn two_brokers_are_two_cells_reported_from_bulk_listings() {
    let (table, _) = fresh_registry_table().await;
    let cells = cells_file(20);
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    // A tenant recorded before cells (cell `default`) lives in the first cell.
    let tenant = fresh_tenant();
    let before = registry_at(&table).await;
    let mut old = post_signup::tenant::record::TenantRecord::new(
        &tenant,
        None,
        &post_signup::tenant::plan::Plans::embedded().unwrap(),
        "sign-up",
    );
    old.cell = post_signup::cells::DEFAULT_CELL.to_owned();
    before.create(&old).await.unwrap();
    let (code, _, err) = run(&["provision", "--sub", tenant.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    // A new one is placed (and counted) in a cell.
    let placed = fresh_tenant();
    let (code, _, err) = run(&["provision", "--sub", placed.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    let home = registry_at(&table)
        .await
        .get(&placed)
        .await
        .unwrap()
        .unwrap()
        .cell;
    assert!(["a", "b"].contains(&home.as_str()), "{home}");
    let (code, rows, err) = run(&["cells", "--output", "json"], &env);
    assert_eq!(code, 0, "{err}");
    // The tenant recorded before cells is counted where it lives, and its record names it.
    let legacy = registry_at(&table)
        .await
        .get(&tenant)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(legacy.cell, "a");
    let seats = |cell: &str| u64::from(home == cell) + u64::from(cell == "a");
    assert_eq!(row(&rows, "a")["seats"]["tenants"], seats("a"), "{rows}");
    assert_eq!(row(&rows, "b")["seats"]["tenants"], seats("b"), "{rows}");
    let a = row(&rows, "a");
    let b = row(&rows, "b");
    assert!(
        a["broker_version"]
            .as_str()
            .unwrap()
            .starts_with(&brokers().0),
        "{a}"
    );
    assert!(
        b["broker_version"]
            .as_str()
            .unwrap()
            .starts_with(&brokers().1),
        "{b}"
    );
    let active = |cell: &str| u64::from(home == cell);
    assert_eq!(a["tenants"]["active"], 1 + active("a"), "{a}");
    assert_eq!(b["tenants"]["active"], active("b"), "{b}");
    assert_eq!(a["vhosts"]["capacity"], 20);
    assert!(
        a["vhosts"]["used"].as_u64().unwrap() >= 2,
        "the tenant's vhost and /: {a}"
    );
    assert!(
        a["connections_granted"].as_u64().unwrap() > 0,
        "its plan's connections: {a}"
    );
    assert_eq!(
        (&a["state"], &a["state_from"]),
        (&"open".into(), &"file".into())
    );
}

#[tokio::test]
async fn a_cell_is_drained_and_opened_in_the_registry_not_the_file() {
    let (table, _) = fresh_registry_table().await;
    let cells = cells_file(20);
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    let (code, change, err) = run(&["cell", "drain", "b"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(change["before"], "open");
    assert_eq!(change["after"], "draining");
    let (_, rows, _) = run(&["cells", "--output", "json"], &env);
    assert_eq!(row(&rows, "b")["state"], "draining");
    assert_eq!(row(&rows, "b")["state_from"], "registry");
    assert_eq!(row(&rows, "a")["state"], "open");
    // The cell's item shares the registry table: listing tenants skips it. A draining cell
    // takes no new tenant.
    let tenant = fresh_tenant();
    assert_eq!(run(&["provision", "--sub", tenant.as_str()], &env).0, 0);
    let (code, listed, err) = run(&["list", "--output", "json"], &env);
    assert_eq!(code, 0, "{err}");
    let tenants: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["tenant"].as_str())
        .collect();
    assert_eq!(tenants, [tenant.as_str()]);
    assert_eq!(listed[0]["cell"], "a", "b is draining: {listed}");
    let (_, change, _) = run(&["cell", "open", "b"], &env);
    assert_eq!(
        (&change["before"], &change["after"]),
        (&"draining".into(), &"open".into())
    );
    // An unknown cell changes nothing and says which cells there are.
    let (code, _, err) = run(&["cell", "close", "c"], &env);
    assert_eq!(code, 2);
    assert!(
        err.contains("no cell 'c'") && err.contains("cells: a, b"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_cells_file_is_refused_naming_the_cell_and_the_field() {
    let cells = cells_file(20);
    let text = std::fs::read_to_string(&cells).unwrap().replacen(
        "capacity: {vhosts: 20,",
        "capacity: {vhosts: -1,",
        1,
    );
    std::fs::write(&cells, text).unwrap();
    let (code, _, err) = run(&["cells"], &[("CELLS_PATH", cells.as_str())]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("CELLS_PATH") && err.contains("cell 'a' (cells[0]): capacity.vhosts"),
        "{err}"
    );
}

#[tokio::test]
async fn check_cells_warns_when_an_amazon_mq_cell_declares_more_than_its_broker_gives() {
    let path = std::env::temp_dir().join(format!("mq-cells-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        "cells:\n  - name: mq-a\n    management_url: https://b-1234.mq.eu-west-1.amazonaws.com\n    amqp_url: amqps://b-1234.mq.eu-west-1.amazonaws.com:5671\n    admin_secret_id: admin/mq-a\n    capacity: {vhosts: 1500, connections: 5000}\n",
    )
    .unwrap();
    let (code, json, err) = run(&["check-cells", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 0, "valid, with a warning: {err}");
    let warnings = json["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{json}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("mq-a") && w.contains("vhost_max of 50")),
        "{warnings:?}"
    );
    assert!(err.contains("warning: cell 'mq-a'"), "{err}");
}

/// An app with this test's cells file, registry table and hand-off queue.
async fn cells_app(a_vhosts: u32, b_vhosts: u32) -> (App, String, String) {
    let (table, _) = fresh_registry_table().await;
    let queue = fresh_queue().await;
    let cells = cells_file_with(a_vhosts, b_vhosts, 500);
    let app = app_with(&[
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
        ("HANDOFF_QUEUE_URL", queue.as_str()),
    ])
    .await;
    (app, table, queue)
}

/// The operator's settings for `app`'s cells file and registry table (for `run`).
fn operator_env<'a>(app: &'a App, table: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("CELLS_PATH", app.settings.cells.source.as_str()),
        ("REGISTRY_TABLE", table),
    ]
}

/// A new tenant that lives in cell a (b drains while it signs up, then opens again).
async fn signed_up_in_a(app: &App) -> TenantId {
    app.registry
        .set_cell_state("b", CellState::Draining)
        .await
        .unwrap();
    let t = fresh_tenant();
    assert_eq!(sign_up_on(app, &t).await, Finish::Provisioned);
    app.registry
        .set_cell_state("b", CellState::Open)
        .await
        .unwrap();
    t
}

async fn cell_of(app: &App, tenant: &TenantId) -> Option<String> {
    app.registry.get(tenant).await.unwrap().map(|r| r.cell)
}

#[tokio::test]
async fn a_full_cell_sends_sign_ups_to_the_next_a_draining_one_gets_none_and_no_room_hands_off() {
    let (app, _, queue) = cells_app(2, 20).await;
    app.registry
        .set_cell_state("b", CellState::Draining)
        .await
        .unwrap();
    let (t1, t2, t3, t4) = (
        fresh_tenant(),
        fresh_tenant(),
        fresh_tenant(),
        fresh_tenant(),
    );
    // b drains: both land on a, each on a's broker only.
    for t in [&t1, &t2] {
        assert_eq!(sign_up_on(&app, t).await, Finish::Provisioned);
        assert_eq!(cell_of(&app, t).await.as_deref(), Some("a"));
        assert!(vhost_in_cell(&app, "a", t).await);
        assert!(!vhost_in_cell(&app, "b", t).await);
    }
    // a is full and b drains: no room anywhere. Handed off, not recorded, nothing created.
    assert_eq!(sign_up_on(&app, &t3).await, Finish::HandedOff);
    assert_eq!(cell_of(&app, &t3).await, None);
    assert!(!vhost_in_cell(&app, "a", &t3).await && !vhost_in_cell(&app, "b", &t3).await);
    let handed: Vec<_> = queue_bodies(&queue).await;
    assert!(
        handed.iter().any(|m| m["sub"] == t3.as_str()),
        "t3 handed off: {handed:?}"
    );
    // b opens: the next sign-up lands there (a is full), and so does the hand-off, drained.
    app.registry
        .set_cell_state("b", CellState::Open)
        .await
        .unwrap();
    assert_eq!(sign_up_on(&app, &t4).await, Finish::Provisioned);
    assert_eq!(cell_of(&app, &t4).await.as_deref(), Some("b"));
    assert!(vhost_in_cell(&app, "b", &t4).await);
    assert!(!vhost_in_cell(&app, "a", &t4).await);
    let drained = tenantctl_with(
        &["drain"],
        &[
            ("CELLS_PATH", app.settings.cells.source.as_str()),
            ("REGISTRY_TABLE", app.registry.table()),
            ("HANDOFF_QUEUE_URL", queue.as_str()),
        ],
        true,
    );
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert_eq!(cell_of(&app, &t3).await.as_deref(), Some("b"));
    assert!(vhost_in_cell(&app, "b", &t3).await);
    let seats = app.registry.cell_items(&["a", "b"]).await.unwrap();
    assert_eq!(
        (seats["a"].tenants, seats["b"].tenants),
        (2, 2),
        "{seats:?}"
    );
}

#[tokio::test]
async fn a_hand_off_that_finds_no_room_waits_on_the_queue_and_is_never_dead_lettered() {
    let (app, _, queue) = cells_app(1, 20).await;
    app.registry
        .set_cell_state("b", CellState::Draining)
        .await
        .unwrap();
    let (first, waiting) = (fresh_tenant(), fresh_tenant());
    assert_eq!(sign_up_on(&app, &first).await, Finish::Provisioned);
    assert_eq!(sign_up_on(&app, &waiting).await, Finish::HandedOff);
    // The worker finds no room: the message is done with (not reported failed, so its
    // receives never count toward the dead-letter queue), and the hand-off waits on the queue
    // as a new, delayed message.
    assert!(
        worker_of(&app, &waiting, &queue).await,
        "no room is not a failure of the message"
    );
    assert_eq!(cell_of(&app, &waiting).await, None, "not placed");
    let attributes = sqs()
        .await
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        1,
        "the hand-off waits on the queue: {attributes:?}"
    );
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        0,
        "{attributes:?}"
    );
}

#[tokio::test]
async fn concurrent_sign_ups_never_push_a_cell_past_its_capacity() {
    let (app, table, _) = cells_app(3, 3).await;
    let tenants: Vec<TenantId> = (0..10).map(|_| fresh_tenant()).collect();
    let answers = futures::future::join_all(tenants.iter().map(|t| sign_up_on(&app, t))).await;
    let provisioned = answers
        .iter()
        .filter(|f| **f == Finish::Provisioned)
        .count();
    let handed_off = answers.iter().filter(|f| **f == Finish::HandedOff).count();
    assert_eq!((provisioned, handed_off), (6, 4), "{answers:?}");
    let seats = app.registry.cell_items(&["a", "b"]).await.unwrap();
    assert_eq!(
        (seats["a"].tenants, seats["b"].tenants),
        (3, 3),
        "{seats:?}"
    );
    let mut per_cell = std::collections::BTreeMap::<String, usize>::new();
    for t in &tenants {
        match cell_of(&app, t).await {
            Some(cell) => {
                *per_cell.entry(cell.clone()).or_default() += 1;
                let other = if cell == "a" { "b" } else { "a" };
                assert!(vhost_in_cell(&app, &cell, t).await, "{t} on {cell}");
                assert!(!vhost_in_cell(&app, other, t).await, "{t} not on {other}");
            }
            None => {
                assert!(!vhost_in_cell(&app, "a", t).await && !vhost_in_cell(&app, "b", t).await)
            }
        }
    }
    assert_eq!(
        per_cell.values().copied().collect::<Vec<_>>(),
        [3, 3],
        "records per cell in {table}: {per_cell:?}"
    );
}

#[tokio::test]
async fn an_offboarding_frees_its_seat_and_a_restore_takes_one_again() {
    let (app, table, _) = cells_app(1, 1).await;
    let env = operator_env(&app, &table);
    let t = fresh_tenant();
    assert_eq!(sign_up_on(&app, &t).await, Finish::Provisioned);
    let home = cell_of(&app, &t).await.unwrap();
    let seats = |items: &std::collections::HashMap<
        String,
        post_signup::outside::registry::CellItem,
    >| { items.get(&home).map_or(0, |i| i.tenants) };
    assert_eq!(
        seats(&app.registry.cell_items(&["a", "b"]).await.unwrap()),
        1
    );
    let (code, _, err) = run(&["deprovision", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        seats(&app.registry.cell_items(&["a", "b"]).await.unwrap()),
        0,
        "freed"
    );
    let (code, _, err) = run(&["deprovision", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        seats(&app.registry.cell_items(&["a", "b"]).await.unwrap()),
        0,
        "freed once, not twice"
    );
    let (code, _, err) = run(&["restore", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        seats(&app.registry.cell_items(&["a", "b"]).await.unwrap()),
        1,
        "taken again"
    );
    assert!(vhost_in_cell(&app, &home, &t).await);
}

/// Publishes `count` persistent messages through a durable exchange bound to a durable queue
/// (declared first when `declare`), with the tenant's credentials, each confirmed by the broker.
async fn publish(url: &str, count: usize, declare: bool) {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    if declare {
        ch.exchange_declare(
            "events",
            lapin::ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("orders", queue, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "orders",
            "events",
            "order",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for i in 0..count {
        ch.basic_publish(
            "events",
            "order",
            BasicPublishOptions::default(),
            format!("order-{i}").as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    conn.close(200, "done").await.unwrap();
}

/// Takes every message of queue `orders` (basic.get until empty).
async fn take_all(url: &str) -> Vec<String> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get("orders", BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn.close(200, "done").await.unwrap();
    out
}

fn port_of(url: &str) -> Option<u16> {
    url::Url::parse(url).ok()?.port()
}

#[tokio::test]
async fn a_moved_tenants_backend_reaches_its_messages_on_the_target_with_its_new_credentials() {
    let (app, table, _) = cells_app(20, 20).await;
    let env = operator_env(&app, &table);
    let t = signed_up_in_a(&app).await;
    assert_eq!(cell_of(&app, &t).await.as_deref(), Some("a"));
    let old_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    publish(&old_url, 5, true).await;

    // Refused, with nothing changed: a suspended tenant, an unknown cell.
    let (code, _, err) = run(&["suspend", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["move", "--sub", t.as_str(), "--to", "b"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("suspended: resume it first"), "{err}");
    let (code, _, err) = run(&["resume", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["move", "--sub", t.as_str(), "--to", "c"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no cell 'c'") && err.contains("cells: a, b"),
        "{err}"
    );
    assert_eq!(cell_of(&app, &t).await.as_deref(), Some("a"));

    // The first run stops part-way (no time to wait for the shovels or the roll): the record
    // keeps the move, and other changes wait for it.
    let (code, _, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "0"],
        &env,
    );
    assert_ne!(code, 0, "the move did not stop: {err}");
    let record = app.registry.get(&t).await.unwrap().unwrap();
    let moving = record.moving.clone().expect("the move is recorded");
    assert_eq!((moving.from.as_str(), moving.to.as_str()), ("a", "b"));
    let (code, _, err) = run(&["rotate", "--sub", t.as_str()], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is moving to cell 'b'"), "{err}");

    // Run again: it resumes and finishes.
    let (code, report, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "90"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(report["resumed_after"].is_string(), "{report}");
    assert_eq!(report["steps"].as_array().unwrap().last().unwrap(), "done");
    let record = app.registry.get(&t).await.unwrap().unwrap();
    assert_eq!(record.cell, "b");
    assert!(record.moving.is_none());
    let seats = app.registry.cell_items(&["a", "b"]).await.unwrap();
    assert_eq!(
        (seats["a"].tenants, seats["b"].tenants),
        (0, 1),
        "{seats:?}"
    );
    assert!(
        !vhost_in_cell(&app, "a", &t).await,
        "the source vhost is removed"
    );

    // The backend's new credentials name b's broker and reach the same messages there.
    let new_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    let (_, other) = stack_brokers();
    let b_port = port_of(&var(&format!(
        "RABBITMQ_{}_AMQP_URL",
        other.replace('.', "_")
    )));
    assert_eq!(port_of(&new_url), b_port, "{new_url}");
    assert_ne!(port_of(&old_url), b_port);
    let stored = tenant_secret_json(&t).await.unwrap();
    assert_eq!(stored["amqp_url"].as_str(), Some(new_url.as_str()));
    let got = take_all(&new_url).await;
    assert_eq!(
        got,
        (0..5).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
        "every message, in order"
    );
    // The exchange and its binding came along too (not declared again: a queue of a 4.0 vhost
    // whose default type is quorum is an explicit quorum queue on a 3.10 broker, which does not
    // know vhost default queue types).
    publish(&new_url, 1, false).await;
    assert_eq!(take_all(&new_url).await, ["order-0"]);
    assert!(amqp_login(&old_url).await.is_err(), "the source is gone");
    // A second run has nothing left to do.
    let (code, again, err) = run(&["move", "--sub", t.as_str(), "--to", "b"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again["already_there"], true, "{again}");
}

#[tokio::test]
async fn a_repair_read_before_a_move_leaves_the_tenant_on_its_new_cell_with_every_message() {
    let (app, table, _) = cells_app(20, 20).await;
    let env = operator_env(&app, &table);
    let t = signed_up_in_a(&app).await;
    let old_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    publish(&old_url, 3, true).await;
    // What a reconcile run read before the move: the tenant in cell a.
    let stale = app.registry.get(&t).await.unwrap().unwrap();
    assert_eq!(stale.cell, "a");
    let (code, _, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "90"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let moved = app.registry.get(&t).await.unwrap().unwrap();
    assert!(
        moved.version > stale.version,
        "each move step bumps the version: {} → {}",
        stale.version,
        moved.version
    );

    // The late repair, with its copy from before the move.
    let p = app.provisioner().await.unwrap();
    let options = post_signup::ops::converge::ConvergeOptions::no_removal(app.budget());
    let done = post_signup::ops::converge::converge(p, &stale, options)
        .await
        .expect("nothing to do is no error");
    assert!(done.report.is_none(), "nothing provisioned: {done:?}");
    let record = app.registry.get(&t).await.unwrap().unwrap();
    assert_eq!(record.cell, "b", "the tenant stays on its new cell");
    assert!(
        !vhost_in_cell(&app, "a", &t).await,
        "no vhost made again on the old cell"
    );
    let url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    assert_ne!(
        port_of(&url),
        port_of(&old_url),
        "the backend keeps b's broker"
    );
    assert_eq!(
        tenant_secret_json(&t).await.unwrap()["amqp_url"].as_str(),
        Some(url.as_str())
    );
    assert_eq!(
        take_all(&url).await,
        (0..3).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
        "every message is on the new cell"
    );
}

/// A tenant signed up before cells (the one broker, no seat) in a registry table of its own:
/// (table, its stream, the tenant, a cells file of the stack's two brokers to turn cells on).
async fn signed_up_before_cells() -> (String, String, TenantId, String) {
    let (table, stream) = fresh_registry_table().await;
    let queue = fresh_queue().await;
    let t = fresh_tenant();
    let plain = app_with(&[
        ("REGISTRY_TABLE", table.as_str()),
        ("HANDOFF_QUEUE_URL", queue.as_str()),
    ])
    .await;
    assert_eq!(sign_up_on(&plain, &t).await, Finish::Provisioned);
    (table, stream, t, cells_file_with(20, 20, 500))
}

#[tokio::test]
async fn the_events_of_a_life_with_cells_turned_on_and_a_move_are_published_once_each() {
    let (table, stream, t, cells) = signed_up_before_cells().await;
    // Cells turned on: the operator's convergence seats the tenant where its vhost is.
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    let (code, _, err) = run(&["provision", "--sub", t.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    let seated = registry_at(&table).await.get(&t).await.unwrap().unwrap();
    assert_eq!(seated.cell, "a");
    assert!(seated.seat_connections.is_some(), "{seated:?}");
    let (code, _, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "90"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["plan", "--sub", t.as_str(), "business"], &env);
    assert_eq!(code, 0, "{err}");
    let events = stream_events(&stream, &t).await;
    assert_eq!(
        events,
        [
            ("TenantOnboarded".to_owned(), 1),
            ("TenantMoved".to_owned(), 2),
            ("TenantPlanChanged".to_owned(), 3),
        ],
        "one event per transition, numbered in order; seats, leases and move steps publish none"
    );
}

#[tokio::test]
async fn a_seat_change_versions_the_record_so_a_change_read_before_it_is_refused() {
    let (table, _, t, cells) = signed_up_before_cells().await;
    let before = registry_at(&table).await.get(&t).await.unwrap().unwrap();
    assert!(before.seat_connections.is_none(), "no cells, no seat");
    // Cells turned on: the reconcile run seats the tenant where its vhost is (a seat taken).
    let env = [
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
    ];
    let (code, _, err) = run(&["reconcile"], &env);
    assert_eq!(code, 0, "{err}");
    let seated = registry_at(&table).await.get(&t).await.unwrap().unwrap();
    assert!(seated.seat_connections.is_some(), "{seated:?}");
    assert_eq!(
        seated.version,
        before.version + 1,
        "the seat grew the version"
    );
    assert!(seated.converged(), "and kept it converged: {seated:?}");
    // A change made from the copy read before the seat is refused, and nothing is written.
    let after = post_signup::tenant::transition::transition(
        &before,
        &post_signup::tenant::transition::Change::Suspend,
        &post_signup::tenant::record::now(),
    )
    .unwrap()
    .expect("a change");
    let refused = registry_at(&table)
        .await
        .transition(&before, &after)
        .await
        .expect_err("read before the seat: refused");
    assert_eq!(
        refused.kind,
        post_signup::outside::error::FailureKind::Conflict
    );
    // A plan change resizes the seat: one version for the change, one for the seat, and the
    // convergence is recorded at the last.
    let (code, _, err) = run(&["plan", "--sub", t.as_str(), "business"], &env);
    assert_eq!(code, 0, "{err}");
    let resized = registry_at(&table).await.get(&t).await.unwrap().unwrap();
    assert_ne!(resized.seat_connections, seated.seat_connections);
    assert_eq!(resized.version, seated.version + 2, "{resized:?}");
    assert!(resized.converged(), "{resized:?}");
    assert_eq!(
        resized.state,
        Phase::Active,
        "the stale suspend never landed"
    );
}

#[tokio::test]
async fn a_refused_restore_takes_no_seat_past_capacity_on_a_later_change() {
    let (app, table, _) = cells_app(1, 1).await;
    let env = operator_env(&app, &table);
    let (first, second) = (fresh_tenant(), fresh_tenant());
    assert_eq!(sign_up_on(&app, &first).await, Finish::Provisioned);
    assert_eq!(sign_up_on(&app, &second).await, Finish::Provisioned);
    let home = cell_of(&app, &first).await.unwrap();
    let (code, _, err) = run(&["deprovision", "--sub", first.as_str()], &env);
    assert_eq!(code, 0, "{err}");
    // The freed seat goes to someone else: both cells are full again.
    let third = fresh_tenant();
    assert_eq!(sign_up_on(&app, &third).await, Finish::Provisioned);
    assert_eq!(cell_of(&app, &third).await.as_deref(), Some(home.as_str()));
    let (code, _, err) = run(&["restore", "--sub", first.as_str()], &env);
    assert_ne!(code, 0, "no room: the restore is refused: {err}");
    // A later change of the same tenant must not take the seat the restore could not.
    let _ = run(&["suspend", "--sub", first.as_str()], &env);
    let _ = run(&["resume", "--sub", first.as_str()], &env);
    let items = app.registry.cell_items(&["a", "b"]).await.unwrap();
    assert!(
        items.values().all(|i| i.tenants <= 1),
        "no cell past its capacity of 1: {items:?}"
    );
}

#[tokio::test]
async fn a_move_while_a_consumer_holds_unacknowledged_messages_brings_every_message_to_the_target()
{
    use lapin::options::BasicGetOptions;
    let (app, table, _) = cells_app(20, 20).await;
    let env = operator_env(&app, &table);
    let t = signed_up_in_a(&app).await;
    let old_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    publish(&old_url, 5, true).await;
    // The old backend holds three deliveries, unacknowledged, while the move runs.
    let held = lapin::Connection::connect(&old_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = held.create_channel().await.unwrap();
    for _ in 0..3 {
        ch.basic_get("orders", BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a delivery");
    }
    let (code, _, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "90"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !vhost_in_cell(&app, "a", &t).await,
        "the source is removed once empty"
    );
    let new_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    let mut got = take_all(&new_url).await;
    got.sort();
    assert_eq!(
        got,
        (0..5).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
        "every message, the unacknowledged ones too, is on the target"
    );
    drop(held);
}

#[tokio::test]
async fn a_move_that_has_not_switched_is_aborted_and_everything_stays_on_the_source() {
    let (app, table, _) = cells_app(20, 20).await;
    let env = operator_env(&app, &table);
    let t = signed_up_in_a(&app).await;
    let url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    publish(&url, 3, true).await;
    // Nothing to abort yet.
    let (code, _, err) = run(&["move", "--sub", t.as_str(), "--abort"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no move is in progress"), "{err}");
    // A move that stops part-way (no time for its shovels or the roll), then is abandoned.
    let (code, _, err) = run(
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "0"],
        &env,
    );
    assert_ne!(code, 0, "the move did not stop: {err}");
    let stuck = app.registry.get(&t).await.unwrap().unwrap();
    assert!(stuck.moving.is_some(), "{stuck:?}");
    let (code, report, err) = run(
        &["move", "--sub", t.as_str(), "--abort", "--wait", "90"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["cell"], "a", "{report}");
    let record = app.registry.get(&t).await.unwrap().unwrap();
    assert!(record.moving.is_none(), "{record:?}");
    assert_eq!(record.cell, "a");
    assert!(record.version > stuck.version);
    let seats = app.registry.cell_items(&["a", "b"]).await.unwrap();
    assert_eq!(
        (seats["a"].tenants, seats["b"].tenants),
        (1, 0),
        "the target's seat is given back: {seats:?}"
    );
    assert!(
        !vhost_in_cell(&app, "b", &t).await,
        "the target vhost is gone"
    );
    assert_eq!(
        kube_secret_data(&t).await.unwrap()["AMQP_URL"],
        url,
        "the credentials never left the source"
    );
    let mut got = take_all(&url).await;
    got.sort();
    assert_eq!(
        got,
        (0..3).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
        "every message is on the source"
    );
    // Other changes are possible again.
    let (code, _, err) = run(&["rotate", "--sub", t.as_str(), "--wait", "60"], &env);
    assert_eq!(code, 0, "{err}");
}
