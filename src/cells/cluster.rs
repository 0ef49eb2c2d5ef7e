//! The EKS cluster the tenants' backends run in: its name (which also binds every token to it)
//! and where its API server is. A leaf module: settings, the EKS lookup, the token signer and
//! the Kubernetes client all take these types, and none of them imports another's validators.

use base64::Engine as _;
use url::Url;

/// A valid EKS cluster name: 1–100 characters, letters, digits, `-` and `_`, starting with a
/// letter or digit (what `CreateCluster` accepts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid EKS cluster name '{0}': 1-100 characters, letters, digits, '-' and '_', starting with a letter or digit"
)]
pub struct InvalidClusterName(pub String);

impl ClusterName {
    pub fn parse(name: &str) -> Result<Self, InvalidClusterName> {
        let ok = !name.is_empty()
            && name.len() <= 100
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidClusterName(name.chars().take(120).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the Kubernetes API server is and which CA signs its certificate. From settings, or
/// from one `DescribeCluster` at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAccess {
    pub endpoint: Url,
    /// Base64 of the PEM bundle, exactly as EKS reports `certificateAuthority.data`.
    pub ca_data: String,
}

impl ClusterAccess {
    /// Checks both parts; the error names the part, never echoes a certificate.
    pub fn parse(endpoint: &str, ca_data: &str) -> Result<Self, String> {
        let endpoint = Url::parse(endpoint).map_err(|e| format!("endpoint is not a URL ({e})"))?;
        if endpoint.scheme() != "https" || endpoint.host_str().is_none_or(str::is_empty) {
            return Err("endpoint must be an https:// URL with a host".into());
        }
        ca_der(ca_data).map_err(|e| format!("certificate authority {e}"))?;
        Ok(Self {
            endpoint,
            ca_data: ca_data.to_owned(),
        })
    }

    /// The CA certificates, DER-encoded, as `kube::Config::root_cert` wants them.
    pub fn ca_der(&self) -> Result<Vec<Vec<u8>>, String> {
        ca_der(&self.ca_data)
    }
}

/// Decodes EKS's `certificateAuthority.data` (base64 of a PEM bundle) into DER certificates.
pub fn ca_der(ca_data: &str) -> Result<Vec<Vec<u8>>, String> {
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(ca_data.trim())
        .map_err(|e| format!("is not base64 ({e})"))?;
    let blocks = pem::parse_many(&pem_text).map_err(|e| format!("is not a PEM bundle ({e})"))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_eks_rules() {
        for good in ["demo", "a", "prod_eu-1", &"x".repeat(100)] {
            assert!(ClusterName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-demo", "bad name", "a/b", &"x".repeat(101)] {
            assert!(ClusterName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_needs_https_and_a_pem_certificate() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(
            ClusterAccess::parse("http://x", &b64(""))
                .unwrap_err()
                .contains("https")
        );
        assert!(
            ClusterAccess::parse("https://x", "%%%")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            ClusterAccess::parse("https://x", &b64("not a pem"))
                .unwrap_err()
                .contains("PEM")
        );
        let key_only = b64("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(
            ClusterAccess::parse("https://x", &key_only)
                .unwrap_err()
                .contains("no PEM CERTIFICATE")
        );
    }
}
