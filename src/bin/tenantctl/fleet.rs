//! Commands over every tenant: adopt, drain the hand-off queue, reconcile.

use std::io::IsTerminal as _;

use post_signup::lambda::settings::var;
use post_signup::ops::handoff;
use post_signup::ops::reconcile::{self, ReconcileOptions};
use post_signup::outside::cognito::UserPool;

use crate::args::*;
use crate::common::*;
use crate::error::{CliError, step_error};

pub(crate) async fn adopt(dry_run: bool) -> Result<(), CliError> {
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let report = reconcile::adopt(p, app.settings.user_pool_id.as_deref(), dry_run, deadline)
        .await
        .map_err(CliError::outside)?;
    print(&report);
    if !report.failures.is_empty() {
        return Err(CliError::outside(anyhow::anyhow!(
            "{} tenant(s) not recorded; run adopt again",
            report.failures.len()
        )));
    }
    Ok(())
}

pub(crate) async fn drain() -> Result<(), CliError> {
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let summary = handoff::drain(p, &app.handoff, app.budget(), app.settings.concurrency)
        .await
        .map_err(CliError::outside)?;
    print(&summary);
    if summary.failed + summary.malformed > 0 {
        return Err(CliError::outside(anyhow::anyhow!(
            "{} hand-off(s) not provisioned; they stay on the queue",
            summary.failed + summary.malformed
        )));
    }
    Ok(())
}

pub(crate) async fn reconcile_cmd(
    dry_run: bool,
    prune: bool,
    min_age: std::time::Duration,
    max_fraction: f64,
    output: Output,
) -> Result<(), CliError> {
    let settings = settings()?;
    let pool_id = settings.user_pool_id.clone().ok_or_else(|| {
        CliError::input(format!(
            "setting {}: is required by reconcile",
            var::USER_POOL_ID
        ))
    })?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let pool = UserPool::new(
        aws_sdk_cognitoidentityprovider::Client::new(&app.aws_config()),
        &pool_id,
    );
    let mut options = ReconcileOptions::new(app.budget(), app.settings.concurrency);
    options.dry_run = dry_run;
    options.prune = prune;
    options.prune_min_age = min_age;
    options.prune_max_fraction = max_fraction;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} repairing tenants {pos}/{len} {wide_bar} {elapsed}",
            )
            .expect("valid template"),
        );
        bar
    });
    let summary = reconcile::reconcile(p, &pool, options, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })
    .await
    .map_err(step_error)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(&summary).expect("JSON serialises")
        ),
        Output::Text => {
            let verb = if dry_run { "would repair" } else { "repaired" };
            println!(
                "{} users need a tenant: {} complete, {} {verb}, {} failed; {} orphan(s), {} tombstone(s), {} disabled, {} unrecorded{}",
                summary.users,
                summary.complete,
                summary.repaired,
                summary.failed,
                summary.orphans.len(),
                summary.tombstones.len(),
                summary.disabled.len(),
                summary.unrecorded.len(),
                if prune {
                    format!(", {} pruned", summary.pruned)
                } else {
                    String::new()
                },
            );
            for line in summary.incomplete.iter().chain(&summary.failures) {
                println!("  {line}");
            }
            for orphan in &summary.orphans {
                println!("  orphan: {orphan}");
            }
            for t in &summary.tombstones {
                println!("  offboarded, user still confirmed (not provisioned): {t}");
            }
            for t in &summary.disabled {
                println!("  user disabled (not provisioned): {t}");
            }
            for t in &summary.unrecorded {
                println!("  parts without a record or a user (reported only): {t}");
            }
        }
    }
    if summary.failed > 0 {
        return Err(CliError::outside(anyhow::anyhow!(
            "{} tenant(s) failed",
            summary.failed
        )));
    }
    Ok(())
}
