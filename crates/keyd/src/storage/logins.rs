//! The approval page's budgets of wrong codes ([`crate::approvers`]) as
//! rows every replica shares: one statement text per step for both
//! backends (the same SQL but for the tables' names; `$1`, `$2`, … are
//! numbered parameters on both), and the [`Storage`](super::Storage)
//! methods built from them. A backend supplies only how its transaction
//! that holds the counts begins (`login_tx`): SQLite's write lock, or a
//! PostgreSQL advisory lock every replica takes.
//!
//! A failures row is one budget's window: `kind` `name` (one approver
//! name from one client address), `address` (one address, all names;
//! `name` empty) or `untrusted` (every untrusted address together; `name`
//! and `client` empty). A trusted row is a client address an approver
//! logged in from, until when.

/// The statements; `$failures` and `$trusted` are the tables' names.
macro_rules! login_sql {
    (counts, $failures:literal, $trusted:literal) => {
        concat!(
            "SELECT
                COALESCE((SELECT failures FROM ",
            $failures,
            " WHERE kind = 'name'
                    AND name = $1 AND client = $2 AND window_end > $3), 0),
                COALESCE((SELECT failures FROM ",
            $failures,
            " WHERE kind = 'address'
                    AND name = '' AND client = $2 AND window_end > $3), 0),
                COALESCE((SELECT failures FROM ",
            $failures,
            " WHERE kind = 'untrusted'
                    AND name = '' AND client = '' AND window_end > $3), 0),
                EXISTS (SELECT 1 FROM ",
            $trusted,
            " WHERE client = $2 AND trusted_until > $3)"
        )
    };
    // The attempt added to its windows (a window over at `$3` starts
    // again, ending at `$4`); to the untrusted one only when `$5`.
    (count, $failures:literal) => {
        concat!(
            "INSERT INTO ",
            $failures,
            " (kind, name, client, window_end, failures)
             SELECT column1, column2, column3, $4, 1
             FROM (VALUES ('name', $1, $2), ('address', '', $2), ('untrusted', '', '')) AS v
             WHERE column1 <> 'untrusted' OR $5
             ON CONFLICT (kind, name, client) DO UPDATE SET
                failures = CASE WHEN ",
            $failures,
            ".window_end > $3
                    THEN ",
            $failures,
            ".failures + 1 ELSE 1 END,
                window_end = CASE WHEN ",
            $failures,
            ".window_end > $3
                    THEN ",
            $failures,
            ".window_end ELSE excluded.window_end END"
        )
    };
    (forgive, $failures:literal) => {
        concat!(
            "DELETE FROM ",
            $failures,
            " WHERE kind = 'name' AND name = $1 AND client = $2"
        )
    };
    // The attempt given back: to the address's window, and to the
    // untrusted one when `$2`.
    (give_back, $failures:literal) => {
        concat!(
            "UPDATE ",
            $failures,
            " SET failures = failures - 1
             WHERE failures > 0 AND ((kind = 'address' AND name = '' AND client = $1)
                OR (kind = 'untrusted' AND name = '' AND client = '' AND $2))"
        )
    };
    (trust, $trusted:literal) => {
        concat!(
            "INSERT INTO ",
            $trusted,
            " (client, trusted_until) VALUES ($1, $2)
             ON CONFLICT (client) DO UPDATE SET trusted_until = excluded.trusted_until"
        )
    };
    (prune_failures, $failures:literal) => {
        concat!("DELETE FROM ", $failures, " WHERE window_end <= $1")
    };
    (prune_trusted, $trusted:literal) => {
        concat!("DELETE FROM ", $trusted, " WHERE trusted_until <= $1")
    };
}

/// [`Storage::take_login`](super::Storage::take_login),
/// [`login_succeeded`](super::Storage::login_succeeded) and
/// [`prune_logins`](super::Storage::prune_logins) on a backend whose
/// `self.pool` is its pool and `self.login_tx()` begins the transaction
/// that holds the counts.
macro_rules! login_methods {
    ($failures:literal, $trusted:literal) => {
        async fn take_login(
            &self,
            attempt: &$crate::storage::LoginAttempt<'_>,
            allow: fn(&$crate::storage::LoginCounts) -> bool,
        ) -> Result<$crate::storage::LoginCounts, $crate::storage::StorageError> {
            use $crate::storage::{backend, to_i64, to_u64};
            let mut tx = self.login_tx().await?;
            let (name_from_address, address, untrusted, trusted): (i64, i64, i64, bool) =
                sqlx::query_as(login_sql!(counts, $failures, $trusted))
                    .bind(attempt.name)
                    .bind(attempt.client)
                    .bind(to_i64(attempt.now))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
            let count = |n: i64| u32::try_from(to_u64(n)).unwrap_or(u32::MAX);
            let counts = $crate::storage::LoginCounts {
                name_from_address: count(name_from_address),
                address: count(address),
                untrusted: (!trusted).then(|| count(untrusted)),
            };
            if allow(&counts) {
                sqlx::query(login_sql!(count, $failures))
                    .bind(attempt.name)
                    .bind(attempt.client)
                    .bind(to_i64(attempt.now))
                    .bind(to_i64(attempt.window_end))
                    .bind(!trusted)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(counts)
        }

        async fn login_succeeded(
            &self,
            name: &str,
            client: &str,
            untrusted: bool,
            trusted_until: u64,
        ) -> Result<(), $crate::storage::StorageError> {
            use $crate::storage::{backend, to_i64};
            let mut tx = self.pool.begin().await.map_err(backend)?;
            sqlx::query(login_sql!(forgive, $failures))
                .bind(name)
                .bind(client)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            sqlx::query(login_sql!(give_back, $failures))
                .bind(client)
                .bind(untrusted)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            sqlx::query(login_sql!(trust, $trusted))
                .bind(client)
                .bind(to_i64(trusted_until))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)
        }

        async fn prune_logins(&self, now: u64) -> Result<(), $crate::storage::StorageError> {
            use $crate::storage::{backend, to_i64};
            for statement in [
                login_sql!(prune_failures, $failures),
                login_sql!(prune_trusted, $trusted),
            ] {
                sqlx::query(statement)
                    .bind(to_i64(now))
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
            }
            Ok(())
        }
    };
}
