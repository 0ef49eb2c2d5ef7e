//! Exit codes, decided in one place: 0 done (or nothing to do), 1 an outside system failed,
//! 2 bad input, settings or a refusal that is the operator's to fix, 3 the tenant is busy
//! (the change is recorded; its current holder applies it).

use std::process::ExitCode;

/// Exit codes: 0 done (or nothing to do), 1 an outside system failed, 2 bad input or settings,
/// 3 busy.
pub(crate) enum CliError {
    Input(anyhow::Error),
    Outside(anyhow::Error),
    Busy(anyhow::Error),
}

impl CliError {
    pub(crate) fn input(message: impl std::fmt::Display) -> Self {
        Self::Input(anyhow::anyhow!("{message}"))
    }

    pub(crate) fn outside(e: impl Into<anyhow::Error>) -> Self {
        Self::Outside(e.into())
    }

    /// The process's exit code for this error.
    pub(crate) fn code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Outside(_) => 1,
            CliError::Busy(_) => 3,
        }
    }

    pub(crate) fn exit(self) -> ExitCode {
        let code = self.code();
        let (CliError::Input(e) | CliError::Outside(e) | CliError::Busy(e)) = self;
        eprintln!("tenantctl: {e:#}");
        ExitCode::from(code)
    }
}

/// A refused request (a conflict, an invalid transition) is the operator's to fix: exit 2.
pub(crate) fn step_error(e: post_signup::outside::error::StepError) -> CliError {
    use post_signup::outside::error::FailureKind;
    match e.kind {
        FailureKind::Conflict | FailureKind::Rejected => CliError::input(e),
        FailureKind::Busy => CliError::Busy(e.into()),
        _ => CliError::outside(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use post_signup::outside::error::{FailureKind, StepError, System};

    fn failed(kind: FailureKind) -> StepError {
        StepError::new(System::Registry, "transition", kind, "detail")
    }

    #[test]
    fn bad_input_exits_2_and_an_outside_failure_1() {
        assert_eq!(CliError::input("--sub is empty").code(), 2);
        assert_eq!(CliError::outside(anyhow::anyhow!("timeout")).code(), 1);
    }

    #[test]
    fn a_refusal_is_the_operators_to_fix_and_an_outage_is_not() {
        assert_eq!(step_error(failed(FailureKind::Conflict)).code(), 2);
        assert_eq!(step_error(failed(FailureKind::Rejected)).code(), 2);
        assert_eq!(step_error(failed(FailureKind::Timeout)).code(), 1);
        assert_eq!(step_error(failed(FailureKind::Busy)).code(), 3);
        assert_eq!(step_error(failed(FailureKind::ServerError)).code(), 1);
    }
}
