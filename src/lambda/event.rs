//! What an incoming Cognito PostConfirmation event asks for. Parsed at the edge: the handler
//! only ever sees an [`Action`].

use aws_lambda_events::event::cognito::CognitoEventUserPoolsPostConfirmation;

use crate::tenant::{TenantId, TenantIdError};

pub const CONFIRM_SIGN_UP: &str = "PostConfirmation_ConfirmSignUp";
pub const CONFIRM_FORGOT_PASSWORD: &str = "PostConfirmation_ConfirmForgotPassword";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new user confirmed their sign-up: give them a tenant.
    Provision(TenantId),
    /// A password reset also fires PostConfirmation; the tenant already exists.
    Skip { trigger_source: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event is not a Cognito PostConfirmation event: {0}")]
    Malformed(String),
    #[error("event has no triggerSource")]
    MissingTriggerSource,
    #[error(
        "unsupported triggerSource '{0}': expected {CONFIRM_SIGN_UP} or {CONFIRM_FORGOT_PASSWORD}"
    )]
    UnsupportedTrigger(String),
    #[error("request.userAttributes.sub {0}")]
    Tenant(#[from] TenantIdError),
}

/// A ConfirmSignUp event for `sub`, shaped like Cognito's: `events/post-confirmation.json` with
/// the sub (and the user name) replaced. The one fixture builder for tests, benchmarks and
/// `tenantctl event`.
pub fn sign_up_event(sub: &str) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../../events/post-confirmation.json"))
            .expect("the shipped fixture is JSON");
    event["userName"] = sub.into();
    event["request"]["userAttributes"]["sub"] = sub.into();
    event
}

/// Classifies a raw event. The raw JSON is kept by the caller and returned unchanged.
pub fn classify(raw: &serde_json::Value) -> Result<Action, EventError> {
    if !raw.is_object() {
        return Err(EventError::Malformed("expected a JSON object".into()));
    }
    let trigger = match raw.get("triggerSource") {
        None | Some(serde_json::Value::Null) => return Err(EventError::MissingTriggerSource),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(EventError::Malformed(format!(
                "triggerSource is not a string: {other}"
            )));
        }
    };
    if trigger != CONFIRM_SIGN_UP && trigger != CONFIRM_FORGOT_PASSWORD {
        return Err(EventError::UnsupportedTrigger(
            trigger.chars().take(100).collect(),
        ));
    }
    // The typed parse checks the rest of the shape (header fields, request.userAttributes).
    let event: CognitoEventUserPoolsPostConfirmation =
        serde_json::from_value(raw.clone()).map_err(|e| EventError::Malformed(e.to_string()))?;
    match trigger {
        CONFIRM_SIGN_UP => {
            let sub = event
                .request
                .user_attributes
                .get("sub")
                .ok_or(TenantIdError::Missing)?;
            Ok(Action::Provision(TenantId::parse(sub)?))
        }
        CONFIRM_FORGOT_PASSWORD => Ok(Action::Skip {
            trigger_source: trigger.to_owned(),
        }),
        other => Err(EventError::UnsupportedTrigger(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(trigger: &str, attrs: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "1",
            "region": "us-east-1",
            "userPoolId": "us-east-1_Example",
            "userName": "alice",
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "abc"},
            "triggerSource": trigger,
            "request": {"userAttributes": attrs},
            "response": {}
        })
    }

    #[test]
    fn the_fixture_builder_gives_a_provisioning_event() {
        let sub = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";
        assert_eq!(
            classify(&sign_up_event(sub)),
            Ok(Action::Provision(TenantId::parse(sub).unwrap()))
        );
    }

    #[test]
    fn confirm_sign_up_provisions_the_sub() {
        let ev = event(
            CONFIRM_SIGN_UP,
            json!({"sub": "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f", "email": "a@example.com"}),
        );
        assert_eq!(
            classify(&ev).unwrap(),
            Action::Provision(TenantId::parse("4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f").unwrap())
        );
    }

    #[test]
    fn forgot_password_is_skipped_even_without_a_sub() {
        let ev = event(CONFIRM_FORGOT_PASSWORD, json!({}));
        assert!(matches!(classify(&ev).unwrap(), Action::Skip { .. }));
    }

    #[test]
    fn bad_events_are_clear_errors() {
        assert_eq!(
            classify(&event(CONFIRM_SIGN_UP, json!({}))),
            Err(TenantIdError::Missing.into())
        );
        assert_eq!(
            classify(&event(CONFIRM_SIGN_UP, json!({"sub": ""}))),
            Err(TenantIdError::Empty.into())
        );
        assert!(matches!(
            classify(&event(CONFIRM_SIGN_UP, json!({"sub": "bob"}))),
            Err(EventError::Tenant(TenantIdError::NotUuid(_)))
        ));
        assert!(matches!(
            classify(&event("PreSignUp_SignUp", json!({"sub": "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f"}))),
            Err(EventError::UnsupportedTrigger(t)) if t == "PreSignUp_SignUp"
        ));
        assert!(matches!(
            classify(&json!("text")),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            classify(&json!([1, 2])),
            Err(EventError::Malformed(_))
        ));
        let mut no_trigger = event(CONFIRM_SIGN_UP, json!({}));
        no_trigger.as_object_mut().unwrap().remove("triggerSource");
        assert_eq!(classify(&no_trigger), Err(EventError::MissingTriggerSource));
        let wrong_type = event(CONFIRM_SIGN_UP, json!({"sub": 42}));
        assert!(matches!(
            classify(&wrong_type),
            Err(EventError::Malformed(_))
        ));
    }
}
