//! Errors that name the outside system and the step, carry the cause chain, and never a secret.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Rabbitmq,
    SecretsManager,
    Eks,
    Kubernetes,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Rabbitmq => "rabbitmq",
            System::SecretsManager => "secrets-manager",
            System::Eks => "eks",
            System::Kubernetes => "kubernetes",
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
    /// 5xx.
    ServerError,
    /// No answer in time.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// An answer we could not use (e.g. a malformed secret).
    BadResponse,
    /// Anything else.
    Other,
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
        }
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

/// Bodies of error answers are quoted, but never at length.
pub fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
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
    fn long_bodies_are_clipped() {
        assert!(clip(&"x".repeat(1000)).chars().count() <= 301);
    }
}
