//! An operator's change (plan, suspend, resume, rotate, offboard, restore): a guarded
//! transition of the record first, then a convergence to it; and an operator's provisioning of
//! a tenant that already has a record.

use serde::Serialize;

use crate::ops::converge::{
    ConvergeOptions, Converged, converge, record_of, record_or_new, rejected,
};
use crate::ops::provision::Provisioner;
use crate::outside::error::{StepError, System};
use crate::tenant::TenantId;
use crate::tenant::record::{Phase, TenantRecord};
use crate::tenant::transition::Change;

/// A change and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub tenant: String,
    pub change: &'static str,
    /// The record changed (`false`: it already said so; this run finished applying it).
    pub changed: bool,
    pub before: TenantRecord,
    pub after: TenantRecord,
    pub converged: Converged,
}

/// An operator's change: a guarded transition of the record (a concurrent change is refused
/// with "changed meanwhile" and nothing is done), then every system converges to it. A change
/// the record already holds but has not applied everywhere (a half-done rotate) is finished.
pub async fn change(
    p: &Provisioner,
    tenant: &TenantId,
    change: Change,
    options: ConvergeOptions,
) -> Result<ChangeReport, StepError> {
    let action = format!("{} tenant {tenant}", change.name());
    if let Change::Plan(plan) = &change
        && p.plans.get(plan).is_none()
    {
        let known: Vec<&str> = p.plans.names().collect();
        return Err(rejected(
            System::Registry,
            &action,
            format!("no plan '{plan}' (plans: {})", known.join(", ")),
        ));
    }
    let before = record_of(p, tenant).await?;
    let next =
        crate::tenant::transition::transition(&before, &change, &crate::tenant::record::now())
            .map_err(|e| rejected(System::Registry, &action, e.to_string()))?;
    let (after, changed) = match next {
        Some(after) => {
            p.registry.transition(&before, &after).await?;
            (after, true)
        }
        None => (before.clone(), false),
    };
    let converged = converge(p, &after, options).await?;
    tracing::info!(tenant = %tenant, change = change.name(), changed, version = after.version, "tenant changed");
    Ok(ChangeReport {
        tenant: tenant.to_string(),
        change: change.name(),
        changed,
        before,
        after,
        converged,
    })
}

/// An operator's `provision --sub`: converges the tenant to its record, recording a new
/// tenant's first if it has none. An offboarded tenant is refused: `restore` brings it back.
pub async fn provision_recorded(
    p: &Provisioner,
    tenant: &TenantId,
    user_pool_id: Option<&str>,
    options: ConvergeOptions,
) -> Result<Converged, StepError> {
    let record = record_or_new(p, tenant, user_pool_id, "operator").await?;
    if record.state == Phase::Offboarded && record.converged() {
        return Err(rejected(
            System::Registry,
            &format!("provision tenant {tenant}"),
            "the tenant is offboarded: `tenantctl restore --sub` brings it back on purpose",
        ));
    }
    converge(p, &record, options).await
}
