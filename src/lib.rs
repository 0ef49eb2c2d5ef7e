//! post-signup: a Cognito PostConfirmation trigger that gives each new user a tenant.
//! See DESIGN.md for the flow; the modules follow it, one per concern or outside system.

pub mod api;
pub mod app;
pub mod aws;
pub mod brokers;
pub mod cells;
pub mod cluster;
pub mod clusters;
pub mod cognito;
pub mod eks;
pub mod eks_token;
pub mod emf;
pub mod error;
pub mod event;
pub mod handler;
pub mod handoff;
pub mod kubernetes;
pub mod lifecycle;
pub mod manifests;
pub mod moving;
pub mod placement;
pub mod plan;
pub mod provision;
pub mod rabbitmq;
pub mod reconcile;
pub mod registry;
pub mod retry;
pub mod secrets_manager;
pub mod settings;
pub mod telemetry;
pub mod template;
pub mod tenant;
pub mod tenant_credentials;
pub mod worker;

/// One TLS crypto provider for the whole process. kube, reqwest and the AWS SDK all use
/// rustls; if two providers were compiled in, rustls would refuse to pick one and panic at
/// client build. aws-lc-rs is the only one in the tree; installing it explicitly keeps that
/// true even if a dependency later pulls in `ring`.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
