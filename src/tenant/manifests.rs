//! The tenant's Kubernetes objects, built as pure functions (a tenant in, objects out): a Secret
//! with its AMQP credentials and its backend Deployment from the template. The function owns
//! only the fields set here; everything else is the template's.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvFromSource, Secret, SecretEnvSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use secrecy::ExposeSecret;

use crate::tenant::credentials::TenantCredentials;
use crate::tenant::plan::{Plan, TenantState};
use crate::tenant::template::BackendTemplate;
use crate::tenant::{TENANT_LABEL, TenantId};

/// The one field manager for every write, so server-side apply sees one owner.
pub const FIELD_MANAGER: &str = "post-signup";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const COMPONENT: &str = "tenant-backend";

/// Labels on every object of a tenant.
pub fn tenant_labels(tenant: &TenantId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.as_str().to_owned()),
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
    ])
}

fn selector_labels(tenant: &TenantId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.as_str().to_owned()),
        (COMPONENT_LABEL.to_owned(), COMPONENT.to_owned()),
    ])
}

/// Pod template annotation: a hash of the Secret's data. The backend reads the Secret through
/// `envFrom`, which a running pod never re-reads: a new password must roll new pods.
pub const CREDENTIALS_CHECKSUM_ANNOTATION: &str = "post-signup/credentials-checksum";

/// The tenant's Secret: what the backend reads through `envFrom`. It also carries the tenant's
/// state (plan, suspension, password generation) in its labels and annotations.
pub fn tenant_secret(
    tenant: &TenantId,
    creds: &TenantCredentials,
    namespace: &str,
    state: &TenantState,
) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut labels = tenant_labels(tenant);
    labels.extend(state.labels());
    Secret {
        metadata: ObjectMeta {
            name: Some(tenant.secret_name()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(state.annotations()),
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

/// A stable hash of a Secret's data (hex SHA-256 over sorted keys and values).
pub fn credentials_checksum(secret: &Secret) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in secret.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(&v.0);
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The tenant's Deployment: the template, with the fields the function owns set — name,
/// labels, selector, the Secret reference, and from the plan and state: replicas (0 while
/// suspended) and the containers' resources; the credentials checksum rolls pods on rotation.
pub fn tenant_deployment(
    template: &BackendTemplate,
    tenant: &TenantId,
    namespace: &str,
    plan: &Plan,
    state: &TenantState,
    credentials_checksum: &str,
) -> Deployment {
    let mut d = template.deployment().clone();
    let mut labels = d.metadata.labels.take().unwrap_or_default();
    labels.extend(tenant_labels(tenant));
    labels.extend(state.labels());
    d.metadata = ObjectMeta {
        name: Some(tenant.deployment_name()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: d.metadata.annotations.take(),
        ..Default::default()
    };
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas = Some(if state.suspended {
        0
    } else {
        plan.backend.replicas
    });
    spec.selector = LabelSelector {
        match_labels: Some(selector_labels(tenant)),
        match_expressions: None,
    };
    let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
    let pod_labels = pod_meta.labels.get_or_insert_with(Default::default);
    pod_labels.extend(selector_labels(tenant));
    pod_labels.extend(tenant_labels(tenant));
    pod_meta
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            CREDENTIALS_CHECKSUM_ANNOTATION.to_owned(),
            credentials_checksum.to_owned(),
        );
    let secret_ref = EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: tenant.secret_name(),
            optional: Some(false),
        }),
        ..Default::default()
    };
    if let Some(pod) = spec.template.spec.as_mut() {
        for c in &mut pod.containers {
            if let Some(resources) = &plan.backend.resources {
                c.resources = Some(resources.clone());
            }
            let env_from = c.env_from.get_or_insert_with(Vec::new);
            if !env_from.contains(&secret_ref) {
                env_from.push(secret_ref.clone());
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::credentials::PasswordKey;

    const SUB: &str = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";

    fn tenant() -> TenantId {
        TenantId::parse(SUB).unwrap()
    }

    fn plans() -> crate::tenant::plan::Plans {
        crate::tenant::plan::Plans::embedded().unwrap()
    }

    fn state() -> TenantState {
        TenantState::new(&plans())
    }

    fn deployment(t: &BackendTemplate, state: &TenantState) -> Deployment {
        let plans = plans();
        tenant_deployment(
            t,
            &tenant(),
            "tenants",
            plans.for_state(state),
            state,
            "c0ffee",
        )
    }

    #[test]
    fn plan_and_state_shape_the_deployment() {
        let t = BackendTemplate::embedded().unwrap();
        let plans = plans();
        let business = TenantState {
            plan: "business".into(),
            ..state()
        };
        let d = deployment(&t, &business);
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(
            spec.replicas,
            Some(plans.get("business").unwrap().backend.replicas)
        );
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.resources,
            plans.get("business").unwrap().backend.resources
        );
        assert_eq!(
            d.metadata.labels.as_ref().unwrap()["post-signup/plan"],
            "business"
        );
        let suspended = TenantState {
            suspended: true,
            ..business
        };
        assert_eq!(deployment(&t, &suspended).spec.unwrap().replicas, Some(0));
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations[CREDENTIALS_CHECKSUM_ANNOTATION], "c0ffee");
    }

    #[test]
    fn the_checksum_follows_the_data() {
        let a = tenant_secret(&tenant(), &creds(), "tenants", &state());
        let key = PasswordKey::new(&"k".repeat(32)).unwrap();
        let rotated = TenantCredentials::new(
            &tenant(),
            &key,
            &url::Url::parse("amqp://mq:5672").unwrap(),
            1,
        );
        let b = tenant_secret(&tenant(), &rotated, "tenants", &state());
        assert_eq!(credentials_checksum(&a), credentials_checksum(&a.clone()));
        assert_ne!(credentials_checksum(&a), credentials_checksum(&b));
    }

    fn creds() -> TenantCredentials {
        let key = PasswordKey::new(&"k".repeat(32)).unwrap();
        TenantCredentials::new(
            &tenant(),
            &key,
            &url::Url::parse("amqp://mq:5672").unwrap(),
            0,
        )
    }

    #[test]
    fn secret_has_the_four_keys_and_the_tenant_label() {
        let s = tenant_secret(&tenant(), &creds(), "tenants", &state());
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
        let d = deployment(&t, &state());
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
        assert_eq!(spec.replicas, Some(1), "the default plan's replicas");
    }

    #[test]
    fn building_twice_is_identical() {
        let t = BackendTemplate::embedded().unwrap();
        let a = deployment(&t, &state());
        let b = deployment(&t, &state());
        assert_eq!(a, b);
        let twice = deployment(
            &BackendTemplate::parse("x", &serde_saphyr::to_string(&a).unwrap()).unwrap(),
            &state(),
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
}
