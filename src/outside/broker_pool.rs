//! The cells' brokers: one management client per cell, each built on first use from its own
//! admin secret (which also holds the key its tenants' passwords derive from). A cell whose
//! secret cannot be read fails only the tenants that live there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use url::Url;

use crate::cells::{Cell, Cells};
use crate::outside::error::StepError;
use crate::outside::rabbitmq::RabbitMq;
use crate::outside::secrets_manager::SecretsManager;
use crate::tenant::TenantId;
use crate::tenant::credentials::{PasswordKey, TenantCredentials};

/// One cell's broker, ready to use.
pub struct Broker {
    pub cell: String,
    pub rabbitmq: RabbitMq,
    pub amqp_base: Url,
    pub password_key: PasswordKey,
}

impl Broker {
    pub fn tenant_credentials(&self, tenant: &TenantId, generation: u32) -> TenantCredentials {
        TenantCredentials::new(tenant, &self.password_key, &self.amqp_base, generation)
    }
}

#[derive(Clone)]
pub struct Brokers {
    inner: Arc<Inner>,
}

struct Inner {
    cells: Cells,
    loaded: HashMap<String, OnceCell<Broker>>,
    secrets: SecretsManager,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Brokers {
    pub fn new(
        cells: Cells,
        secrets: SecretsManager,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let loaded = cells
            .all()
            .iter()
            .map(|c| (c.name.clone(), OnceCell::new()))
            .collect();
        Self {
            inner: Arc::new(Inner {
                cells,
                loaded,
                secrets,
                connect_timeout,
                request_timeout,
            }),
        }
    }

    pub fn cells(&self) -> &Cells {
        &self.inner.cells
    }

    /// The cell a record's cell name means: itself, or — for records written before cells were
    /// declared (`default`) — the first cell of a file that declares no `default`.
    pub fn resolve(&self, name: &str) -> Option<&Cell> {
        self.inner.cells.resolve(name)
    }

    /// The broker of cell `name`, built on first use (its admin secret is read then). A failed
    /// build is not kept: the next call tries again.
    pub async fn get(&self, name: &str) -> Result<&Broker, StepError> {
        let cell = self.inner.cells.require(name)?;
        let slot = &self.inner.loaded[&cell.name];
        slot.get_or_try_init(|| self.build(cell)).await
    }

    /// The first cell's broker (the implicit cell's, without a cells file).
    pub async fn first(&self) -> Result<&Broker, StepError> {
        let name = &self.inner.cells.first().name;
        self.get(name).await
    }

    /// Builds every cell's broker, concurrently; each failure is reported, none stops the rest.
    pub async fn load_all(&self) -> Vec<(String, Result<(), StepError>)> {
        futures::future::join_all(
            self.inner
                .cells
                .all()
                .iter()
                .map(|c| async move { (c.name.clone(), self.get(&c.name).await.map(drop)) }),
        )
        .await
    }

    async fn build(&self, cell: &Cell) -> Result<Broker, StepError> {
        let inner = &self.inner;
        let admin = inner.secrets.admin_secret(&cell.admin_secret_id).await?;
        let reload_from = (inner.secrets.clone(), cell.admin_secret_id.clone());
        let rabbitmq = RabbitMq::new(
            cell.management_url.clone(),
            admin.credential,
            inner.connect_timeout,
            inner.request_timeout,
        )?
        .with_admin_reload(Arc::new(move || {
            let (secrets, id) = reload_from.clone();
            Box::pin(async move { secrets.admin_secret(&id).await.map(|a| a.credential) })
        }));
        Ok(Broker {
            cell: cell.name.clone(),
            rabbitmq,
            amqp_base: cell.amqp_url.clone(),
            password_key: admin.password_key,
        })
    }
}
