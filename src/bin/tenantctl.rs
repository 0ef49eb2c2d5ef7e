//! tenantctl: the operator CLI over the post-signup library. It parses arguments, calls the
//! library and prints; exit codes are decided in one place ([`CliError`]).

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};
use lambda_runtime::{Context, LambdaEvent};
use post_signup::app::App;
use post_signup::cognito::UserPool;
use post_signup::eks_token::{EksTokenSigner, rfc3339_seconds};
use post_signup::event::{classify, sign_up_event};
use post_signup::handler::{self, Finish};
use post_signup::lifecycle::{self, DeprovisionOptions, ReconcileOptions};
use post_signup::settings::{Settings, var};
use post_signup::tenant::TenantId;
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
    /// Provision a tenant: `--event FILE|-` runs the trigger exactly (same budget, same hand-off,
    /// same answer on stdout); `--sub SUB` provisions one tenant directly and prints the report.
    Provision {
        #[arg(long, conflicts_with = "sub", required_unless_present = "sub")]
        event: Option<String>,
        #[arg(long)]
        sub: Option<String>,
    },
    /// Show what exists for a tenant (keys, never values).
    Status {
        #[arg(long)]
        sub: String,
    },
    /// Remove a tenant everywhere (needs the operator identity).
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
    /// Every tenant of this installation with its plan and state (bulk listings).
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
    /// Give the tenant a new password everywhere and roll its backend.
    Rotate {
        #[arg(long)]
        sub: String,
    },
    /// Provision every tenant on the hand-off queue; exits when the queue is empty.
    Drain,
    /// Compare the user pool with what exists: provision missing or incomplete tenants, report
    /// (and with --prune remove) orphans.
    Reconcile {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove tenants whose user no longer exists.
        #[arg(long, conflicts_with = "dry_run")]
        prune: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
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
    post_signup::install_crypto_provider();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Token { .. } | Command::Event { .. }) {
        post_signup::telemetry::init(true);
    }
    let result = match cli.command {
        Command::Token {
            cluster_name,
            region,
            at,
        } => token(&cluster_name, region, at.as_deref()).await,
        Command::Event { sub } => parse_sub(&sub).map(|t| print(&sign_up_event(t.as_str()))),
        Command::Provision {
            event: Some(path), ..
        } => provision_event(&path).await,
        Command::Provision { sub: Some(sub), .. } => provision_sub(&sub).await,
        Command::Provision { .. } => Err(CliError::input("give --event FILE or --sub SUB")),
        Command::Status { sub } => status(&sub).await,
        Command::Deprovision {
            sub,
            retain_data,
            recovery_days,
            no_recovery,
        } => {
            let options = DeprovisionOptions {
                retain_data,
                recovery_days: (!no_recovery).then_some(recovery_days),
            };
            deprovision(&sub, options).await
        }
        Command::Drain => drain().await,
        Command::List { output } => list(output).await,
        Command::Plan { sub, name } => change(&sub, Change::Plan(name)).await,
        Command::Suspend { sub } => change(&sub, Change::Suspend).await,
        Command::Resume { sub } => change(&sub, Change::Resume).await,
        Command::Rotate { sub } => change(&sub, Change::Rotate).await,
        Command::Reconcile {
            dry_run,
            prune,
            output,
        } => reconcile(dry_run, prune, output).await,
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
            post_signup::error::chain(&e)
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
    let aws = post_signup::aws::load_config(settings.connect_timeout, settings.budget).await;
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
async fn provision_event(path: &str) -> Result<(), CliError> {
    let raw = read_event(path)?;
    // Bad input is refused before any setting is read or any outside system touched.
    if let Err(e) = classify(&raw) {
        print(&json!({"errorType": "InvalidEvent", "errorMessage": e.to_string()}));
        return Err(CliError::input(format!("event '{path}': {e}")));
    }
    let settings = settings()?;
    let app = App::init(settings, tokio::time::Instant::now())
        .await
        .map_err(CliError::input)?;
    let mut context = Context::default();
    context.request_id = format!("tenantctl-{}", std::process::id());
    match handler::handle_reporting(&app, LambdaEvent::new(raw, context)).await {
        Ok((event, finish)) => {
            print(&event);
            match finish {
                Finish::HandedOff => {
                    eprintln!("tenantctl: not finished in time; handed off to the queue")
                }
                Finish::Skipped => eprintln!("tenantctl: nothing to provision for this trigger"),
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
    // provision never resets what an operator changed.
    let state = lifecycle::tenant_state(p, &tenant)
        .await
        .map_err(CliError::outside)?;
    let deadline = tokio::time::Instant::now() + app.budget();
    match Box::pin(p.provision_with(&tenant, &state, deadline)).await {
        Ok(report) => {
            print(&json!({"action": "provisioned", "state": state, "report": report}));
            Ok(())
        }
        Err(e) => {
            print(&json!({"action": "failed", "report": e.report}));
            Err(CliError::outside(anyhow::anyhow!("{e}")))
        }
    }
}

async fn status(sub: &str) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let status = lifecycle::status(p, &tenant)
        .await
        .map_err(CliError::outside)?;
    print(&status);
    Ok(())
}

async fn deprovision(sub: &str, options: DeprovisionOptions) -> Result<(), CliError> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let report = lifecycle::deprovision(p, &tenant, options)
        .await
        .map_err(CliError::outside)?;
    print(&report);
    Ok(())
}

enum Change {
    Plan(String),
    Suspend,
    Resume,
    Rotate,
}

async fn change(sub: &str, change: Change) -> Result<(), CliError> {
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
    let budget = app.budget();
    let done = match change {
        Change::Plan(name) => lifecycle::set_plan(p, &tenant, &name, budget).await,
        Change::Suspend => lifecycle::suspend(p, &tenant, budget).await,
        Change::Resume => lifecycle::resume(p, &tenant, budget).await,
        Change::Rotate => lifecycle::rotate(p, &tenant, budget).await,
    }
    .map_err(CliError::outside)?;
    print(&done);
    Ok(())
}

async fn list(output: Output) -> Result<(), CliError> {
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let rows = lifecycle::list(p).await.map_err(CliError::outside)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&rows).expect("JSON serialises")),
        Output::Text => {
            println!("{:<36}  {:<10}  {:<10}  ready", "tenant", "plan", "state");
            for r in &rows {
                println!(
                    "{:<36}  {:<10}  {:<10}  {}",
                    r.tenant, r.plan, r.state, r.ready
                );
            }
        }
    }
    Ok(())
}

async fn drain() -> Result<(), CliError> {
    let app = init().await?;
    let p = app.provisioner().await.map_err(CliError::outside)?;
    let summary = lifecycle::drain(p, &app.handoff, app.budget(), app.settings.concurrency)
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

async fn reconcile(dry_run: bool, prune: bool, output: Output) -> Result<(), CliError> {
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
    let options = ReconcileOptions {
        dry_run,
        prune,
        concurrency: app.settings.concurrency,
        budget: app.budget(),
    };
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
    let summary = lifecycle::reconcile(p, &pool, options, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })
    .await
    .map_err(CliError::outside)?;
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
                "{} users need a tenant: {} complete, {} {verb}, {} failed; {} orphan(s){}",
                summary.users,
                summary.complete,
                summary.repaired,
                summary.failed,
                summary.orphans.len(),
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
