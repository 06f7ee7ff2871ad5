//! Worked example (issue 12): a Rust service on PostgreSQL (sqlx) whose
//! customer columns are sealed by `atrest keyd`'s scoped API, with lookups
//! by email and by customer number through blind indexes. See README.md.

pub mod customers;
pub mod keyd;

pub use customers::{Customer, Customers};
pub use keyd::{Error, Keyd};
