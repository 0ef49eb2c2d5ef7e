//! An operator's change to a tenant's record, as a pure function of the record: the new record
//! (its version bumped, the event it publishes), nothing (already so), or a typed refusal.

use crate::tenant::record::{Event, Phase, TenantRecord};

/// An operator's change to a tenant's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Plan(String),
    Suspend,
    Resume,
    Rotate,
    Offboard { retain_data: bool },
    Restore,
}

impl Change {
    pub fn name(&self) -> &'static str {
        match self {
            Change::Plan(_) => "plan",
            Change::Suspend => "suspend",
            Change::Resume => "resume",
            Change::Rotate => "rotate",
            Change::Offboard { .. } => "offboard",
            Change::Restore => "restore",
        }
    }

    fn event(&self) -> Event {
        match self {
            Change::Plan(_) => Event::TenantPlanChanged,
            Change::Suspend => Event::TenantSuspended,
            Change::Resume => Event::TenantResumed,
            Change::Rotate => Event::TenantRotated,
            Change::Offboard { .. } => Event::TenantOffboarded,
            Change::Restore => Event::TenantRestored,
        }
    }
}

/// Why a change cannot be made to the record as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("tenant {sub} is {state}: {change} is not possible (restore it first)")]
    Offboarded {
        sub: String,
        state: &'static str,
        change: &'static str,
    },
    #[error("tenant {sub} is {state}, not offboarded: nothing to restore")]
    NotOffboarded { sub: String, state: &'static str },
    #[error("tenant {sub} is not suspended: nothing to resume")]
    NotSuspended { sub: String },
    #[error(
        "tenant {sub} is moving to cell '{to}': finish the move first (`tenantctl move --sub {sub} --to {to}`)"
    )]
    Moving { sub: String, to: String },
}

/// What a change does to a record: the new record, or `None` when the record already says so
/// (the command then only finishes converging).
pub fn transition(
    record: &TenantRecord,
    change: &Change,
    at: &str,
) -> Result<Option<TenantRecord>, TransitionError> {
    use Phase::*;
    let sub = record.sub.clone();
    if let Some(m) = &record.moving {
        return Err(TransitionError::Moving {
            sub,
            to: m.to.clone(),
        });
    }
    let offboarded = || TransitionError::Offboarded {
        sub: sub.clone(),
        state: record.state.as_str(),
        change: change.name(),
    };
    let mut next = record.clone();
    match (change, record.state) {
        (Change::Restore, Offboarded) => {
            next.state = Active;
            next.retain_data = false;
            next.offboarded_at = None;
            // The old password may be why the tenant left: a restored tenant never gets it back.
            next.generation += 1;
            next.rotated_at = Some(at.to_owned());
        }
        (Change::Restore, s) => {
            return Err(TransitionError::NotOffboarded {
                sub,
                state: s.as_str(),
            });
        }
        (Change::Offboard { retain_data }, Offboarded) => {
            // Dropping kept data is a further step; data already removed cannot be kept.
            if !record.retain_data || *retain_data {
                return Ok(None);
            }
            next.retain_data = false;
        }
        (_, Offboarded) => return Err(offboarded()),
        (Change::Offboard { retain_data }, _) => {
            next.state = Offboarded;
            next.retain_data = *retain_data;
            next.offboarded_at = Some(at.to_owned());
        }
        (Change::Plan(plan), _) => {
            if &record.plan == plan {
                return Ok(None);
            }
            next.plan = plan.clone();
        }
        (Change::Suspend, Suspended) => return Ok(None),
        (Change::Suspend, Active) => next.state = Suspended,
        (Change::Resume, Suspended) => next.state = Active,
        (Change::Resume, Active) => return Err(TransitionError::NotSuspended { sub }),
        // A rotation recorded but not applied everywhere is finished, not rotated again.
        (Change::Rotate, _) if record.is_pending("rotate") && !record.converged() => {
            return Ok(None);
        }
        (Change::Rotate, _) => {
            next.generation += 1;
            next.rotated_at = Some(at.to_owned());
        }
    }
    next.version = record.version + 1;
    next.changed_at = Some(at.to_owned());
    // What is not applied yet stays pending beside this change: a plan change never drops a
    // rotation whose old connections are still to be closed.
    let mut pending: Vec<&str> = if record.converged() {
        Vec::new()
    } else {
        record.pending_changes().collect()
    };
    if !pending.contains(&change.name()) {
        pending.push(change.name());
    }
    next.pending = Some(pending.join(","));
    next.event = Some(change.event());
    next.event_seq = record.event_seq + 1;
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;
    use crate::tenant::plan::Plans;
    use crate::tenant::record::MoveProgress;

    fn record() -> TenantRecord {
        let plans = Plans::embedded().unwrap();
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        TenantRecord::new(&t, Some("us-east-1_x"), &plans, "sign-up")
    }

    fn apply(r: &TenantRecord, c: Change) -> Result<Option<TenantRecord>, TransitionError> {
        transition(r, &c, "2026-11-30T12:00:00Z")
    }

    #[test]
    fn a_full_life_is_a_chain_of_transitions_each_with_its_event() {
        let mut r = record();
        let steps = [
            (Change::Plan("business".into()), Event::TenantPlanChanged),
            (Change::Suspend, Event::TenantSuspended),
            (Change::Resume, Event::TenantResumed),
            (Change::Rotate, Event::TenantRotated),
            (
                Change::Offboard { retain_data: true },
                Event::TenantOffboarded,
            ),
            (Change::Restore, Event::TenantRestored),
        ];
        for (i, (change, event)) in steps.into_iter().enumerate() {
            let next = apply(&r, change.clone()).unwrap().expect("a change");
            assert_eq!(next.version, r.version + 1);
            assert_eq!(next.event, Some(event));
            assert_eq!(next.event_seq, i as u64 + 1);
            assert_eq!(next.pending.as_deref(), Some(change.name()));
            r = next;
            // Applied before the next change (unapplied ones accumulate: see below).
            r.converged_version = r.version;
        }
        assert_eq!(r.state, Phase::Active);
        assert_eq!(r.plan, "business");
        assert_eq!(r.generation, 2, "rotate, then restore: a new password each");
        assert!(!r.retain_data);
    }

    #[test]
    fn invalid_transitions_are_typed_errors() {
        let r = record();
        assert!(matches!(
            apply(&r, Change::Resume),
            Err(TransitionError::NotSuspended { .. })
        ));
        assert!(matches!(
            apply(&r, Change::Restore),
            Err(TransitionError::NotOffboarded { .. })
        ));
        let gone = apply(&r, Change::Offboard { retain_data: false })
            .unwrap()
            .unwrap();
        for c in [
            Change::Suspend,
            Change::Resume,
            Change::Rotate,
            Change::Plan("business".into()),
        ] {
            let e = apply(&gone, c).unwrap_err();
            assert!(e.to_string().contains("restore it first"), "{e}");
        }
    }

    #[test]
    fn a_change_already_recorded_is_no_transition() {
        let r = record();
        assert_eq!(apply(&r, Change::Plan(r.plan.clone())).unwrap(), None);
        let s = apply(&r, Change::Suspend).unwrap().unwrap();
        assert_eq!(apply(&s, Change::Suspend).unwrap(), None);
        let gone = apply(&r, Change::Offboard { retain_data: true })
            .unwrap()
            .unwrap();
        assert_eq!(
            apply(&gone, Change::Offboard { retain_data: true }).unwrap(),
            None
        );
        let dropped = apply(&gone, Change::Offboard { retain_data: false })
            .unwrap()
            .expect("kept data may be dropped later");
        assert!(!dropped.retain_data);
        assert_eq!(
            apply(&dropped, Change::Offboard { retain_data: true }).unwrap(),
            None,
            "removed data cannot be retained after the fact"
        );
    }

    #[test]
    fn no_change_while_a_move_is_recorded() {
        let mut r = record();
        r.moving = Some(MoveProgress::example());
        for c in [
            Change::Suspend,
            Change::Rotate,
            Change::Plan("business".into()),
            Change::Offboard { retain_data: true },
        ] {
            let e = apply(&r, c).unwrap_err();
            assert!(
                e.to_string()
                    .contains("is moving to cell 'b': finish the move first"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_rotation_not_yet_applied_is_finished_not_repeated() {
        let r = record();
        let rotated = apply(&r, Change::Rotate).unwrap().unwrap();
        assert_eq!(apply(&rotated, Change::Rotate).unwrap(), None);
        let mut applied = rotated.clone();
        applied.converged_version = applied.version;
        let again = apply(&applied, Change::Rotate).unwrap().unwrap();
        assert_eq!(again.generation, 2);
    }

    #[test]
    fn desired_state_comes_from_the_record() {
        let r = record();
        let s = apply(&r, Change::Suspend).unwrap().unwrap();
        let d = s.desired().unwrap();
        assert!(d.suspended);
        assert_eq!(d.generation, 0);
        let gone = apply(&s, Change::Offboard { retain_data: false })
            .unwrap()
            .unwrap();
        assert_eq!(gone.desired(), None);
        assert!(!gone.converged());
    }

    #[test]
    fn an_unfinished_change_stays_pending_beside_the_next() {
        let r = record();
        let rotated = apply(&r, Change::Rotate).unwrap().unwrap();
        let planned = apply(&rotated, Change::Plan("business".into()))
            .unwrap()
            .unwrap();
        assert_eq!(planned.pending.as_deref(), Some("rotate,plan"));
        assert!(planned.is_pending("rotate") && planned.is_pending("plan"));
        // Applied, then changed again: only the new change is pending.
        let mut applied = planned.clone();
        applied.converged_version = applied.version;
        let suspended = apply(&applied, Change::Suspend).unwrap().unwrap();
        assert_eq!(suspended.pending.as_deref(), Some("suspend"));
    }
}
