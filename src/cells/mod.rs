//! Cells: the units a tenant is placed in (a broker, optionally its own cluster), as the cells
//! file declares them. Parsing and ranking only; the registry's counters live in `outside`.

pub mod cluster;
pub mod file;
pub mod sizing;

pub use file::{
    Capacity, Cell, CellCluster, CellState, Cells, CellsError, DEFAULT_CELL, UnknownCell,
};
