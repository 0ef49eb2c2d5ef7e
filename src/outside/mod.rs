//! One adapter per outside system. Each returns `StepError` (which names the system and step)
//! and sets every timeout explicitly.

pub mod aws;
pub mod broker_pool;
pub mod cluster_pool;
pub mod cognito;
pub mod error;
pub mod kubernetes;
pub mod rabbitmq;
pub mod registry;
pub mod retry;
pub mod secrets_manager;
pub mod sqs;
