//! The scoped API (issue 12) against a real keyd on 127.0.0.1, on each
//! backend: `sqlite` always, `postgres` on the `ATREST_TEST_POSTGRES`
//! server (failed, not skipped, when `ATREST_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used)]

mod common;

mod sqlite {
    const BACKEND: atrest_keyd::testing::Backend = atrest_keyd::testing::Backend::Sqlite;
    include!("scoped/suite.rs");
}

mod postgres {
    const BACKEND: atrest_keyd::testing::Backend = atrest_keyd::testing::Backend::Postgres;
    include!("scoped/suite.rs");
}
