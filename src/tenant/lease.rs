//! One writer per tenant: the rule, pure. Whoever changes the world for a tenant (the trigger
//! after its record, the worker, a reconcile repair, an operator's command, a move) first takes
//! the tenant's lease — a conditional write on its record: free or run out — then applies the
//! record it read in that same write, records it converged and gives the lease back. As in a
//! Kubernetes controller (one worker per key, a fresh read) with the DynamoDB lock pattern
//! (holder, expiry, a fencing number that only grows) as the lock.
//!
//! A lease runs out at its holder's own deadline (plus a margin): a holder stops before any
//! write past it, and its last write (`record converged`) carries its fencing number, so a
//! holder whose lease was taken over is refused rather than obeyed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::tenant::record::TenantRecord;

/// Kept between a holder's deadline and its lease's end: its last write must land before
/// anyone else may take the tenant.
pub const MARGIN: Duration = Duration::from_secs(2);

/// Milliseconds since the epoch (what the record keeps), for `at`.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A new tenant's record carrying its creator's lease from the start (the first fence, until
/// `until`): whoever writes it holds the tenant with no write of its own for the lease.
pub fn first_lease(
    mut record: TenantRecord,
    holder: &str,
    until: SystemTime,
) -> (TenantRecord, Fence) {
    let fence = Fence {
        fence: 1,
        until_ms: epoch_ms(until),
    };
    record.lease_holder = Some(holder.to_owned());
    record.lease_until_ms = Some(fence.until_ms);
    record.lease_since = Some(crate::tenant::record::now());
    record.lease_fence = fence.fence;
    (record, fence)
}

/// Who holds the tenant now, if anyone (a lease that ran out is no one's).
pub fn holder(record: &TenantRecord, now: SystemTime) -> Option<Held> {
    let until = record.lease_until_ms?;
    (until > epoch_ms(now)).then(|| Held {
        holder: record.lease_holder.clone().unwrap_or_default(),
        since: record.lease_since.clone().unwrap_or_default(),
        until_ms: until,
    })
}

/// Someone else's lease on a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: String,
    pub since: String,
    pub until_ms: u64,
}

/// A lease this process holds: its fencing number, and the instant it must stop writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub fence: u64,
    pub until_ms: u64,
}

impl Fence {
    /// How long writes may still be made from now (the margin kept for the last one).
    pub fn remaining(&self) -> Duration {
        let now = epoch_ms(SystemTime::now());
        let end = self
            .until_ms
            .saturating_sub(u64::try_from(MARGIN.as_millis()).unwrap_or(0) / 2);
        Duration::from_millis(end.saturating_sub(now))
    }

    /// Whether a write may still be made at `now` (the margin kept for the last one).
    pub fn valid_at(&self, now: SystemTime) -> bool {
        epoch_ms(now) + u64::try_from(MARGIN.as_millis()).unwrap_or(0) / 2 < self.until_ms
    }
}

/// A tenant held by someone else past the caller's wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant busy: {holder} since {since}; your change is recorded and will be applied by it (or run the command again once it is done)"
)]
pub struct Busy {
    pub holder: String,
    pub since: String,
}

impl From<Held> for Busy {
    fn from(h: Held) -> Self {
        Busy {
            holder: h.holder,
            since: h.since,
        }
    }
}

/// The name a holder goes by in the record and in "tenant busy": its role and process.
pub fn holder_name(role: &str) -> String {
    match std::env::var("AWS_LAMBDA_LOG_STREAM_NAME") {
        Ok(stream) if !stream.is_empty() => format!("{role} ({stream})"),
        _ => format!("{role} (pid {})", std::process::id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;
    use crate::tenant::plan::Plans;

    fn record() -> TenantRecord {
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        TenantRecord::new(&t, None, &Plans::embedded().unwrap(), "sign-up")
    }

    #[test]
    fn a_lease_is_someones_until_it_runs_out() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut r = record();
        assert_eq!(holder(&r, now), None, "never taken");
        r.lease_holder = Some("worker (pid 7)".into());
        r.lease_since = Some("1970-01-01T00:16:30Z".into());
        r.lease_until_ms = Some(epoch_ms(now) + 1);
        let held = holder(&r, now).expect("held");
        assert_eq!(held.holder, "worker (pid 7)");
        assert!(Busy::from(held).to_string().starts_with(
            "tenant busy: worker (pid 7) since 1970-01-01T00:16:30Z; your change is recorded"
        ));
        r.lease_until_ms = Some(epoch_ms(now));
        assert_eq!(holder(&r, now), None, "ran out");
    }

    #[test]
    fn a_holder_stops_writing_before_its_lease_ends() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let fence = Fence {
            fence: 3,
            until_ms: epoch_ms(now) + 5_000,
        };
        assert!(fence.valid_at(now));
        assert!(fence.valid_at(now + Duration::from_millis(3_900)));
        assert!(!fence.valid_at(now + Duration::from_millis(4_000)));
        assert!(!fence.valid_at(now + Duration::from_secs(6)));
    }
}
