//! The integration tests of atrest-remote: one binary, a module per topic.

// Helpers outside #[test] functions panic on failure too: that is the
// failure report in a test binary.
#![allow(clippy::unwrap_used)]

mod exchange;
mod reboot;
mod replay_rng;
mod request;
mod support;
mod threshold;
mod vectors;
