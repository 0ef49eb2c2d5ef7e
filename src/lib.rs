//! post-signup: a Cognito PostConfirmation trigger that gives each new user a tenant (the
//! README tells the flow). The crate is a house in layers; each may import only itself and the
//! layers below it, and `make lint` (`dev/layers.py`) fails on an import that points up or on
//! a cycle between modules or folders:
//!
//! ```text
//! bin/        post-signup (starts lambda::runtime) · tenantctl/ (args, one module per group)
//!   ▼
//! lambda/     the Lambda entry points: trigger, worker, reconciler, api; the cold-start app,
//!   ▼         settings, the Cognito event, the runtime's dispatch
//! ops/        use cases: provision (and its report), placement, converge, change, status,
//!   ▼         handoff (worker, drain), moving, cells_report, reconcile/ (inventory, repair, prune)
//! outside/    one adapter per outside system, each returning StepError: aws, rabbitmq,
//!   ▼         secrets_manager, sqs, cognito, kubernetes/ (eks, token signer), registry/ (tenants,
//!   ▼         seats, moves); broker_pool and cluster_pool (a client per cell / cluster)
//! cells/      the cells file (cells, their clusters), pure
//!   ▼
//! tenant/     pure, no clients: id and names, plan, credentials, record, transition, drift,
//!             verdict, manifests, the backend template
//!
//! metrics, telemetry: leaves (they import nothing of the crate), for every layer above cells
//! ```
//!
//! Where to look: a rule about a tenant (what a change does, what counts as drift, what the
//! reconciler decides) is in `tenant/` and table-tested there; how one outside system is
//! called is in `outside/`, one file per system; what a command or a handler does, step by
//! step, is in `ops/`.

pub mod cells;
pub mod lambda;
pub mod metrics;
pub mod ops;
pub mod outside;
pub mod telemetry;
pub mod tenant;

/// One TLS crypto provider for the whole process. kube, reqwest and the AWS SDK all use
/// rustls; if two providers were compiled in, rustls would refuse to pick one and panic at
/// client build. aws-lc-rs is the only one in the tree; installing it explicitly keeps that
/// true even if a dependency later pulls in `ring`.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
