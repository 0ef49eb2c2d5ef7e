//! Integration tests against the real local stack (`make stack-up`; `make test` starts it).
//! One binary, one module per concern; every test uses its own tenant (a fresh `sub`), so they
//! run in parallel against one stack.

mod api;
mod cells;
mod faults;
mod handoff;
mod helpers;
mod lifecycle;
mod pool;
mod provision;
mod reconcile;
mod registry;
mod servers;
mod stack;
mod tenantctl;
mod writer;
