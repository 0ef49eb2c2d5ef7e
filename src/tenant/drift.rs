//! What exists of a tenant (`Observed`, from single reads or bulk listings) against what its
//! record asks for: the drift, typed, one entry per difference. Pure; table-tested below.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use serde::Serialize;

use crate::tenant::plan::Plans;
use crate::tenant::plan::desired_limits;
use crate::tenant::record::{LastOutcome, TenantRecord};

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub name: String,
    pub images: Vec<String>,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
    /// `type=status` of each condition (`Available=True`, `Progressing=True`, …).
    pub conditions: Vec<String>,
    /// The first container's resources, as the API server keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
}

impl DeploymentStatus {
    /// Every wanted replica is updated and available, and the Deployment says Available.
    pub fn ready(&self) -> bool {
        self.replicas > 0
            && self.available_replicas >= self.replicas
            && self.updated_replicas >= self.replicas
            && self.conditions.iter().any(|c| c == "Available=True")
    }

    pub fn of(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let status = d.status.as_ref();
        Self {
            name: d.metadata.name.clone().unwrap_or_default(),
            images: spec
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| {
                    p.containers
                        .iter()
                        .filter_map(|c| c.image.clone())
                        .collect()
                })
                .unwrap_or_default(),
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
            ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            available_replicas: status.and_then(|s| s.available_replicas).unwrap_or(0),
            updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            conditions: status
                .and_then(|s| s.conditions.as_ref())
                .map(|cs| {
                    cs.iter()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect()
                })
                .unwrap_or_default(),
            resources: spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| serde_json::to_value(r).ok()),
        }
    }
}

/// What exists of one tenant, from single reads (`status`) or bulk listings (the reconciler).
/// `None` where a value is not known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub user: bool,
    pub vhost: bool,
    pub permission: bool,
    pub secret: bool,
    pub deployment: bool,
    pub secrets_manager: bool,
    pub vhost_limits: Option<BTreeMap<String, i64>>,
    pub user_limits: Option<BTreeMap<String, i64>>,
    pub secret_generation: Option<u32>,
    pub deployment_replicas: Option<i32>,
    pub deployment_resources: Option<serde_json::Value>,
}

/// One part of a tenant that exists or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    User,
    Vhost,
    Permission,
    Secret,
    Deployment,
    SecretsManager,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::User => "rabbitmq user",
            Part::Vhost => "rabbitmq vhost",
            Part::Permission => "rabbitmq permission",
            Part::Secret => "kubernetes secret",
            Part::Deployment => "kubernetes deployment",
            Part::SecretsManager => "secrets manager secret",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Observed {
    fn parts(&self) -> [(Part, bool); 6] {
        [
            (Part::User, self.user),
            (Part::Vhost, self.vhost),
            (Part::Permission, self.permission),
            (Part::Secret, self.secret),
            (Part::Deployment, self.deployment),
            (Part::SecretsManager, self.secrets_manager),
        ]
    }

    /// The parts that do not exist (empty: complete).
    pub fn missing(&self) -> Vec<Part> {
        self.parts()
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(part, _)| part)
            .collect()
    }

    /// Whether anything at all exists.
    pub fn any(&self) -> bool {
        self.parts().iter().any(|(_, present)| *present)
    }
}

/// One difference between what exists and what the record asks for. Shown as one line
/// (`status`'s `drift`, the reconciler's `incomplete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Offboarded, but this part (which grants access, or holds data not kept) exists.
    Left(Part),
    Missing(Part),
    VhostLimits {
        found: BTreeMap<String, i64>,
        plan: String,
        wanted: BTreeMap<String, i64>,
    },
    UserLimits {
        found: BTreeMap<String, i64>,
        plan: String,
        wanted: BTreeMap<String, i64>,
    },
    /// The Kubernetes Secret holds another password generation than the record's.
    SecretGeneration {
        found: u32,
        recorded: u32,
    },
    BackendReplicas {
        found: i32,
        wanted: i32,
    },
    BackendResources {
        plan: String,
    },
    /// The record's last change (or first provisioning) is not applied everywhere yet.
    NotApplied {
        pending: String,
    },
    /// Applied, but the last outcome recorded is not `provisioned`.
    Outcome(LastOutcome),
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Left(part) => write!(f, "offboarded, but its {part} exists"),
            Drift::Missing(part) => write!(f, "missing {part}"),
            Drift::VhostLimits {
                found,
                plan,
                wanted,
            } => write!(
                f,
                "vhost limits {} (plan {plan}: {})",
                limits_text(found),
                limits_text(wanted)
            ),
            Drift::UserLimits {
                found,
                plan,
                wanted,
            } => write!(
                f,
                "user limits {} (plan {plan}: {})",
                limits_text(found),
                limits_text(wanted)
            ),
            Drift::SecretGeneration { found, recorded } => write!(
                f,
                "kubernetes secret holds password generation {found} (recorded: {recorded})"
            ),
            Drift::BackendReplicas { found, wanted } => {
                write!(f, "backend replicas {found} (wanted {wanted})")
            }
            Drift::BackendResources { plan } => {
                write!(f, "backend resources differ from plan {plan}")
            }
            Drift::NotApplied { pending } => {
                write!(f, "change not applied everywhere yet: {pending}")
            }
            Drift::Outcome(o) => write!(
                f,
                "{}",
                format!("recorded outcome is {o:?}, not provisioned").to_lowercase()
            ),
        }
    }
}

/// Shown as its line: `status` prints the drift as a list of strings.
impl Serialize for Drift {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where `observed` differs from what `record` asks for, one entry each (pure: the
/// reconciler's and `status`'s judgement, table-tested below).
pub fn drift(plans: &Plans, record: &TenantRecord, observed: &Observed) -> Vec<Drift> {
    let mut out = Vec::new();
    let Some(state) = record.desired() else {
        // Offboarded: everything that grants access must be gone; the vhost too unless kept.
        for (part, present) in observed.parts() {
            let kept = part == Part::Vhost && record.retain_data;
            if present && !kept {
                out.push(Drift::Left(part));
            }
        }
        return out;
    };
    out.extend(observed.missing().into_iter().map(Drift::Missing));
    let plan = plans.for_state(&state);
    let (vhost_limits, user_limits) = desired_limits(plan, &state);
    if observed.vhost
        && let Some(found) = &observed.vhost_limits
        && found != &vhost_limits
    {
        out.push(Drift::VhostLimits {
            found: found.clone(),
            plan: plan.name.clone(),
            wanted: vhost_limits,
        });
    }
    if observed.user
        && let Some(found) = &observed.user_limits
        && found != &user_limits
    {
        out.push(Drift::UserLimits {
            found: found.clone(),
            plan: plan.name.clone(),
            wanted: user_limits,
        });
    }
    if observed.secret
        && let Some(g) = observed.secret_generation
        && g != state.generation
    {
        out.push(Drift::SecretGeneration {
            found: g,
            recorded: state.generation,
        });
    }
    if let Some(replicas) = observed.deployment_replicas {
        let wanted = if state.suspended {
            0
        } else {
            plan.backend.replicas
        };
        if replicas != wanted {
            out.push(Drift::BackendReplicas {
                found: replicas,
                wanted,
            });
        }
    }
    if observed.deployment
        && let Some(wanted) = &plan.backend.resources
    {
        let wanted = serde_json::to_value(wanted).ok();
        if observed.deployment_resources != wanted {
            out.push(Drift::BackendResources {
                plan: plan.name.clone(),
            });
        }
    }
    if !record.converged() {
        out.push(Drift::NotApplied {
            pending: record.pending.as_deref().unwrap_or("provision").to_owned(),
        });
    } else if record.outcome != LastOutcome::Provisioned {
        out.push(Drift::Outcome(record.outcome));
    }
    out
}

fn limits_text(limits: &BTreeMap<String, i64>) -> String {
    if limits.is_empty() {
        return "none".to_owned();
    }
    limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantId;
    use crate::tenant::transition::{Change, transition};

    /// The drift as the lines `status` and the reconciler print.
    fn drift(plans: &Plans, record: &TenantRecord, observed: &Observed) -> Vec<String> {
        super::drift(plans, record, observed)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn plans() -> Plans {
        Plans::embedded().unwrap()
    }

    fn record() -> TenantRecord {
        let t = TenantId::parse("4f8e2b1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let mut r = TenantRecord::new(&t, None, &plans(), "sign-up");
        r.converged_version = r.version;
        r.outcome = LastOutcome::Provisioned;
        r
    }

    /// What a tenant provisioned exactly as `record` says looks like.
    fn as_recorded(record: &TenantRecord) -> Observed {
        let plans = plans();
        let state = record.desired().unwrap();
        let plan = plans.for_state(&state);
        let (v, u) = desired_limits(plan, &state);
        Observed {
            user: true,
            vhost: true,
            permission: true,
            secret: true,
            deployment: true,
            secrets_manager: true,
            vhost_limits: Some(v),
            user_limits: Some(u),
            secret_generation: Some(state.generation),
            deployment_replicas: Some(if state.suspended {
                0
            } else {
                plan.backend.replicas
            }),
            deployment_resources: plan
                .backend
                .resources
                .as_ref()
                .map(|r| serde_json::to_value(r).unwrap()),
        }
    }

    #[test]
    fn a_tenant_as_recorded_has_no_drift() {
        let r = record();
        assert_eq!(drift(&plans(), &r, &as_recorded(&r)), Vec::<String>::new());
    }

    #[test]
    fn drift_names_each_difference() {
        let plans = plans();
        let r = record();
        let suspended = {
            let mut s = transition(&r, &Change::Suspend, "t").unwrap().unwrap();
            s.converged_version = s.version;
            s
        };
        // A suspended tenant whose objects still say active (a repair from defaults did that).
        let active_objects = as_recorded(&r);
        let lines = drift(&plans, &suspended, &active_objects);
        assert!(
            lines.iter().any(|l| l.starts_with("vhost limits")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("backend replicas")),
            "{lines:?}"
        );

        let mut extra_limit = as_recorded(&r);
        extra_limit
            .vhost_limits
            .as_mut()
            .unwrap()
            .insert("max-channels".into(), 9);
        assert_eq!(drift(&plans, &r, &extra_limit).len(), 1);

        let mut old_password = as_recorded(&r);
        let rotated = {
            let mut x = transition(&r, &Change::Rotate, "t").unwrap().unwrap();
            x.converged_version = x.version;
            x
        };
        old_password.secret_generation = Some(0);
        let lines = drift(&plans, &rotated, &old_password);
        assert!(lines[0].contains("generation 0 (recorded: 1)"), "{lines:?}");

        let mut lost = as_recorded(&r);
        lost.secret = false;
        assert_eq!(drift(&plans, &r, &lost), ["missing kubernetes secret"]);

        let pending = transition(&r, &Change::Rotate, "t").unwrap().unwrap();
        let lines = drift(&plans, &pending, &as_recorded(&pending));
        assert_eq!(lines, ["change not applied everywhere yet: rotate"]);
    }

    #[test]
    fn an_offboarded_tenant_drifts_by_what_is_left() {
        let plans = plans();
        let r = record();
        let everything = as_recorded(&r);
        let gone = transition(&r, &Change::Offboard { retain_data: true }, "t")
            .unwrap()
            .unwrap();
        let lines = drift(&plans, &gone, &everything);
        assert_eq!(lines.len(), 5, "all but the kept vhost: {lines:?}");
        let only_vhost = Observed {
            vhost: true,
            ..Default::default()
        };
        assert!(drift(&plans, &gone, &only_vhost).is_empty());
        let dropped = transition(&gone, &Change::Offboard { retain_data: false }, "t")
            .unwrap()
            .unwrap();
        assert_eq!(
            drift(&plans, &dropped, &only_vhost),
            ["offboarded, but its rabbitmq vhost exists"]
        );
    }

    #[test]
    fn the_drift_is_typed() {
        let plans = plans();
        let r = record();
        let mut lost = as_recorded(&r);
        lost.secret = false;
        lost.secret_generation = None;
        assert_eq!(
            super::drift(&plans, &r, &lost),
            [Drift::Missing(Part::Secret)]
        );
    }
}
