//! Warm invocations on the local stack: one cold start, then N provisionings of fresh tenants
//! in the same process (as a warm Lambda container does). Prints each run's wall time, step
//! durations and the ratio of wall time to the slowest branch. Needs `make stack-up`.

use std::collections::HashMap;
use std::time::Instant;

use post_signup::app::App;
use post_signup::settings::Settings;

#[path = "../tests/common/mod.rs"]
mod common;

#[tokio::main]
async fn main() {
    post_signup::install_crypto_provider();
    let env = common::stack_env();
    // SAFETY: single-threaded at this point; set before any thread reads the environment.
    for (k, v) in env {
        unsafe { std::env::set_var(k, v) };
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let t = Instant::now();
    let app = App::init(Settings::from_env().expect("stack settings"))
        .await
        .expect("cold start");
    let init_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut walls = Vec::new();
    let mut ratios = Vec::new();
    let mut steps: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for _ in 0..runs {
        let tenant = common::fresh_tenant();
        let deadline = tokio::time::Instant::now() + app.budget();
        let report = app
            .provisioner
            .provision(&tenant, deadline)
            .await
            .expect("provisioned");
        let slowest = report.branches_ms.values().copied().fold(0.0, f64::max);
        walls.push(report.wall_ms);
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
    let mut step_medians: Vec<(String, f64)> = steps
        .into_iter()
        .map(|(k, mut v)| (k.to_owned(), median(&mut v)))
        .collect();
    step_medians.sort_by(|a, b| a.0.cmp(&b.0));
    let out = serde_json::json!({
        "bench": "warm_invocations",
        "runs": runs,
        "init_ms": init_ms,
        "wall_ms_median": median(&mut walls.clone()),
        "wall_ms_max": walls.iter().copied().fold(0.0, f64::max),
        "wall_over_slowest_branch_median": median(&mut ratios.clone()),
        "wall_over_slowest_branch_max": ratios.iter().copied().fold(0.0, f64::max),
        "step_ms_median": step_medians.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    println!("{out}");
}
