//! What exists, from bulk listings: every cell's broker (users, vhosts, permissions, limits)
//! and every cluster's tenant Secrets and Deployments, and Secrets Manager's tenant secrets;
//! a handful of calls however many tenants. A listing that fails leaves its cell's (or
//! cluster's) tenants alone for the run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use tokio::time::Instant;

use crate::ops::provision::Provisioner;
use crate::outside::error::StepError;
use crate::tenant::drift::{DeploymentStatus, Observed};
use crate::tenant::id::vhost_description;
use crate::tenant::plan::{GENERATION_ANNOTATION, TenantState};
use crate::tenant::record::TenantRecord;
use crate::tenant::{TENANT_LABEL, TenantId};

/// One cell's broker, from bulk listings.
#[derive(Debug, Default)]
pub(super) struct BrokerListing {
    users: HashSet<String>,
    vhosts: BTreeMap<String, Option<String>>,
    permissions: HashSet<(String, String)>,
    vhost_limits: BTreeMap<String, BTreeMap<String, i64>>,
    user_limits: BTreeMap<String, BTreeMap<String, i64>>,
}

/// One cluster's tenant objects, from bulk listings.
#[derive(Debug, Default)]
pub(super) struct ClusterListing {
    /// Secret name → the state its labels and annotations carry (for adoption only) and the
    /// password generation it holds.
    secrets: HashMap<String, (TenantState, Option<u32>)>,
    deployments: HashMap<String, DeploymentStatus>,
}

/// What exists, from bulk listings: each cell's broker, each cluster's objects (the default
/// cluster and the cells' own), and Secrets Manager (shared by every cell).
#[derive(Debug, Default)]
pub struct Inventory {
    /// By cell name; a cell whose broker could not be listed holds its error, and its tenants
    /// are left alone in this run (reported, never judged on missing data).
    brokers: BTreeMap<String, Result<BrokerListing, StepError>>,
    /// By cluster name, likewise.
    clusters: BTreeMap<String, Result<ClusterListing, StepError>>,
    sm_secrets: HashSet<String>,
}

/// Retries a whole listing on transient failures until `deadline`.
async fn listing<T, F, Fut>(name: &str, deadline: Instant, op: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    crate::outside::retry::until(name, deadline, op).await.0
}

async fn list_broker(
    p: &Provisioner,
    cell: &str,
    deadline: Instant,
) -> Result<BrokerListing, StepError> {
    let r = &p.brokers.get(cell).await?.rabbitmq;
    let (users, vhosts, permissions, vhost_limits, user_limits) = tokio::join!(
        listing("rabbitmq.users", deadline, || r.users()),
        listing("rabbitmq.vhosts", deadline, || r.vhosts()),
        listing("rabbitmq.permissions", deadline, || r.permissions()),
        listing("rabbitmq.vhost-limits", deadline, || r.all_vhost_limits()),
        listing("rabbitmq.user-limits", deadline, || r.all_user_limits()),
    );
    Ok(BrokerListing {
        users: users?.into_iter().map(|u| u.name).collect(),
        vhosts: vhosts?
            .into_iter()
            .map(|v| (v.name, v.description))
            .collect(),
        permissions: permissions?
            .into_iter()
            .map(|p| (p.vhost, p.user))
            .collect(),
        vhost_limits: vhost_limits?,
        user_limits: user_limits?,
    })
}

async fn list_cluster(
    p: &Provisioner,
    cluster: &str,
    deadline: Instant,
) -> Result<ClusterListing, StepError> {
    let k = p.clusters.get(cluster).await?;
    let (secrets, deployments) = tokio::join!(
        listing("kubernetes.secrets", deadline, || {
            k.list_metadata::<Secret>(TENANT_LABEL)
        }),
        listing("kubernetes.deployments", deadline, || {
            k.list::<Deployment>(TENANT_LABEL)
        }),
    );
    let secrets = secrets?
        .into_iter()
        .filter_map(|o| {
            let m = o.metadata;
            let state = TenantState::from_meta(&p.plans, m.labels.as_ref(), m.annotations.as_ref());
            let generation = m
                .annotations
                .as_ref()
                .and_then(|a| a.get(GENERATION_ANNOTATION))
                .and_then(|g| g.parse().ok());
            Some((m.name?, (state, generation)))
        })
        .collect();
    let deployments = deployments?
        .iter()
        .filter_map(|d| Some((d.metadata.name.clone()?, DeploymentStatus::of(d))))
        .collect();
    Ok(ClusterListing {
        secrets,
        deployments,
    })
}

/// The listings that failed, by name, with why.
fn failed_listings<T>(
    listings: &BTreeMap<String, Result<T, StepError>>,
) -> Vec<(String, StepError)> {
    listings
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| (name.clone(), e.clone())))
        .collect()
}

impl Inventory {
    pub async fn load(p: &Provisioner, deadline: Instant) -> Result<Self, StepError> {
        let names = p.brokers.cells().names();
        let cluster_names = p.clusters.names();
        let brokers = futures::future::join_all(
            names
                .iter()
                .map(|cell| Box::pin(list_broker(p, cell, deadline))),
        );
        let clusters = futures::future::join_all(
            cluster_names
                .iter()
                .map(|c| Box::pin(list_cluster(p, c, deadline))),
        );
        let (brokers, clusters, sm) = tokio::join!(
            brokers,
            clusters,
            Box::pin(listing("secrets-manager.list", deadline, || {
                p.secrets.list_names(&p.secret_prefix)
            })),
        );
        let brokers: BTreeMap<String, Result<BrokerListing, StepError>> =
            names.iter().map(|n| (*n).to_owned()).zip(brokers).collect();
        if brokers.values().all(Result::is_err)
            && let Some(Err(e)) = brokers.values().next()
        {
            return Err(e.clone());
        }
        let clusters: BTreeMap<String, Result<ClusterListing, StepError>> = cluster_names
            .iter()
            .map(|n| (*n).to_owned())
            .zip(clusters)
            .collect();
        // The default cluster is where every tenant without a cluster of its own lives: not
        // listing it is as good as listing nothing.
        if let Some(Err(e)) = clusters.get(p.clusters.default_name()) {
            return Err(e.clone());
        }
        Ok(Self {
            brokers,
            clusters,
            sm_secrets: sm?.into_iter().collect(),
        })
    }

    fn cluster_of_cell(&self, p: &Provisioner, cell: &str) -> Option<&ClusterListing> {
        self.clusters.get(p.clusters.name_of(cell))?.as_ref().ok()
    }

    /// The clusters that could not be listed, with why.
    pub fn unlisted_clusters(&self) -> Vec<(String, StepError)> {
        failed_listings(&self.clusters)
    }

    /// The clusters other than `cell`'s that hold a Secret or Deployment of `tenant`.
    pub fn backend_elsewhere(&self, p: &Provisioner, tenant: &TenantId, cell: &str) -> Vec<String> {
        let home = p.clusters.name_of(cell);
        self.clusters
            .iter()
            .filter(|(name, _)| name.as_str() != home)
            .filter_map(|(name, r)| {
                let l = r.as_ref().ok()?;
                (l.secrets.contains_key(&tenant.secret_name())
                    || l.deployments.contains_key(&tenant.deployment_name()))
                .then(|| name.clone())
            })
            .collect()
    }

    /// The cells whose broker could not be listed, with why.
    pub fn unlisted(&self) -> Vec<(String, StepError)> {
        failed_listings(&self.brokers)
    }

    /// The cells whose broker holds a vhost of this installation for `tenant`.
    pub fn vhost_cells(&self, p: &Provisioner, tenant: &TenantId) -> Vec<String> {
        let ours = vhost_description(tenant, &p.secret_prefix);
        self.brokers
            .iter()
            .filter_map(|(c, r)| {
                let l = r.as_ref().ok()?;
                (l.vhosts.get(tenant.rabbitmq_vhost())?.as_deref() == Some(ours.as_str()))
                    .then(|| c.clone())
            })
            .collect()
    }

    /// The cell `tenant` lives in: its record's, or (no record) the one holding its vhost, or
    /// the first.
    pub fn home(
        &self,
        p: &Provisioner,
        tenant: &TenantId,
        record: Option<&TenantRecord>,
    ) -> String {
        match record {
            Some(r) => p
                .brokers
                .resolve(&r.cell)
                .map_or_else(|| r.cell.clone(), |c| c.name.clone()),
            None => self
                .vhost_cells(p, tenant)
                .into_iter()
                .next()
                .unwrap_or_else(|| p.brokers.cells().first().name.clone()),
        }
    }

    /// One tenant's parts, as the listings saw them (its cell's broker and cluster); `None`
    /// when either was not listed.
    pub fn observed(&self, p: &Provisioner, tenant: &TenantId, cell: &str) -> Option<Observed> {
        let broker = self.brokers.get(cell)?.as_ref().ok()?;
        let cluster = self.cluster_of_cell(p, cell)?;
        let (vhost, user) = (tenant.rabbitmq_vhost(), tenant.rabbitmq_user());
        let secret = cluster.secrets.get(&tenant.secret_name());
        let deployment = cluster.deployments.get(&tenant.deployment_name());
        Some(Observed {
            user: broker.users.contains(user),
            vhost: broker.vhosts.contains_key(vhost),
            permission: broker
                .permissions
                .contains(&(vhost.to_owned(), user.to_owned())),
            secret: secret.is_some(),
            deployment: deployment.is_some(),
            secrets_manager: self
                .sm_secrets
                .contains(&tenant.secrets_manager_name(&p.secret_prefix)),
            vhost_limits: Some(broker.vhost_limits.get(vhost).cloned().unwrap_or_default()),
            user_limits: Some(broker.user_limits.get(user).cloned().unwrap_or_default()),
            secret_generation: secret.and_then(|(_, g)| *g),
            deployment_replicas: deployment.map(|d| d.replicas),
            deployment_resources: deployment.and_then(|d| d.resources.clone()),
        })
    }

    /// The state a tenant's objects carry: read once, by adoption, to write its first record.
    pub fn labelled_state(&self, p: &Provisioner, tenant: &TenantId) -> TenantState {
        self.clusters
            .values()
            .filter_map(|r| r.as_ref().ok())
            .find_map(|l| l.secrets.get(&tenant.secret_name()))
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| TenantState::new(&p.plans))
    }

    /// Every tenant of this installation that has any part: vhosts marked with this
    /// installation, tenant-labelled objects in the namespace, secrets under the prefix.
    pub fn tenants(&self, p: &Provisioner) -> BTreeSet<TenantId> {
        let mut out = BTreeSet::new();
        for listing in self.brokers.values().filter_map(|r| r.as_ref().ok()) {
            for (name, description) in &listing.vhosts {
                if let Ok(t) = TenantId::parse(name)
                    && description.as_deref()
                        == Some(vhost_description(&t, &p.secret_prefix).as_str())
                {
                    out.insert(t);
                }
            }
        }
        let strip = |name: &str, prefix: &str| name.strip_prefix(prefix).map(str::to_owned);
        let from_kube = self
            .clusters
            .values()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|l| {
                l.secrets
                    .keys()
                    .filter_map(|n| strip(n, "tenant-"))
                    .chain(l.deployments.keys().filter_map(|n| strip(n, "backend-")))
            });
        let from_sm = self
            .sm_secrets
            .iter()
            .filter_map(|n| strip(n, &p.secret_prefix));
        out.extend(
            from_kube
                .chain(from_sm)
                .filter_map(|s| TenantId::parse(&s).ok()),
        );
        out
    }
}
