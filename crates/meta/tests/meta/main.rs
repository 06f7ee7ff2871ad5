//! Integration tests of atrest-meta: one binary, one module per concern.

// Helpers outside #[test] functions panic on failure too: that is the
// failure report in a test binary.
#![allow(clippy::unwrap_used)]

mod common;
mod crash;
mod data;
mod dirsize;
mod disk;
mod migrating;
mod model;
mod orphans;
mod repair;
mod tamper;
mod tamper_log;
mod witness;
mod xattrs;
