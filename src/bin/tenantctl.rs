//! tenantctl: the operator CLI over the post-signup library. It parses arguments, calls the
//! library and prints; exit codes are decided in one place ([`CliError`]).

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};
use lambda_runtime::{Context, LambdaEvent};
use post_signup::lambda::app::App;
use post_signup::lambda::event::{classify, sign_up_event};
use post_signup::lambda::settings::{Settings, var};
use post_signup::lambda::trigger::{self, Finish};
use post_signup::ops::converge::ConvergeOptions;
use post_signup::ops::reconcile::{self, ReconcileOptions};
use post_signup::ops::{change, handoff, status};
use post_signup::outside::cognito::UserPool;
use post_signup::outside::eks_token::{EksTokenSigner, rfc3339_seconds};
use post_signup::outside::registry::ListFilter;
use post_signup::tenant::TenantId;
use post_signup::tenant::record::Phase;
use post_signup::tenant::transition::Change;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "tenantctl",
    version,
    about = "Operate post-signup tenants and sign EKS tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CellAction {
    Open,
    Drain,
    Close,
}

#[derive(Subcommand)]
enum Command {
    /// Print an ExecCredential with a freshly signed EKS token, like `aws eks get-token`.
    Token {
        #[arg(long)]
        cluster_name: String,
        /// Defaults to the standard AWS region chain (AWS_REGION, profile).
        #[arg(long)]
        region: Option<String>,
        /// Sign as of this RFC 3339 time instead of now (reproducible output).
        #[arg(long)]
        at: Option<String>,
    },
    /// Print a ConfirmSignUp event for SUB (the shipped fixture with that sub), for scripts,
    /// `sam local invoke` and `provision --event -`.
    Event {
        #[arg(long)]
        sub: String,
    },
    /// Check a backend Deployment template as the function's cold start does (for
    /// `BACKEND_TEMPLATE=FILE make package`); prints what the tenants' Deployments will run.
    CheckTemplate {
        /// The template file (an apps/v1 Deployment).
        file: std::path::PathBuf,
    },
    /// Check a cells file as the functions' cold start does (for `CELLS=FILE make package`);
    /// prints each cell (no secret). With --admin-secret-id, also refuses a cell whose admin
    /// secret the template's roles cannot read (neither that id nor named under `ID/`).
    CheckCells {
        file: std::path::PathBuf,
        #[arg(long)]
        admin_secret_id: Option<String>,
    },
    /// Provision a tenant: `--event FILE|-` runs the trigger exactly (same budget, same hand-off,
    /// same answer on stdout); `--sub SUB` provisions one tenant directly and prints the report.
    Provision {
        #[arg(long, conflicts_with = "sub", required_unless_present = "sub")]
        event: Option<String>,
        #[arg(long)]
        sub: Option<String>,
        /// For benchmarks of simultaneous cold sign-ups (with --event FILE): after the cold
        /// start, say `tenantctl: ready` on stderr and wait for a line on stdin, then invoke,
        /// the budget counting from then less the cold start's duration (as if the cold start
        /// ran just before, on a CPU of its own, as each Lambda container's does). Prints
        /// `init_ms` and `invocation_ms` on stderr.
        #[arg(long, requires = "event", hide = true)]
        barrier: bool,
    },
    /// Show what exists for a tenant (keys, never values).
    Status {
        #[arg(long)]
        sub: String,
    },
    /// Offboard a tenant: record it offboarded (a tombstone: nothing brings it back but
    /// `restore`), then revoke its access and remove its parts (needs the operator identity).
    Deprovision {
        #[arg(long)]
        sub: String,
        /// Keep the vhost and its messages; remove only the user, its access and the backend.
        #[arg(long)]
        retain_data: bool,
        /// Days Secrets Manager keeps the tenant secret recoverable (7-30).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i64).range(7..=30))]
        recovery_days: i64,
        /// Delete the tenant secret at once, without a recovery window.
        #[arg(long, conflicts_with = "recovery_days")]
        no_recovery: bool,
    },
    /// Lift an offboarding on purpose: the tenant is provisioned again, with a new password.
    Restore {
        #[arg(long)]
        sub: String,
    },
    /// Every recorded tenant with its state and plan, from the registry (paginated).
    List {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Per cell (broker): tenants, vhosts and connections against capacity, state, broker
    /// version, from bulk listings (CELLS_PATH names the cells; without it, the one broker).
    Cells {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change a cell's state in the registry: `open` (takes new tenants), `drain` (takes none;
    /// its tenants stay), `close` (takes none, expected empty).
    Cell {
        #[arg(value_enum)]
        action: CellAction,
        /// A cell of the cells file.
        name: String,
    },
    /// Record every tenant of this installation that exists but has no record, from what its
    /// objects carry (once: recorded tenants are never adopted again).
    Adopt {
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a tenant to another plan (limits, replicas, resources).
    Plan {
        #[arg(long)]
        sub: String,
        /// A plan of deploy/plans.yaml (or PLANS_PATH).
        name: String,
    },
    /// Scale the tenant's backend to 0 and refuse its AMQP connections (open ones are closed).
    Suspend {
        #[arg(long)]
        sub: String,
    },
    /// Undo `suspend`: the plan's replicas and connection limit come back.
    Resume {
        #[arg(long)]
        sub: String,
    },
    /// Give the tenant a new password everywhere, roll its backend, then close the connections
    /// still using the old password. Run again, it finishes a rotation left half-done.
    Rotate {
        #[arg(long)]
        sub: String,
        /// Seconds to wait for the backend to roll before closing old connections.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Move a tenant to another cell: its vhost's definitions and messages (shovels), then its
    /// credentials (the backend rolls), then the source is removed. Resumable: run it again
    /// after a failure. Refused for a suspended or offboarded tenant.
    Move {
        #[arg(long)]
        sub: String,
        /// The target cell (of the cells file).
        #[arg(long)]
        to: String,
        /// Seconds to wait for the backend to roll, and for each pass of the shovels.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Provision every tenant on the hand-off queue; exits when the queue is empty.
    Drain,
    /// Compare the user pool with what exists: provision missing or incomplete tenants, report
    /// (and with --prune remove) orphans.
    Reconcile {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also offboard recorded tenants whose user no longer exists (guarded: each user is
        /// checked again, records younger than --min-age are kept, and a run that would prune
        /// more than --max-fraction of the tenants is refused whole).
        #[arg(long, conflicts_with = "dry_run")]
        prune: bool,
        /// Minimum age of a record before it may be pruned (e.g. 24h, 30m, 0s).
        #[arg(long, default_value = "24h", value_parser = parse_age)]
        min_age: std::time::Duration,
        /// Largest fraction of this installation's tenants one run may prune (0-1).
        #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
        max_fraction: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateArg {
    Active,
    Suspended,
    Offboarded,
}

impl From<StateArg> for Phase {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Active => Phase::Active,
            StateArg::Suspended => Phase::Suspended,
            StateArg::Offboarded => Phase::Offboarded,
        }
    }
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not an age such as 24h, 30m or 0s"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': the unit is one of s, m, h, d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("'{s}' is not a fraction between 0 and 1"))
}

/// Exit codes: 0 done (or nothing to do), 1 an outside system failed, 2 bad input or settings.
enum CliError {
    Input(anyhow::Error),
    Outside(anyhow::Error),
}

impl CliError {
    fn input(message: impl std::fmt::Display) -> Self {
        Self::Input(anyhow::anyhow!("{message}"))
    }

    fn outside(e: impl Into<anyhow::Error>) -> Self {
        Self::Outside(e.into())
    }

    fn exit(self) -> ExitCode {
        let (code, e) = match self {
            CliError::Input(e) => (2, e),
            CliError::Outside(e) => (1, e),
        };
        eprintln!("tenantctl: {e:#}");
        ExitCode::from(code)
    }
}

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
    ) {
        post_signup::telemetry::init(true);
    }
    let result = match cli.command {
        Command::Token {
            cluster_name,
            region,
            at,
        } => token(&cluster_name, region, at.as_deref()).await,
        Command::Event { sub } => parse_sub(&sub).map(|t| print(&sign_up_event(t.as_str()))),
        Command::CheckTemplate { file } => check_template(&file),
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
        Command::Plan { sub, name } => change(&sub, Change::Plan(name), Some(7), 0).await,
        Command::Suspend { sub } => change(&sub, Change::Suspend, Some(7), 0).await,
        Command::Resume { sub } => change(&sub, Change::Resume, Some(7), 0).await,
        Command::Rotate { sub, wait } => change(&sub, Change::Rotate, Some(7), wait).await,
        Command::Move { sub, to, wait } => move_cmd(&sub, &to, wait).await,
        Command::Reconcile {
            dry_run,
            prune,
            min_age,
            max_fraction,
            output,
        } => reconcile_cmd(dry_run, prune, min_age, max_fraction, output).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential {
    kind: &'static str,
    api_version: String,
    spec: serde_json::Map<String, serde_json::Value>,
    status: ExecStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    expiration_timestamp: String,
    token: String,
}

const DEFAULT_EXEC_API: &str = "client.authentication.k8s.io/v1beta1";
const KNOWN_EXEC_APIS: [&str; 3] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
];

/// The apiVersion kubectl asks for in KUBERNETES_EXEC_INFO, as `aws eks get-token` reads it.
fn exec_api_version() -> String {
    let Ok(raw) = std::env::var("KUBERNETES_EXEC_INFO") else {
        return DEFAULT_EXEC_API.to_owned();
    };
    if raw.trim().is_empty() {
        return DEFAULT_EXEC_API.to_owned();
    }
    match serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["apiVersion"].as_str().map(str::to_owned))
    {
        Some(v) if KNOWN_EXEC_APIS.contains(&v.as_str()) => v,
        Some(v) => {
            eprintln!(
                "tenantctl: unrecognized apiVersion '{v}' in KUBERNETES_EXEC_INFO; using {DEFAULT_EXEC_API}"
            );
            DEFAULT_EXEC_API.to_owned()
        }
        None => {
            eprintln!(
                "tenantctl: KUBERNETES_EXEC_INFO has no apiVersion; using {DEFAULT_EXEC_API}"
            );
            DEFAULT_EXEC_API.to_owned()
        }
    }
}

async fn token(cluster: &str, region: Option<String>, at: Option<&str>) -> Result<(), CliError> {
    let at: SystemTime = match at {
        None => SystemTime::now(),
        Some(s) => s
            .parse::<jiff::Timestamp>()
            .map_err(|e| CliError::input(format!("--at '{s}' is not an RFC 3339 time: {e}")))?
            .into(),
    };
    let region = match region {
        Some(r) => r,
        None => region_from_chain()
            .await
            .ok_or_else(|| CliError::input("no AWS region: pass --region or set AWS_REGION"))?,
    };
    let signer =
        EksTokenSigner::new(cluster, &region).map_err(|e| CliError::input(e.to_string()))?;
    let creds = credentials_from_chain().await.map_err(|e| {
        CliError::input(format!(
            "no AWS credentials: {}",
            post_signup::outside::error::chain(&e)
        ))
    })?;
    let token = signer
        .sign(&creds, at)
        .map_err(|e| CliError::input(e.to_string()))?;
    let cred = ExecCredential {
        kind: "ExecCredential",
        api_version: exec_api_version(),
        spec: Default::default(),
        status: ExecStatus {
            expiration_timestamp: rfc3339_seconds(token.expires_at),
            token: token.token.expose_secret().to_owned(),
        },
    };
    println!(
        "{}",
        serde_json::to_string(&cred).expect("ExecCredential serialises")
    );
    Ok(())
}

// kubectl runs the exec plugin on every call that needs a fresh token, so its start-up counts.
// Both chains below look at the environment first, as the SDK's default chains do, and only
// build the full chain (which reads profile files and sets up HTTP clients for SSO, web
// identity and IMDS: milliseconds per call) when the environment has no answer.

async fn region_from_chain() -> Option<String> {
    use aws_config::meta::region::ProvideRegion as _;
    if let Some(r) = aws_config::environment::EnvironmentVariableRegionProvider::new()
        .region()
        .await
    {
        return Some(r.as_ref().to_owned());
    }
    aws_config::default_provider::region::default_provider()
        .region()
        .await
        .map(|r| r.as_ref().to_owned())
}

async fn credentials_from_chain() -> Result<
    aws_credential_types::Credentials,
    aws_credential_types::provider::error::CredentialsError,
> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let env = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    if let Ok(creds) = env.provide_credentials().await {
        return Ok(creds);
    }
    aws_config::default_provider::credentials::default_provider()
        .await
        .provide_credentials()
        .await
}

fn settings() -> Result<Settings, CliError> {
    Settings::from_env().map_err(CliError::input)
}

/// The app with every cold-start call done (tenantctl wants to fail loudly, not hand off).
async fn init() -> Result<App, CliError> {
    let settings = settings()?;
    let aws =
        post_signup::outside::aws::load_config(settings.connect_timeout, settings.budget).await;
    App::init_with(settings, &aws)
        .await
        .map_err(|e| CliError::outside(e.context("cold start failed")))
}

fn print(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serialises")
    );
}

fn parse_sub(sub: &str) -> Result<TenantId, CliError> {
    TenantId::parse(sub).map_err(|e| CliError::input(format!("--sub {e}")))
}

fn read_event(path: &str) -> Result<Value, CliError> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::input(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::input(format!("reading event file '{path}': {e}")))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::input(format!("event '{path}' is not JSON: {e}")))
}

/// The trigger, exactly: stdout gets what Lambda would return to Cognito.
async fn provision_event(
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

async fn provision_sub(sub: &str) -> Result<(), CliError> {
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

/// A refused request (a conflict, an invalid transition) is the operator's to fix: exit 2.
fn step_error(e: post_signup::outside::error::StepError) -> CliError {
    use post_signup::outside::error::FailureKind;
    match e.kind {
        FailureKind::Conflict | FailureKind::Rejected => CliError::input(e),
        _ => CliError::outside(e),
    }
}

async fn status(sub: &str) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let status = status::status(p, &tenant)
        .await
        .map_err(CliError::outside)?;
    print(&status);
    Ok(())
}

async fn change(
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

async fn move_cmd(sub: &str, to: &str, wait_secs: u64) -> Result<(), CliError> {
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

async fn list(filter: &ListFilter, output: Output) -> Result<(), CliError> {
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

async fn adopt(dry_run: bool) -> Result<(), CliError> {
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

async fn drain() -> Result<(), CliError> {
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

async fn reconcile_cmd(
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

/// The template as the cold start loads it: an error names the file and the problem.
fn check_cells(file: &std::path::Path, admin_secret_id: Option<&str>) -> Result<(), CliError> {
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
    print(&serde_json::json!({"cells": cells.all(), "valid": true}));
    Ok(())
}

fn check_template(file: &std::path::Path) -> Result<(), CliError> {
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

async fn cells(output: Output) -> Result<(), CliError> {
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
                "{:<16}  {:<9}  {:<8}  {:>13}  {:>13}  {:>9}  {:>13}  {:>7}  {:>9}  {:>10}",
                "cell",
                "state",
                "version",
                "vhosts",
                "connections",
                "granted",
                "seats",
                "active",
                "suspended",
                "offboarded"
            );
            for r in &rows {
                let seats = match r.vhosts.capacity {
                    Some(c) => format!("{}/{c}", r.seats.tenants),
                    None => "-".to_owned(),
                };
                println!(
                    "{:<16}  {:<9}  {:<8}  {:>13}  {:>13}  {:>9}  {:>13}  {:>7}  {:>9}  {:>10}{}",
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
    if let Some(r) = rows.iter().find(|r| r.broker_error.is_some()) {
        return Err(CliError::outside(anyhow::anyhow!(
            "cell '{}': its broker did not answer ({})",
            r.name,
            r.broker_error.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

async fn cell(action: CellAction, name: &str) -> Result<(), CliError> {
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
