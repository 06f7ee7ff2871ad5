//! The integration tests of atrest-audit: one binary, a module per topic.

// Helpers outside #[test] functions panic on failure too: that is the
// failure report in a test binary.
#![allow(clippy::unwrap_used)]

mod chain;
mod faults;
mod heads;
mod postgres;
mod support;
mod tamper;
mod vectors;
