//! tenantctl: the operator CLI over the post-signup library. It parses arguments (`args`),
//! calls the library and prints; exit codes are decided in one place (`error`). One module per
//! group of commands: `tenants`, `fleet`, `cells`, `token`.

mod args;
mod cells;
mod common;
mod error;
mod fleet;
mod tenants;
mod token;

use std::process::ExitCode;

use clap::Parser;
use post_signup::lambda::event::sign_up_event;
use post_signup::outside::registry::ListFilter;
use post_signup::tenant::record::Phase;
use post_signup::tenant::transition::Change;

use crate::args::*;
use crate::cells::*;
use crate::common::*;
use crate::error::CliError;
use crate::fleet::*;
use crate::tenants::*;
use crate::token::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // `provision --event` is the trigger exactly, and a Lambda's budget counts from its start.
    let started = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Token { .. }
            | Command::Event { .. }
            | Command::CheckTemplate { .. }
            | Command::CheckCells { .. }
            | Command::CheckPlans { .. }
    ) {
        post_signup::telemetry::init(true);
    }
    match run(cli.command, started).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

/// One command: parse what clap could not, call the library, print.
async fn run(command: Command, started: tokio::time::Instant) -> Result<(), CliError> {
    match command {
        Command::Token {
            cluster_name,
            region,
            at,
        } => token(&cluster_name, region, at.as_deref()).await,
        Command::Event { sub } => parse_sub(&sub).map(|t| print(&sign_up_event(t.as_str()))),
        Command::CheckTemplate { file } => check_template(&file),
        Command::CheckPlans { file } => check_plans(&file),
        Command::CheckCells {
            file,
            admin_secret_id,
        } => check_cells(&file, admin_secret_id.as_deref()),
        Command::Provision {
            event: Some(path),
            barrier,
            ..
        } => provision_event(&path, started, barrier).await,
        Command::Provision { sub: Some(sub), .. } => provision_sub(&sub).await,
        Command::Provision { .. } => Err(CliError::input("give --event FILE or --sub SUB")),
        Command::Status { sub } => status(&sub).await,
        Command::Deprovision {
            sub,
            retain_data,
            recovery_days,
            no_recovery,
        } => {
            let days = (!no_recovery).then_some(recovery_days);
            change(&sub, Change::Offboard { retain_data }, days, 0).await
        }
        Command::Restore { sub } => change(&sub, Change::Restore, Some(7), 120).await,
        Command::Drain => drain().await,
        Command::List {
            state,
            plan,
            output,
        } => {
            let filter = ListFilter {
                state: state.map(Phase::from),
                plan,
            };
            list(&filter, output).await
        }
        Command::Adopt { dry_run } => adopt(dry_run).await,
        Command::Cells { output } => cells(output).await,
        Command::Cell { action, name } => cell(action, &name).await,
        Command::PoolRefill { cell, max, min_age } => {
            pool_refill(cell.as_deref(), max, min_age).await
        }
        Command::Plan { sub, name } => change(&sub, Change::Plan(name), Some(7), 0).await,
        Command::Suspend { sub } => change(&sub, Change::Suspend, Some(7), 0).await,
        Command::Resume { sub } => change(&sub, Change::Resume, Some(7), 0).await,
        Command::Rotate { sub, wait } => change(&sub, Change::Rotate, Some(7), wait).await,
        Command::Move {
            sub,
            to: Some(to),
            wait,
            ..
        } => move_cmd(&sub, &to, wait).await,
        Command::Move { sub, wait, .. } => abort_move_cmd(&sub, wait).await,
        Command::Reconcile {
            dry_run,
            prune,
            min_age,
            max_fraction,
            output,
        } => reconcile_cmd(dry_run, prune, min_age, max_fraction, output).await,
    }
}
