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
///
/// Every name follows the `sub` except the vhost's: a tenant that claimed a vhost made ahead
/// (`pool-…`, see `ops::pool`) lives in that one, as its record says. A `TenantId` read from a
/// record carries it (`TenantRecord::tenant`); identity (equality, order, hash) is the `sub`
/// alone.
#[derive(Debug, Clone)]
pub struct TenantId {
    sub: String,
    /// The vhost made ahead that this tenant claimed; `None`: its vhost is its `sub`.
    pooled_vhost: Option<String>,
}

impl PartialEq for TenantId {
    fn eq(&self, other: &Self) -> bool {
        self.sub == other.sub
    }
}

impl Eq for TenantId {}

impl std::hash::Hash for TenantId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sub.hash(state);
    }
}

impl PartialOrd for TenantId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TenantId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sub.cmp(&other.sub)
    }
}

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
        Ok(Self {
            sub: uuid.hyphenated().to_string(),
            pooled_vhost: None,
        })
    }

    /// The same tenant living in `vhost`, a vhost made ahead that it claimed (as its record
    /// names it); `None` leaves its vhost its `sub`.
    pub fn in_vhost(mut self, vhost: Option<&str>) -> Self {
        self.pooled_vhost = vhost.map(str::to_owned);
        self
    }

    pub fn as_str(&self) -> &str {
        &self.sub
    }

    /// RabbitMQ user name: the `sub` itself.
    pub fn rabbitmq_user(&self) -> &str {
        &self.sub
    }

    /// RabbitMQ vhost name: the vhost made ahead it claimed, or the `sub` itself.
    pub fn rabbitmq_vhost(&self) -> &str {
        self.pooled_vhost.as_deref().unwrap_or(&self.sub)
    }

    /// Whether its vhost was made ahead (claimed from its cell's pool).
    pub fn pooled(&self) -> bool {
        self.pooled_vhost.is_some()
    }

    /// Kubernetes Secret holding the tenant's AMQP credentials (a DNS-1123 name: 43 chars).
    pub fn secret_name(&self) -> String {
        format!("tenant-{}", self.sub)
    }

    /// The tenant's backend Deployment (44 chars; pod names stay under 63).
    pub fn deployment_name(&self) -> String {
        format!("backend-{}", self.sub)
    }

    /// Secrets Manager name of the tenant's credentials, for the frontend.
    pub fn secrets_manager_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.sub)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sub)
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

/// A vhost made ahead (a cell's pool): `pool-<queue type>-<made, ms since the epoch>-<8 hex>`.
/// It names no tenant (no `sub` is ever one, so it is never taken for a tenant's own vhost) and
/// says when it was made, so a reservation left unfinished can be told by its age.
pub fn pool_vhost_name(queue_type: &str, made_ms: u64, nonce: u32) -> String {
    format!("{POOL_VHOST_PREFIX}{queue_type}-{made_ms}-{nonce:08x}")
}

pub const POOL_VHOST_PREFIX: &str = "pool-";

/// The queue type and the making time of a pool vhost's name; `None` for any other name.
pub fn parse_pool_vhost(name: &str) -> Option<(&str, u64)> {
    let rest = name.strip_prefix(POOL_VHOST_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let (queue_type, made, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    (nonce.len() == 8 && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(())
        .and(made.parse().ok())
        .map(|made| (queue_type, made))
}

/// A pooled vhost's description until a tenant's convergence names it: marked as made ahead by
/// this installation, naming no tenant.
pub fn pool_vhost_description(installation: &str) -> String {
    format!("post-signup pool ({installation})")
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
    fn a_pooled_tenant_lives_in_its_claimed_vhost_and_is_still_the_same_tenant() {
        let name = pool_vhost_name("quorum", 1_764_000_000_000, 0xabc);
        assert_eq!(name, "pool-quorum-1764000000000-00000abc");
        assert_eq!(parse_pool_vhost(&name), Some(("quorum", 1_764_000_000_000)));
        assert_eq!(parse_pool_vhost(SUB), None);
        assert_eq!(parse_pool_vhost("pool-quorum-12-xyz"), None);
        let plain = TenantId::parse(SUB).unwrap();
        let pooled = plain.clone().in_vhost(Some(&name));
        assert_eq!(pooled.rabbitmq_vhost(), name);
        assert_eq!(pooled.rabbitmq_user(), SUB, "the user is still the sub");
        assert!(pooled.pooled() && !plain.pooled());
        assert_eq!(pooled, plain, "one tenant, wherever its vhost");
        assert!(
            TenantId::parse(&name).is_err(),
            "a pool vhost is never a tenant"
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
