//! The tenant: identified by the Cognito `sub` (an immutable UUID), never by user name or email,
//! which users can change. Every name this function creates is derived here, in one place.

use std::fmt;

/// Label carried by every Kubernetes object of a tenant.
pub const TENANT_LABEL: &str = "post-signup/tenant";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
/// Why a `sub` is not a tenant id. The caller, which knows where the value came from, names it
/// (`request.userAttributes.sub …`, `--sub …`).
pub enum TenantIdError {
    #[error("is missing")]
    Missing,
    #[error("is empty")]
    Empty,
    #[error("'{0}' is not a UUID (expected 8-4-4-4-12 hex digits)")]
    NotUuid(String),
    #[error("is the nil UUID")]
    Nil,
}

/// A validated tenant id: the canonical lowercase, hyphenated form of a non-nil UUID.
/// Normalising case matters: two spellings of one UUID must not become two tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(sub: &str) -> Result<Self, TenantIdError> {
        if sub.is_empty() {
            return Err(TenantIdError::Empty);
        }
        // Only the hyphenated form: uuid also accepts braces, `urn:uuid:` and bare hex.
        let shown: String = sub.chars().take(64).collect();
        if sub.len() != 36 {
            return Err(TenantIdError::NotUuid(shown));
        }
        let uuid = uuid::Uuid::try_parse(sub).map_err(|_| TenantIdError::NotUuid(shown))?;
        if uuid.is_nil() {
            return Err(TenantIdError::Nil);
        }
        Ok(Self(uuid.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RabbitMQ user name: the `sub` itself.
    pub fn rabbitmq_user(&self) -> &str {
        &self.0
    }

    /// RabbitMQ vhost name: the `sub` itself.
    pub fn rabbitmq_vhost(&self) -> &str {
        &self.0
    }

    /// Kubernetes Secret holding the tenant's AMQP credentials (a DNS-1123 name: 43 chars).
    pub fn secret_name(&self) -> String {
        format!("tenant-{}", self.0)
    }

    /// The tenant's backend Deployment (44 chars; pod names stay under 63).
    pub fn deployment_name(&self) -> String {
        format!("backend-{}", self.0)
    }

    /// Secrets Manager name of the tenant's credentials, for the frontend.
    pub fn secrets_manager_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kubernetes DNS-1123 label (namespace names, label values): what plan and namespace names
/// must be.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The vhost's description names the tenant and the installation (the tenant secret prefix),
/// so a reconciler never takes another installation's vhosts on a shared broker for orphans.
pub fn vhost_description(tenant: &TenantId, installation: &str) -> String {
    format!("post-signup tenant {tenant} ({installation})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";

    #[test]
    fn a_uuid_is_accepted_and_names_follow_it() {
        let t = TenantId::parse(SUB).unwrap();
        assert_eq!(t.as_str(), SUB);
        assert_eq!(t.rabbitmq_user(), SUB);
        assert_eq!(t.rabbitmq_vhost(), SUB);
        assert_eq!(t.secret_name(), format!("tenant-{SUB}"));
        assert_eq!(t.deployment_name(), format!("backend-{SUB}"));
        assert_eq!(
            t.secrets_manager_name("post-signup/tenants/"),
            format!("post-signup/tenants/{SUB}")
        );
        assert!(
            t.deployment_name().len() <= 63 - 17,
            "room for the ReplicaSet and pod suffixes"
        );
    }

    #[test]
    fn uppercase_is_normalised_to_one_tenant() {
        assert_eq!(
            TenantId::parse(&SUB.to_uppercase()).unwrap(),
            TenantId::parse(SUB).unwrap()
        );
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(TenantId::parse(""), Err(TenantIdError::Empty));
        assert_eq!(
            TenantId::parse("00000000-0000-0000-0000-000000000000"),
            Err(TenantIdError::Nil)
        );
        for bad in [
            "alice",
            "4f8e2d3c1b2a4c5d9e8f0a1b2c3d4e5f",
            "{4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f}",
            "urn:uuid:4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f",
            "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5g",
            "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f/../x",
            "../../../../../../../../../../etc/pw",
        ] {
            assert!(
                matches!(TenantId::parse(bad), Err(TenantIdError::NotUuid(_))),
                "{bad}"
            );
        }
    }
}
