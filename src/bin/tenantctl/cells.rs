//! Commands on cells and shipped files: check a cells file or a backend template, the cells
//! report, and an operator's cell state.

use crate::args::*;
use crate::common::*;
use crate::error::CliError;

/// The template as the cold start loads it: an error names the file and the problem.
pub(crate) fn check_cells(
    file: &std::path::Path,
    admin_secret_id: Option<&str>,
) -> Result<(), CliError> {
    let cells =
        post_signup::cells::Cells::load(file).map_err(|e| CliError::input(e.to_string()))?;
    if let Some(id) = admin_secret_id {
        let readable = |s: &str| s == id || s.strip_prefix(id).is_some_and(|r| r.starts_with('/'));
        if let Some(cell) = cells.all().iter().find(|c| !readable(&c.admin_secret_id)) {
            return Err(CliError::input(format!(
                "cells file {}: cell '{}': admin_secret_id: '{}' is not readable by the functions: name it '{id}' or '{id}/<name>'",
                cells.source, cell.name, cell.admin_secret_id
            )));
        }
    }
    // Limits the broker's API does not expose (Amazon MQ's): warned, not refused.
    let warnings: Vec<String> = cells
        .all()
        .iter()
        .flat_map(|c| post_signup::cells::sizing::capacity_warnings(c, None))
        .collect();
    for w in &warnings {
        eprintln!("tenantctl: warning: {w}");
    }
    print(&serde_json::json!({"cells": cells.all(), "valid": true, "warnings": warnings}));
    Ok(())
}

pub(crate) fn check_plans(file: &std::path::Path) -> Result<(), CliError> {
    let plans = post_signup::tenant::plan::Plans::load(Some(file))
        .map_err(|e| CliError::input(e.to_string()))?;
    print(&serde_json::json!({
        "plans": plans.names().collect::<Vec<_>>(),
        "default": plans.default_plan().name,
        "valid": true,
    }));
    Ok(())
}

pub(crate) fn check_template(file: &std::path::Path) -> Result<(), CliError> {
    let template = post_signup::tenant::template::BackendTemplate::load(Some(file))
        .map_err(|e| CliError::input(e.to_string()))?;
    let containers: Vec<serde_json::Value> = template
        .deployment()
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|pod| {
            pod.containers
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "image": c.image}))
                .collect()
        })
        .unwrap_or_default();
    print(
        &serde_json::json!({"template": file.display().to_string(), "valid": true, "containers": containers}),
    );
    Ok(())
}

pub(crate) async fn cells(output: Output) -> Result<(), CliError> {
    let app = init().await?;
    let secrets = &app.provisioner().await.map_err(CliError::outside)?.secrets;
    let settings = &app.settings;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    let rows = post_signup::ops::cells_report::cells_report(
        &settings.cells,
        secrets,
        &app.registry,
        &app.plans,
        settings.connect_timeout,
        settings.budget,
        deadline,
    )
    .await
    .map_err(CliError::outside)?;
    match output {
        Output::Json => print(&rows),
        Output::Text => {
            let of = |u: &post_signup::ops::cells_report::Usage| {
                let used = u.used.map_or("?".to_owned(), |n| n.to_string());
                match u.capacity {
                    Some(c) => format!("{used}/{c}"),
                    None => used,
                }
            };
            println!(
                "{:<16}  {:<9}  {:<8}  {:>13}  {:>13}  {:>9}  {:>13}  {:>7}  {:>9}  {:>10}  {:>22}",
                "cell",
                "state",
                "version",
                "vhosts",
                "connections",
                "granted",
                "seats",
                "active",
                "suspended",
                "offboarded",
                "pool ready/size,claimed"
            );
            for r in &rows {
                let seats = match r.vhosts.capacity {
                    Some(c) => format!("{}/{c}", r.seats.tenants + r.seats.pooled),
                    None => "-".to_owned(),
                };
                // Ready of each queue type against its size, then how many tenants claimed one.
                let pool = r.pool.as_ref().map_or("-".to_owned(), |p| {
                    let ready = p
                        .queue_types
                        .iter()
                        .map(|t| format!("{}/{} {t}", p.ready.get(t).copied().unwrap_or(0), p.size))
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!("{ready},{}", p.claimed)
                });
                println!(
                    "{:<16}  {:<9}  {:<8}  {:>13}  {:>13}  {:>9}  {:>13}  {:>7}  {:>9}  {:>10}  {:>22}{}",
                    r.name,
                    r.state.as_str(),
                    r.broker_version.as_deref().unwrap_or("?"),
                    of(&r.vhosts),
                    of(&r.connections),
                    r.connections_granted,
                    seats,
                    r.tenants.active,
                    r.tenants.suspended,
                    r.tenants.offboarded,
                    pool,
                    r.broker_error
                        .as_ref()
                        .map_or(String::new(), |e| format!("  (broker: {e})"))
                        + &r.cluster
                            .as_ref()
                            .map_or(String::new(), |c| format!("  (cluster: {c})"))
                );
            }
        }
    }
    for w in rows.iter().flat_map(|r| &r.warnings) {
        eprintln!("tenantctl: warning: {w}");
    }
    if let Some(r) = rows.iter().find(|r| r.broker_error.is_some()) {
        return Err(CliError::outside(anyhow::anyhow!(
            "cell '{}': its broker did not answer ({})",
            r.name,
            r.broker_error.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

pub(crate) async fn cell(action: CellAction, name: &str) -> Result<(), CliError> {
    use post_signup::cells::CellState;
    let settings = settings()?;
    let Some(declared) = settings.cells.get(name) else {
        return Err(CliError::input(format!(
            "no cell '{name}' in {} (cells: {})",
            settings.cells.source,
            settings.cells.names().join(", ")
        )));
    };
    let state = match action {
        CellAction::Open => CellState::Open,
        CellAction::Drain => CellState::Draining,
        CellAction::Close => CellState::Closed,
    };
    let app = init().await?;
    let before = app
        .registry
        .set_cell_state(name, state)
        .await
        .map_err(CliError::outside)?;
    print(&serde_json::json!({
        "cell": name,
        "before": before.unwrap_or(declared.state).as_str(),
        "after": state.as_str(),
        "changed": before.unwrap_or(declared.state) != state,
    }));
    Ok(())
}

pub(crate) async fn pool_refill(
    cell: Option<&str>,
    max: usize,
    min_age: u64,
) -> Result<(), CliError> {
    use post_signup::ops::pool::{RefillOptions, refill};
    let settings = settings()?;
    if let Some(name) = cell
        && settings.cells.get(name).is_none()
    {
        return Err(CliError::input(format!(
            "--cell: no cell '{name}' in {} (cells: {})",
            settings.cells.source,
            settings.cells.names().join(", ")
        )));
    }
    if !settings.cells.declared {
        return Err(CliError::input(
            "no cells file (CELLS_PATH): vhosts are made ahead only for cells that declare `pool:`"
                .to_owned(),
        ));
    }
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let options = RefillOptions {
        max_per_run: max.max(1),
        min_age: std::time::Duration::from_secs(min_age),
        ..RefillOptions::new(std::time::Duration::from_secs(600))
    };
    let reports = refill(p, cell, options).await.map_err(CliError::outside)?;
    print(&reports);
    if let Some(r) = reports.iter().find(|r| !r.failures.is_empty()) {
        return Err(CliError::outside(anyhow::anyhow!(
            "cell '{}': {}",
            r.cell,
            r.failures.join("; ")
        )));
    }
    Ok(())
}
