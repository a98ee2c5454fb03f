//! The demo behind `scripts/demo`: the orchestrator that starts a loopback
//! mesh and sends traffic (`orchestrator`), the demo services (`app`), and the
//! Prometheus it runs beside them (`monitoring`).

pub mod app;
pub mod monitoring;
pub mod orchestrator;
