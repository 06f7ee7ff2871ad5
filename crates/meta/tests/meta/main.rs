//! Integration tests of atrest-meta: one binary, one module per concern.

mod common;
mod crash;
mod model;
mod tamper;
