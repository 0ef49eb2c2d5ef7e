//! Commands on one tenant: provision (an event, exactly as the trigger, or a sub), status,
//! the changes (plan, suspend, resume, rotate, deprovision, restore), move, and the list.

use lambda_runtime::{Context, LambdaEvent};
use post_signup::lambda::app::App;
use post_signup::lambda::event::classify;
use post_signup::lambda::trigger::{self, Finish};
use post_signup::ops::converge::ConvergeOptions;
use post_signup::ops::{change, status};
use post_signup::outside::registry::ListFilter;
use post_signup::tenant::transition::Change;
use serde_json::json;

use crate::args::*;
use crate::common::*;
use crate::error::{CliError, step_error};

/// The trigger, exactly: stdout gets what Lambda would return to Cognito.
pub(crate) async fn provision_event(
    path: &str,
    started: tokio::time::Instant,
    barrier: bool,
) -> Result<(), CliError> {
    if barrier && path == "-" {
        return Err(CliError::input(
            "--barrier waits on stdin: give the event as a file",
        ));
    }
    let raw = read_event(path)?;
    // Bad input is refused before any setting is read or any outside system touched.
    if let Err(e) = classify(&raw) {
        print(&json!({"errorType": "InvalidEvent", "errorMessage": e.to_string()}));
        return Err(CliError::input(format!("event '{path}': {e}")));
    }
    let settings = settings()?;
    let mut app = App::init(settings, started)
        .await
        .map_err(CliError::input)?;
    let init = started.elapsed();
    if barrier {
        use tokio::io::AsyncBufReadExt as _;
        eprintln!("tenantctl: ready");
        let mut line = String::new();
        tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
            .map_err(|e| CliError::input(format!("--barrier: reading stdin: {e}")))?;
        let now = tokio::time::Instant::now();
        app.count_cold_start_from(now.checked_sub(init).unwrap_or(now));
    }
    let invoked = tokio::time::Instant::now();
    let mut context = Context::default();
    context.request_id = format!("tenantctl-{}", std::process::id());
    let answer = trigger::handle_reporting(&app, LambdaEvent::new(raw, context)).await;
    if barrier {
        eprintln!(
            "tenantctl: timing {}",
            json!({"init_ms": init.as_secs_f64() * 1e3, "invocation_ms": invoked.elapsed().as_secs_f64() * 1e3})
        );
    }
    match answer {
        Ok((event, finish)) => {
            print(&event);
            match finish {
                Finish::HandedOff => {
                    eprintln!("tenantctl: not finished in time; handed off to the queue")
                }
                Finish::Skipped => eprintln!("tenantctl: nothing to provision for this event"),
                Finish::Recorded => eprintln!(
                    "tenantctl: not finished and not handed off; recorded, so the reconciler finishes it"
                ),
                Finish::Unrecorded => eprintln!(
                    "tenantctl: neither recorded nor handed off; the person's first GET /tenant or the reconciler finishes it"
                ),
                Finish::Provisioned => {}
            }
            Ok(())
        }
        Err(e) => {
            print(&json!({"errorType": e.kind(), "errorMessage": e.to_string()}));
            Err(CliError::outside(anyhow::anyhow!("{}: {e}", e.kind())))
        }
    }
}

pub(crate) async fn provision_sub(sub: &str) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    // As the tenant is recorded (plan, suspension, password generation): an operator's
    // provision never resets what an operator changed, nor brings back an offboarded tenant.
    let pool = app.settings.user_pool_id.as_deref();
    let done = change::provision_recorded(p, &tenant, pool, ConvergeOptions::new(app.budget()))
        .await
        .map_err(step_error)?;
    print(&json!({"action": "provisioned", "converged": done}));
    Ok(())
}

pub(crate) async fn status(sub: &str) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let status = status::status(p, &tenant)
        .await
        .map_err(CliError::outside)?;
    print(&status);
    Ok(())
}

pub(crate) async fn change(
    sub: &str,
    change: Change,
    recovery_days: Option<i64>,
    wait_secs: u64,
) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    if let Change::Plan(name) = &change
        && p.plans.get(name).is_none()
    {
        let known: Vec<&str> = p.plans.names().collect();
        return Err(CliError::input(format!(
            "no plan '{name}' (plans: {})",
            known.join(", ")
        )));
    }
    let options = ConvergeOptions {
        rollout_wait: std::time::Duration::from_secs(wait_secs),
        recovery_days,
        ..ConvergeOptions::new(app.budget())
    };
    let done = change::change(p, &tenant, change, options)
        .await
        .map_err(step_error)?;
    print(&done);
    Ok(())
}

pub(crate) async fn move_cmd(sub: &str, to: &str, wait_secs: u64) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let settings = settings()?;
    if settings.cells.get(to).is_none() {
        return Err(CliError::input(format!(
            "no cell '{to}' in {} (cells: {})",
            settings.cells.source,
            settings.cells.names().join(", ")
        )));
    }
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let options = post_signup::ops::moving::MoveOptions {
        wait: std::time::Duration::from_secs(wait_secs),
        budget: app.budget(),
    };
    let report = post_signup::ops::moving::move_tenant(p, &tenant, to, options)
        .await
        .map_err(step_error)?;
    print(&report);
    Ok(())
}

pub(crate) async fn abort_move_cmd(sub: &str, wait_secs: u64) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let options = post_signup::ops::moving::MoveOptions {
        wait: std::time::Duration::from_secs(wait_secs),
        budget: app.budget(),
    };
    let report = post_signup::ops::moving::abort_move(p, &tenant, options)
        .await
        .map_err(step_error)?;
    print(&report);
    Ok(())
}

pub(crate) async fn list(filter: &ListFilter, output: Output) -> Result<(), CliError> {
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    let rows = status::list(p, filter, deadline)
        .await
        .map_err(CliError::outside)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&rows).expect("JSON serialises")),
        Output::Text => {
            println!(
                "{:<36}  {:<10}  {:<10}  {:>3}  {:<12}  converged",
                "tenant", "state", "plan", "gen", "outcome"
            );
            for r in &rows {
                let outcome = serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                println!(
                    "{:<36}  {:<10}  {:<10}  {:>3}  {:<12}  {}",
                    r.tenant,
                    r.state.as_str(),
                    r.plan,
                    r.generation,
                    outcome,
                    r.converged
                );
            }
            eprintln!("{} tenant(s)", rows.len());
        }
    }
    Ok(())
}
