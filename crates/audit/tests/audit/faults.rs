//! Concurrency and failure: group commit batches, every append lands in
//! one chain, and a commit that fails fails every waiter (fail closed).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use atrest_audit::*;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::support::*;

async fn scripted(hold_first: bool) -> (TestLog<ScriptedStore>, ScriptedStore) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&db_path(dir.path())).await.unwrap();
    let store = ScriptedStore::new(inner, hold_first);
    let t = with_store(dir, store.clone(), LogOptions::default()).await;
    (t, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land_in_one_chain() {
    const TASKS: usize = 64;
    const EACH: usize = 40;
    let t = sqlite_log(LogOptions {
        checkpoint_every: 500,
        ..LogOptions::default()
    })
    .await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let log = t.log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                seqs.push(log.append(entry(task * EACH + i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut seqs = BTreeSet::new();
    for task in tasks {
        for seq in task.await.unwrap() {
            assert!(seqs.insert(seq), "seq {seq} given twice");
        }
    }
    let total = (TASKS * EACH) as u64;
    assert_eq!(seqs, (1..=total).collect());
    let report = verify(t.log.store(), &t.public).await.unwrap();
    assert_eq!(report.head.seq, total);
    // A checkpoint is sealed at the end of the batch that reaches 500 entries
    // since the last one, so the gaps are 500 to 500 + batch size - 1.
    let max_batch = LogOptions::default().max_batch as u64;
    assert!(
        (total / (500 + max_batch)..=total / 500).contains(&report.checkpoints),
        "{} checkpoints for {total} entries",
        report.checkpoints
    );
    let stats = t.log.stats();
    assert_eq!(stats.entries, total);
    assert!(stats.batches < total, "no batching at all: {stats:?}");
}

/// Hold the first commit, queue 299 more appends behind it, release: the
/// 299 go to the store in one transaction (several multi-row INSERTs), and
/// read back in order.
#[tokio::test]
async fn queued_appends_share_one_transaction() {
    let (t, store) = scripted(true).await;
    let first = {
        let log = t.log.clone();
        tokio::spawn(async move { log.append(entry(0)).await })
    };
    store.entered.notified().await;
    let mut rest = Vec::new();
    for i in 1..300 {
        let log = t.log.clone();
        rest.push(tokio::spawn(async move { log.append(entry(i)).await }));
    }
    wait_until(|| t.log.queue_len() == 299).await;
    // Nothing is acknowledged while the commit is held.
    assert_eq!(t.log.head().seq, 0);
    assert!(!first.is_finished());

    store.hold_first.as_ref().unwrap().add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().seq, 1);
    let mut seqs = Vec::new();
    for task in rest {
        seqs.push(task.await.unwrap().unwrap().seq);
    }
    seqs.sort();
    assert_eq!(seqs, (2..=300).collect::<Vec<_>>());
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        2,
        "one transaction each"
    );
    let stats = t.log.stats();
    assert_eq!((stats.batches, stats.entries), (2, 300));
    let stored = t.log.store().read_entries(1, 1000).await.unwrap();
    assert_eq!(stored.len(), 300);
    let mut numbers = Vec::new();
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        let n = e.details_value().unwrap()["n"].as_u64().unwrap();
        assert_eq!(
            e.subject.as_deref(),
            Some(format!("web-{}", n % 7).as_str())
        );
        numbers.push(n);
    }
    numbers.sort();
    assert_eq!(numbers, (0..300).collect::<Vec<_>>());
    verify(t.log.store(), &t.public).await.unwrap();
}

/// A failing commit (disk full) fails every append waiting on it, moves
/// nothing forward, and the next commit continues the chain without a gap.
#[tokio::test]
async fn a_failed_commit_fails_every_waiter() {
    let (t, store) = scripted(true).await;
    store.fail.store(true, Ordering::SeqCst);
    let first = {
        let log = t.log.clone();
        tokio::spawn(async move { log.append(entry(0)).await })
    };
    store.entered.notified().await;
    let mut rest = Vec::new();
    for i in 1..50 {
        let log = t.log.clone();
        rest.push(tokio::spawn(async move { log.append(entry(i)).await }));
    }
    wait_until(|| t.log.queue_len() == 49).await;
    store.hold_first.as_ref().unwrap().add_permits(1);

    let mut failures = 0;
    for task in std::iter::once(first).chain(rest) {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AppendError::NotDurable(_)), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        failures += 1;
    }
    assert_eq!(failures, 50);
    assert_eq!(t.log.stats().failed_batches, 2);
    assert_eq!(t.log.head().seq, 0);
    assert!(matches!(
        t.log.checkpoint().await,
        Err(AppendError::EmptyLog | AppendError::NotDurable(_))
    ));

    store.fail.store(false, Ordering::SeqCst);
    let receipt = t.log.append(entry(99)).await.unwrap();
    assert_eq!(receipt.seq, 1);
    let report = verify(t.log.store(), &t.public).await.unwrap();
    assert_eq!(report.head.seq, 1);
}

/// A real SQLite failure: another process holds the write lock past the
/// busy timeout. Every waiting append fails; once the lock is gone the
/// log goes on.
#[tokio::test]
async fn a_locked_database_fails_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions {
            busy_timeout: Duration::from_millis(50),
            ..SqliteOptions::default()
        },
    )
    .await
    .unwrap();
    let t = with_store(dir, store, LogOptions::default()).await;
    append_n(&t.log, 3).await;

    let mut other = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..20 {
        let log = t.log.clone();
        tasks.push(tokio::spawn(async move { log.append(entry(i)).await }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AppendError::NotDurable(_)), "{err}");
        assert!(err.to_string().contains("no key may be released"), "{err}");
    }
    assert_eq!(t.log.head().seq, 3);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(t.log.append(entry(3)).await.unwrap().seq, 4);
    assert_eq!(verify(t.log.store(), &t.public).await.unwrap().head.seq, 4);
}

/// Removing the database's directory leaves SQLite writing to unlinked
/// files, which would lose acknowledged entries: the store notices and
/// refuses every append.
#[tokio::test]
async fn a_removed_database_directory_fails_every_waiter() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 3).await;
    std::fs::remove_dir_all(t.dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let log = t.log.clone();
        tasks.push(tokio::spawn(async move { log.append(entry(i)).await }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("removed or replaced"), "{err}");
    }
    assert_eq!(t.log.head().seq, 3);
}

/// Makes files immutable (even to root) for as long as it lives.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: Vec<std::path::PathBuf>) -> Option<Self> {
        for path in &paths {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                drop(Immutable(paths.clone()));
                return None;
            }
        }
        Some(Immutable(paths))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

/// A database file that cannot be written (made immutable, which holds
/// for root too): every append fails; once writable again, the log goes
/// on. The `-shm` file is left alone: SQLite maps it, and a write to an
/// immutable mapping is a SIGBUS, not an error.
#[tokio::test]
async fn an_unwritable_database_file_fails_every_waiter() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 3).await;
    let path = t.path();
    let wal = path.with_extension("db-wal");
    let Some(guard) = Immutable::set(vec![path, wal]) else {
        eprintln!("skipped: chattr +i is not available or not permitted here");
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..10 {
        let log = t.log.clone();
        tasks.push(tokio::spawn(async move { log.append(entry(i)).await }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AppendError::NotDurable(_)), "{err}");
    }
    assert_eq!(t.log.head().seq, 3);
    drop(guard);
    assert_eq!(t.log.append(entry(3)).await.unwrap().seq, 4);
    assert_eq!(verify(t.log.store(), &t.public).await.unwrap().head.seq, 4);
}
