//! Plans: what one tenant may use of the shared broker and cluster (RabbitMQ vhost and user
//! limits, the default queue type, the backend's replicas and resources), and the state a
//! tenant carries with it (its plan, whether it is suspended, its password generation).
//!
//! A sign-up always gets the default plan: Cognito attributes are user-writable unless the pool
//! says otherwise, so nothing in the event may choose a bigger one. The state is recorded on the
//! tenant's Kubernetes objects (labels and annotations), so re-provisioning, the worker and the
//! reconciler keep it; only an operator changes it.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::{Deserialize, Serialize};

/// Label: the tenant's plan.
pub const PLAN_LABEL: &str = "post-signup/plan";
/// Label: present (`"true"`) while the tenant is suspended.
pub const SUSPENDED_LABEL: &str = "post-signup/suspended";
/// Annotation: the generation of the tenant's password (bumped by `rotate`).
pub const GENERATION_ANNOTATION: &str = "post-signup/password-generation";

const EMBEDDED: &str = include_str!("../../deploy/plans.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    pub const ALL: [QueueType; 3] = [QueueType::Classic, QueueType::Quorum, QueueType::Stream];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqLimits {
    pub max_connections: u32,
    pub max_queues: u32,
    #[serde(default)]
    pub user_max_connections: Option<u32>,
    #[serde(default)]
    pub user_max_channels: Option<u32>,
    #[serde(default)]
    pub default_queue_type: Option<QueueType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSize {
    pub replicas: i32,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(skip_deserializing)]
    pub name: String,
    pub rabbitmq: RabbitmqLimits,
    pub backend: BackendSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    default: String,
    plans: BTreeMap<String, Plan>,
}

/// The plans, parsed and checked once at cold start.
#[derive(Debug, Clone)]
pub struct Plans {
    default: String,
    plans: BTreeMap<String, Plan>,
}

#[derive(Debug, thiserror::Error)]
#[error("plans {source_name}: {problem}")]
pub struct PlansError {
    source_name: String,
    problem: String,
}

impl Plans {
    pub fn embedded() -> Result<Self, PlansError> {
        Self::parse("deploy/plans.yaml (embedded)", EMBEDDED)
    }

    /// The file at `path`, or the embedded one.
    pub fn load(path: Option<&Path>) -> Result<Self, PlansError> {
        match path {
            None => Self::embedded(),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| PlansError {
                    source_name: name.clone(),
                    problem: format!("cannot be read: {e}"),
                })?;
                Self::parse(&name, &text)
            }
        }
    }

    pub fn parse(source_name: &str, text: &str) -> Result<Self, PlansError> {
        let err = |problem: String| PlansError {
            source_name: source_name.to_owned(),
            problem,
        };
        let file: PlansFile = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        if !file.plans.contains_key(&file.default) {
            return Err(err(format!(
                "the default plan '{}' is not defined",
                file.default
            )));
        }
        let mut plans = BTreeMap::new();
        for (name, mut plan) in file.plans {
            if !crate::tenant::id::is_dns1123_label(&name) {
                return Err(err(format!(
                    "plan name '{name}' must be a DNS label (it becomes a Kubernetes label value)"
                )));
            }
            if !(0..=50).contains(&plan.backend.replicas) {
                return Err(err(format!("plan '{name}': replicas must be 0..=50")));
            }
            plan.name = name.clone();
            plans.insert(name, plan);
        }
        Ok(Self {
            default: file.default,
            plans,
        })
    }

    pub fn default_plan(&self) -> &Plan {
        &self.plans[&self.default]
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }

    /// The plan a tenant's state names; the default when it names one that no longer exists.
    pub fn for_state(&self, state: &TenantState) -> &Plan {
        self.get(&state.plan).unwrap_or_else(|| self.default_plan())
    }
}

/// What a tenant carries besides its name: its plan, whether it is suspended, and the
/// generation of its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantState {
    pub plan: String,
    pub suspended: bool,
    pub generation: u32,
}

impl TenantState {
    /// A new tenant: the default plan, active, first password.
    pub fn new(plans: &Plans) -> Self {
        Self {
            plan: plans.default_plan().name.clone(),
            suspended: false,
            generation: 0,
        }
    }

    /// Read back from an object's labels and annotations; what is missing takes the default.
    pub fn from_meta(
        plans: &Plans,
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Self {
        let mut state = Self::new(plans);
        if let Some(plan) = labels.and_then(|l| l.get(PLAN_LABEL)) {
            state.plan = plan.clone();
        }
        state.suspended = labels
            .and_then(|l| l.get(SUSPENDED_LABEL))
            .is_some_and(|v| v == "true");
        state.generation = annotations
            .and_then(|a| a.get(GENERATION_ANNOTATION))
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        state
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([(PLAN_LABEL.to_owned(), self.plan.clone())]);
        if self.suspended {
            labels.insert(SUSPENDED_LABEL.to_owned(), "true".to_owned());
        }
        labels
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            GENERATION_ANNOTATION.to_owned(),
            self.generation.to_string(),
        )])
    }
}

/// The vhost's and the user's limits as the plan (and a suspension) want them.
pub fn desired_limits(
    plan: &Plan,
    state: &TenantState,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let r = &plan.rabbitmq;
    let connections = if state.suspended {
        0
    } else {
        i64::from(r.max_connections)
    };
    let vhost = BTreeMap::from([
        ("max-connections".to_owned(), connections),
        ("max-queues".to_owned(), i64::from(r.max_queues)),
    ]);
    let mut user = BTreeMap::new();
    if let Some(n) = r.user_max_connections {
        user.insert("max-connections".to_owned(), i64::from(n));
    }
    if let Some(n) = r.user_max_channels {
        user.insert("max-channels".to_owned(), i64::from(n));
    }
    (vhost, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plans_parse_and_have_a_default() {
        let plans = Plans::embedded().unwrap();
        let d = plans.default_plan();
        assert_eq!(d.name, "starter");
        assert!(d.rabbitmq.max_connections > 0);
        assert!(plans.get("business").unwrap().backend.replicas >= 1);
    }

    #[test]
    fn bad_plan_files_are_named() {
        for (text, expected) in [
            ("default: x\nplans: {}\n", "default plan 'x' is not defined"),
            (
                "default: A\nplans:\n  A: {rabbitmq: {max_connections: 1, max_queues: 1}, backend: {replicas: 1}}\n",
                "DNS label",
            ),
            (
                "default: a\nplans:\n  a: {rabbitmq: {max_connections: 1, max_queues: 1}, backend: {replicas: 99}}\n",
                "replicas",
            ),
            (
                "default: a\nplans:\n  a: {rabbitmq: {max_connections: 1, max_queues: 1, typo: 2}, backend: {replicas: 1}}\n",
                "typo",
            ),
        ] {
            let e = Plans::parse("t", text).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn state_round_trips_through_labels_and_annotations() {
        let plans = Plans::embedded().unwrap();
        let state = TenantState {
            plan: "business".into(),
            suspended: true,
            generation: 3,
        };
        let back =
            TenantState::from_meta(&plans, Some(&state.labels()), Some(&state.annotations()));
        assert_eq!(back, state);
        assert_eq!(
            TenantState::from_meta(&plans, None, None),
            TenantState::new(&plans)
        );
    }
}
