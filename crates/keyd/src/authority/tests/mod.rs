//! The authority's suite, run on each backend: `sqlite` always,
//! `postgres` on a database of its own on the `ATREST_TEST_POSTGRES`
//! server (skipped without one, failed when `ATREST_REQUIRE_POSTGRES=1`;
//! see [`crate::testing`]). `postgres` also runs `replicas.rs`: two
//! authorities on one database, as two `keyd serve` replicas are.

#![allow(clippy::unwrap_used)]

mod sqlite {
    const BACKEND: crate::testing::Backend = crate::testing::Backend::Sqlite;
    include!("suite.rs");
    include!("witness.rs");
}

mod postgres {
    const BACKEND: crate::testing::Backend = crate::testing::Backend::Postgres;
    include!("suite.rs");
    include!("witness.rs");
    include!("replicas.rs");
}
