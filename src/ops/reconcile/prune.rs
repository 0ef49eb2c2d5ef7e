//! The prune: orphans (a record, no user) offboarded behind guards — a minimum age, a maximum
//! fraction of the installation per run (else the whole prune is refused and nothing is
//! deleted), and a re-check of each one user before it is offboarded.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::ops::converge::{ConvergeOptions, converge};
use crate::ops::provision::Provisioner;
use crate::outside::cognito::UserPool;
use crate::outside::error::{FailureKind, StepError, System};
use crate::tenant::TenantId;
use crate::tenant::record::{Phase, TenantRecord};
use crate::tenant::transition::{Change, transition};

pub(super) fn refused(detail: String) -> StepError {
    StepError::new(System::Registry, "prune", FailureKind::Rejected, detail)
}

/// The orphans old enough to prune; refuses the whole prune when they are more than the
/// allowed fraction of the installation's tenants (a wrong or empty user pool looks like that).
pub(super) fn candidates(
    pool: &UserPool,
    records: &HashMap<TenantId, TenantRecord>,
    orphans: Vec<TenantRecord>,
    options: &ReconcileOptions,
) -> Result<Vec<TenantRecord>, StepError> {
    let now = jiff::Timestamp::now();
    let old_enough = |r: &TenantRecord| {
        r.created().is_some_and(|c| {
            now.duration_since(c)
                .try_into()
                .is_ok_and(|age: Duration| age >= options.prune_min_age)
        })
    };
    let eligible: Vec<TenantRecord> = orphans.into_iter().filter(old_enough).collect();
    let installation = records
        .values()
        .filter(|r| r.state != Phase::Offboarded)
        .count();
    let allowed = (installation as f64 * options.prune_max_fraction).floor() as usize;
    if eligible.len() > allowed {
        return Err(refused(format!(
            "refused: the run would prune {} of this installation's {installation} tenants, more than the allowed {:.0} % ({allowed}); nothing was deleted. Check USER_POOL_ID ('{}') — a wrong pool makes every tenant an orphan",
            eligible.len(),
            options.prune_max_fraction * 100.0,
            pool.id()
        )));
    }
    Ok(eligible)
}

/// Offboards each candidate whose user a re-check of that one user still does not find.
pub(super) async fn prune(
    p: &Provisioner,
    pool: &UserPool,
    eligible: Vec<TenantRecord>,
    options: &ReconcileOptions,
    summary: &mut ReconcileSummary,
) -> usize {
    let mut pruned = 0;
    for record in eligible {
        let Ok(tenant) = record.tenant() else {
            continue;
        };
        // The listing may be stale (or paged past a new user): ask about this one user.
        match pool.find_by_sub(&tenant, options.list_deadline).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("prune {tenant}: {e}"));
                continue;
            }
        }
        let change = Change::Offboard { retain_data: false };
        let result = async {
            let Some(after) = transition(&record, &change, &crate::tenant::record::now())
                .map_err(|e| refused(e.to_string()))?
            else {
                return Ok(());
            };
            p.registry.transition(&record, &after).await?;
            converge(
                p,
                &after,
                ConvergeOptions::new(options.budget).held_by("prune"),
            )
            .await
            .map(drop)
        }
        .await;
        match result {
            Ok(()) => pruned += 1,
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(format!("prune {tenant}: {e}"));
            }
        }
    }
    pruned
}
