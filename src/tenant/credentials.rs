//! The tenant's AMQP credentials, and how every try arrives at the same password.
//!
//! Cognito retries a trigger that times out, and a retry can overlap the first try. A fresh
//! random password per try would leave RabbitMQ, the Kubernetes Secret and Secrets Manager
//! holding different passwords. We derive the password instead: HMAC-SHA256 of the `sub` under
//! a key kept in the admin secret. Every try, concurrent or not, computes the same value without
//! coordinating, so all three writes can run in parallel (no read-before-write round trip, which
//! persist-first-then-apply would put on the critical path of the 5-second budget). Rotating
//! the key and re-running provisioning rotates a tenant's password everywhere at once.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use url::Url;

use crate::tenant::TenantId;

/// Bumping this domain string rotates every derived password.
const DERIVATION_CONTEXT: &[u8] = b"post-signup/rabbitmq-password/v1\0";
/// Shortest accepted key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

pub struct PasswordKey(SecretBox<[u8]>);

impl PasswordKey {
    pub fn new(key: &str) -> Result<Self, String> {
        if key.len() < MIN_KEY_LEN {
            return Err(format!("must be at least {MIN_KEY_LEN} bytes"));
        }
        Ok(Self(SecretBox::new(key.as_bytes().into())))
    }

    /// The tenant's password of `generation` (0 until the tenant's first `rotate`). Each
    /// generation is as derivable as the first, so a retry after a rotation converges too.
    pub fn derive_password(&self, tenant: &TenantId, generation: u32) -> SecretString {
        use base64::Engine as _;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(DERIVATION_CONTEXT);
        mac.update(tenant.as_str().as_bytes());
        if generation > 0 {
            mac.update(b"\0generation\0");
            mac.update(&generation.to_be_bytes());
        }
        let digest = mac.finalize().into_bytes();
        SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
    }
}

impl std::fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordKey([REDACTED])")
    }
}

/// What a tenant's backend and frontend need to connect.
#[derive(Debug, Clone)]
pub struct TenantCredentials {
    pub username: String,
    pub password: SecretString,
    pub vhost: String,
    /// `amqp(s)://user:password@host:port/vhost`: contains the password.
    pub amqp_url: SecretString,
}

impl TenantCredentials {
    pub fn new(tenant: &TenantId, key: &PasswordKey, amqp_base: &Url, generation: u32) -> Self {
        let password = key.derive_password(tenant, generation);
        let mut url = amqp_base.clone();
        // Setting userinfo and a path segment on a valid amqp URL with a host cannot fail.
        let _ = url.set_username(tenant.rabbitmq_user());
        let _ = url.set_password(Some(password.expose_secret()));
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().push(tenant.rabbitmq_vhost());
        }
        Self {
            username: tenant.rabbitmq_user().to_owned(),
            password,
            vhost: tenant.rabbitmq_vhost().to_owned(),
            amqp_url: SecretString::from(url.to_string()),
        }
    }

    /// The JSON stored in Secrets Manager for the frontend.
    pub fn to_secret_json(&self) -> SecretString {
        SecretString::from(
            serde_json::json!({
                "amqp_url": self.amqp_url.expose_secret(),
                "username": self.username,
                "password": self.password.expose_secret(),
                "vhost": self.vhost,
            })
            .to_string(),
        )
    }
}

/// An administrator's credential for a broker's management API (read from Secrets Manager).
#[derive(Debug, Clone)]
pub struct AdminCredential {
    pub username: String,
    pub password: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PasswordKey {
        PasswordKey::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    const A: &str = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";
    const B: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

    #[test]
    fn the_same_tenant_always_gets_the_same_password() {
        let p1 = key().derive_password(&tenant(A), 0);
        let p2 = key().derive_password(&tenant(A), 0);
        assert_eq!(p1.expose_secret(), p2.expose_secret());
        assert_eq!(p1.expose_secret().len(), 43, "256 bits, base64url");
    }

    #[test]
    fn tenants_and_keys_give_different_passwords() {
        assert_ne!(
            key().derive_password(&tenant(A), 0).expose_secret(),
            key().derive_password(&tenant(B), 0).expose_secret()
        );
        let other = PasswordKey::new("another key that is long enough!!").unwrap();
        assert_ne!(
            key().derive_password(&tenant(A), 0).expose_secret(),
            other.derive_password(&tenant(A), 0).expose_secret()
        );
    }

    #[test]
    fn each_generation_has_its_own_password() {
        let g0 = key().derive_password(&tenant(A), 0);
        let g1 = key().derive_password(&tenant(A), 1);
        assert_ne!(g0.expose_secret(), g1.expose_secret());
        assert_eq!(
            g1.expose_secret(),
            key().derive_password(&tenant(A), 1).expose_secret()
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(PasswordKey::new("short").is_err());
    }

    #[test]
    fn amqp_url_carries_user_password_and_encoded_vhost() {
        let base = Url::parse("amqps://mq.internal:5671").unwrap();
        let c = TenantCredentials::new(&tenant(A), &key(), &base, 0);
        let url = Url::parse(c.amqp_url.expose_secret()).unwrap();
        assert_eq!(url.scheme(), "amqps");
        assert_eq!(url.host_str(), Some("mq.internal"));
        assert_eq!(url.port(), Some(5671));
        assert_eq!(url.username(), A);
        assert_eq!(url.password(), Some(c.password.expose_secret()));
        assert_eq!(url.path(), format!("/{A}"));
        let json: serde_json::Value =
            serde_json::from_str(c.to_secret_json().expose_secret()).unwrap();
        assert_eq!(json["vhost"], A);
        assert_eq!(json["username"], A);
        assert_eq!(json["password"], c.password.expose_secret());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = TenantCredentials::new(&tenant(A), &key(), &Url::parse("amqp://h").unwrap(), 0);
        let shown = format!("{c:?} {:?}", key());
        assert!(!shown.contains(c.password.expose_secret()));
        assert!(!shown.contains("0123456789abcdef"));
    }
}
