//! AWS Secrets Manager: the RabbitMQ admin credential (read once per cold start) and the
//! tenant's credentials for the frontend (written on every provisioning, converging).

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::Tag;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::outside::aws;
use crate::outside::error::{FailureKind, StepError, System};
use crate::tenant::credentials::AdminCredential;
use crate::tenant::credentials::PasswordKey;
use crate::tenant::plan::PLAN_LABEL;
use crate::tenant::{TENANT_LABEL, TenantId};

/// JSON field of the admin secret that holds the tenant password key (see `credentials`).
pub const PASSWORD_KEY_FIELD: &str = "tenant_password_key";

/// The admin secret: `{"username", "password", "tenant_password_key"}`.
#[derive(Debug)]
pub struct AdminSecret {
    pub credential: AdminCredential,
    pub password_key: PasswordKey,
}

#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn admin_secret(&self, id: &str) -> Result<AdminSecret, StepError> {
        let action = format!("read admin secret '{id}'");
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| aws::sdk_error(System::SecretsManager, &action, e))?;
        let Some(text) = out.secret_string() else {
            return Err(malformed(&action, "has no SecretString"));
        };
        parse_admin_secret(text).map_err(|problem| malformed(&action, &problem))
    }

    /// Creates or updates `<prefix><sub>` to hold exactly `value`.
    ///
    /// The version token is a hash of the value, so a retry of the same write is a no-op instead
    /// of a new version, and two concurrent first writes cannot both create the secret.
    pub async fn put_tenant_secret(
        &self,
        name: &str,
        tenant: &TenantId,
        value: &SecretString,
        generation: u32,
        plan: &str,
    ) -> Result<(), StepError> {
        let action = format!("store tenant secret '{name}'");
        // The password generation is part of the token: a rotation always makes a new version,
        // even if a value ever repeated (Secrets Manager ignores a token it has seen).
        let token = version_token(value, generation);
        let created = self
            .client
            .create_secret()
            .name(name)
            .description(format!("AMQP credentials of post-signup tenant {tenant}"))
            .secret_string(value.expose_secret())
            .client_request_token(&token)
            .tags(
                Tag::builder()
                    .key(TENANT_LABEL)
                    .value(tenant.as_str())
                    .build(),
            )
            .tags(Tag::builder().key(PLAN_LABEL).value(plan).build())
            .send()
            .await;
        let err = match created {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err.code() {
            // A secret that exists may await deletion (an offboarded tenant being restored):
            // restoring one that does not is a no-op, and some implementations answer
            // "exists" rather than "scheduled for deletion" for those.
            Some("ResourceExistsException") | Some("InvalidRequestException")
                if err.code() == Some("ResourceExistsException")
                    || err.message().unwrap_or("").contains("deletion") =>
            {
                self.client
                    .restore_secret()
                    .secret_id(name)
                    .send()
                    .await
                    .map_err(|e| {
                        aws::sdk_error(
                            System::SecretsManager,
                            &format!("restore tenant secret '{name}'"),
                            e,
                        )
                    })?;
            }
            _ => return Err(aws::sdk_error(System::SecretsManager, &action, err)),
        }
        self.client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.expose_secret())
            .client_request_token(&token)
            .send()
            .await
            .map(drop)
            .map_err(|e| aws::sdk_error(System::SecretsManager, &action, e))
    }

    /// Reads a tenant secret's JSON. `None` when it does not exist or awaits deletion.
    pub async fn get_json(&self, name: &str) -> Result<Option<serde_json::Value>, StepError> {
        let action = format!("read secret '{name}'");
        match self.client.get_secret_value().secret_id(name).send().await {
            Ok(out) => Ok(out
                .secret_string()
                .and_then(|s| serde_json::from_str(s).ok())),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e)
                if e.code() == Some("InvalidRequestException")
                    && e.message().unwrap_or("").contains("deleted") =>
            {
                Ok(None)
            }
            Err(e) => Err(aws::sdk_error(System::SecretsManager, &action, e)),
        }
    }

    /// Records the tenant's plan as the secret's `post-signup/plan` tag (after a plan change; a
    /// new secret is created with it).
    pub async fn tag_plan(&self, name: &str, plan: &str) -> Result<(), StepError> {
        self.client
            .tag_resource()
            .secret_id(name)
            .tags(Tag::builder().key(PLAN_LABEL).value(plan).build())
            .send()
            .await
            .map(drop)
            .map_err(|e| aws::sdk_error(System::SecretsManager, &format!("tag secret '{name}'"), e))
    }

    /// Schedules a tenant secret for deletion after `recovery_days` (7–30; the secret can be
    /// restored until then, and a re-provisioning restores it), or at once with `None`.
    /// Already gone (or already scheduled) counts as deleted.
    pub async fn delete(&self, name: &str, recovery_days: Option<i64>) -> Result<bool, StepError> {
        let request = self.client.delete_secret().secret_id(name);
        let request = match recovery_days {
            Some(days) => request.recovery_window_in_days(days),
            None => request.force_delete_without_recovery(true),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(false),
            // Already scheduled for deletion ("marked for deletion" / "marked deleted").
            Err(e)
                if e.code() == Some("InvalidRequestException")
                    && e.message().unwrap_or("").contains("marked") =>
            {
                Ok(false)
            }
            Err(e) => Err(aws::sdk_error(
                System::SecretsManager,
                &format!("delete secret '{name}'"),
                e,
            )),
        }
    }

    /// Names of every secret under `prefix` (bulk: `ListSecrets`, 100 a page). Secrets already
    /// scheduled for deletion are not listed.
    pub async fn list_names(&self, prefix: &str) -> Result<Vec<String>, StepError> {
        let action = format!("list secrets under '{prefix}'");
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .client
                .list_secrets()
                .filters(
                    aws_sdk_secretsmanager::types::Filter::builder()
                        .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                        .values(prefix)
                        .build(),
                )
                .max_results(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| aws::sdk_error(System::SecretsManager, &action, e))?;
            names.extend(
                out.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    // The name filter matches prefixes of words too: keep exact prefixes only.
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_owned),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => return Ok(names),
            }
        }
    }
}

/// Parses the admin secret. Problems name fields, never values (serde's messages can quote
/// the input, so this does not use them).
pub fn parse_admin_secret(text: &str) -> Result<AdminSecret, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "is not valid JSON".to_owned())?;
    let obj = json.as_object().ok_or("is not a JSON object")?;
    let field = |name: &str| -> Result<&str, String> {
        match obj.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
            Some(serde_json::Value::String(_)) => Err(format!("field '{name}' is empty")),
            Some(_) => Err(format!("field '{name}' is not a string")),
            None => Err(format!("has no field '{name}'")),
        }
    };
    let username = field("username")?.to_owned();
    let password = SecretString::from(field("password")?);
    let password_key = PasswordKey::new(field(PASSWORD_KEY_FIELD)?)
        .map_err(|e| format!("field '{PASSWORD_KEY_FIELD}' {e}"))?;
    Ok(AdminSecret {
        credential: AdminCredential { username, password },
        password_key,
    })
}

fn version_token(value: &SecretString, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(value.expose_secret().as_bytes());
    h.update(generation.to_be_bytes());
    let digest = h.finalize();
    digest.iter().take(24).map(|b| format!("{b:02x}")).collect()
}

fn malformed(action: &str, problem: &str) -> StepError {
    StepError::new(
        System::SecretsManager,
        action,
        FailureKind::BadResponse,
        format!("the secret {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

    #[test]
    fn a_good_admin_secret_parses() {
        let s = parse_admin_secret(&format!(
            r#"{{"username":"admin","password":"pw","tenant_password_key":"{KEY}"}}"#
        ))
        .unwrap();
        assert_eq!(s.credential.username, "admin");
    }

    #[test]
    fn malformed_admin_secrets_name_the_problem_not_the_value() {
        let cases = [
            ("not json hunter2", "is not valid JSON"),
            (r#"["hunter2"]"#, "is not a JSON object"),
            (r#"{"password":"hunter2"}"#, "has no field 'username'"),
            (
                r#"{"username":"a","password":"hunter2"}"#,
                "has no field 'tenant_password_key'",
            ),
            (
                r#"{"username":"a","password":7,"tenant_password_key":"x"}"#,
                "field 'password' is not a string",
            ),
            (
                r#"{"username":"a","password":"hunter2","tenant_password_key":"hunter2"}"#,
                "at least 32 bytes",
            ),
        ];
        for (text, expected) in cases {
            let problem = parse_admin_secret(text).unwrap_err();
            assert!(problem.contains(expected), "{problem}");
            assert!(!problem.contains("hunter2"), "{problem}");
        }
    }

    #[test]
    fn version_tokens_are_stable_and_valid() {
        let a = version_token(&SecretString::from("v1"), 0);
        assert_eq!(a, version_token(&SecretString::from("v1"), 0));
        assert_ne!(a, version_token(&SecretString::from("v2"), 0));
        assert_ne!(a, version_token(&SecretString::from("v1"), 1));
        assert!((32..=64).contains(&a.len()));
    }
}
