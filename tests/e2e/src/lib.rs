//! End-to-end tests live in `tests/`: each starts real Envoy, the real
//! collector binary and real clients through `meshtrace-testkit`.
