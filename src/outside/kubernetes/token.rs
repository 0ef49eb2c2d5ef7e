//! Native EKS bearer tokens: what `aws eks get-token` and aws-iam-authenticator produce, signed
//! in-process with SigV4 instead of running an exec plugin (which cost a Lambda 750-2000 ms).
//!
//! A token is `k8s-aws-v1.` + base64url(no padding) of a presigned STS `GetCallerIdentity` GET.
//! The API server's authenticator replays that URL against STS with the `x-k8s-aws-id` header
//! set to *its* cluster id, so the header must be signed: a token for another cluster fails the
//! signature check. The verifier also rejects extra query parameters, hosts outside the region's
//! partition, and tokens whose `X-Amz-Date` is more than 15 minutes old.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

/// Prefix the authenticator expects in front of the encoded URL.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// botocore presigns with 60 s; the authenticator ignores it and applies its own 15 minutes.
const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// `aws eks get-token` reports expiry one minute short of the verifier's 15-minute window.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// SigV4's "unreserved" characters stay as they are; everything else is percent-encoded.
const SIGV4_QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EksTokenError {
    #[error("invalid AWS region '{0}': expected a region name such as 'us-east-1'")]
    InvalidRegion(String),
    #[error(
        "invalid EKS cluster name '{0}': 1-100 characters, letters, digits, '-' and '_', starting with a letter or digit"
    )]
    InvalidClusterName(String),
    #[error("signing the STS request failed: {0}")]
    Signing(String),
}

/// A signed token. The token itself is a bearer credential and never printed by `Debug`.
#[derive(Debug, Clone)]
pub struct EksToken {
    pub token: SecretString,
    /// Signing time + 14 minutes, as `aws eks get-token` reports it.
    pub expires_at: SystemTime,
}

/// Signs tokens for one cluster in one region. Pure: credentials and the clock come in.
#[derive(Debug, Clone)]
pub struct EksTokenSigner {
    cluster: String,
    region: String,
    host: String,
}

impl EksTokenSigner {
    pub fn new(cluster: &str, region: &str) -> Result<Self, EksTokenError> {
        validate_cluster_name(cluster)?;
        let host = sts_host(region)?;
        Ok(Self {
            cluster: cluster.to_owned(),
            region: region.to_owned(),
            host,
        })
    }

    /// The presigned STS URL (the token's payload). It carries a signature and, with temporary
    /// credentials, the session token: treat it as a secret.
    pub fn presigned_url(
        &self,
        creds: &Credentials,
        at: SystemTime,
    ) -> Result<SecretString, EksTokenError> {
        let base = format!(
            "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
            self.host
        );
        let headers = [
            ("host", self.host.as_str()),
            (CLUSTER_ID_HEADER, self.cluster.as_str()),
        ];
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(PRESIGN_EXPIRES);
        let identity = creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| EksTokenError::Signing(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            "GET",
            base.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| EksTokenError::Signing(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| EksTokenError::Signing(e.to_string()))?
            .into_parts();
        let mut url = base;
        for (name, value) in instructions.params() {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(value, SIGV4_QUERY));
        }
        Ok(SecretString::from(url))
    }

    /// Signs a token as of `at`.
    pub fn sign(&self, creds: &Credentials, at: SystemTime) -> Result<EksToken, EksTokenError> {
        let url = self.presigned_url(creds, at)?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(url.expose_secret())
        );
        Ok(EksToken {
            token: SecretString::from(token),
            expires_at: at + TOKEN_LIFETIME,
        })
    }
}

/// The regional STS host of the region's partition, as botocore resolves it for `get-token`.
pub fn sts_host(region: &str) -> Result<String, EksTokenError> {
    let valid = {
        let parts: Vec<&str> = region.split('-').collect();
        parts.len() >= 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            && parts[0].bytes().all(|b| b.is_ascii_lowercase())
            && parts
                .last()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    };
    if !valid {
        return Err(EksTokenError::InvalidRegion(region.to_owned()));
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-isof-") {
        "csp.hci.ic.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else if region.starts_with("eu-isoe-") {
        "cloud.adc-e.uk"
    } else {
        "amazonaws.com"
    };
    Ok(format!("sts.{region}.{suffix}"))
}

fn validate_cluster_name(name: &str) -> Result<(), EksTokenError> {
    crate::cells::cluster::ClusterName::parse(name)
        .map(drop)
        .map_err(|e| EksTokenError::InvalidClusterName(e.0))
}

/// Formats a time as `aws eks get-token` does: RFC 3339, UTC, whole seconds.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.round(jiff::Unit::Second)
        .unwrap_or(ts)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        cluster: String,
        region: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        at: String,
        presigned_url: String,
        token: String,
        expiration_timestamp: String,
    }

    fn vectors() -> Vec<Case> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eks-token-vectors.json"
        );
        let text =
            std::fs::read_to_string(path).expect("tests/data/eks-token-vectors.json is readable");
        serde_json::from_str::<Vectors>(&text)
            .expect("vectors parse")
            .cases
    }

    fn parsed(url: &str) -> (String, BTreeMap<String, String>) {
        let url = url::Url::parse(url).expect("a URL");
        let base = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap(),
            url.path()
        );
        (base, url.query_pairs().into_owned().collect())
    }

    fn sign_case(case: &Case) -> (SecretString, EksToken) {
        let creds = Credentials::new(
            &case.access_key_id,
            &case.secret_access_key,
            case.session_token.clone(),
            None,
            "test",
        );
        let at: SystemTime = case.at.parse::<jiff::Timestamp>().unwrap().into();
        let signer = EksTokenSigner::new(&case.cluster, &case.region).unwrap();
        (
            signer.presigned_url(&creds, at).unwrap(),
            signer.sign(&creds, at).unwrap(),
        )
    }

    #[test]
    fn presigned_urls_match_botocore_by_parsed_parameters() {
        let cases = vectors();
        assert_eq!(cases.len(), 2, "both reference vectors are present");
        for case in &cases {
            let (url, _) = sign_case(case);
            assert_eq!(
                parsed(url.expose_secret()),
                parsed(&case.presigned_url),
                "cluster {}",
                case.cluster
            );
        }
    }

    #[test]
    fn tokens_decode_to_the_botocore_url_and_expire_after_14_minutes() {
        for case in vectors() {
            let (_, token) = sign_case(&case);
            let ours = token.token.expose_secret();
            let payload = ours.strip_prefix(TOKEN_PREFIX).expect("token prefix");
            assert!(!payload.contains('='), "no base64 padding");
            let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            assert_eq!(parsed(&decoded), parsed(&case.presigned_url));
            assert_eq!(rfc3339_seconds(token.expires_at), case.expiration_timestamp);
            if case.session_token.is_none() {
                // Without a session token botocore's parameter order is ours too: byte-identical.
                assert_eq!(ours, case.token);
            }
        }
    }

    #[test]
    fn signed_headers_are_host_and_cluster_id_only() {
        for case in vectors() {
            let (url, _) = sign_case(&case);
            let (_, q) = parsed(url.expose_secret());
            assert_eq!(q["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
            assert_eq!(q["X-Amz-Expires"], "60");
            let mut names: Vec<_> = q.keys().cloned().collect();
            names.sort();
            let mut expected = vec![
                "Action",
                "Version",
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature",
            ];
            if case.session_token.is_some() {
                expected.push("X-Amz-Security-Token");
            }
            expected.sort();
            assert_eq!(names, expected, "no extra query parameters");
        }
    }

    #[test]
    fn another_cluster_or_second_changes_the_signature() {
        let case = &vectors()[0];
        let creds = Credentials::new(
            &case.access_key_id,
            &case.secret_access_key,
            None,
            None,
            "t",
        );
        let at: SystemTime = case.at.parse::<jiff::Timestamp>().unwrap().into();
        let a = EksTokenSigner::new("demo", "us-east-1")
            .unwrap()
            .sign(&creds, at)
            .unwrap();
        let b = EksTokenSigner::new("demo2", "us-east-1")
            .unwrap()
            .sign(&creds, at)
            .unwrap();
        let c = EksTokenSigner::new("demo", "us-east-1")
            .unwrap()
            .sign(&creds, at + Duration::from_secs(1))
            .unwrap();
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert_ne!(a.token.expose_secret(), c.token.expose_secret());
    }

    #[test]
    fn sts_host_follows_the_partition() {
        assert_eq!(
            sts_host("us-east-1").unwrap(),
            "sts.us-east-1.amazonaws.com"
        );
        assert_eq!(
            sts_host("cn-north-1").unwrap(),
            "sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            sts_host("cn-northwest-1").unwrap(),
            "sts.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            sts_host("us-gov-west-1").unwrap(),
            "sts.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_host("us-iso-east-1").unwrap(),
            "sts.us-iso-east-1.c2s.ic.gov"
        );
        assert_eq!(
            sts_host("us-isob-east-1").unwrap(),
            "sts.us-isob-east-1.sc2s.sgov.gov"
        );
        assert_eq!(
            sts_host("eu-west-1").unwrap(),
            "sts.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn bad_regions_and_cluster_names_are_refused() {
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil.com",
            "us_east_1",
            "east-1",
            "us--1",
        ] {
            assert_eq!(
                sts_host(bad),
                Err(EksTokenError::InvalidRegion(bad.to_owned())),
                "{bad}"
            );
        }
        for bad in ["", "-lead", "has space", "a/b", &"x".repeat(101)] {
            assert!(
                matches!(
                    EksTokenSigner::new(bad, "us-east-1"),
                    Err(EksTokenError::InvalidClusterName(_))
                ),
                "{bad}"
            );
        }
        assert!(EksTokenSigner::new("tgsearch-prod_2", "eu-west-1").is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let case = &vectors()[1];
        let (_, token) = sign_case(case);
        let shown = format!("{token:?}");
        assert!(!shown.contains(TOKEN_PREFIX), "{shown}");
    }
}
