//! What an operator reads of tenants: one tenant's status (its record and every part, read
//! concurrently, with the drift named) and the list of records.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use tokio::time::Instant;

use crate::ops::provision::Provisioner;
use crate::outside::error::StepError;
use crate::outside::rabbitmq::{Permission, User, Vhost};
use crate::outside::registry::ListFilter;
use crate::tenant::TenantId;
use crate::tenant::drift::{DeploymentStatus, Observed, Part, drift};
use crate::tenant::plan::{GENERATION_ANNOTATION, TenantState};
use crate::tenant::record::{LastOutcome, Phase, TenantRecord};

/// What exists for one tenant. Keys of secrets, never their values.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// The tenant's record (the intent); `None` for a tenant the registry does not know.
    pub record: Option<TenantRecord>,
    /// Where what exists differs from the record (empty: as recorded).
    pub drift: Vec<String>,
    /// Every part exists.
    pub complete: bool,
    /// `complete` (and not suspended), `suspended`, `offboarded`, `incomplete`, or
    /// `unrecorded`.
    pub state: &'static str,
    /// The backend has all its replicas available (a suspended tenant has none).
    pub ready: bool,
    pub plan: String,
    pub suspended: bool,
    pub password_generation: u32,
    /// The parts that do not.
    pub missing: Vec<&'static str>,
    pub rabbitmq: RabbitmqStatus,
    pub kubernetes: KubernetesStatus,
    pub secrets_manager: Option<NamedKeys>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RabbitmqStatus {
    pub user: Option<User>,
    pub vhost: Option<Vhost>,
    pub permission: Option<Permission>,
    pub vhost_limits: BTreeMap<String, i64>,
    pub user_limits: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubernetesStatus {
    /// The cluster the tenant's cell runs its backends in.
    pub cluster: String,
    pub namespace: String,
    pub secret: Option<NamedKeys>,
    /// The password generation the Secret holds (its annotation).
    pub secret_generation: Option<u32>,
    pub deployment: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamedKeys {
    pub name: String,
    pub keys: Vec<String>,
}

/// Reads the record and every part of one tenant (concurrently), and names the drift.
pub async fn status(p: &Provisioner, tenant: &TenantId) -> Result<TenantStatus, StepError> {
    let sm_name = tenant.secrets_manager_name(&p.secret_prefix);
    let (secret_name, deployment_name) = (tenant.secret_name(), tenant.deployment_name());
    // The record says which cell's broker holds the tenant (none: the first cell).
    let record = p.registry.get(tenant).await?;
    // Its vhost as the record names it (one made ahead it claimed), else its `sub`.
    let tenant = &match &record {
        Some(r) => r.tenant()?,
        None => tenant.clone(),
    };
    let cell = record.as_ref().map_or_else(
        || p.brokers.cells().first().name.clone(),
        |r| r.cell.clone(),
    );
    let broker = p.brokers.get(&cell).await?;
    let kubernetes = p.clusters.of_cell(&cell).await?;
    let rabbitmq = &broker.rabbitmq;
    let (user, vhost, permission, secret, deployment, sm) = tokio::join!(
        rabbitmq.user(tenant.rabbitmq_user()),
        rabbitmq.vhost(tenant.rabbitmq_vhost()),
        rabbitmq.permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user()),
        Box::pin(kubernetes.get::<Secret>(&secret_name)),
        Box::pin(kubernetes.get::<Deployment>(&deployment_name)),
        Box::pin(p.secrets.get_json(&sm_name)),
    );
    let (user, vhost, permission) = (user?, vhost?, permission?);
    let (secret, deployment) = (secret?, deployment?);
    let (vhost_limits, user_limits) = tokio::join!(
        rabbitmq.vhost_limits(tenant.rabbitmq_vhost()),
        rabbitmq.user_limits(tenant.rabbitmq_user()),
    );
    let (vhost_limits, user_limits) = (vhost_limits?, user_limits?);
    let secret_generation = secret.as_ref().and_then(|s| generation_of(&s.metadata));
    let secret = secret.map(|s| NamedKeys {
        name: tenant.secret_name(),
        keys: s.data.unwrap_or_default().into_keys().collect(),
    });
    let deployment = deployment.as_ref().map(DeploymentStatus::of);
    let secrets_manager = sm?.map(|v| NamedKeys {
        name: sm_name,
        keys: v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    });
    let observed = Observed {
        user: user.is_some(),
        vhost: vhost.is_some(),
        permission: permission.is_some(),
        secret: secret.is_some(),
        deployment: deployment.is_some(),
        secrets_manager: secrets_manager.is_some(),
        vhost_limits: Some(vhost_limits.clone()),
        user_limits: Some(user_limits.clone()),
        secret_generation,
        deployment_replicas: deployment.as_ref().map(|d| d.replicas),
        deployment_resources: deployment.as_ref().and_then(|d| d.resources.clone()),
    };
    let missing: Vec<&str> = observed.missing().into_iter().map(Part::as_str).collect();
    let complete = missing.is_empty();
    let drift = match &record {
        Some(r) => drift(&p.plans, r, &observed)
            .iter()
            .map(ToString::to_string)
            .collect(),
        None => vec!["no record: `tenantctl adopt` records it from what exists".to_owned()],
    };
    let state = record
        .as_ref()
        .and_then(TenantRecord::desired)
        .unwrap_or_else(|| TenantState::new(&p.plans));
    let ready = deployment.as_ref().is_some_and(DeploymentStatus::ready) && !state.suspended;
    let name = match record.as_ref().map(|r| r.state) {
        None => "unrecorded",
        Some(Phase::Offboarded) => "offboarded",
        Some(_) => state_name(complete, state.suspended),
    };
    Ok(TenantStatus {
        tenant: tenant.to_string(),
        record,
        drift,
        complete,
        state: name,
        ready,
        plan: state.plan.clone(),
        suspended: state.suspended,
        password_generation: state.generation,
        missing,
        rabbitmq: RabbitmqStatus {
            user,
            vhost,
            permission,
            vhost_limits,
            user_limits,
        },
        kubernetes: KubernetesStatus {
            cluster: p.clusters.name_of(&cell).to_owned(),
            namespace: p.namespace().to_owned(),
            secret,
            secret_generation,
            deployment,
        },
        secrets_manager,
    })
}

fn state_name(complete: bool, suspended: bool) -> &'static str {
    match (complete, suspended) {
        (true, false) => "complete",
        (true, true) => "suspended",
        (false, _) => "incomplete",
    }
}

fn generation_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<u32> {
    meta.annotations
        .as_ref()?
        .get(GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

/// One tenant in `list`: its record, in short.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    pub tenant: String,
    pub state: Phase,
    pub plan: String,
    pub generation: u32,
    pub cell: String,
    pub outcome: LastOutcome,
    /// Its latest change is applied everywhere.
    pub converged: bool,
    pub created_at: String,
}

impl From<&TenantRecord> for TenantRow {
    fn from(r: &TenantRecord) -> Self {
        Self {
            tenant: r.sub.clone(),
            state: r.state,
            plan: r.plan.clone(),
            generation: r.generation,
            cell: r.cell.clone(),
            outcome: r.outcome,
            converged: r.converged(),
            created_at: r.created_at.clone(),
        }
    }
}

/// Every recorded tenant matching `filter`, from the registry alone (no broker or cluster
/// call), sorted by tenant id.
pub async fn list(
    p: &Provisioner,
    filter: &ListFilter,
    deadline: Instant,
) -> Result<Vec<TenantRow>, StepError> {
    let mut rows: Vec<TenantRow> = p
        .registry
        .all(filter, deadline)
        .await?
        .iter()
        .map(TenantRow::from)
        .collect();
    rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(rows)
}
