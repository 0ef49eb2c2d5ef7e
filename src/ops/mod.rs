//! Use cases over the adapters: provision, converge, change, status, moves, reconcile.

pub mod cells_report;
pub mod change;
pub mod converge;
pub mod handoff;
pub mod moving;
pub mod placement;
pub mod pool;
pub mod provision;
pub mod reconcile;
pub mod status;
