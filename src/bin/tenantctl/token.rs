//! `tenantctl token`: an ExecCredential with a freshly signed EKS token, like
//! `aws eks get-token` (the kubeconfig exec plugin).

use std::time::SystemTime;

use post_signup::outside::kubernetes::token::{EksTokenSigner, rfc3339_seconds};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::error::CliError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecCredential {
    kind: &'static str,
    api_version: String,
    spec: serde_json::Map<String, serde_json::Value>,
    status: ExecStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecStatus {
    expiration_timestamp: String,
    token: String,
}

pub(crate) const DEFAULT_EXEC_API: &str = "client.authentication.k8s.io/v1beta1";
pub(crate) const KNOWN_EXEC_APIS: [&str; 3] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
];

/// The apiVersion kubectl asks for in KUBERNETES_EXEC_INFO, as `aws eks get-token` reads it.
pub(crate) fn exec_api_version() -> String {
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

pub(crate) async fn token(
    cluster: &str,
    region: Option<String>,
    at: Option<&str>,
) -> Result<(), CliError> {
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

pub(crate) async fn region_from_chain() -> Option<String> {
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

pub(crate) async fn credentials_from_chain() -> Result<
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
