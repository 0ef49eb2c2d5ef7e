//! The reconciler's judgement of one tenant, pure: from its record, its pool user and its
//! drift, what to do (repair, record, report, leave alone). Table-tested below.

use crate::tenant::drift::Drift;
use crate::tenant::record::{Phase, TenantRecord};

/// The pool user of a tenant, as far as the reconciler cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserView {
    /// Confirmed (or confirmed by an identity provider) and enabled.
    Confirmed,
    /// Confirmed, but an administrator disabled them.
    Disabled,
    /// In the pool, not confirmed yet.
    Unconfirmed,
    /// Not in the pool.
    Absent,
}

/// What the reconciler does about one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// As recorded: nothing to do.
    Complete,
    /// Converge to the record, for these reasons.
    Repair(Vec<Drift>),
    /// No record, a confirmed user: write the record (from what exists, if anything does:
    /// `adopt`), then converge.
    Record { adopt: bool },
    /// Offboarded, user still confirmed: report; never provision.
    Tombstone,
    /// The user is disabled: report; do not provision.
    Disabled,
    /// A recorded, not offboarded tenant whose user is gone: a prune candidate.
    Orphan,
    /// Parts without a record and without a user: report only (never pruned).
    Unrecorded,
    /// Nothing to say (an unconfirmed user without a tenant, or an offboarded tenant whose
    /// user is gone too).
    Ignore,
}

/// The reconciler's judgement of one tenant: pure, from the record, the user and the drift.
pub fn judge(
    record: Option<&TenantRecord>,
    user: UserView,
    drift: &[Drift],
    any_part: bool,
) -> Verdict {
    match (record, user) {
        (None, UserView::Confirmed) => Verdict::Record { adopt: any_part },
        (None, UserView::Disabled) => Verdict::Disabled,
        (None, UserView::Absent) if any_part => Verdict::Unrecorded,
        (None, _) => Verdict::Ignore,
        (Some(r), _) if r.state == Phase::Offboarded => {
            // An offboarding left half-done is finished (access first); nothing comes back.
            if !drift.is_empty() && !r.converged() {
                Verdict::Repair(drift.to_vec())
            } else if user == UserView::Confirmed {
                Verdict::Tombstone
            } else {
                Verdict::Ignore
            }
        }
        (Some(_), UserView::Absent) => Verdict::Orphan,
        (Some(_), UserView::Disabled) => Verdict::Disabled,
        (Some(_), _) if drift.is_empty() => Verdict::Complete,
        (Some(_), _) => Verdict::Repair(drift.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;
    use crate::tenant::drift::Part;
    use crate::tenant::plan::Plans;

    fn record(state: Phase, converged: bool) -> TenantRecord {
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let mut r = TenantRecord::new(&t, None, &Plans::embedded().unwrap(), "sign-up");
        r.state = state;
        if converged {
            r.converged_version = r.version;
        }
        r
    }

    #[test]
    fn the_reconcilers_judgement() {
        use UserView::{Absent, Confirmed, Unconfirmed};
        use Verdict::{Complete, Ignore, Orphan, Record, Repair, Tombstone, Unrecorded};
        let active = record(Phase::Active, true);
        let suspended = record(Phase::Suspended, true);
        let gone = record(Phase::Offboarded, true);
        let leaving = record(Phase::Offboarded, false);
        let drifted = vec![Drift::Missing(Part::Secret)];
        let leftovers = vec![Drift::Left(Part::User)];
        let none: Vec<Drift> = vec![];
        type Row<'a> = (
            Option<&'a TenantRecord>,
            UserView,
            &'a [Drift],
            bool,
            Verdict,
        );
        let table: Vec<Row> = vec![
            (Some(&active), Confirmed, &none, true, Complete),
            (
                Some(&active),
                Confirmed,
                &drifted,
                true,
                Repair(drifted.clone()),
            ),
            // A suspended tenant that lost its Secret is repaired *as suspended*: the record says so.
            (
                Some(&suspended),
                Confirmed,
                &drifted,
                true,
                Repair(drifted.clone()),
            ),
            // The tombstone: an offboarded tenant never comes back, even with a confirmed user.
            (Some(&gone), Confirmed, &none, false, Tombstone),
            (Some(&gone), Confirmed, &leftovers, true, Tombstone),
            (Some(&gone), Absent, &none, false, Ignore),
            // …but an offboarding left half-done is finished.
            (
                Some(&leaving),
                Confirmed,
                &leftovers,
                true,
                Repair(leftovers.clone()),
            ),
            (Some(&active), Absent, &none, true, Orphan),
            (
                Some(&active),
                UserView::Disabled,
                &drifted,
                true,
                Verdict::Disabled,
            ),
            (None, Confirmed, &none, false, Record { adopt: false }),
            (None, Confirmed, &none, true, Record { adopt: true }),
            (None, UserView::Disabled, &none, false, Verdict::Disabled),
            (None, Absent, &none, true, Unrecorded),
            (None, Unconfirmed, &none, false, Ignore),
            (None, Absent, &none, false, Ignore),
        ];
        for (i, (record, user, drift, any, expected)) in table.into_iter().enumerate() {
            assert_eq!(judge(record, user, drift, any), expected, "row {i}");
        }
    }
}
