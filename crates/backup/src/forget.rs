//! `forget` (which snapshots a keep policy retains) and `prune` (drop the
//! data no snapshot uses any more).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::backend::{Backend, hex};
use crate::error::Result;
use crate::keys::BlobId;
use crate::repo::{Repository, parse_id};
use crate::tree::Snapshot;

/// How many snapshots to keep: the newest `last`, and the newest one of
/// each of the newest `hourly` hours, `daily` days, ... (UTC), as restic's
/// `forget --keep-*`. A snapshot kept by any rule is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Civil date (year, month) of a day count since 1970-01-01 (H. Hinnant's
/// algorithm).
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Maps a time (ms since the epoch) to its hour, day, week, month or year.
type Bucket = fn(i64) -> i64;

/// The ids of `snapshots` (id, snapshot) that `policy` keeps.
pub fn keep(policy: &KeepPolicy, snapshots: &[(String, Snapshot)]) -> BTreeSet<String> {
    let mut newest_first: Vec<&(String, Snapshot)> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| b.1.time_ms.cmp(&a.1.time_ms).then_with(|| b.0.cmp(&a.0)));
    let mut kept = BTreeSet::new();
    for (id, _) in newest_first.iter().take(policy.last) {
        kept.insert(id.clone());
    }
    let buckets: [(usize, Bucket); 5] = [
        (policy.hourly, |ms| ms.div_euclid(3_600_000)),
        (policy.daily, |ms| ms.div_euclid(86_400_000)),
        // Weeks start on Monday; 1970-01-01 was a Thursday.
        (policy.weekly, |ms| {
            (ms.div_euclid(86_400_000) + 3).div_euclid(7)
        }),
        (policy.monthly, |ms| {
            let (y, m) = year_month(ms.div_euclid(86_400_000));
            y * 12 + i64::from(m)
        }),
        (policy.yearly, |ms| year_month(ms.div_euclid(86_400_000)).0),
    ];
    for (n, bucket) in buckets {
        let mut seen = BTreeSet::new();
        for (id, snap) in &newest_first {
            if seen.len() >= n {
                break;
            }
            if seen.insert(bucket(snap.time_ms as i64)) {
                kept.insert(id.clone());
            }
        }
    }
    kept
}

/// What `prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub blobs_kept: usize,
    pub blobs_dropped: usize,
    pub bytes_freed: u64,
}

impl<B: Backend> Repository<B> {
    /// Deletes the given snapshots (their data stays until `prune`).
    pub fn forget(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            self.backend().delete(&format!("snapshots/{id}"))?;
        }
        Ok(())
    }

    /// Every blob a remaining snapshot reaches (trees and data).
    fn used_blobs(&self) -> Result<BTreeSet<BlobId>> {
        let mut salts = HashMap::new();
        let mut used = BTreeSet::new();
        let snapshots = self.snapshots()?;
        let roots: Vec<&str> = snapshots.iter().map(|(_, s)| s.tree.as_str()).collect();
        let ahead = self.read_trees_ahead(&roots);
        for (_, snap) in &snapshots {
            let mut stack = vec![snap.tree.clone()];
            while let Some(t) = stack.pop() {
                self.keep_lock();
                if !used.insert(parse_id(&t)?) {
                    continue;
                }
                for node in self.load_tree_ahead(&ahead, &t, &mut salts)?.nodes {
                    for c in &node.content {
                        used.insert(parse_id(c)?);
                    }
                    if let Some(sub) = node.subtree {
                        stack.push(sub);
                    }
                }
            }
        }
        Ok(used)
    }

    /// Removes what no snapshot uses: packs with no used blob are deleted,
    /// packs with some are rewritten with only those, read pack by pack
    /// (a few ranged reads per pack, not one per blob) and each checked
    /// against its id before it is sealed again. Order, for crash
    /// safety: new packs, then one new index of everything kept, then the
    /// old index files, then the old packs. A crash leaves at most
    /// unreferenced packs or duplicate index entries, never a snapshot
    /// without its data. A blob to keep that is damaged or cannot be read
    /// stops prune before it deletes anything
    /// ([`BackupError::PruneStopped`](crate::BackupError)), with the
    /// packs it had written removed again. Callers hold an exclusive lock
    /// ([`Repository::lock`]): a concurrent `backup` could otherwise
    /// reference a blob being dropped, or write an index this deletes.
    pub fn prune(&mut self) -> Result<PruneReport> {
        let used = self.used_blobs()?;
        // Each pack's blobs with their sealed sizes.
        let mut by_pack: BTreeMap<[u8; 32], Vec<(BlobId, u64)>> = BTreeMap::new();
        for (id, loc) in self.index_entries() {
            let sealed = u64::from(loc.sealed_len);
            by_pack.entry(loc.pack).or_default().push((*id, sealed));
        }
        let mut report = PruneReport::default();
        let mut doomed = Vec::new();
        let mut to_copy = Vec::new();
        // Packs rewritten that keep at least half their bytes: read whole.
        let mut mostly_kept = BTreeSet::new();
        for (pack, blobs) in &by_pack {
            let live: Vec<&(BlobId, u64)> =
                blobs.iter().filter(|(i, _)| used.contains(i)).collect();
            report.blobs_kept += live.len();
            if live.len() == blobs.len() {
                continue;
            }
            report.blobs_dropped += blobs.len() - live.len();
            doomed.push(*pack);
            if live.is_empty() {
                report.packs_deleted += 1;
                continue;
            }
            report.packs_repacked += 1;
            to_copy.extend(live.iter().map(|(i, _)| *i));
            let kept: u64 = live.iter().map(|(_, n)| n).sum();
            let all: u64 = blobs.iter().map(|(_, n)| n).sum();
            if 2 * kept >= all {
                mostly_kept.insert(*pack);
            }
        }
        // Packs on storage that no index names (a crashed run or prune).
        let indexed: BTreeSet<String> = by_pack.keys().map(|p| hex(p)).collect();
        let mut orphans = Vec::new();
        for name in self.backend().list("data")? {
            let file = name.rsplit('/').next().unwrap_or("").to_string();
            if !indexed.contains(&file) {
                orphans.push(name);
            }
        }
        if doomed.is_empty() && orphans.is_empty() {
            return Ok(report);
        }
        let old_indexes = self.backend().list("index")?;
        let doomed_set: BTreeSet<[u8; 32]> = doomed.iter().copied().collect();
        self.rewrite(&to_copy, &doomed_set, &mostly_kept)?;
        for name in &old_indexes {
            self.backend().delete(name)?;
        }
        // Sizes from the store's metadata (a HEAD on S3), not by reading
        // the packs.
        for pack in &doomed {
            self.keep_lock();
            let name = Self::pack_name(pack);
            report.bytes_freed += self.backend().size(&name).unwrap_or(0);
            self.backend().delete(&name)?;
        }
        for name in orphans {
            report.bytes_freed += self.backend().size(&name).unwrap_or(0);
            self.backend().delete(&name)?;
            report.packs_deleted += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Summary;

    #[test]
    fn civil_dates() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        assert_eq!(year_month(59), (1970, 3)); // 1970-03-01
        assert_eq!(year_month(11_016), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(11_017), (2000, 3));
        assert_eq!(year_month(20_793), (2026, 12)); // 2026-12-06
        assert_eq!(year_month(-1), (1969, 12));
    }

    fn snaps(times_h: &[i64]) -> Vec<(String, Snapshot)> {
        times_h
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    format!("s{i:02}"),
                    Snapshot {
                        version: 1,
                        time_ms: (*h * 3_600_000) as u64,
                        hostname: String::new(),
                        paths: vec![],
                        tags: vec![],
                        tree: String::new(),
                        parent: None,
                        summary: Summary::default(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn keep_rules_pick_the_newest_per_bucket() {
        // Hourly snapshots over three days (hours 0..72).
        let all = snaps(&(0..72).collect::<Vec<_>>());
        let ids = |p: KeepPolicy| keep(&p, &all).into_iter().collect::<Vec<_>>();
        assert_eq!(
            ids(KeepPolicy {
                last: 2,
                ..Default::default()
            }),
            ["s70", "s71"]
        );
        // Newest of each of the last two days: hours 71 and 47.
        assert_eq!(
            ids(KeepPolicy {
                daily: 2,
                ..Default::default()
            }),
            ["s47", "s71"]
        );
        assert_eq!(
            ids(KeepPolicy {
                hourly: 3,
                ..Default::default()
            }),
            ["s69", "s70", "s71"]
        );
        // Rules add up; an empty policy keeps nothing.
        assert_eq!(
            ids(KeepPolicy {
                last: 1,
                daily: 3,
                ..Default::default()
            }),
            ["s23", "s47", "s71"]
        );
        assert!(ids(KeepPolicy::default()).is_empty());
        // 1970-01-01 (Thu) to 01-03 (Sat) are one week; monthly and yearly one bucket.
        assert_eq!(
            ids(KeepPolicy {
                weekly: 5,
                monthly: 5,
                yearly: 5,
                ..Default::default()
            }),
            ["s71"]
        );
    }
}
