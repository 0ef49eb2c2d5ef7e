//! The tenant, pure: its id and every name derived from it, its plan, credentials, record and
//! the rules over them. No clients and no I/O live here; nothing here imports another layer.

pub mod credentials;
pub mod drift;
pub mod id;
pub mod lease;
pub mod manifests;
pub mod plan;
pub mod record;
pub mod template;
pub mod transition;
pub mod verdict;

pub use id::{TENANT_LABEL, TenantId, TenantIdError};
