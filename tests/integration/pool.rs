//! Vhosts made ahead against the stack: cell `a` (the broker under test) keeps a pool, cell `b`
//! drains so every sign-up lands in `a`. Sign-ups go through the trigger; refills through the
//! library the worker, the reconciler and `tenantctl pool-refill` share; moves and
//! deprovisioning through `tenantctl`.

use std::collections::HashSet;
use std::time::Duration;

use post_signup::cells::CellState;
use post_signup::lambda::app::App;
use post_signup::lambda::trigger::Finish;
use post_signup::ops::pool::{PoolRefill, RefillOptions, refill};
use post_signup::outside::registry::PoolStep;
use post_signup::tenant::TenantId;
use post_signup::tenant::id::pool_vhost_name;
use post_signup::tenant::plan::QueueType;
use serde_json::Value;

use crate::helpers::*;

/// An app whose cell `a` keeps `pool` vhosts made ahead (none made yet), `b` draining.
async fn pooled_app(pool: u32) -> (App, String) {
    let (app, table, _) = pooled_app_with_queue(pool).await;
    (app, table)
}

/// As `pooled_app`, with the hand-off queue's URL.
async fn pooled_app_with_queue(pool: u32) -> (App, String, String) {
    let (table, _) = fresh_registry_table().await;
    let queue = fresh_queue().await;
    let cells = cells_file_pooled(40, 40, 500, Some(pool));
    let app = app_with(&[
        ("CELLS_PATH", cells.as_str()),
        ("REGISTRY_TABLE", table.as_str()),
        ("HANDOFF_QUEUE_URL", queue.as_str()),
    ])
    .await;
    app.registry
        .set_cell_state("b", CellState::Draining)
        .await
        .unwrap();
    (app, table, queue)
}

async fn refill_a(app: &App, max: usize) -> PoolRefill {
    let p = app.provisioner().await.unwrap();
    let options = RefillOptions {
        max_per_run: max,
        min_age: Duration::ZERO,
        ..RefillOptions::new(Duration::from_secs(60))
    };
    let mut reports = refill(p, Some("a"), options).await.unwrap();
    assert_eq!(reports.len(), 1);
    let report = reports.remove(0);
    assert!(report.failures.is_empty(), "{report:?}");
    report
}

fn operator(app: &App, table: &str, args: &[&str]) -> (i32, Value, String) {
    let env = [
        ("CELLS_PATH", app.settings.cells.source.as_str()),
        ("REGISTRY_TABLE", table),
    ];
    let out = tenantctl_with(args, &env, true);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The AMQP URL of `tenant`'s credentials pointed at another vhost.
fn in_other_vhost(url: &str, vhost: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.path_segments_mut().unwrap().clear().push(vhost);
    u.to_string()
}

#[tokio::test]
async fn concurrent_sign_ups_each_claim_their_own_vhost_made_ahead_and_only_they_can_use_it() {
    let (app, table) = pooled_app(6).await;
    let made = refill_a(&app, 10).await;
    assert_eq!(made.made, 6, "{made:?}");
    assert_eq!(made.ready.get("quorum"), Some(&6), "{made:?}");

    let tenants: Vec<TenantId> = (0..5).map(|_| fresh_tenant()).collect();
    let finishes = futures::future::join_all(tenants.iter().map(|t| sign_up_on(&app, t))).await;
    assert!(
        finishes.iter().all(|f| *f == Finish::Provisioned),
        "{finishes:?}"
    );
    let mut vhosts = Vec::new();
    for t in &tenants {
        let record = app.registry.get(t).await.unwrap().unwrap();
        assert_eq!(record.cell, "a");
        let vhost = record.vhost.clone().expect("claimed a vhost made ahead");
        assert!(vhost.starts_with("pool-quorum-"), "{vhost}");
        // Every copy of its credentials names it: the backend's Secret and the frontend's.
        assert_eq!(kube_secret_data(t).await.unwrap()["RABBITMQ_VHOST"], vhost);
        assert_eq!(
            tenant_secret_json(t).await.unwrap()["vhost"],
            vhost.as_str()
        );
        vhosts.push(vhost);
    }
    let distinct: HashSet<&String> = vhosts.iter().collect();
    assert_eq!(distinct.len(), tenants.len(), "never shared: {vhosts:?}");

    // Each tenant's credentials open its own vhost and no other (another's, or the one left).
    let left = app.placement.views(true).await.unwrap()[0]
        .ready
        .get(&QueueType::Quorum)
        .cloned()
        .unwrap_or_default();
    assert_eq!(left.len(), 1, "one left ready: {left:?}");
    for (i, t) in tenants.iter().enumerate() {
        let url = kube_secret_data(t).await.unwrap()["AMQP_URL"].clone();
        amqp_login(&url)
            .await
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let other = &vhosts[(i + 1) % vhosts.len()];
        for elsewhere in [other, &left[0]] {
            assert!(
                amqp_login(&in_other_vhost(&url, elsewhere)).await.is_err(),
                "{t} reached {elsewhere}"
            );
        }
    }
    // Status reads the recorded vhost; the cells report counts the claims.
    let (code, status, err) = operator(&app, &table, &["status", "--sub", tenants[0].as_str()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status["complete"], true, "{status}");
    let (code, cells, err) = operator(&app, &table, &["cells", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let a = &cells.as_array().unwrap()[0];
    assert_eq!(a["pool"]["claimed"], 5, "{a}");
    assert_eq!(a["pool"]["ready"]["quorum"], 1, "{a}");
    assert_eq!(a["seats"]["tenants"], 5, "{a}");
    assert_eq!(a["seats"]["pooled"], 1, "{a}");
}

#[tokio::test]
async fn an_empty_pool_falls_back_to_creating_the_tenants_vhost() {
    let (app, _) = pooled_app(3).await;
    let t = fresh_tenant();
    assert_eq!(sign_up_on(&app, &t).await, Finish::Provisioned);
    let record = app.registry.get(&t).await.unwrap().unwrap();
    assert_eq!(record.vhost, None, "nothing to claim: its own vhost");
    assert!(vhost_named_in_cell(&app, "a", t.as_str()).await);
    let url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    amqp_login(&url).await.unwrap();
}

#[tokio::test]
async fn a_refill_is_bounded_finishes_what_a_refill_left_and_retires_beyond_the_size() {
    let (app, _) = pooled_app(3).await;
    assert_eq!(refill_a(&app, 2).await.made, 2, "at most 2 per run");
    let second = refill_a(&app, 2).await;
    assert_eq!(second.made, 1, "up to the size: {second:?}");
    assert_eq!(second.ready.get("quorum"), Some(&3));

    // A refill that died after reserving: its seat is taken, its vhost never made.
    let left = pool_vhost_name("quorum", 1_000, 7);
    let reserved = app
        .registry
        .pool_step(
            "a",
            &left,
            QueueType::Quorum,
            PoolStep::Reserve {
                max_tenants: 40,
                max_making: 10,
                open_by_file: true,
            },
        )
        .await
        .unwrap();
    assert!(reserved);
    assert!(!vhost_named_in_cell(&app, "a", &left).await);
    // The next refill makes it (ready: 4 of 3), then retires one beyond the size.
    let third = refill_a(&app, 2).await;
    assert_eq!(
        (third.finished, third.removed, third.made),
        (1, 1, 0),
        "{third:?}"
    );
    assert_eq!(third.ready.get("quorum"), Some(&3));
    let items = app.registry.cell_items(&["a"]).await.unwrap();
    let item = &items["a"];
    assert_eq!(
        item.tenants, 3,
        "one seat per vhost made ahead, no more: {item:?}"
    );
    assert_eq!(item.tenant_seats(), 0);
    assert!(
        item.making.is_empty() && item.removing.is_empty(),
        "{item:?}"
    );
    for v in item.ready_of(QueueType::Quorum) {
        assert!(
            vhost_named_in_cell(&app, "a", v).await,
            "{v} is on the broker"
        );
    }
}

#[tokio::test]
async fn a_pooled_tenant_moves_with_its_vhost_and_deprovisioning_removes_it_for_good() {
    let (app, table) = pooled_app(2).await;
    refill_a(&app, 5).await;
    let t = fresh_tenant();
    assert_eq!(sign_up_on(&app, &t).await, Finish::Provisioned);
    let vhost = app.registry.get(&t).await.unwrap().unwrap().vhost.unwrap();
    // Suspend, resume and rotate act on the recorded vhost.
    for change in ["suspend", "resume", "rotate"] {
        let (code, _, err) = operator(&app, &table, &[change, "--sub", t.as_str()]);
        assert_eq!(code, 0, "{change}: {err}");
    }
    let (_, status, _) = operator(&app, &table, &["status", "--sub", t.as_str()]);
    assert_eq!(status["complete"], true, "{status}");
    let url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    assert!(url.ends_with(&format!("/{vhost}")), "{url}");
    amqp_login(&url).await.unwrap();

    app.registry
        .set_cell_state("b", CellState::Open)
        .await
        .unwrap();
    let (code, _, err) = operator(
        &app,
        &table,
        &["move", "--sub", t.as_str(), "--to", "b", "--wait", "90"],
    );
    assert_eq!(code, 0, "{err}");
    let record = app.registry.get(&t).await.unwrap().unwrap();
    assert_eq!(record.cell, "b");
    assert_eq!(
        record.vhost.as_deref(),
        Some(vhost.as_str()),
        "it keeps its name"
    );
    assert!(vhost_named_in_cell(&app, "b", &vhost).await);
    assert!(
        !vhost_named_in_cell(&app, "a", &vhost).await,
        "nothing left on the source"
    );
    let moved_url = kube_secret_data(&t).await.unwrap()["AMQP_URL"].clone();
    assert_ne!(moved_url, url);
    amqp_login(&moved_url).await.unwrap();

    let (code, _, err) = operator(&app, &table, &["deprovision", "--sub", t.as_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(!vhost_named_in_cell(&app, "b", &vhost).await, "removed");
    // Never back in a pool: the next refill makes new ones only.
    let after = refill_a(&app, 5).await;
    let items = app.registry.cell_items(&["a", "b"]).await.unwrap();
    for item in items.values() {
        assert!(
            !item.ready_of(QueueType::Quorum).contains(&vhost),
            "{after:?}"
        );
    }
}

#[tokio::test]
async fn a_claim_that_leaves_the_pool_low_has_the_worker_refill_it() {
    let (app, _, queue) = pooled_app_with_queue(4).await;
    assert_eq!(refill_a(&app, 10).await.made, 4);
    // 4 ready: the third claim leaves 1, below half the size, and asks for a refill.
    for _ in 0..3 {
        assert_eq!(sign_up_on(&app, &fresh_tenant()).await, Finish::Provisioned);
    }
    let asked: Vec<Value> = queue_bodies(&queue).await;
    assert_eq!(
        asked,
        [serde_json::json!({"refill_pool": "a"})],
        "one request, nothing else handed off"
    );
    // The worker, invoked with it as Lambda's event source would, tops the pool up.
    assert!(
        worker_of_message(&app, "refill_pool", &queue).await,
        "not reported failed"
    );
    let items = app.registry.cell_items(&["a"]).await.unwrap();
    assert_eq!(
        items["a"].ready_of(QueueType::Quorum).len(),
        4,
        "{:?}",
        items["a"]
    );
    assert_eq!(items["a"].claimed, 3);
}
