//! `atrest keyd status`: what the authority's database says about itself,
//! read-only (a standby can be asked): which database, whether it answers,
//! its schema version, the audit chain's head, whether it is a standby and
//! how far behind, and how many hosts are in each state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use crate::Database;

/// How long status waits for the database before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The report; fields the database could not give are `None`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgresql`.
    pub kind: &'static str,
    /// The database, as keyd.json names it (never a password).
    pub database: String,
    pub reachable: bool,
    /// Why it is not reachable, or what could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The keyd schema version the database holds.
    pub schema_version: Option<i64>,
    /// Entries in the audit chain (its head's sequence number).
    pub audit_entries: Option<u64>,
    /// When the last audit entry was written (Unix milliseconds).
    pub audit_last_ms: Option<u64>,
    /// PostgreSQL: whether this server is a standby (`pg_is_in_recovery()`).
    pub standby: Option<bool>,
    /// A standby's replay lag in seconds (now minus the last replayed
    /// transaction's time; grows while the primary is idle too).
    pub replay_lag_seconds: Option<f64>,
    /// Hosts per state (`active`, `revoked`, `shredded`).
    pub hosts: BTreeMap<String, u64>,
}

impl DatabaseStatus {
    fn new(database: &Database) -> Self {
        Self {
            kind: match database {
                Database::Sqlite(_) => "sqlite",
                Database::Postgres(_) => "postgresql",
            },
            database: database.to_string(),
            reachable: false,
            error: None,
            schema_version: None,
            audit_entries: None,
            audit_last_ms: None,
            standby: None,
            replay_lag_seconds: None,
            hosts: BTreeMap::new(),
        }
    }
}

/// Reads `database`'s status without writing to it.
pub async fn database_status(database: &Database) -> DatabaseStatus {
    let mut status = DatabaseStatus::new(database);
    let result = match database {
        Database::Sqlite(dir) => sqlite_status(dir, &mut status).await,
        Database::Postgres(url) => postgres_status(url, &mut status).await,
    };
    if let Err(e) = result {
        status.error = Some(e);
    }
    status
}

async fn sqlite_status(dir: &std::path::Path, status: &mut DatabaseStatus) -> Result<(), String> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let open = |name: &str| {
        let path = dir.join(name);
        async move {
            if !path.exists() {
                return Err(format!("{} does not exist", path.display()));
            }
            SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .connect()
                .await
                .map_err(|e| format!("{}: {e}", path.display()))
        }
    };
    let mut state = open(crate::DataDir::STATE_DB).await?;
    status.reachable = true;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut state)
        .await
        .map_err(|e| e.to_string())?;
    status.schema_version = Some(version);
    for row in sqlx::query("SELECT state, COUNT(*) FROM hosts GROUP BY state")
        .fetch_all(&mut state)
        .await
        .map_err(|e| e.to_string())?
    {
        let count: i64 = row.get(1);
        status
            .hosts
            .insert(row.get::<String, _>(0), u64::try_from(count).unwrap_or(0));
    }
    let _ = state.close().await;
    let mut audit = open(crate::DataDir::AUDIT_DB).await?;
    let head = sqlx::query("SELECT seq, timestamp_ms FROM audit_entries ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut audit)
        .await
        .map_err(|e| e.to_string())?;
    let (seq, at) = head.map_or((0, None), |row| {
        (row.get::<i64, _>(0), Some(row.get::<i64, _>(1)))
    });
    status.audit_entries = u64::try_from(seq).ok();
    status.audit_last_ms = at.and_then(|t| u64::try_from(t).ok());
    let _ = audit.close().await;
    Ok(())
}

async fn postgres_status(url: &str, status: &mut DatabaseStatus) -> Result<(), String> {
    use sqlx::Connection;
    use sqlx::postgres::PgConnection;
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => {
            return Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()));
        }
    };
    status.reachable = true;
    let row = sqlx::query(
        "SELECT pg_is_in_recovery(), \
         EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let standby: bool = row.get(0);
    status.standby = Some(standby);
    if standby {
        status.replay_lag_seconds = row.get::<Option<f64>, _>(1);
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('keyd_schema') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if !exists {
        return Err("the database holds no key authority (no keyd_schema table)".into());
    }
    status.schema_version = sqlx::query_scalar("SELECT version FROM keyd_schema")
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    for row in sqlx::query("SELECT state, COUNT(*) FROM keyd_hosts GROUP BY state")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?
    {
        let count: i64 = row.get(1);
        status
            .hosts
            .insert(row.get::<String, _>(0), u64::try_from(count).unwrap_or(0));
    }
    if let Some(row) = sqlx::query("SELECT seq, timestamp_ms FROM audit_chain_head")
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| e.to_string())?
    {
        let seq: i64 = row.get(0);
        let at: i64 = row.get(1);
        status.audit_entries = u64::try_from(seq).ok();
        status.audit_last_ms = (seq > 0).then(|| u64::try_from(at).ok()).flatten();
    }
    let _ = conn.close().await;
    Ok(())
}
