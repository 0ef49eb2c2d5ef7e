//! Shared AWS plumbing: one `SdkConfig` per cold start with tight timeouts and no retries, and
//! the function's own credentials (which also sign the EKS token).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::outside::error::{FailureKind, StepError, System, chain, clip, transport_kind};

/// Loads the AWS config (region, credentials chain, `AWS_ENDPOINT_URL`). The SDK's defaults
/// (3 attempts, 3.1 s connect, no operation timeout) could outlast Cognito's 5 s: every
/// attempt is bounded and there is exactly one attempt; the deadline decides, not a retry loop.
pub async fn load_config(connect_timeout: Duration, operation_timeout: Duration) -> SdkConfig {
    config_loader(connect_timeout, operation_timeout)
        .load()
        .await
}

/// The loader behind [`load_config`], for callers that set region, credentials or endpoint
/// themselves but keep the same timeouts and retry policy.
pub fn config_loader(
    connect_timeout: Duration,
    operation_timeout: Duration,
) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(connect_timeout)
                .read_timeout(operation_timeout)
                .operation_attempt_timeout(operation_timeout)
                .operation_timeout(operation_timeout)
                .build(),
        )
        .retry_config(RetryConfig::disabled())
}

pub fn region(config: &SdkConfig) -> Result<String, StepError> {
    config
        .region()
        .map(|r| r.as_ref().to_owned())
        .ok_or_else(|| {
            StepError::new(
                System::Aws,
                "resolve region",
                FailureKind::Other,
                "no AWS region: set AWS_REGION",
            )
        })
}

/// The function's credentials, cached until five minutes before they expire (environment
/// credentials in Lambda never do; a web-identity or SSO chain would otherwise call STS per
/// invocation).
#[derive(Debug)]
pub struct AwsCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl AwsCredentials {
    pub fn new(config: &SdkConfig) -> Result<Self, StepError> {
        let provider = config.credentials_provider().ok_or_else(|| {
            StepError::new(
                System::Aws,
                "load AWS credentials",
                FailureKind::Other,
                "no credentials provider configured",
            )
        })?;
        Ok(Self {
            provider,
            cached: Mutex::new(None),
        })
    }

    /// The cached credentials, if they are fresh enough to sign with (no I/O).
    pub fn cached(&self) -> Option<Credentials> {
        let fresh_enough = |c: &Credentials| {
            c.expiry()
                .is_none_or(|exp| exp > SystemTime::now() + Duration::from_secs(300))
        };
        self.cached
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .filter(fresh_enough)
    }

    pub async fn current(&self) -> Result<Credentials, StepError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            StepError::new(
                System::Aws,
                "load AWS credentials",
                FailureKind::Unauthorized,
                crate::outside::error::chain(&e),
            )
        })?;
        if let Ok(mut slot) = self.cached.lock() {
            *slot = Some(creds.clone());
        }
        Ok(creds)
    }
}

/// Maps an AWS SDK error (any service) to a step error. Service messages come from AWS and
/// never contain secret values.
pub(crate) fn sdk_error<E>(
    system: System,
    action: &str,
    err: SdkError<E, HttpResponse>,
) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => {
            StepError::new(system, action, FailureKind::Timeout, "timed out")
        }
        SdkError::DispatchFailure(d) => {
            let kind = match d.as_connector_error() {
                _ if d.is_timeout() => FailureKind::Timeout,
                Some(c) => match transport_kind(c) {
                    FailureKind::Other if d.is_io() => FailureKind::Connect,
                    kind => kind,
                },
                None => FailureKind::Other,
            };
            let detail = d
                .as_connector_error()
                .map(|c| chain(c))
                .unwrap_or_else(|| format!("{d:?}"));
            StepError::new(system, action, kind, detail)
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = err.code().unwrap_or("UnknownError");
            let kind = match (status, code) {
                (_, c) if is_throttling(c) => FailureKind::Throttled,
                (429, _) => FailureKind::Throttled,
                (_, "AccessDeniedException") | (403, _) => FailureKind::Forbidden,
                (_, "UnrecognizedClientException" | "InvalidSignatureException") | (401, _) => {
                    FailureKind::Unauthorized
                }
                (500..=599, _) => FailureKind::ServerError,
                _ => FailureKind::Rejected,
            };
            let detail = format!("{status} {code}: {}", clip(err.message().unwrap_or("")));
            StepError {
                status: Some(status),
                ..StepError::new(system, action, kind, detail)
            }
        }
        SdkError::ResponseError(_) => {
            StepError::new(system, action, FailureKind::BadResponse, chain(&err))
        }
        _ => StepError::new(system, action, FailureKind::Other, chain(&err)),
    }
}

/// The throttling error codes the AWS SDKs' standard retry strategy treats as transient.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
    )
}
