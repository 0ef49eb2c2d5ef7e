//! The Lambda entry points (trigger, worker, reconciler, API) and the cold-start app they share.

pub mod api;
pub mod app;
pub mod event;
pub mod reconciler;
pub mod runtime;
pub mod settings;
pub mod trigger;
pub mod worker;
