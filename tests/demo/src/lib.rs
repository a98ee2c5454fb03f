//! The demo behind `scripts/demo`: the orchestrator that starts a loopback
//! mesh and sends traffic (`orchestrator`), and the demo services (`app`).

pub mod app;
pub mod orchestrator;
