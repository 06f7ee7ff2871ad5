//! End-to-end tests against a real FUSE mount of the `atrest` binary.
//! They need /dev/fuse and root (CI runs as root); without them they fail
//! with a message saying so rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod basic;
mod common;
mod doctor;
mod faults;
mod format2;
mod fscrypt;
mod help;
mod keyd;
mod luks;
mod migrate;
mod netns;
mod paths;
mod posix;
mod remote;
mod scope;
mod tamper;
mod tamper2;
mod torn;
mod witness;
