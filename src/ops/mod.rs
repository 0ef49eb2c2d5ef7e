//! Use cases over the adapters: provision, converge, change, status, moves, reconcile.

pub mod cells_report;
pub mod lifecycle;
pub mod moving;
pub mod placement;
pub mod provision;
pub mod reconcile;
