//! Metadata operations per second on an in-memory backing (the stage 1
//! bench of docs/plans/format-2.md; target ≥ 200,000 creates/s in
//! directories of 100 and of 100,000 entries alike).
//!
//!   cargo run --release -p atrest-meta --example meta_ops [-- REPS]
//!
//! For each directory size: a directory filled to that size and
//! checkpointed, then OPS new files created in it (timed), one checkpoint
//! (timed), OPS lookups of existing names (timed). Prints the median of REPS
//! (default 5) repetitions and the 1-minute load average at the start.
//! No disk, no FUSE: this is the cost of the trees, the records, each
//! create's log record (sealed, chained and written to the in-memory
//! segment, no sync: a sync is one flush for any number of them) and the
//! sealing of dirty pages at a checkpoint.

use std::sync::Arc;
use std::time::Instant;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::record::{ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::{ConfigBinding, MemBacking, MetaKeys, NewObject, Store};

const OPS: usize = 20_000;
const SIZES: [usize; 2] = [100, 100_000];

fn file() -> NewObject {
    NewObject {
        kind: ObjectKind::Regular,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        target: Vec::new(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Run {
    creates_per_s: f64,
    checkpoint_ms: f64,
    lookups_per_s: f64,
}

fn run(size: usize) -> Result<Run, Box<dyn std::error::Error>> {
    let now = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    let keys = MetaKeys::derive(&SecretKey::random(), [7; 16], ContentAlgorithm::Aes256Gcm);
    let config = ConfigBinding {
        generation: 1,
        hash: [1; 32],
    };
    let mut store = Store::format(
        keys,
        Arc::new(MemBacking::new()),
        config,
        (0o755, 0, 0),
        now,
    )?;
    let dir_kind = NewObject {
        kind: ObjectKind::Directory,
        mode: 0o755,
        ..file()
    };
    let dir = store.create(ROOT_ID, b"dir", dir_kind, now)?.id;
    for i in 0..size {
        store.create(dir, format!("existing-{i:08}").as_bytes(), file(), now)?;
    }
    store.checkpoint(now)?;

    let names: Vec<String> = (0..OPS).map(|i| format!("new-file-{i:08}.dat")).collect();
    let start = Instant::now();
    for name in &names {
        store.create(dir, name.as_bytes(), file(), now)?;
    }
    let creates = start.elapsed().as_secs_f64();
    let start = Instant::now();
    store.checkpoint(now)?;
    let checkpoint = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for name in &names {
        store.lookup(dir, name.as_bytes())?;
    }
    let lookups = start.elapsed().as_secs_f64();
    Ok(Run {
        creates_per_s: OPS as f64 / creates,
        checkpoint_ms: checkpoint * 1e3,
        lookups_per_s: OPS as f64 / lookups,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "meta_ops: {OPS} creates, one checkpoint, {OPS} lookups per repetition; median of {reps}"
    );
    println!(
        "load average at the start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| directory entries | creates/s | checkpoint of {OPS} creates | lookups/s |");
    println!("|---:|---:|---:|---:|");
    for size in SIZES {
        let runs = (0..reps)
            .map(|_| run(size))
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "| {size} | {:.0} | {:.1} ms | {:.0} |",
            median(runs.iter().map(|r| r.creates_per_s).collect()),
            median(runs.iter().map(|r| r.checkpoint_ms).collect()),
            median(runs.iter().map(|r| r.lookups_per_s).collect()),
        );
    }
    Ok(())
}
