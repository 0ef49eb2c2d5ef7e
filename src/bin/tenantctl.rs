//! tenantctl: the operator CLI over the post-signup library.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use post_signup::app::App;
use post_signup::eks_token::{EksTokenSigner, rfc3339_seconds};
use post_signup::event::{Action, classify};
use post_signup::settings::Settings;
use post_signup::tenant::TenantId;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

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
    /// Run the Lambda's provisioning for a Cognito event file (`-` for stdin).
    Provision {
        #[arg(long)]
        event: String,
    },
    /// Show what exists for a tenant (no secret values).
    Status {
        #[arg(long)]
        sub: String,
    },
    /// Delete a tenant everywhere: Deployment, Secret, Secrets Manager entry, vhost, user.
    Deprovision {
        #[arg(long)]
        sub: String,
    },
}

/// Exit codes: 0 done (or nothing to do), 1 an outside system failed, 2 bad input or settings.
enum Failure {
    Input(String),
    Outside(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    post_signup::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token {
            cluster_name,
            region,
            at,
        } => token(&cluster_name, region, at.as_deref()).await,
        command => {
            post_signup::telemetry::init(true);
            match command {
                Command::Provision { event } => provision(&event).await,
                Command::Status { sub } => status(&sub).await,
                Command::Deprovision { sub } => deprovision(&sub).await,
                Command::Token { .. } => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(m)) => {
            eprintln!("tenantctl: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Outside(m)) => {
            eprintln!("tenantctl: {m}");
            ExitCode::from(1)
        }
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

async fn token(cluster: &str, region: Option<String>, at: Option<&str>) -> Result<(), Failure> {
    let at: SystemTime = match at {
        None => SystemTime::now(),
        Some(s) => s
            .parse::<jiff::Timestamp>()
            .map_err(|e| Failure::Input(format!("--at '{s}' is not an RFC 3339 time: {e}")))?
            .into(),
    };
    let region = match region {
        Some(r) => r,
        None => region_from_chain().await.ok_or_else(|| {
            Failure::Input("no AWS region: pass --region or set AWS_REGION".into())
        })?,
    };
    let signer =
        EksTokenSigner::new(cluster, &region).map_err(|e| Failure::Input(e.to_string()))?;
    let creds = credentials_from_chain().await.map_err(|e| {
        Failure::Input(format!(
            "no AWS credentials: {}",
            post_signup::error::chain(&e)
        ))
    })?;
    let token = signer
        .sign(&creds, at)
        .map_err(|e| Failure::Input(e.to_string()))?;
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

async fn init() -> Result<App, Failure> {
    let settings = Settings::from_env().map_err(|e| Failure::Input(e.to_string()))?;
    App::init(settings)
        .await
        .map_err(|e| Failure::Outside(format!("cold start failed: {e:#}")))
}

fn print(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serialises")
    );
}

async fn provision(path: &str) -> Result<(), Failure> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::Input(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::Input(format!("reading event file '{path}': {e}")))?
    };
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Input(format!("event '{path}' is not JSON: {e}")))?;
    // Refuse bad input before touching any outside system.
    let action = classify(&raw).map_err(|e| Failure::Input(format!("event '{path}': {e}")))?;
    let tenant = match action {
        Action::Skip { trigger_source } => {
            print(&json!({"action": "skipped", "trigger_source": trigger_source}));
            return Ok(());
        }
        Action::Provision(tenant) => tenant,
    };
    let started = tokio::time::Instant::now();
    let app = init().await?;
    let init_ms = started.elapsed().as_secs_f64() * 1e3;
    let start = tokio::time::Instant::now();
    match app
        .provisioner
        .provision(&tenant, start + app.budget())
        .await
    {
        Ok(report) => {
            print(&json!({"action": "provisioned", "init_ms": init_ms, "report": report}));
            Ok(())
        }
        Err(e) => {
            print(&json!({"action": "failed", "init_ms": init_ms, "report": e.report}));
            Err(Failure::Outside(e.to_string()))
        }
    }
}

fn parse_sub(sub: &str) -> Result<TenantId, Failure> {
    TenantId::parse(sub)
        .map_err(|e| Failure::Input(e.to_string().replace("request.userAttributes.sub", "--sub")))
}

async fn status(sub: &str) -> Result<(), Failure> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = &app.provisioner;
    p.refresh_token(SystemTime::now())
        .await
        .map_err(|e| Failure::Outside(e.to_string()))?;
    let outside = |e: post_signup::error::StepError| Failure::Outside(e.to_string());
    let user = p
        .rabbitmq
        .get("user", &["users", tenant.rabbitmq_user()])
        .await
        .map_err(outside)?;
    let vhost = p
        .rabbitmq
        .get("vhost", &["vhosts", tenant.rabbitmq_vhost()])
        .await
        .map_err(outside)?;
    let permission = p
        .rabbitmq
        .get(
            "permission",
            &[
                "permissions",
                tenant.rabbitmq_vhost(),
                tenant.rabbitmq_user(),
            ],
        )
        .await
        .map_err(outside)?;
    let secret_keys = p
        .kubernetes
        .secret_keys(&tenant.secret_name())
        .await
        .map_err(outside)?;
    let deployment = p
        .kubernetes
        .get_deployment(&tenant.deployment_name())
        .await
        .map_err(outside)?;
    let sm_name = tenant.secrets_manager_name(&app.settings.secret_prefix);
    let sm = p.secrets.get_json(&sm_name).await.map_err(outside)?;
    let sm_keys: Option<Vec<String>> =
        sm.and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()));
    let images: Option<Vec<String>> = deployment.as_ref().map(|d| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| {
                p.containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect()
            })
            .unwrap_or_default()
    });
    let complete = user.is_some()
        && vhost.is_some()
        && permission.is_some()
        && secret_keys.is_some()
        && deployment.is_some()
        && sm_keys.is_some();
    print(&json!({
        "tenant": tenant.as_str(),
        "complete": complete,
        "rabbitmq": {
            "user": user.map(|u| json!({"name": u["name"], "tags": u["tags"]})),
            "vhost": vhost.map(|v| json!({"name": v["name"]})),
            "permission": permission.map(|p| json!({"configure": p["configure"], "write": p["write"], "read": p["read"]})),
        },
        "kubernetes": {
            "namespace": p.namespace(),
            "secret": secret_keys.map(|keys| json!({"name": tenant.secret_name(), "keys": keys})),
            "deployment": deployment.map(|d| json!({
                "name": d.metadata.name,
                "labels": d.metadata.labels,
                "images": images,
            })),
        },
        "secrets_manager": sm_keys.map(|keys| json!({"name": sm_name, "keys": keys})),
    }));
    Ok(())
}

async fn deprovision(sub: &str) -> Result<(), Failure> {
    let tenant = parse_sub(sub)?;
    let app = init().await?;
    let p = &app.provisioner;
    let outside = |e: post_signup::error::StepError| Failure::Outside(e.to_string());
    p.refresh_token(SystemTime::now()).await.map_err(outside)?;
    p.kubernetes.delete_tenant(&tenant).await.map_err(outside)?;
    let sm_deleted = p
        .secrets
        .delete(&tenant.secrets_manager_name(&app.settings.secret_prefix))
        .await
        .map_err(outside)?;
    let vhost_deleted = p
        .rabbitmq
        .delete("vhost", &["vhosts", tenant.rabbitmq_vhost()])
        .await
        .map_err(outside)?;
    let user_deleted = p
        .rabbitmq
        .delete("user", &["users", tenant.rabbitmq_user()])
        .await
        .map_err(outside)?;
    print(&json!({
        "tenant": tenant.as_str(),
        "deleted": {
            "kubernetes": [tenant.deployment_name(), tenant.secret_name()],
            "secrets_manager": sm_deleted,
            "rabbitmq_vhost": vhost_deleted,
            "rabbitmq_user": user_deleted,
        }
    }));
    Ok(())
}
