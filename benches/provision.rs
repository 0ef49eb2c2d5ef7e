//! One container's life on the local stack, as Lambda runs it: cold start (init), the first
//! invocation (its budget counts from process start), then warm invocations of fresh tenants.
//! Prints one JSON line: init, first and warm wall times side by side, the first/warm ratio,
//! each step's warm median and wall time / slowest branch; and what placement adds: warm
//! invocations with a cells file (one cell, the same broker) beside those without, interleaved
//! in the same process, and the placement's transaction alone; and the lease's cost on the
//! trigger's registry path, interleaved in the same process: the record's create and its
//! "converged" write as they were before the lease (no lease fields, an unfenced write) beside
//! the same two writes carrying the sign-up's lease (fence 1 in the create; the converged write
//! fenced, giving it back); and vhosts made ahead: warm invocations on the same cell keeping a
//! pool (filled before) beside the cell without one, interleaved, and each one's provisioning
//! report (its branches, the slowest, the RabbitMQ steps). Needs the stack's environment
//! (`dev/bench.sh` exports `.stack/env`); run it as a fresh process for each cold sample.

use std::collections::HashMap;
use std::time::Instant;

use lambda_runtime::{Context, LambdaEvent};
use post_signup::lambda::app::App;
use post_signup::lambda::event::sign_up_event;
use post_signup::lambda::settings::Settings;
use post_signup::lambda::trigger::{Finish, handle_reporting};

async fn invoke(app: &App) -> f64 {
    let sub = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let (_, finish) = handle_reporting(
        app,
        LambdaEvent::new(sign_up_event(&sub), Context::default()),
    )
    .await
    .expect("provisioned");
    assert_eq!(
        finish,
        Finish::Provisioned,
        "the stack is healthy: no hand-off"
    );
    t.elapsed().as_secs_f64() * 1e3
}

/// An app of the stack's installation whose cells file is one cell, `bench`, on the stack's
/// broker with room to spare and `extra` fields; the file's path (to remove) and the app.
async fn app_with_one_cell(extra: &str) -> (std::path::PathBuf, App) {
    let env = |k: &str| std::env::var(k).expect("the stack's environment");
    let path = std::env::temp_dir().join(format!("bench-cells-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "cells:\n  - name: bench\n    management_url: {}\n    amqp_url: {}\n    admin_secret_id: {}\n    capacity: {{vhosts: 1000000, connections: 100000000}}\n{extra}",
            env("RABBITMQ_MANAGEMENT_URL"),
            env("RABBITMQ_AMQP_URL"),
            env("RABBITMQ_ADMIN_SECRET_ID")
        ),
    )
    .unwrap();
    let settings = Settings::from_lookup(|k| match k {
        "CELLS_PATH" => Some(path.display().to_string()),
        _ => std::env::var(k).ok(),
    })
    .expect("settings with a cells file");
    let app = App::init(settings, tokio::time::Instant::now())
        .await
        .expect("cold start with cells");
    (path, app)
}

#[tokio::main]
async fn main() {
    let process_start = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    if std::env::var_os("BENCH_LOG").is_some() {
        post_signup::telemetry::init(true);
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let settings = Settings::from_env().expect("the stack's settings: source .stack/env");
    let t = Instant::now();
    let app = App::init(settings, process_start)
        .await
        .expect("cold start");
    let init_ms = t.elapsed().as_secs_f64() * 1e3;
    let first_ms = invoke(&app).await;
    let mut warm = Vec::new();
    let mut provision_only = Vec::new();
    let mut creates = Vec::new();
    let mut ratios = Vec::new();
    let mut steps: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let p = app.provisioner().await.unwrap();
    // The same installation with a cells file: one cell on the same broker, room to spare;
    // and the same cell keeping a pool of vhosts made ahead, large enough for every claim here.
    let (cells_path, cells_app) = app_with_one_cell("").await;
    invoke(&cells_app).await;
    let (pool_path, pool_app) = app_with_one_cell(&format!(
        "    pool: {{size: {}, queue_types: [quorum]}}\n",
        2 * runs + 4
    ))
    .await;
    // Its first invocation (the cold one, whose budget counts from its start) before the pool
    // is filled: it creates its own vhost.
    invoke(&pool_app).await;
    let pp = pool_app.provisioner().await.unwrap();
    let filled = post_signup::ops::pool::refill(
        pp,
        None,
        post_signup::ops::pool::RefillOptions {
            max_per_run: 2 * runs + 4,
            min_age: std::time::Duration::ZERO,
            ..post_signup::ops::pool::RefillOptions::new(std::time::Duration::from_secs(300))
        },
    )
    .await
    .expect("the pool filled");
    assert!(filled.iter().all(|r| r.failures.is_empty()), "{filled:?}");
    let (mut with_pool, mut pool_reports, mut nopool_reports) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut with_cells = Vec::new();
    let mut placements = Vec::new();
    let (mut unleased, mut leased) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        warm.push(invoke(&app).await);
        with_cells.push(invoke(&cells_app).await);
        with_pool.push(invoke(&pool_app).await);
        // The provisioning a sign-up runs after its placement, pool off vs on: its report.
        for (placing, reports) in [
            (&cells_app, &mut nopool_reports),
            (&pool_app, &mut pool_reports),
        ] {
            let tenant =
                post_signup::tenant::TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
            let record =
                post_signup::tenant::record::TenantRecord::new(&tenant, None, &p.plans, "bench");
            let placed = placing.placement.place(&record).await.expect("placed");
            let tenant = placed.record().tenant().unwrap();
            let provisioner = placing.provisioner().await.unwrap();
            let broker = provisioner.brokers.get("bench").await.unwrap();
            let state = post_signup::tenant::plan::TenantState::new(&p.plans);
            let report = provisioner
                .provision_gated(
                    &tenant,
                    broker,
                    async { Some(state) },
                    post_signup::ops::provision::Mode::SignUp,
                    tokio::time::Instant::now() + app.budget(),
                )
                .await
                .expect("provisioned");
            reports.push(report);
        }
        let placed =
            post_signup::tenant::TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let record =
            post_signup::tenant::record::TenantRecord::new(&placed, None, &p.plans, "bench");
        let t = Instant::now();
        cells_app.placement.place(&record).await.expect("placed");
        placements.push(t.elapsed().as_secs_f64() * 1e3);
        let tenant =
            post_signup::tenant::TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let report = p
            .provision(&tenant, tokio::time::Instant::now() + app.budget())
            .await
            .expect("provisioned");
        // The trigger before the registry: provisioning alone, same process, same stack.
        provision_only.push(report.wall_ms);
        let record =
            post_signup::tenant::record::TenantRecord::new(&tenant, None, &p.plans, "bench");
        let t = Instant::now();
        app.registry.create(&record).await.expect("recorded");
        creates.push(t.elapsed().as_secs_f64() * 1e3);
        // The lease's cost: the trigger's two registry writes without it, then with it.
        let writes = |leased: bool| {
            let sub = uuid::Uuid::new_v4().to_string();
            let app = &app;
            let p = &p;
            async move {
                let tenant = post_signup::tenant::TenantId::parse(&sub).unwrap();
                let plain = post_signup::tenant::record::TenantRecord::new(
                    &tenant, None, &p.plans, "bench",
                );
                // As the trigger writes it (`lambda::trigger`), or as it was before the lease.
                let (leased_record, fence) = post_signup::tenant::lease::first_lease(
                    plain.clone(),
                    &post_signup::tenant::lease::holder_name("bench"),
                    std::time::SystemTime::now() + std::time::Duration::from_secs(10),
                );
                let record = if leased { leased_record } else { plain };
                let t = Instant::now();
                app.registry.create(&record).await.expect("recorded");
                let marked = app
                    .registry
                    .record_converged(&tenant, record.version, true, leased.then_some(&fence))
                    .await
                    .expect("converged");
                assert!(marked);
                t.elapsed().as_secs_f64() * 1e3
            }
        };
        unleased.push(writes(false).await);
        leased.push(writes(true).await);
        let slowest = report.branches_ms.values().copied().fold(0.0, f64::max);
        ratios.push(report.wall_ms / slowest);
        for s in &report.steps {
            steps
                .entry(s.step)
                .or_default()
                .push(s.duration_ms.unwrap_or(f64::NAN));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let warm_median = median(&mut warm.clone());
    let _ = std::fs::remove_file(&cells_path);
    let _ = std::fs::remove_file(&pool_path);
    // Per report set: each branch's median, the slowest branch's (by median) and each step's.
    let summarise = |reports: &[post_signup::ops::provision::Report]| {
        let mut branches: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut steps: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut walls = Vec::new();
        for r in reports {
            walls.push(r.wall_ms);
            for (b, ms) in &r.branches_ms {
                branches.entry(b).or_default().push(*ms);
            }
            for s in &r.steps {
                steps
                    .entry(s.step)
                    .or_default()
                    .push(s.duration_ms.unwrap_or(f64::NAN));
            }
        }
        let med = median;
        let branches: serde_json::Map<String, serde_json::Value> = branches
            .into_iter()
            .map(|(k, mut v)| (k.to_owned(), serde_json::json!(med(&mut v))))
            .collect();
        let slowest = branches
            .iter()
            .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .map(|(k, v)| serde_json::json!({"branch": k, "ms": v}));
        let steps: serde_json::Map<String, serde_json::Value> = steps
            .into_iter()
            .map(|(k, mut v)| (k.to_owned(), serde_json::json!(med(&mut v))))
            .collect();
        serde_json::json!({"wall_ms_median": med(&mut walls), "branches_ms_median": branches, "slowest_branch": slowest, "step_ms_median": steps})
    };
    let pool_on = summarise(&pool_reports);
    let pool_off = summarise(&nopool_reports);
    let mut step_medians: Vec<(String, f64)> = steps
        .into_iter()
        .map(|(k, mut v)| (k.to_owned(), median(&mut v)))
        .collect();
    step_medians.sort_by(|a, b| a.0.cmp(&b.0));
    let out = serde_json::json!({
        "bench": "container",
        "runs": runs,
        "init_ms": init_ms,
        "first_invocation_ms": first_ms,
        "warm_invocation_ms_median": warm_median,
        "warm_invocation_ms_max": warm.iter().copied().fold(0.0, f64::max),
        "first_over_warm": first_ms / warm_median,
        "provision_only_ms_median": median(&mut provision_only),
        "registry_create_ms_median": median(&mut creates),
        "with_cells_invocation_ms_median": median(&mut with_cells),
        "with_pool_invocation_ms_median": median(&mut with_pool),
        "pool_off": pool_off,
        "pool_on": pool_on,
        "placement_ms_median": median(&mut placements),
        "registry_writes_unleased_ms_median": median(&mut unleased),
        "registry_writes_leased_ms_median": median(&mut leased),
        "wall_over_slowest_branch_median": median(&mut ratios.clone()),
        "step_ms_median": step_medians.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    println!("{out}");
}
