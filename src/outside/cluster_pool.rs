//! The clusters the tenants' backends run in: the default one (`EKS_CLUSTER_NAME`, with its
//! endpoint and CA from the settings or one `DescribeCluster`), and any cluster a cell declares
//! as its own. One client per cluster, each built on first use; cells that name the same
//! cluster share it. A cluster that cannot be reached fails only the tenants whose cell runs
//! there.
//!
//! Each client signs its own EKS tokens: a token is bound to one cluster's name
//! (`x-k8s-aws-id`), so one cluster's token is refused by every other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::cells::Cells;
use crate::cells::cluster::{ClusterAccess, ClusterName};
use crate::outside::aws::AwsCredentials;
use crate::outside::error::{FailureKind, StepError, System};
use crate::outside::kubernetes::token::EksTokenSigner;
use crate::outside::kubernetes::{Kubernetes, TokenSource};

#[derive(Clone)]
pub struct Clusters {
    inner: Arc<Inner>,
}

struct Slot {
    name: ClusterName,
    /// Declared (settings or cells file); `None`: `DescribeCluster` at first use.
    access: Option<ClusterAccess>,
    client: OnceCell<Kubernetes>,
}

struct Inner {
    default: String,
    slots: BTreeMap<String, Slot>,
    cells: Cells,
    aws: aws_config::SdkConfig,
    region: String,
    namespace: String,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// What building one cluster's client needs besides the cluster.
pub struct ClusterSettings<'a> {
    pub aws: &'a aws_config::SdkConfig,
    pub region: &'a str,
    pub namespace: &'a str,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Clusters {
    /// The default cluster and every cell's own. Checks names only; nothing is called.
    pub fn new(
        default: &ClusterName,
        default_access: Option<ClusterAccess>,
        cells: Cells,
        s: ClusterSettings<'_>,
    ) -> Result<Self, StepError> {
        let mut slots = BTreeMap::new();
        slots.insert(
            default.as_str().to_owned(),
            Slot {
                name: default.clone(),
                access: default_access,
                client: OnceCell::new(),
            },
        );
        for cell in cells.all() {
            let Some(own) = &cell.cluster else { continue };
            if own.name == *default
                && let Some(access) = &own.access
                && slots[default.as_str()].access.as_ref() != Some(access)
            {
                return Err(StepError::new(
                    System::Kubernetes,
                    format!("cell '{}' cluster", cell.name),
                    FailureKind::Other,
                    format!(
                        "'{}' is the default cluster (EKS_CLUSTER_NAME): declare its endpoint in the settings (EKS_ENDPOINT), or leave the cell's cluster out",
                        own.name
                    ),
                ));
            }
            slots
                .entry(own.name.as_str().to_owned())
                .or_insert_with(|| Slot {
                    name: own.name.clone(),
                    access: own.access.clone(),
                    client: OnceCell::new(),
                });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                default: default.as_str().to_owned(),
                slots,
                cells,
                aws: s.aws.clone(),
                region: s.region.to_owned(),
                namespace: s.namespace.to_owned(),
                connect_timeout: s.connect_timeout,
                request_timeout: s.request_timeout,
            }),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The default cluster's name.
    pub fn default_name(&self) -> &str {
        &self.inner.default
    }

    /// Every cluster, the default first.
    pub fn names(&self) -> Vec<&str> {
        let mut out = vec![self.inner.default.as_str()];
        out.extend(
            self.inner
                .slots
                .keys()
                .map(String::as_str)
                .filter(|n| *n != self.inner.default),
        );
        out
    }

    /// The cluster a cell's tenants' backends run in (a record's cell name, resolved as the
    /// brokers resolve it; an unknown cell: the default cluster).
    pub fn name_of(&self, cell: &str) -> &str {
        self.inner
            .cells
            .resolve(cell)
            .and_then(|c| c.cluster.as_ref())
            .map_or(self.inner.default.as_str(), |c| c.name.as_str())
    }

    /// The default cluster's client; fails when it has not been built (cold start).
    pub async fn default_cluster(&self) -> Result<&Kubernetes, StepError> {
        self.get(&self.inner.default).await
    }

    /// The client of the cluster `cell`'s tenants run in.
    pub async fn of_cell(&self, cell: &str) -> Result<&Kubernetes, StepError> {
        self.get(self.name_of(cell)).await
    }

    /// The client of cluster `name`, built on first use (`DescribeCluster` then, when its
    /// endpoint is not declared). A failed build is not kept: the next call tries again.
    pub async fn get(&self, name: &str) -> Result<&Kubernetes, StepError> {
        let Some(slot) = self.inner.slots.get(name) else {
            return Err(StepError::new(
                System::Kubernetes,
                format!("cluster '{name}'"),
                FailureKind::Other,
                "no cell declares this cluster",
            ));
        };
        slot.client.get_or_try_init(|| self.build(slot)).await
    }

    /// Builds every cluster's client, concurrently; each failure is reported, none stops the
    /// rest.
    pub async fn load_all(&self) -> Vec<(String, Result<(), StepError>)> {
        futures::future::join_all(
            self.names()
                .into_iter()
                .map(|n| async move { (n.to_owned(), self.get(n).await.map(drop)) }),
        )
        .await
    }

    async fn build(&self, slot: &Slot) -> Result<Kubernetes, StepError> {
        let inner = &self.inner;
        let access = match &slot.access {
            Some(a) => a.clone(),
            None => {
                crate::outside::kubernetes::eks::describe_cluster(
                    &aws_sdk_eks::Client::new(&inner.aws),
                    &slot.name,
                )
                .await?
            }
        };
        let signer = EksTokenSigner::new(slot.name.as_str(), &inner.region).map_err(|e| {
            StepError::new(
                System::Kubernetes,
                format!("EKS token signer for cluster '{}'", slot.name),
                FailureKind::Other,
                e.to_string(),
            )
        })?;
        let credentials = AwsCredentials::new(&inner.aws)?;
        let client = Kubernetes::new(
            &access,
            &inner.namespace,
            TokenSource::new(signer, credentials),
            inner.connect_timeout,
            inner.request_timeout,
        )
        .map_err(|mut e| {
            e.action = format!("{} for cluster '{}'", e.action, slot.name);
            e
        })?;
        Ok(if slot.name.as_str() == inner.default {
            client
        } else {
            client.in_cluster(slot.name.as_str())
        })
    }
}
