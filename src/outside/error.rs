//! Errors that name the outside system and the step, carry the cause chain, and never a secret.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Rabbitmq,
    SecretsManager,
    Eks,
    Kubernetes,
    /// The function's own AWS region and credentials.
    Aws,
    /// The hand-off queue.
    Sqs,
    /// The user pool (the reconciler's list of users).
    Cognito,
    /// The tenant registry (DynamoDB).
    Registry,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Rabbitmq => "rabbitmq",
            System::SecretsManager => "secrets-manager",
            System::Eks => "eks",
            System::Kubernetes => "kubernetes",
            System::Aws => "aws",
            System::Sqs => "sqs",
            System::Cognito => "cognito",
            System::Registry => "registry",
        })
    }
}

/// What went wrong, coarsely: enough for a caller (or a test) to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// 401: the credential was refused.
    Unauthorized,
    /// 403: authenticated, not allowed.
    Forbidden,
    /// Another 4xx.
    Rejected,
    /// 429, or an AWS throttling error: transient.
    Throttled,
    /// 5xx.
    ServerError,
    /// No answer in time.
    Timeout,
    /// Could not connect: refused, unreachable, DNS. Nothing was sent: transient.
    Connect,
    /// The connection was reset or closed before any answer (a stale pooled connection after a
    /// Lambda sandbox thaw looks like this): transient, because every write is idempotent.
    Reset,
    /// An answer we could not use (e.g. a malformed secret).
    BadResponse,
    /// The record changed since it was read (a version condition failed): read and retry.
    Conflict,
    /// Another holder has the tenant's lease (one writer per tenant): it applies the record.
    Busy,
    /// No open cell has room for a new tenant: it waits for one (not a failure of the tenant).
    NoRoom,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// The kind as it is serialised (`timeout`, `server-error`, …), for records and logs.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_owned())
    }
}

/// One failed step against one outside system.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system}: {action}: {detail}")]
pub struct StepError {
    pub system: System,
    /// What was being done, e.g. `create vhost '4f8e…'`.
    pub action: String,
    pub kind: FailureKind,
    /// The cause, already free of secrets.
    pub detail: String,
    /// The HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    /// How long the server asked us to wait (`Retry-After`), when it did.
    pub retry_after: Option<std::time::Duration>,
}

impl StepError {
    pub fn new(
        system: System,
        action: impl Into<String>,
        kind: FailureKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            system,
            action: action.into(),
            kind,
            detail: detail.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Whether trying the same call again can succeed: the connection failed before an answer,
    /// the server was throttling, or a gateway/unavailable answer (AWS: any 5xx). Nothing else:
    /// a 401/403/404/422 is as wrong the second time.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            FailureKind::Connect | FailureKind::Reset | FailureKind::Throttled => true,
            FailureKind::ServerError => match self.system {
                System::SecretsManager
                | System::Eks
                | System::Sqs
                | System::Cognito
                | System::Registry => true,
                _ => matches!(self.status, Some(502..=504)),
            },
            _ => false,
        }
    }

    pub fn with_retry_after(mut self, retry_after: Option<std::time::Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn from_status(
        system: System,
        action: impl Into<String>,
        status: u16,
        message: &str,
    ) -> Self {
        let kind = match status {
            401 => FailureKind::Unauthorized,
            403 => FailureKind::Forbidden,
            429 => FailureKind::Throttled,
            500..=599 => FailureKind::ServerError,
            _ => FailureKind::Rejected,
        };
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let message = clip(message.trim());
        let detail = if message.is_empty() {
            format!("{status} {reason}")
        } else {
            format!("{status} {reason} ({message})")
        };
        Self {
            status: Some(status),
            ..Self::new(system, action, kind, detail)
        }
    }
}

/// Renders an error and all its causes on one line, as `a: b: c`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Classifies a transport failure (no HTTP answer) by walking its causes: reset/closed
/// connections, refused connections and timeouts each get their kind.
pub fn transport_kind(e: &(dyn std::error::Error + 'static)) -> FailureKind {
    use std::io::ErrorKind as Io;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = String::new();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::TimedOut => return FailureKind::Timeout,
                Io::ConnectionRefused | Io::HostUnreachable | Io::NetworkUnreachable => {
                    return FailureKind::Connect;
                }
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::UnexpectedEof => {
                    return FailureKind::Reset;
                }
                _ => {}
            }
        }
        text.push_str(&err.to_string().to_lowercase());
        text.push(' ');
        cur = err.source();
    }
    if text.contains("timed out") || text.contains("timeout") {
        FailureKind::Timeout
    } else if text.contains("certificate") || text.contains("tls") {
        // A TLS failure will fail again: not a connect error worth retrying.
        FailureKind::Other
    } else if text.contains("connection closed before message completed")
        || text.contains("connection reset")
        || text.contains("incomplete message")
        || text.contains("end of file")
    {
        FailureKind::Reset
    } else if text.contains("connect") || text.contains("dns") {
        FailureKind::Connect
    } else {
        FailureKind::Other
    }
}

/// Bodies of error answers are quoted, but never at length.
pub fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// A record whose `sub` is not a tenant id, as the registry read that returned it reports it.
impl From<crate::tenant::record::BadRecord> for StepError {
    fn from(e: crate::tenant::record::BadRecord) -> Self {
        StepError::new(
            System::Registry,
            "read tenant record",
            FailureKind::BadResponse,
            e.to_string(),
        )
    }
}

/// A record naming an undeclared cell, as the registry step that read it reports it.
impl From<crate::cells::file::UnknownCell> for StepError {
    fn from(e: crate::cells::file::UnknownCell) -> Self {
        StepError::new(
            System::Registry,
            format!("find cell '{}'", e.cell),
            FailureKind::Rejected,
            e.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_system_action_and_status() {
        let e = StepError::from_status(
            System::Rabbitmq,
            "create vhost 'x'",
            401,
            "Not administrator user",
        );
        assert_eq!(e.kind, FailureKind::Unauthorized);
        assert_eq!(e.status, Some(401));
        assert_eq!(
            e.to_string(),
            "rabbitmq: create vhost 'x': 401 Unauthorized (Not administrator user)"
        );
        assert_eq!(
            StepError::from_status(System::Kubernetes, "a", 403, "").kind,
            FailureKind::Forbidden
        );
        assert_eq!(
            StepError::from_status(System::Kubernetes, "a", 503, "").kind,
            FailureKind::ServerError
        );
        assert_eq!(
            StepError::from_status(System::Kubernetes, "a", 422, "").kind,
            FailureKind::Rejected
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |system, code| StepError::from_status(system, "a", code, "");
        for code in [429, 502, 503, 504] {
            assert!(status(System::Rabbitmq, code).is_transient(), "{code}");
            assert!(status(System::Kubernetes, code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 500] {
            assert!(!status(System::Rabbitmq, code).is_transient(), "{code}");
        }
        assert!(
            status(System::SecretsManager, 500).is_transient(),
            "AWS 5xx"
        );
        for kind in [
            FailureKind::Connect,
            FailureKind::Reset,
            FailureKind::Throttled,
        ] {
            assert!(StepError::new(System::Rabbitmq, "a", kind, "").is_transient());
        }
        for kind in [
            FailureKind::Timeout,
            FailureKind::Other,
            FailureKind::BadResponse,
        ] {
            assert!(!StepError::new(System::Rabbitmq, "a", kind, "").is_transient());
        }
    }

    #[test]
    fn io_errors_are_classified_by_kind() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            transport_kind(&Error::from(ErrorKind::ConnectionReset)),
            FailureKind::Reset
        );
        assert_eq!(
            transport_kind(&Error::from(ErrorKind::ConnectionRefused)),
            FailureKind::Connect
        );
        assert_eq!(
            transport_kind(&Error::from(ErrorKind::TimedOut)),
            FailureKind::Timeout
        );
        assert_eq!(
            transport_kind(&Error::other("invalid peer certificate: UnknownIssuer")),
            FailureKind::Other
        );
    }

    #[test]
    fn long_bodies_are_clipped() {
        assert!(clip(&"x".repeat(1000)).chars().count() <= 301);
    }
}
