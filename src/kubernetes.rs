//! The tenant's Kubernetes objects: a Secret with its AMQP credentials and its backend
//! Deployment, both server-side applied with one field manager (so re-applying converges and
//! concurrent applies of the same object agree).
//!
//! Authentication is a bearer token we sign ourselves ([`crate::eks_token`]), injected by a
//! tower layer from a slot the orchestrator refreshes on every invocation; the HTTP client and
//! its TLS connections are built once per cold start and reused.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvFromSource, Secret, SecretEnvSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use secrecy::{ExposeSecret, SecretString};

use crate::credentials::TenantCredentials;
use crate::error::{FailureKind, StepError, System, chain};
use crate::settings::ClusterAccess;
use crate::template::BackendTemplate;
use crate::tenant::{TENANT_LABEL, TenantId};

/// The one field manager for every write, so server-side apply sees one owner.
pub const FIELD_MANAGER: &str = "post-signup";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const COMPONENT: &str = "tenant-backend";

/// Decodes EKS's `certificateAuthority.data` (base64 of a PEM bundle) into DER certificates,
/// which is what `kube::Config::root_cert` wants.
pub fn ca_der_from_eks(ca_data: &str) -> Result<Vec<Vec<u8>>, String> {
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(ca_data.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    let blocks = pem::parse_many(&pem_text).map_err(|e| format!("not a PEM bundle ({e})"))?;
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

/// Labels on every object of a tenant.
pub fn tenant_labels(tenant: &TenantId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.as_str().to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
    ])
}

fn selector_labels(tenant: &TenantId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.as_str().to_owned()),
        (COMPONENT_LABEL.to_owned(), COMPONENT.to_owned()),
    ])
}

/// The tenant's Secret: what the backend reads through `envFrom`.
pub fn tenant_secret(tenant: &TenantId, creds: &TenantCredentials, namespace: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(tenant.secret_name()),
            namespace: Some(namespace.to_owned()),
            labels: Some(tenant_labels(tenant)),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            ("AMQP_URL".to_owned(), bytes(creds.amqp_url.expose_secret())),
            ("RABBITMQ_USERNAME".to_owned(), bytes(&creds.username)),
            (
                "RABBITMQ_PASSWORD".to_owned(),
                bytes(creds.password.expose_secret()),
            ),
            ("RABBITMQ_VHOST".to_owned(), bytes(&creds.vhost)),
        ])),
        ..Default::default()
    }
}

/// The tenant's Deployment: the template, with the fields the function owns set.
pub fn tenant_deployment(
    template: &BackendTemplate,
    tenant: &TenantId,
    namespace: &str,
) -> Deployment {
    let mut d = template.deployment().clone();
    let mut labels = d.metadata.labels.take().unwrap_or_default();
    labels.extend(tenant_labels(tenant));
    d.metadata = ObjectMeta {
        name: Some(tenant.deployment_name()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: d.metadata.annotations.take(),
        ..Default::default()
    };
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.selector = LabelSelector {
        match_labels: Some(selector_labels(tenant)),
        match_expressions: None,
    };
    let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
    let pod_labels = pod_meta.labels.get_or_insert_with(Default::default);
    pod_labels.extend(selector_labels(tenant));
    pod_labels.extend(tenant_labels(tenant));
    let secret_ref = EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: tenant.secret_name(),
            optional: Some(false),
        }),
        ..Default::default()
    };
    if let Some(pod) = spec.template.spec.as_mut() {
        for c in &mut pod.containers {
            let env_from = c.env_from.get_or_insert_with(Vec::new);
            if !env_from.contains(&secret_ref) {
                env_from.push(secret_ref.clone());
            }
        }
    }
    d
}

/// A Kubernetes client whose bearer token is swapped per invocation.
#[derive(Clone)]
pub struct Kubernetes {
    client: kube::Client,
    namespace: String,
    token: Arc<RwLock<Option<HeaderValue>>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// Builds the client once. kube's defaults would blow the 5 s budget (a 15-try retry layer,
    /// a 30 s connect timeout, no read timeout): all are replaced here.
    pub fn new(
        access: &ClusterAccess,
        namespace: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, StepError> {
        let fail = |detail: String| {
            StepError::new(
                System::Kubernetes,
                "build client",
                FailureKind::Other,
                detail,
            )
        };
        let uri: http::Uri = access
            .endpoint
            .as_str()
            .parse()
            .map_err(|e| fail(format!("endpoint: {e}")))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_owned();
        config.root_cert =
            Some(ca_der_from_eks(&access.ca_data).map_err(|e| fail(format!("CA: {e}")))?);
        config.connect_timeout = Some(connect_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        config.default_retry = false;

        let token: Arc<RwLock<Option<HeaderValue>>> = Arc::default();
        let slot = token.clone();
        let auth =
            tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
                if let Some(value) = slot.read().ok().and_then(|t| t.clone()) {
                    req.headers_mut().insert(http::header::AUTHORIZATION, value);
                }
                req
            });
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| fail(chain(&e)))?
            .with_layer(&auth)
            .build();
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
            token,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Installs the bearer token used by every following request.
    pub fn set_token(&self, token: &SecretString) -> Result<(), StepError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| {
                StepError::new(
                    System::Kubernetes,
                    "set token",
                    FailureKind::Other,
                    "token is not a valid header",
                )
            })?;
        value.set_sensitive(true);
        if let Ok(mut slot) = self.token.write() {
            *slot = Some(value);
        }
        Ok(())
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    pub async fn apply_secret(&self, secret: &Secret) -> Result<(), StepError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let action = format!("apply secret '{}/{name}'", self.namespace);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        // The answer echoes the Secret's data: drop it without logging.
        api.patch(&name, &Self::params(), &Patch::Apply(secret))
            .await
            .map(drop)
            .map_err(|e| kube_error(&action, e))
    }

    pub async fn apply_deployment(&self, deployment: &Deployment) -> Result<(), StepError> {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let action = format!("apply deployment '{}/{name}'", self.namespace);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(&name, &Self::params(), &Patch::Apply(deployment))
            .await
            .map(drop)
            .map_err(|e| kube_error(&action, e))
    }

    pub async fn get_deployment(&self, name: &str) -> Result<Option<Deployment>, StepError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(name)
            .await
            .map_err(|e| kube_error(&format!("read deployment '{name}'"), e))
    }

    /// Whether the Secret exists, and its keys (never its values).
    pub async fn secret_keys(&self, name: &str) -> Result<Option<Vec<String>>, StepError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&format!("read secret '{name}'"), e))?;
        Ok(secret.map(|s| s.data.unwrap_or_default().into_keys().collect()))
    }

    pub async fn secret_value(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<SecretString>, StepError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&format!("read secret '{name}'"), e))?;
        Ok(secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(key))
            .map(|b| SecretString::from(String::from_utf8_lossy(&b.0).into_owned())))
    }

    /// Deletes the tenant's Deployment and Secret. Already gone counts as deleted.
    pub async fn delete_tenant(&self, tenant: &TenantId) -> Result<(), StepError> {
        let dp = DeleteParams::default();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = tenant.deployment_name();
        match deployments.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_error(&format!("delete deployment '{name}'"), e)),
        }
        let name = tenant.secret_name();
        match secrets.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_error(&format!("delete secret '{name}'"), e)),
        }
    }

    /// Names of the tenant-labelled Deployments in the namespace.
    pub async fn list_tenant_deployments(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<String>, StepError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("{TENANT_LABEL}={tenant}"));
        let list = api
            .list_metadata(&lp)
            .await
            .map_err(|e| kube_error("list deployments", e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect())
    }
}

pub(crate) fn kube_error(action: &str, e: kube::Error) -> StepError {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            StepError::from_status(System::Kubernetes, action, status.code, &message)
        }
        other => {
            let kind = transport_kind(&other);
            StepError::new(System::Kubernetes, action, kind, chain(&other))
        }
    }
}

/// Classifies a transport failure by walking its causes.
fn transport_kind(e: &(dyn std::error::Error + 'static)) -> FailureKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = String::new();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return FailureKind::Timeout,
                std::io::ErrorKind::ConnectionRefused => return FailureKind::Connect,
                _ => {}
            }
        }
        text.push_str(&err.to_string().to_lowercase());
        cur = err.source();
    }
    if text.contains("timed out") || text.contains("timeout") {
        FailureKind::Timeout
    } else if text.contains("connect") || text.contains("certificate") || text.contains("dns") {
        FailureKind::Connect
    } else {
        FailureKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::PasswordKey;

    const SUB: &str = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";

    fn tenant() -> TenantId {
        TenantId::parse(SUB).unwrap()
    }

    fn creds() -> TenantCredentials {
        let key = PasswordKey::new(&"k".repeat(32)).unwrap();
        TenantCredentials::new(&tenant(), &key, &url::Url::parse("amqp://mq:5672").unwrap())
    }

    #[test]
    fn secret_has_the_four_keys_and_the_tenant_label() {
        let s = tenant_secret(&tenant(), &creds(), "tenants");
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(format!("tenant-{SUB}").as_str())
        );
        assert_eq!(s.metadata.namespace.as_deref(), Some("tenants"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[TENANT_LABEL], SUB);
        let data = s.data.unwrap();
        let keys: Vec<_> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "AMQP_URL",
                "RABBITMQ_PASSWORD",
                "RABBITMQ_USERNAME",
                "RABBITMQ_VHOST"
            ]
        );
        assert_eq!(data["RABBITMQ_VHOST"].0, SUB.as_bytes());
        assert_eq!(
            data["RABBITMQ_PASSWORD"].0,
            creds().password.expose_secret().as_bytes()
        );
    }

    #[test]
    fn deployment_owns_name_labels_selector_and_secret_reference() {
        let t = BackendTemplate::embedded().unwrap();
        let d = tenant_deployment(&t, &tenant(), "tenants");
        assert_eq!(
            d.metadata.name.as_deref(),
            Some(format!("backend-{SUB}").as_str())
        );
        assert_eq!(d.metadata.namespace.as_deref(), Some("tenants"));
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[TENANT_LABEL], SUB);
        assert_eq!(
            labels["app.kubernetes.io/name"], "tenant-backend",
            "template labels are kept"
        );
        let spec = d.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(pod_labels.get(k), Some(v), "the selector selects the pods");
        }
        for c in &spec.template.spec.as_ref().unwrap().containers {
            let refs = c.env_from.as_ref().unwrap();
            assert_eq!(refs.len(), 1);
            assert_eq!(
                refs[0].secret_ref.as_ref().unwrap().name,
                format!("tenant-{SUB}")
            );
        }
        assert_eq!(spec.replicas, Some(1), "the rest comes from the template");
    }

    #[test]
    fn building_twice_is_identical() {
        let t = BackendTemplate::embedded().unwrap();
        let a = tenant_deployment(&t, &tenant(), "tenants");
        let b = tenant_deployment(&t, &tenant(), "tenants");
        assert_eq!(a, b);
        let twice = tenant_deployment(
            &BackendTemplate::parse("x", &serde_saphyr::to_string(&a).unwrap()).unwrap(),
            &tenant(),
            "tenants",
        );
        assert_eq!(
            twice.spec.unwrap().template.spec.unwrap().containers[0]
                .env_from
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn eks_ca_data_decodes_to_der() {
        let pem_text = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem_text);
        assert_eq!(ca_der_from_eks(&b64).unwrap(), vec![vec![1u8, 2, 3]]);
        assert!(ca_der_from_eks("!!!").unwrap_err().contains("not base64"));
        assert!(
            ca_der_from_eks(&base64::engine::general_purpose::STANDARD.encode("hello")).is_err()
        );
    }
}
