//! The orchestrator: provisions one tenant, running independent steps concurrently, bounded
//! by a deadline.
//!
//! ```text
//! rabbitmq:         user ∥ vhost ──▶ permission ∥ plan limits
//! secrets-manager:  put tenant secret
//! kubernetes:       sign token (µs) ──▶ apply Secret ∥ apply Deployment
//! ```
//! Every step is an upsert, so nothing is rolled back on failure: a partial tenant is reported
//! (which steps finished, which failed, which ran out of time) and the next try — the hand-off
//! queue's worker, or the reconciler — converges. Each step retries its transient failures
//! inside the deadline (`crate::outside::retry`).

use std::collections::BTreeMap;

use tokio::time::Instant;

mod report;

pub use report::{Outcome, ProvisionError, Report, StepTiming};
use report::{Recorder, round_ms};

use crate::ops::placement::Placement;
use crate::outside::broker_pool::{Broker, Brokers};
use crate::outside::cluster_pool::Clusters;
use crate::outside::error::StepError;
use crate::outside::secrets_manager::SecretsManager;
use crate::tenant::TenantId;
use crate::tenant::id::vhost_description;
use crate::tenant::manifests::{credentials_checksum, tenant_deployment, tenant_secret};
use crate::tenant::plan::desired_limits;
use crate::tenant::plan::{Plan, Plans, TenantState};
use crate::tenant::template::BackendTemplate;

pub struct Provisioner {
    /// Each cell's broker; a tenant's is its record's `cell`.
    pub brokers: Brokers,
    pub placement: Placement,
    pub secrets: SecretsManager,
    /// Each cluster's client; a tenant's is its cell's (the default cluster, or the cell's own).
    pub clusters: Clusters,
    pub secret_prefix: String,
    pub template: BackendTemplate,
    pub plans: Plans,
    pub registry: crate::outside::registry::Registry,
}

/// Step names, as they appear in logs, reports and errors.
pub mod step {
    pub const RABBITMQ_USER: &str = "rabbitmq.user";
    pub const RABBITMQ_VHOST: &str = "rabbitmq.vhost";
    pub const RABBITMQ_PERMISSION: &str = "rabbitmq.permission";
    pub const RABBITMQ_LIMITS: &str = "rabbitmq.limits";
    pub const SECRETS_MANAGER_PUT: &str = "secrets-manager.tenant-secret";
    pub const EKS_TOKEN: &str = "eks.token";
    pub const KUBERNETES_SECRET: &str = "kubernetes.secret";
    pub const KUBERNETES_DEPLOYMENT: &str = "kubernetes.deployment";
}

impl Provisioner {
    /// The plan's limits on the tenant's vhost and user, all PUTs (so they converge). A
    /// suspended tenant's vhost takes no connections.
    async fn put_limits(
        &self,
        broker: &Broker,
        tenant: &TenantId,
        plan: &crate::tenant::plan::Plan,
        state: &TenantState,
        mode: Mode,
    ) -> Result<(), StepError> {
        let (vhost, user) = (tenant.rabbitmq_vhost(), tenant.rabbitmq_user());
        let (wanted_vhost, wanted_user) = desired_limits(plan, state);
        let rabbitmq = &broker.rabbitmq;
        // RabbitMQ keeps all limits of a vhost (or user) in one runtime parameter and each PUT
        // of one limit reads, changes and writes that whole map: two PUTs for the same vhost
        // at once lose one of them (seen: a limit silently missing). So one vhost's limits go
        // one after the other, the user's beside them.
        let vhost_limits = async {
            for (name, value) in &wanted_vhost {
                rabbitmq.put_vhost_limit(vhost, name, *value).await?;
            }
            Ok::<_, StepError>(())
        };
        let user_limits = async {
            for (name, value) in &wanted_user {
                rabbitmq.put_user_limit(user, name, *value).await?;
            }
            Ok(())
        };
        tokio::try_join!(vhost_limits, user_limits)?;
        if mode == Mode::Converge {
            // A new vhost has no other limits; an existing one may hold limits its plan no
            // longer has (or an operator's by hand): the plan is the whole truth.
            let (vhost_now, user_now) =
                tokio::try_join!(rabbitmq.vhost_limits(vhost), rabbitmq.user_limits(user),)?;
            for name in vhost_now.keys().filter(|k| !wanted_vhost.contains_key(*k)) {
                rabbitmq.delete_vhost_limit(vhost, name).await?;
            }
            for name in user_now.keys().filter(|k| !wanted_user.contains_key(*k)) {
                rabbitmq.delete_user_limit(user, name).await?;
            }
        }
        Ok(())
    }
}

/// A new tenant's first provisioning, or a convergence of an existing one to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The trigger: nothing exists yet, so nothing is read back.
    SignUp,
    /// Everyone else: limits the plan does not have are removed too.
    Converge,
}

/// Runs one branch and measures its wall time.
async fn timed<T>(name: &'static str, fut: impl Future<Output = T>) -> (&'static str, f64, T) {
    let start = Instant::now();
    let out = fut.await;
    (name, (Instant::now() - start).as_secs_f64() * 1e3, out)
}

impl Provisioner {
    pub fn namespace(&self) -> &str {
        self.clusters.namespace()
    }

    /// A new tenant (a sign-up) in the first cell: the default plan, active, first password.
    /// Reads nothing first, so the trigger's path has no read-before-write round trip.
    pub async fn provision(
        &self,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<Report, ProvisionError> {
        let broker = self
            .brokers
            .first()
            .await
            .map_err(|e| self.not_started(tenant, e, deadline))?;
        let state = TenantState::new(&self.plans);
        self.provision_gated(
            tenant,
            broker,
            async { Some(state) },
            Mode::SignUp,
            deadline,
        )
        .await
    }

    /// Provisions `tenant` in its `cell` in `state` (its plan, suspension and password
    /// generation, as its record says): what the worker, the reconciler and operators
    /// converge to.
    pub async fn provision_with(
        &self,
        tenant: &TenantId,
        cell: &str,
        state: &TenantState,
        deadline: Instant,
    ) -> Result<Report, ProvisionError> {
        let broker = self
            .brokers
            .get(cell)
            .await
            .map_err(|e| self.not_started(tenant, e, deadline))?;
        let state = state.clone();
        self.provision_gated(
            tenant,
            broker,
            async { Some(state) },
            Mode::Converge,
            deadline,
        )
        .await
    }

    /// Nothing could start: the cell's broker could not be built (its admin secret).
    fn not_started(&self, tenant: &TenantId, e: StepError, deadline: Instant) -> ProvisionError {
        ProvisionError {
            tenant: tenant.to_string(),
            failures: vec![e],
            unfinished: Vec::new(),
            finished: Vec::new(),
            budget_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis(),
            report: Report {
                tenant: tenant.to_string(),
                cell: String::new(),
                rabbitmq_user: tenant.rabbitmq_user().to_owned(),
                rabbitmq_vhost: tenant.rabbitmq_vhost().to_owned(),
                kubernetes_namespace: self.namespace().to_owned(),
                kubernetes_secret: tenant.secret_name(),
                kubernetes_deployment: tenant.deployment_name(),
                secrets_manager_name: tenant.secrets_manager_name(&self.secret_prefix),
                wall_ms: 0.0,
                branches_ms: BTreeMap::new(),
                steps: Vec::new(),
            },
        }
    }

    /// The orchestrator. `state` is the tenant's recorded state as it becomes known: the
    /// trigger passes its conditional create, which runs beside the vhost PUT. Every step that
    /// writes a credential (user, Secrets Manager, Kubernetes) waits for it — the password
    /// depends on the recorded generation — while the vhost, which holds none and is the
    /// slowest call, starts at once; the record's round trip hides under it. `None` means the
    /// record says the tenant is offboarded: nothing that grants access is written.
    pub async fn provision_gated(
        &self,
        tenant: &TenantId,
        broker: &Broker,
        state: impl Future<Output = Option<TenantState>>,
        mode: Mode,
        deadline: Instant,
    ) -> Result<Report, ProvisionError> {
        use futures::FutureExt as _;
        let rec = Recorder::new(deadline);
        let state = state.shared();
        let secret_name = tenant.secrets_manager_name(&self.secret_prefix);
        let budget_ms =
            (deadline.saturating_duration_since(rec.start).as_secs_f64() * 1e3).round() as u128;
        // A sign-up's vhost takes the default plan's queue type; anyone else's, its own plan's.
        let vhost_plan = match mode {
            Mode::SignUp => self.plans.default_plan(),
            Mode::Converge => match state.clone().now_or_never() {
                Some(Some(s)) => self.plans.for_state(&s),
                _ => self.plans.default_plan(),
            },
        };

        // Boxed: the SDK and kube futures are large, and a Lambda worker thread has a 2 MiB stack.
        let rabbitmq = timed(
            "rabbitmq",
            Box::pin(self.rabbitmq_branch(&rec, tenant, broker, state.clone(), vhost_plan, mode)),
        );
        let secrets = timed(
            "secrets-manager",
            Box::pin(self.secrets_branch(&rec, tenant, broker, state.clone(), &secret_name)),
        );
        let kubernetes = timed(
            "kubernetes",
            Box::pin(self.kubernetes_branch(&rec, tenant, broker, state)),
        );
        let outcome = tokio::time::timeout_at(deadline, async {
            tokio::join!(rabbitmq, secrets, kubernetes)
        })
        .await;
        let branches_ms = outcome.as_ref().ok().map(|(a, b, c)| {
            [a, b, c]
                .into_iter()
                .map(|(name, ms, ())| (*name, round_ms(*ms)))
                .collect()
        });
        self.conclude(&rec, tenant, broker, secret_name, branches_ms, budget_ms)
    }

    /// The broker: vhost ∥ user (the user waits for the record's state), then permission ∥
    /// the plan's limits. A sign-up with a claimed vhost: user, then permission ∥ limits.
    async fn rabbitmq_branch(
        &self,
        rec: &Recorder,
        tenant: &TenantId,
        broker: &Broker,
        state: impl Future<Output = Option<TenantState>> + Clone,
        vhost_plan: &Plan,
        mode: Mode,
    ) {
        let description = vhost_description(tenant, &self.secret_prefix);
        // A sign-up that claimed a vhost made ahead creates none: the claim is the vhost (made
        // with its plan's queue type). Anyone converging PUTs it (an upsert: made again if it
        // went missing, and its description then names the tenant).
        let claimed = mode == Mode::SignUp && tenant.pooled();
        let vhost = async {
            if claimed {
                return Ok(());
            }
            rec.step(step::RABBITMQ_VHOST, || {
                broker.rabbitmq.put_vhost(
                    tenant.rabbitmq_vhost(),
                    &description,
                    vhost_plan.rabbitmq.default_queue_type,
                )
            })
            .await
        };
        let user = async {
            let state = state.clone().await?;
            let creds = broker.tenant_credentials(tenant, state.generation);
            rec.step(step::RABBITMQ_USER, || {
                broker
                    .rabbitmq
                    .put_user(tenant.rabbitmq_user(), &creds.password)
            })
            .await
            .ok()
            .map(|()| state)
        };
        if let (Ok(()), Some(state)) = tokio::join!(vhost, user) {
            let plan = self.plans.for_state(&state);
            let grant = rec.step(step::RABBITMQ_PERMISSION, || {
                broker
                    .rabbitmq
                    .put_permission(tenant.rabbitmq_vhost(), tenant.rabbitmq_user())
            });
            let limits = rec.step(step::RABBITMQ_LIMITS, || {
                self.put_limits(broker, tenant, plan, &state, mode)
            });
            let _ = tokio::join!(grant, limits);
        }
    }

    /// The frontend's copy of the credentials (the tenant's Secrets Manager secret).
    async fn secrets_branch(
        &self,
        rec: &Recorder,
        tenant: &TenantId,
        broker: &Broker,
        state: impl Future<Output = Option<TenantState>>,
        secret_name: &str,
    ) {
        let Some(state) = state.await else {
            return;
        };
        let plan = self.plans.for_state(&state);
        let creds = broker.tenant_credentials(tenant, state.generation);
        let json = creds.to_secret_json();
        let _ = rec
            .step(step::SECRETS_MANAGER_PUT, || {
                self.secrets.put_tenant_secret(
                    secret_name,
                    tenant,
                    &json,
                    state.generation,
                    &plan.name,
                )
            })
            .await;
    }

    /// The backend: a token for the cell's cluster, then its Secret, then its Deployment.
    async fn kubernetes_branch(
        &self,
        rec: &Recorder,
        tenant: &TenantId,
        broker: &Broker,
        state: impl Future<Output = Option<TenantState>>,
    ) {
        // Re-signed per invocation (microseconds; a warm container outlives a token). The
        // client would sign on its own; doing it here shows the cost in the timings.
        // The cell's cluster (its client is built on first use when it is a cell's own).
        let Ok(kubernetes) = rec
            .step(step::EKS_TOKEN, || async {
                let k = self.clusters.of_cell(&broker.cell).await?;
                k.tokens().refresh().await.map(|()| k)
            })
            .await
        else {
            return;
        };
        let Some(state) = state.await else {
            return;
        };
        let plan = self.plans.for_state(&state);
        let creds = broker.tenant_credentials(tenant, state.generation);
        let ns = self.namespace();
        let secret = tenant_secret(tenant, &creds, ns, &state);
        let checksum = credentials_checksum(&secret);
        let deployment = tenant_deployment(&self.template, tenant, ns, plan, &state, &checksum);
        // The Secret first, then the Deployment: pods rolled for a new password must
        // find it, and a Secret that failed leaves the Deployment (and its checksum)
        // as it was, so a re-run still sees the roll to do. Off the critical path:
        // both together take less than the vhost PUT.
        if rec
            .step(step::KUBERNETES_SECRET, || kubernetes.apply(&secret))
            .await
            .is_ok()
        {
            let _ = rec
                .step(step::KUBERNETES_DEPLOYMENT, || {
                    kubernetes.apply(&deployment)
                })
                .await;
        }
    }

    /// The report of a provisioning, or the error naming what failed and what did not finish.
    /// `branches_ms`: each branch's time, `None` when the deadline cut them off.
    #[allow(clippy::result_large_err)] // what provision_gated returns, built once here
    fn conclude(
        &self,
        rec: &Recorder,
        tenant: &TenantId,
        broker: &Broker,
        secret_name: String,
        branches_ms: Option<BTreeMap<&'static str, f64>>,
        budget_ms: u128,
    ) -> Result<Report, ProvisionError> {
        let timed_out = branches_ms.is_none();
        let wall_ms = rec.start.elapsed().as_secs_f64() * 1e3;
        let report = Report {
            tenant: tenant.to_string(),
            cell: broker.cell.clone(),
            rabbitmq_user: tenant.rabbitmq_user().to_owned(),
            rabbitmq_vhost: tenant.rabbitmq_vhost().to_owned(),
            kubernetes_namespace: self.namespace().to_owned(),
            kubernetes_secret: tenant.secret_name(),
            kubernetes_deployment: tenant.deployment_name(),
            secrets_manager_name: secret_name,
            wall_ms: round_ms(wall_ms),
            branches_ms: branches_ms.unwrap_or_default(),
            steps: rec.timings(),
        };
        let failures = rec.failures();
        let mut unfinished: Vec<&'static str> = report
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Unfinished)
            .map(|s| s.step)
            .collect();
        if timed_out && unfinished.is_empty() {
            // The deadline fell between two steps: the next one never started.
            unfinished.push("the next step (not started)");
        }
        if failures.is_empty() && unfinished.is_empty() {
            tracing::info!(tenant = %tenant, wall_ms, "tenant provisioned");
            return Ok(report);
        }
        let finished = report
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .map(|s| s.step)
            .collect();
        let err = ProvisionError {
            tenant: tenant.to_string(),
            failures,
            unfinished,
            finished,
            budget_ms,
            report,
        };
        tracing::error!(tenant = %tenant, wall_ms, error = %err, "tenant not fully provisioned");
        Err(err)
    }
}
