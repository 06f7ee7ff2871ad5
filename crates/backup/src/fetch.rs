//! Reading many blobs pack by pack, as restic's restorer does: the wanted
//! blobs are grouped by the pack that holds them, each pack's are read in
//! a few ranged reads (neighbours closer than the store's
//! [`ReadProfile::coalesce_gap`](crate::ReadProfile) share one read, up to
//! [`MAX_RANGE`] bytes), and several packs are read at once by a bounded
//! number of reader threads. On S3 a restore of N files from P packs costs
//! O(P) requests instead of N; on a local directory it costs fewer
//! `pread`s. Every blob is opened and checked against its id exactly as
//! [`Repository::read_blob`] does: nothing is trusted for having been read
//! in a batch.
//!
//! [`Repository::read_trees_ahead`] uses it to read a snapshot's trees
//! level by level before a walk (restore, a run with a parent, `ls`,
//! `diff`, `check`, `prune`), when the store asks for it; `prune` to copy
//! the blobs it keeps out of partly used packs (forget.rs); `backup mount`
//! to read a file's next blobs in its pack, and sibling directories'
//! trees, ahead of the reads that want them (mount.rs).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{Backend, hex};
use crate::error::{BackupError, Result};
use crate::keys::BlobId;
use crate::pack::{Location, PACK_HEADER_LEN, open_blob};
use crate::repo::{Repository, pack_name, parse_id};
use crate::tree::Tree;

/// One ranged read covers at most this many bytes (unless a single blob
/// is larger): with the number of reader threads, this bounds the bytes
/// of packs held at once.
pub(crate) const MAX_RANGE: u64 = 4 << 20;

/// Trees read ahead stop at this many plaintext bytes; the rest are read
/// one by one as the walk reaches them.
pub(crate) const TREES_AHEAD_BUDGET: usize = 128 << 20;

/// Pack salts already read, by pack (a blob opens under its pack's salt).
pub(crate) type Salts = Mutex<HashMap<[u8; 32], [u8; 32]>>;

/// What a batch read gives for one blob: its checked plaintext, or why
/// not (as text: one failed read can fail many blobs).
pub(crate) type Delivered = std::result::Result<Vec<u8>, String>;

/// Takes each blob a batch read delivers; [`ControlFlow::Break`] stops the
/// batch (no further read starts, no further blob is delivered).
pub(crate) type Deliver<'a> = dyn Fn(BlobId, Delivered) -> ControlFlow<()> + Sync + 'a;

/// One ranged read of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The range starts with the pack's header, whose salt is not known yet.
    pub(crate) header: bool,
    /// The wanted blobs inside, by offset.
    pub(crate) blobs: Vec<(BlobId, Location)>,
}

/// Coalesces the wanted `blobs` of one pack into ranged reads: a blob
/// joins the previous read when at most `gap` bytes lie between them and
/// the read stays within `max` bytes. `header`: the pack's header (bytes
/// 0..40, its salt) is read too, with the first blobs when close enough.
pub(crate) fn plan_ranges(
    mut blobs: Vec<(BlobId, Location)>,
    header: bool,
    gap: u64,
    max: u64,
) -> Vec<Range> {
    blobs.sort_by_key(|(_, l)| l.offset);
    let mut out: Vec<Range> = Vec::new();
    if header {
        out.push(Range {
            start: 0,
            end: PACK_HEADER_LEN as u64,
            header: true,
            blobs: Vec::new(),
        });
    }
    for (id, loc) in blobs {
        let end = loc.offset + u64::from(loc.sealed_len);
        match out.last_mut() {
            Some(r) if loc.offset >= r.end && loc.offset - r.end <= gap && end - r.start <= max => {
                r.end = end;
                r.blobs.push((id, loc));
            }
            _ => out.push(Range {
                start: loc.offset,
                end,
                header: false,
                blobs: vec![(id, loc)],
            }),
        }
    }
    out
}

/// Trees read ahead of a walk: checked plaintext by id.
#[derive(Default)]
pub(crate) struct TreesAhead(HashMap<BlobId, Vec<u8>>);

impl<B: Backend> Repository<B> {
    /// Reads every blob of `wanted` pack by pack with at most `threads`
    /// reads in flight, and hands each to `deliver` (from the reader
    /// threads, in no particular order) opened and checked against its id,
    /// or with the reason it could not be. Each id is delivered once, until
    /// `deliver` breaks: then the reads in flight end and no other starts.
    /// What is held at once: the plan (a location per wanted blob) and, per
    /// reader, one ranged read of at most [`MAX_RANGE`] bytes (a single
    /// larger blob whole) with its opened blobs, for as long as `deliver`
    /// takes.
    pub(crate) fn read_blobs_by_pack(
        &self,
        wanted: impl IntoIterator<Item = BlobId>,
        salts: &Salts,
        threads: usize,
        deliver: &Deliver<'_>,
    ) {
        let gap = self.backend().read_profile().coalesce_gap;
        self.read_blobs_by_pack_with(wanted, salts, threads, &|_| gap, deliver);
    }

    /// [`Repository::read_blobs_by_pack`] with the coalescing gap chosen
    /// per pack: `prune` reads a pack it keeps most of whole (in reads of
    /// at most [`MAX_RANGE`]), the dropped bytes between its blobs costing
    /// less than a request each.
    pub(crate) fn read_blobs_by_pack_with(
        &self,
        wanted: impl IntoIterator<Item = BlobId>,
        salts: &Salts,
        threads: usize,
        gap: &dyn Fn(&[u8; 32]) -> u64,
        deliver: &Deliver<'_>,
    ) {
        let mut by_pack: BTreeMap<[u8; 32], Vec<(BlobId, Location)>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for id in wanted {
            if !seen.insert(id) {
                continue;
            }
            match self.location(&id) {
                Some(loc) => by_pack.entry(loc.pack).or_default().push((id, loc)),
                None => {
                    let missing = BackupError::MissingBlob(hex(&id)).to_string();
                    if deliver(id, Err(missing)).is_break() {
                        return;
                    }
                }
            }
        }
        // One job per ranged read: the first read of every pack (the one
        // with its header when its salt is not known) before any second
        // one, so that later reads mostly find the salt already read, and
        // every reader has work even when few packs are wanted.
        let mut firsts = VecDeque::new();
        let mut rest = VecDeque::new();
        {
            let known = salts.lock().expect("salts");
            for (pack, blobs) in by_pack {
                let header = !known.contains_key(&pack);
                let mut ranges = plan_ranges(blobs, header, gap(&pack), MAX_RANGE).into_iter();
                firsts.extend(ranges.next().map(|r| (pack, r)));
                rest.extend(ranges.map(|r| (pack, r)));
            }
        }
        firsts.append(&mut rest);
        let threads = threads.clamp(1, firsts.len().max(1));
        let jobs = Mutex::new(firsts);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        let next = jobs.lock().expect("pack reads").pop_front();
                        let Some((pack, range)) = next else { break };
                        self.keep_lock();
                        if self.read_range(&pack, range, salts, deliver).is_break() {
                            stop.store(true, Ordering::Release);
                        }
                    }
                });
            }
        });
    }

    /// One ranged read of a pack: opens each wanted blob in it.
    fn read_range(
        &self,
        pack: &[u8; 32],
        range: Range,
        salts: &Salts,
        deliver: &Deliver<'_>,
    ) -> ControlFlow<()> {
        let name = pack_name(pack);
        let known = salts.lock().expect("salts").get(pack).copied();
        // A later read of a pack whose first read has not given its salt
        // yet (several readers at once): the salt costs a small read.
        let salt = match known {
            Some(s) => Some(s),
            None if range.header => None,
            None => match self.read_pack_salt(&name) {
                Ok(s) => {
                    salts.lock().expect("salts").insert(*pack, s);
                    Some(s)
                }
                Err(e) => return fail_all(&range.blobs, &e.to_string(), deliver),
            },
        };
        let len = (range.end - range.start) as usize;
        let bytes = match self.backend().get_range(&name, range.start, len) {
            Ok(b) if b.len() == len => b,
            Ok(_) => {
                let e = BackupError::damaged(&name, "shorter than its index says");
                return fail_all(&range.blobs, &e.to_string(), deliver);
            }
            Err(e) => return fail_all(&range.blobs, &e.to_string(), deliver),
        };
        let salt = match salt {
            Some(s) => s,
            None => {
                let s: [u8; 32] = bytes[8..PACK_HEADER_LEN].try_into().expect("32");
                salts.lock().expect("salts").insert(*pack, s);
                s
            }
        };
        for (id, loc) in range.blobs {
            let at = (loc.offset - range.start) as usize;
            let sealed = &bytes[at..at + loc.sealed_len as usize];
            let opened = open_blob(self.keys(), &salt, &loc, &id, sealed);
            deliver(id, opened.map_err(|e| e.to_string()))?;
        }
        ControlFlow::Continue(())
    }

    /// Reads the trees below `roots` ahead of a walk, level by level, each
    /// level pack by pack, when the store's [`ReadProfile`] asks for it
    /// (a store a round trip away): the walk then makes a few requests per
    /// level instead of one per directory. Stops at [`TREES_AHEAD_BUDGET`]
    /// bytes. A tree that could not be read is left out: the walk reads it
    /// again itself and reports what is wrong with it.
    ///
    /// [`ReadProfile`]: crate::ReadProfile
    pub(crate) fn read_trees_ahead(&self, roots: &[&str]) -> TreesAhead {
        let profile = self.backend().read_profile();
        let mut ahead = TreesAhead::default();
        if !profile.read_trees_ahead {
            return ahead;
        }
        let salts = Salts::default();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut level: Vec<BlobId> = roots
            .iter()
            .filter_map(|r| parse_id(r).ok())
            .filter(|id| seen.insert(*id))
            .collect();
        let mut bytes = 0usize;
        while !level.is_empty() && bytes < TREES_AHEAD_BUDGET {
            let read = Mutex::new(Vec::with_capacity(level.len()));
            self.read_blobs_by_pack(
                std::mem::take(&mut level),
                &salts,
                profile.requests_in_flight,
                &|id, got| {
                    if let Ok(plain) = got {
                        read.lock().expect("trees read").push((id, plain));
                    }
                    ControlFlow::Continue(())
                },
            );
            for (id, plain) in read.into_inner().expect("trees read") {
                if let Ok(tree) = serde_json::from_slice::<Tree>(&plain) {
                    let subtrees = tree.nodes.iter().filter_map(|n| n.subtree.as_deref());
                    for sub in subtrees {
                        if let Ok(sub) = parse_id(sub)
                            && seen.insert(sub)
                        {
                            level.push(sub);
                        }
                    }
                }
                bytes += plain.len();
                ahead.0.insert(id, plain);
            }
        }
        ahead
    }

    /// A tree: from `ahead` when it was read ahead, else from the store.
    pub(crate) fn load_tree_ahead(
        &self,
        ahead: &TreesAhead,
        id_hex: &str,
        salts: &mut HashMap<[u8; 32], [u8; 32]>,
    ) -> Result<Tree> {
        match parse_id(id_hex).ok().and_then(|id| ahead.0.get(&id)) {
            Some(plain) => crate::repo::parse_tree(id_hex, plain),
            None => self.load_tree(id_hex, salts),
        }
    }
}

fn fail_all(blobs: &[(BlobId, Location)], why: &str, deliver: &Deliver<'_>) -> ControlFlow<()> {
    for (id, _) in blobs {
        deliver(*id, Err(why.to_string()))?;
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::BlobKind;

    fn at(n: u8, offset: u64, len: u32) -> (BlobId, Location) {
        (
            [n; 32],
            Location {
                pack: [0; 32],
                kind: BlobKind::Data,
                offset,
                sealed_len: len,
                raw_len: len,
                compressed: false,
            },
        )
    }

    #[test]
    fn neighbours_share_a_read_and_far_blobs_get_their_own() {
        // Given out of order; 100 bytes apart, then 10,000 apart.
        let blobs = vec![at(3, 10_300, 50), at(1, 40, 100), at(2, 240, 60)];
        let ranges = plan_ranges(blobs, true, 1000, 1 << 20);
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].start, ranges[0].end), (0, 300));
        assert!(ranges[0].header);
        let ids: Vec<u8> = ranges[0].blobs.iter().map(|b| b.0[0]).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!((ranges[1].start, ranges[1].end), (10_300, 10_350));
        assert!(!ranges[1].header);
    }

    #[test]
    fn a_read_stops_at_the_size_bound_and_a_far_first_blob_leaves_the_header_alone() {
        let blobs: Vec<_> = (0..10u8)
            .map(|i| at(i, 5000 + u64::from(i) * 100, 100))
            .collect();
        let ranges = plan_ranges(blobs, true, 10, 350);
        // The header alone (the first blob is 4,960 bytes past it), then
        // reads of three blobs (300 bytes; a fourth would make 400).
        assert_eq!(
            (ranges[0].start, ranges[0].end, ranges[0].header),
            (0, 40, true)
        );
        assert!(ranges[0].blobs.is_empty());
        let sizes: Vec<usize> = ranges[1..].iter().map(|r| r.blobs.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        // Every blob in exactly one read, inside it.
        let mut all: Vec<u8> = Vec::new();
        for r in &ranges[1..] {
            for (id, loc) in &r.blobs {
                assert!(loc.offset >= r.start && loc.offset + u64::from(loc.sealed_len) <= r.end);
                all.push(id[0]);
            }
        }
        assert_eq!(all, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_blob_larger_than_the_bound_is_read_whole_and_overlaps_never_merge() {
        let ranges = plan_ranges(vec![at(1, 40, 1000), at(2, 500, 10)], false, 1 << 20, 100);
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].start, ranges[0].end), (40, 1040));
        assert_eq!((ranges[1].start, ranges[1].end), (500, 510));
    }
}
