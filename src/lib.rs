//! post-signup: a Cognito PostConfirmation trigger that gives each new user a tenant.
//! See DESIGN.md for the flow; the modules follow it, one per concern or outside system.

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
