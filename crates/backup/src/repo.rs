//! A repository: init and open, `run` (back up paths into a new snapshot),
//! `restore`, `check` (docs/format.md §18).
//!
//! Write order makes every crash harmless: packs first, then the index
//! file naming their blobs, then the snapshot. A crash leaves at most
//! packs no index names (unused, removed by a later prune) or an index
//! whose blobs no snapshot uses; never a snapshot that names a missing
//! blob.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use atrest_core::SecretKey;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, hex};
use crate::chunker::{ChunkSizes, Chunker};
use crate::error::{BackupError, Result};
use crate::fetch::{Delivered, Salts};
use crate::keys::{BlobId, BlobKind, REPO_ID_LEN, RepoKeys};
use crate::lock::LockSlot;
use crate::pack::{Location, PACK_HEADER_LEN, read_trailer};
use crate::run::{BackupOptions, Parent, Patterns, Sink, Walk, walk_roots, with_packers};
use crate::tree::{Node, SNAPSHOT_VERSION, Snapshot, Summary, Tree};
use atrest_vault::Keyslot;

pub const REPO_MAGIC: &[u8; 4] = b"ATRB";
/// The repository format this build writes: the master key in the
/// repository's own keyslots (§18.6).
pub const REPO_VERSION: u8 = 2;
/// Format 1, still read: the master key is a vault's backup key.
pub const REPO_VERSION_1: u8 = 1;
const INDEX_ENTRY_LEN: usize = 32 + 32 + 1 + 8 + 4 + 4 + 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) chunk_min: usize,
    pub(crate) chunk_avg: usize,
    pub(crate) chunk_max: usize,
}

/// Who took a snapshot and what to call it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    pub time_ms: u64,
    pub hostname: String,
    pub tags: Vec<String>,
}

/// What `check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    /// Every damaged or missing object, named.
    pub problems: Vec<String>,
}

/// What `restore` did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub bytes: u64,
    /// Entries not restored, with why (damaged blobs are never written).
    pub failed: Vec<String>,
}

pub struct Repository<B: Backend> {
    backend: B,
    /// Kept to wrap it for new keyslots.
    pub(crate) master: SecretKey,
    pub(crate) version: u8,
    keys: RepoKeys,
    chunker: Chunker,
    index: BTreeMap<BlobId, Location>,
    /// Format 1: the vault whose backup key is the master key.
    binding: Option<[u8; 16]>,
    /// Format 2: every keyslot whose MAC verified, by id.
    pub(crate) keyslots: Vec<Keyslot>,
    /// `keys/` objects that did not parse or verify, with why.
    pub(crate) keyslot_problems: Vec<String>,
    /// The slot that gave the master key (none: opened with the key itself).
    pub(crate) opened_slot: Option<u8>,
    lock: LockSlot,
}

impl<B: Backend> Drop for Repository<B> {
    /// A lock is never left behind by a command that ends, even by an
    /// error (a killed process leaves it to go stale).
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

impl<B: Backend> Repository<B> {
    /// A repository whose config has been opened with `master`; loads its
    /// index.
    pub(crate) fn assemble(
        backend: B,
        master: &SecretKey,
        version: u8,
        repo_id: [u8; REPO_ID_LEN],
        sizes: ChunkSizes,
        binding: Option<[u8; 16]>,
    ) -> Result<Self> {
        let keys = RepoKeys::new(master, repo_id);
        let mut repo = Self {
            backend,
            master: master.clone(),
            version,
            chunker: Chunker::new(&keys, sizes),
            keys,
            index: BTreeMap::new(),
            binding,
            keyslots: Vec::new(),
            keyslot_problems: Vec::new(),
            opened_slot: None,
            lock: LockSlot::default(),
        };
        repo.load_index()?;
        Ok(repo)
    }

    /// Format 1 only: the vault whose backup key is this repository's
    /// key (authenticated by the config).
    pub fn binding(&self) -> Option<[u8; 16]> {
        self.binding
    }

    pub fn repo_id(&self) -> [u8; REPO_ID_LEN] {
        self.keys.repo_id
    }

    /// The repository format: [`REPO_VERSION`] or [`REPO_VERSION_1`].
    pub fn version(&self) -> u8 {
        self.version
    }

    /// (Re)reads every index file.
    pub(crate) fn load_index(&mut self) -> Result<()> {
        let mut index = BTreeMap::new();
        for name in self.backend.list("index")? {
            for (id, loc) in self.read_index(&name)? {
                index.insert(id, loc);
            }
        }
        self.index = index;
        Ok(())
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Where the blob with hex id `id` is (its pack's object name, and its
    /// place in the pack), from the index; `None` if no pack holds it.
    pub fn locate(&self, id: &str) -> Result<Option<(String, Location)>> {
        let id = parse_id(id)?;
        Ok(self.index.get(&id).map(|l| (pack_name(&l.pack), *l)))
    }

    /// Where a blob is, from the index.
    pub(crate) fn location(&self, id: &BlobId) -> Option<Location> {
        self.index.get(id).copied()
    }

    /// The plaintext length of a blob, from the index.
    pub(crate) fn blob_len(&self, id: &BlobId) -> Option<u32> {
        self.index.get(id).map(|l| l.raw_len)
    }

    pub(crate) fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    pub(crate) fn lock_slot(&self) -> &LockSlot {
        &self.lock
    }

    pub(crate) fn index_entries(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.index.iter()
    }

    /// Copies `blobs` into new packs, drops every entry of `dropped` packs
    /// from the index, and writes one index file of everything left. The
    /// packs of `mostly_kept` are read whole (see [`Self::copy_blobs`]).
    pub(crate) fn rewrite(
        &mut self,
        blobs: &[BlobId],
        dropped: &BTreeSet<[u8; 32]>,
        mostly_kept: &BTreeSet<[u8; 32]>,
    ) -> Result<()> {
        let copied = self.copy_blobs(blobs, mostly_kept)?;
        self.index.retain(|_, loc| !dropped.contains(&loc.pack));
        self.index.extend(copied);
        let all: Vec<(BlobId, Location)> = self.index.iter().map(|(i, l)| (*i, *l)).collect();
        self.write_index(&all)
    }

    /// Seals `blobs` again into new packs; returns where each now is. They
    /// are read pack by pack (fetch.rs: coalesced ranged reads, as many in
    /// flight as the store's profile says; the packs of `mostly_kept`
    /// whole), so a prune that keeps B blobs of P packs makes O(P) requests,
    /// not B. They go through one packer's bounded queue as they arrive, so
    /// what is held is the readers' ranges, two queued blobs and the open
    /// packs, whatever is copied. Each blob is opened and checked against
    /// its id before it is sealed again; the first that cannot be stops
    /// the copy: the packs it already wrote are deleted (one left by a
    /// failed delete is named by no index: a run adopts it, a prune removes
    /// it), the index is untouched, and the error goes back to `prune`
    /// before it deletes anything.
    fn copy_blobs(
        &self,
        blobs: &[BlobId],
        mostly_kept: &BTreeSet<[u8; 32]>,
    ) -> Result<Vec<(BlobId, Location)>> {
        let profile = self.backend.read_profile();
        let gap = |pack: &[u8; 32]| {
            if mostly_kept.contains(pack) {
                crate::fetch::MAX_RANGE
            } else {
                profile.coalesce_gap
            }
        };
        let salts = Salts::default();
        let stopped: Mutex<Option<BackupError>> = Mutex::new(None);
        let ((), (copied, _)) = with_packers(&self.keys, &self.backend, 1, |sink| {
            let deliver = |id: BlobId, got: Delivered| {
                if stopped.lock().expect("copy").is_some() {
                    return ControlFlow::Break(());
                }
                let sent = match got {
                    Ok(plain) => sink.send((self.index[&id].kind, id, plain)),
                    Err(why) => Err(BackupError::PruneStopped {
                        blob: hex(&id),
                        why,
                    }),
                };
                match sent {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        stopped.lock().expect("copy").get_or_insert(e);
                        ControlFlow::Break(())
                    }
                }
            };
            let threads = profile.requests_in_flight;
            self.read_blobs_by_pack_with(blobs.iter().copied(), &salts, threads, &gap, &deliver);
            Ok(())
        })?;
        if let Some(e) = stopped.into_inner().expect("copy") {
            let written: BTreeSet<[u8; 32]> = copied.iter().map(|(_, l)| l.pack).collect();
            for pack in &written {
                let _ = self.backend.delete(&pack_name(pack));
            }
            return Err(e);
        }
        Ok(copied)
    }

    fn write_index(&self, entries: &[(BlobId, Location)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut plain = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        for (id, loc) in entries {
            plain.extend_from_slice(id);
            plain.extend_from_slice(&loc.pack);
            plain.push(loc.kind as u8);
            plain.extend_from_slice(&loc.offset.to_be_bytes());
            plain.extend_from_slice(&loc.sealed_len.to_be_bytes());
            plain.extend_from_slice(&loc.raw_len.to_be_bytes());
            plain.push(u8::from(loc.compressed));
        }
        let sealed = self.keys.seal_file("index", &plain);
        self.backend
            .put(&format!("index/{}", self.keys.file_name(&sealed)), &sealed)
    }

    fn read_index(&self, name: &str) -> Result<Vec<(BlobId, Location)>> {
        let sealed = self.backend.get(name)?;
        if self.keys.file_name(&sealed) != name.rsplit('/').next().unwrap_or("") {
            return Err(BackupError::damaged(
                name,
                "its content does not match its name",
            ));
        }
        let plain = self.keys.open_file("index", name, &sealed)?;
        if plain.len() % INDEX_ENTRY_LEN != 0 {
            return Err(BackupError::damaged(name, "length"));
        }
        plain
            .chunks(INDEX_ENTRY_LEN)
            .map(|e| {
                let kind = BlobKind::from_byte(e[64])
                    .ok_or_else(|| BackupError::damaged(name, "blob kind"))?;
                if e[81] > 1 {
                    return Err(BackupError::damaged(name, "flags"));
                }
                Ok((
                    e[..32].try_into().expect("32"),
                    Location {
                        pack: e[32..64].try_into().expect("32"),
                        kind,
                        offset: u64::from_be_bytes(e[65..73].try_into().expect("8")),
                        sealed_len: u32::from_be_bytes(e[73..77].try_into().expect("4")),
                        raw_len: u32::from_be_bytes(e[77..81].try_into().expect("4")),
                        compressed: e[81] == 1,
                    },
                ))
            })
            .collect()
    }

    pub(crate) fn pack_name(pack: &[u8; 32]) -> String {
        pack_name(pack)
    }

    /// A pack's salt, from its header (authenticated by every blob it
    /// opens: a wrong salt opens none).
    pub(crate) fn read_pack_salt(&self, name: &str) -> Result<[u8; 32]> {
        let header = self.backend.get_range(name, 0, PACK_HEADER_LEN)?;
        header
            .get(8..PACK_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| BackupError::damaged(name, "shorter than its index says"))
    }

    /// Reads one blob, checked against its id.
    pub fn read_blob(
        &self,
        id: &BlobId,
        salts: &mut HashMap<[u8; 32], [u8; 32]>,
    ) -> Result<Vec<u8>> {
        let loc = *self
            .index
            .get(id)
            .ok_or_else(|| BackupError::MissingBlob(hex(id)))?;
        let name = Self::pack_name(&loc.pack);
        let salt = match salts.get(&loc.pack) {
            Some(s) => *s,
            None => {
                let salt = self.read_pack_salt(&name)?;
                salts.insert(loc.pack, salt);
                salt
            }
        };
        let sealed = self
            .backend
            .get_range(&name, loc.offset, loc.sealed_len as usize)?;
        crate::pack::open_blob(&self.keys, &salt, &loc, id, &sealed)
    }

    /// Backs up `paths` into a new snapshot; returns its id and summary.
    /// Unreadable source entries are reported in the summary and skipped.
    pub fn backup(&mut self, paths: &[PathBuf], meta: &SnapshotMeta) -> Result<(String, Snapshot)> {
        self.backup_with(paths, meta, &BackupOptions::default())
    }

    /// The snapshot a run compares files with (see [`Parent`]).
    fn parent_of(
        &self,
        paths: &[PathBuf],
        hostname: &str,
        parent: &Parent,
    ) -> Result<Option<(String, Snapshot)>> {
        match parent {
            Parent::None => Ok(None),
            Parent::Snapshot(id) => self.snapshot(id).map(Some),
            Parent::Latest => {
                let mut want: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                want.sort();
                Ok(self.snapshots()?.into_iter().rev().find(|(_, s)| {
                    let mut have = s.paths.clone();
                    have.sort();
                    s.hostname == hostname && have == want
                }))
            }
        }
    }

    /// [`Repository::backup`] with excludes, `--one-file-system`, a parent
    /// snapshot choice or a dry run (which returns an empty id and stores
    /// nothing).
    pub fn backup_with(
        &mut self,
        paths: &[PathBuf],
        meta: &SnapshotMeta,
        options: &BackupOptions,
    ) -> Result<(String, Snapshot)> {
        let adopted = if options.dry_run {
            Vec::new()
        } else {
            self.adopt_orphan_packs()?
        };
        let parent = self.parent_of(paths, &meta.hostname, &options.parent)?;
        // On S3, the parent's trees in a few requests per level of the
        // tree, not one per directory (fetch.rs).
        let ahead = match &parent {
            Some((_, snap)) => self.read_trees_ahead(&[&snap.tree]),
            _ => Default::default(),
        };
        let salts = Mutex::new(HashMap::new());
        let load_tree =
            |id: &str| self.load_tree_ahead(&ahead, id, &mut salts.lock().expect("salts"));
        let parent_root = match &parent {
            Some((_, snap)) => Some(load_tree(&snap.tree)?),
            None => None,
        };
        let excludes = Patterns(options.excludes.clone());
        let walk = |sink: Sink<'_>| -> Result<(BlobId, Summary)> {
            let mut walk = Walk {
                keys: &self.keys,
                chunker: &self.chunker,
                index: &self.index,
                load_tree: &load_tree,
                keep_lock: &|| self.keep_lock(),
                sink,
                seen: HashSet::new(),
                summary: Summary::default(),
                links: HashMap::new(),
                options,
                excludes: &excludes,
                root_dev: 0,
                read_ahead: None,
            };
            let tree = walk_roots(&mut walk, paths, parent_root.as_ref())?;
            Ok((tree, walk.summary))
        };
        let ((tree, mut summary), (new_index, packs)) = if options.dry_run {
            let failed = AtomicBool::new(false);
            (walk(Sink::dry(&failed))?, (Vec::new(), 0))
        } else {
            with_packers(&self.keys, &self.backend, options.packers(), walk)?
        };
        summary.packs = packs;
        if !options.dry_run {
            let mut all = adopted;
            all.extend(new_index);
            self.write_index(&all)?;
            self.index.extend(all);
        }
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time_ms: meta.time_ms,
            hostname: meta.hostname.clone(),
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            tags: meta.tags.clone(),
            tree: hex(&tree),
            parent: parent.map(|(id, _)| id),
            summary,
        };
        if options.dry_run {
            return Ok((String::new(), snapshot));
        }
        let sealed = self
            .keys
            .seal_file("snapshot", &serde_json::to_vec(&snapshot).expect("json"));
        let id = self.keys.file_name(&sealed);
        self.backend.put(&format!("snapshots/{id}"), &sealed)?;
        Ok((id, snapshot))
    }

    /// Packs that no index names (uploaded by a run that was killed or lost
    /// its connection before writing its index): their trailers are checked
    /// and their blobs join the index, so this run reuses them instead of
    /// uploading them again. A pack that does not authenticate is left for
    /// `check` to report and `prune` to remove.
    fn adopt_orphan_packs(&mut self) -> Result<Vec<(BlobId, Location)>> {
        let known: BTreeSet<[u8; 32]> = self.index.values().map(|l| l.pack).collect();
        let mut adopted = Vec::new();
        for name in self.backend.list("data")? {
            let Some(pack) = name.rsplit('/').next().and_then(|h| parse_id(h).ok()) else {
                continue;
            };
            if known.contains(&pack) {
                continue;
            }
            let bytes = self.backend.get(&name)?;
            let Ok(entries) = read_trailer(&self.keys, &name, &pack, &bytes) else {
                continue;
            };
            for e in entries {
                let loc = e.location(pack);
                self.index.entry(e.id).or_insert(loc);
                adopted.push((e.id, loc));
            }
        }
        Ok(adopted)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(String, Snapshot)>> {
        let mut out = Vec::new();
        for name in self.backend.list("snapshots")? {
            let id = name.rsplit('/').next().unwrap_or("").to_string();
            out.push((id, self.load_snapshot_file(&name)?));
        }
        out.sort_by_key(|(_, s)| s.time_ms);
        Ok(out)
    }

    fn load_snapshot_file(&self, name: &str) -> Result<Snapshot> {
        let sealed = self.backend.get(name)?;
        if self.keys.file_name(&sealed) != name.rsplit('/').next().unwrap_or("") {
            return Err(BackupError::damaged(
                name,
                "its content does not match its name",
            ));
        }
        let plain = self.keys.open_file("snapshot", name, &sealed)?;
        // The version first: a newer snapshot gets "upgrade", not "damaged".
        let version = serde_json::from_slice::<serde_json::Value>(&plain)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
        if let Some(version) = version.filter(|v| *v > u64::from(SNAPSHOT_VERSION)) {
            return Err(BackupError::UnsupportedSnapshot {
                name: name.into(),
                version,
            });
        }
        serde_json::from_slice(&plain).map_err(|e| BackupError::damaged(name, e.to_string()))
    }

    /// A snapshot by id or unique id prefix, or `latest`.
    pub fn snapshot(&self, id: &str) -> Result<(String, Snapshot)> {
        let all = self.snapshots()?;
        if id == "latest" {
            return all
                .into_iter()
                .next_back()
                .ok_or_else(|| BackupError::NoSuchSnapshot(id.into()));
        }
        let mut matches: Vec<_> = all.into_iter().filter(|(s, _)| s.starts_with(id)).collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            _ => Err(BackupError::NoSuchSnapshot(id.into())),
        }
    }

    pub(crate) fn load_tree(
        &self,
        id_hex: &str,
        salts: &mut HashMap<[u8; 32], [u8; 32]>,
    ) -> Result<Tree> {
        let id = parse_id(id_hex)?;
        parse_tree(id_hex, &self.read_blob(&id, salts)?)
    }

    /// Checks every snapshot, tree and index entry; with `read_data`, reads
    /// every pack and opens every blob.
    pub fn check(&self, read_data: bool) -> Result<CheckReport> {
        self.check_packs(if read_data { 100 } else { 0 })
    }

    /// [`Repository::check`], reading a random `percent` of the packs
    /// (rounded up to a whole pack; 0: none, 100: all), as restic's
    /// `--read-data-subset N%`: run daily with a few percent, every pack is
    /// read within a few months.
    pub fn check_packs(&self, percent: u8) -> Result<CheckReport> {
        let mut report = CheckReport {
            problems: self.keyslot_problems.clone(),
            ..CheckReport::default()
        };
        let mut salts = HashMap::new();
        for name in self.backend.list("index")? {
            if let Err(e) = self.read_index(&name) {
                report.problems.push(e.to_string());
            }
        }
        let mut snapshots = Vec::new();
        for name in self.backend.list("snapshots")? {
            match self.load_snapshot_file(&name) {
                Ok(snap) => snapshots.push(snap),
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        let roots: Vec<&str> = snapshots.iter().map(|s| s.tree.as_str()).collect();
        let ahead = self.read_trees_ahead(&roots);
        for snap in &snapshots {
            report.snapshots += 1;
            let mut stack = vec![snap.tree.clone()];
            while let Some(t) = stack.pop() {
                self.keep_lock();
                match self.load_tree_ahead(&ahead, &t, &mut salts) {
                    Ok(tree) => {
                        report.trees += 1;
                        for node in &tree.nodes {
                            if let Some(sub) = &node.subtree {
                                stack.push(sub.clone());
                            }
                            for id in &node.content {
                                match parse_id(id) {
                                    Ok(id) if self.index.contains_key(&id) => {}
                                    _ => report
                                        .problems
                                        .push(format!("blob {id} is missing from the repository")),
                                }
                            }
                        }
                    }
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
        }
        if percent > 0 {
            let mut packs = self.backend.list("data")?;
            if percent < 100 {
                let want = (packs.len() * usize::from(percent)).div_ceil(100);
                let mut keyed: Vec<(u64, String)> = packs
                    .into_iter()
                    .map(|p| (u64::from_le_bytes(atrest_core::random_array::<8>()), p))
                    .collect();
                keyed.sort();
                packs = keyed.into_iter().take(want).map(|(_, p)| p).collect();
            }
            for name in packs {
                let Some(pack) = name.rsplit('/').next().and_then(|h| parse_id(h).ok()) else {
                    report.problems.push(format!("{name}: not a pack name"));
                    continue;
                };
                self.keep_lock();
                let bytes = self.backend.get(&name)?;
                match read_trailer(&self.keys, &name, &pack, &bytes) {
                    Ok(entries) => {
                        report.packs_read += 1;
                        for e in entries {
                            let loc = e.location(pack);
                            let sealed = &bytes
                                [e.offset as usize..(e.offset + u64::from(e.sealed_len)) as usize];
                            match crate::pack::open_blob(
                                &self.keys,
                                &bytes[8..40],
                                &loc,
                                &e.id,
                                sealed,
                            ) {
                                Ok(_) => report.blobs_read += 1,
                                Err(err) => report.problems.push(err.to_string()),
                            }
                        }
                    }
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
        }
        Ok(report)
    }
}

/// A tree blob's plaintext, parsed.
pub(crate) fn parse_tree(id_hex: &str, plain: &[u8]) -> Result<Tree> {
    serde_json::from_slice(plain)
        .map_err(|e| BackupError::damaged(format!("tree {id_hex}"), e.to_string()))
}

/// A pack's file name.
pub(crate) fn pack_name(pack: &[u8; 32]) -> String {
    let h = hex(pack);
    format!("data/{}/{h}", &h[..2])
}

pub(crate) fn parse_id(text: &str) -> Result<BlobId> {
    let bad = || BackupError::damaged(format!("id {text}"), "not 64 hex digits");
    if text.len() != 64 {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(id)
}

/// One entry of a snapshot, with its path inside the snapshot.
#[derive(Debug, Clone)]
pub struct ListedNode {
    /// Slash-separated, starting with the backed-up path as stored.
    pub path: Vec<u8>,
    pub node: Node,
}

/// How an entry differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Contents or kind differ.
    Modified,
    /// Only mode, owner, times or xattrs differ.
    Metadata,
}

impl<B: Backend> Repository<B> {
    /// Every entry of a snapshot, depth first, names sorted.
    pub fn list(&self, snapshot: &str) -> Result<Vec<ListedNode>> {
        let (_, snap) = self.snapshot(snapshot)?;
        let ahead = self.read_trees_ahead(&[&snap.tree]);
        let mut salts = HashMap::new();
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), snap.tree.clone())];
        while let Some((prefix, tree)) = stack.pop() {
            let tree = self.load_tree_ahead(&ahead, &tree, &mut salts)?;
            let mut subdirs = Vec::new();
            for node in tree.nodes {
                let mut path = prefix.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&node.name);
                if let Some(sub) = &node.subtree {
                    subdirs.push((path.clone(), sub.clone()));
                }
                out.push(ListedNode { path, node });
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(out)
    }

    /// What changed from snapshot `a` to snapshot `b`, sorted by path.
    pub fn diff(&self, a: &str, b: &str) -> Result<Vec<(Change, Vec<u8>)>> {
        let map = |list: Vec<ListedNode>| -> BTreeMap<Vec<u8>, Node> {
            list.into_iter().map(|l| (l.path, l.node)).collect()
        };
        let (old, new) = (map(self.list(a)?), map(self.list(b)?));
        let mut out = Vec::new();
        for (path, n) in &new {
            match old.get(path) {
                None => out.push((Change::Added, path.clone())),
                Some(o) if o.kind != n.kind || o.content != n.content || o.target != n.target => {
                    out.push((Change::Modified, path.clone()))
                }
                Some(o)
                    if (o.mode, o.uid, o.gid, o.mtime_sec, o.mtime_nsec)
                        != (n.mode, n.uid, n.gid, n.mtime_sec, n.mtime_nsec)
                        || o.xattrs != n.xattrs =>
                {
                    out.push((Change::Metadata, path.clone()))
                }
                Some(_) => {}
            }
        }
        for path in old.keys() {
            if !new.contains_key(path) {
                out.push((Change::Removed, path.clone()));
            }
        }
        out.sort_by(|x, y| x.1.cmp(&y.1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn a_snapshot_of_a_newer_version_asks_for_an_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::random();
        let sizes = ChunkSizes {
            min: 1024,
            avg: 4096,
            max: 16384,
        };
        let repo = Repository::init(LocalBackend::new(dir.path()), &key, sizes).unwrap();
        let sealed = repo
            .keys
            .seal_file("snapshot", br#"{"version": 3, "something": "new"}"#);
        let name = repo.keys.file_name(&sealed);
        repo.backend
            .put(&format!("snapshots/{name}"), &sealed)
            .unwrap();
        match repo.snapshots() {
            Err(e @ BackupError::UnsupportedSnapshot { version: 3, .. }) => {
                assert!(e.to_string().contains("upgrade atrest"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
