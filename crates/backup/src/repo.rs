//! A repository: init and open, `run` (back up paths into a new snapshot),
//! `restore`, `check` (docs/format.md §18).
//!
//! Write order makes every crash harmless: packs first, then the index
//! file naming their blobs, then the snapshot. A crash leaves at most
//! packs no index names (unused, removed by a later prune) or an index
//! whose blobs no snapshot uses; never a snapshot that names a missing
//! blob.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atrest_core::SecretKey;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, hex};
use crate::chunker::{ChunkSizes, Chunker};
use crate::error::{BackupError, Result};
use crate::keys::{BlobId, BlobKind, REPO_ID_LEN, RepoKeys};
use crate::pack::{Location, PACK_HEADER_LEN, PACK_TARGET, PackWriter, read_trailer};
use crate::tree::{Node, NodeKind, Snapshot, Summary, Tree, Xattr};

pub const REPO_MAGIC: &[u8; 4] = b"ATRB";
pub const REPO_VERSION: u8 = 1;
/// Magic, version, repository id, the vault id it is bound to (zero: none).
const CONFIG_HEADER_LEN: usize = 4 + 1 + REPO_ID_LEN + 16;
const INDEX_ENTRY_LEN: usize = 32 + 32 + 1 + 8 + 4 + 4 + 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    chunk_min: usize,
    chunk_avg: usize,
    chunk_max: usize,
}

/// Choices for one `backup`.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Entries to leave out: a pattern without `/` matches an entry's name,
    /// one with `/` its whole path (`*` does not cross `/`, `**` does).
    pub excludes: Vec<glob::Pattern>,
    /// Do not descend into directories on another file system than the
    /// path given (the mount point itself is kept, empty).
    pub one_file_system: bool,
    /// Read and chunk everything, say what would be stored, store nothing.
    pub dry_run: bool,
}

impl BackupOptions {
    fn excluded(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let name = path.file_name().map(Path::new).unwrap_or(path);
        self.excludes.iter().any(|p| {
            if p.as_str().contains('/') {
                p.matches_path_with(path, options)
            } else {
                p.matches_path_with(name, options)
            }
        })
    }
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
    keys: RepoKeys,
    chunker: Chunker,
    index: BTreeMap<BlobId, Location>,
    binding: Option<[u8; 16]>,
}

impl<B: Backend> Repository<B> {
    /// Creates a repository keyed by `master`, bound to the vault whose id
    /// is `binding` when `master` derives from that vault's key.
    pub fn init(
        backend: B,
        master: &SecretKey,
        sizes: ChunkSizes,
        binding: Option<[u8; 16]>,
    ) -> Result<Self> {
        if backend.exists("config")? {
            return Err(BackupError::AlreadyExists(backend.location()));
        }
        assert!(sizes.valid(), "chunk sizes");
        let repo_id = atrest_core::random_array::<REPO_ID_LEN>();
        let keys = RepoKeys::new(master, repo_id);
        let config = Config {
            chunk_min: sizes.min,
            chunk_avg: sizes.avg,
            chunk_max: sizes.max,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(REPO_MAGIC);
        bytes.push(REPO_VERSION);
        bytes.extend_from_slice(&repo_id);
        bytes.extend_from_slice(&binding.unwrap_or([0; 16]));
        let sealed = keys.seal_file(
            "config",
            &[&bytes[..], &serde_json::to_vec(&config).expect("json")].concat(),
        );
        bytes.extend_from_slice(&sealed);
        backend.put("config", &bytes)?;
        Ok(Self {
            backend,
            chunker: Chunker::new(&keys, sizes),
            keys,
            index: BTreeMap::new(),
            binding,
        })
    }

    /// Reads, without any key, which vault a repository is bound to (so a
    /// caller can say "bound to vault X" instead of "wrong key").
    pub fn binding_of(backend: &B) -> Result<Option<[u8; 16]>> {
        if !backend.exists("config")? {
            return Err(BackupError::NotARepository(backend.location()));
        }
        let bytes = backend.get("config")?;
        if bytes.len() < CONFIG_HEADER_LEN || &bytes[..4] != REPO_MAGIC {
            return Err(BackupError::NotARepository(backend.location()));
        }
        if bytes[4] != REPO_VERSION {
            return Err(BackupError::UnsupportedVersion(bytes[4]));
        }
        let id: [u8; 16] = bytes[5 + REPO_ID_LEN..CONFIG_HEADER_LEN]
            .try_into()
            .expect("16 bytes");
        Ok((id != [0; 16]).then_some(id))
    }

    /// The vault this repository is bound to, if any (authenticated).
    pub fn binding(&self) -> Option<[u8; 16]> {
        self.binding
    }

    pub fn repo_id(&self) -> [u8; REPO_ID_LEN] {
        self.keys.repo_id
    }

    /// Opens a repository; loads its index.
    pub fn open(backend: B, master: &SecretKey) -> Result<Self> {
        if !backend.exists("config")? {
            return Err(BackupError::NotARepository(backend.location()));
        }
        let bytes = backend.get("config")?;
        if bytes.len() < CONFIG_HEADER_LEN || &bytes[..4] != REPO_MAGIC {
            return Err(BackupError::NotARepository(backend.location()));
        }
        if bytes[4] != REPO_VERSION {
            return Err(BackupError::UnsupportedVersion(bytes[4]));
        }
        let repo_id: [u8; REPO_ID_LEN] = bytes[5..5 + REPO_ID_LEN].try_into().expect("16 bytes");
        let bound: [u8; 16] = bytes[5 + REPO_ID_LEN..CONFIG_HEADER_LEN]
            .try_into()
            .expect("16 bytes");
        let keys = RepoKeys::new(master, repo_id);
        let plain = keys
            .open_file("config", "config", &bytes[CONFIG_HEADER_LEN..])
            .map_err(|_| BackupError::WrongKey)?;
        if plain.len() < CONFIG_HEADER_LEN
            || plain[..CONFIG_HEADER_LEN] != bytes[..CONFIG_HEADER_LEN]
        {
            return Err(BackupError::damaged(
                "config",
                "header does not match its sealed copy",
            ));
        }
        let config: Config = serde_json::from_slice(&plain[CONFIG_HEADER_LEN..])
            .map_err(|e| BackupError::damaged("config", e.to_string()))?;
        let sizes = ChunkSizes {
            min: config.chunk_min,
            avg: config.chunk_avg,
            max: config.chunk_max,
        };
        if !sizes.valid() {
            return Err(BackupError::damaged("config", "chunk sizes out of range"));
        }
        let mut repo = Self {
            backend,
            chunker: Chunker::new(&keys, sizes),
            keys,
            index: BTreeMap::new(),
            binding: (bound != [0; 16]).then_some(bound),
        };
        for name in repo.backend.list("index")? {
            for (id, loc) in repo.read_index(&name)? {
                repo.index.insert(id, loc);
            }
        }
        Ok(repo)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn index_entries(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.index.iter()
    }

    /// Copies `blobs` into new packs, drops every entry of `dropped` packs
    /// from the index, and writes one index file of everything left.
    pub(crate) fn rewrite(
        &mut self,
        blobs: &[BlobId],
        dropped: &std::collections::BTreeSet<[u8; 32]>,
    ) -> Result<()> {
        let mut salts = HashMap::new();
        let copies = blobs
            .iter()
            .map(|id| Ok((self.index[id].kind, self.read_blob(id, &mut salts)?)))
            .collect::<Result<Vec<_>>>()?;
        self.index.retain(|_, loc| !dropped.contains(&loc.pack));
        let mut run = Run {
            repo: self,
            pack: None,
            new_index: Vec::new(),
            summary: Summary::default(),
            links: HashMap::new(),
            options: BackupOptions::default(),
            root_dev: 0,
            pending: Default::default(),
            pending_bytes: 0,
        };
        for (kind, data) in copies {
            run.store(kind, data)?;
        }
        run.flush()?;
        let all: Vec<(BlobId, Location)> = self.index.iter().map(|(i, l)| (*i, *l)).collect();
        self.write_index(&all)
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
        let h = hex(pack);
        format!("data/{}/{h}", &h[..2])
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
                let header = self.backend.get_range(&name, 0, PACK_HEADER_LEN)?;
                let salt: [u8; 32] = header[8..40].try_into().expect("32");
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

    /// [`Repository::backup`] with excludes, `--one-file-system` or a dry
    /// run (which returns an empty id and stores nothing).
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
        let mut run = Run {
            repo: self,
            pack: None,
            new_index: adopted,
            summary: Summary::default(),
            links: HashMap::new(),
            options: options.clone(),
            root_dev: 0,
            pending: Default::default(),
            pending_bytes: 0,
        };
        let mut root = Tree::default();
        for path in paths {
            let md = fs::symlink_metadata(path).map_err(BackupError::file(path))?;
            run.root_dev = md.dev();
            let node = run.node(path, path.as_os_str().as_bytes().to_vec(), &md)?;
            root.nodes.push(node);
        }
        let tree = run.store_tree(&root)?;
        run.flush()?;
        let Run {
            new_index, summary, ..
        } = run;
        if !options.dry_run {
            self.write_index(&new_index)?;
        }
        let snapshot = Snapshot {
            version: 1,
            time_ms: meta.time_ms,
            hostname: meta.hostname.clone(),
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            tags: meta.tags.clone(),
            tree: hex(&tree),
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
        let known: std::collections::BTreeSet<[u8; 32]> =
            self.index.values().map(|l| l.pack).collect();
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
        let bytes = self.read_blob(&id, salts)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::damaged(format!("tree {id_hex}"), e.to_string()))
    }

    /// Restores a snapshot under `target` (each backed-up path below it,
    /// without its leading `/`). Files whose blobs fail are left out and
    /// reported; nothing unauthenticated is ever written.
    pub fn restore(&self, snapshot: &str, target: &Path) -> Result<RestoreReport> {
        let (_, snap) = self.snapshot(snapshot)?;
        let mut salts = HashMap::new();
        let root = self.load_tree(&snap.tree, &mut salts)?;
        let mut report = RestoreReport::default();
        fs::create_dir_all(target).map_err(BackupError::file(target))?;
        let mut dirs = Vec::new();
        let mut links = HashMap::new();
        for node in &root.nodes {
            let rel = Path::new(std::ffi::OsStr::from_bytes(&node.name));
            let rel = rel.strip_prefix("/").unwrap_or(rel);
            let dest = target.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(BackupError::file(parent))?;
            }
            self.restore_node(node, &dest, &mut salts, &mut report, &mut dirs, &mut links);
        }
        // Directory times last, deepest first: restoring their entries
        // changed them.
        for (path, node) in dirs.iter().rev() {
            set_times(path, node);
        }
        Ok(report)
    }

    fn restore_node(
        &self,
        node: &Node,
        dest: &Path,
        salts: &mut HashMap<[u8; 32], [u8; 32]>,
        report: &mut RestoreReport,
        dirs: &mut Vec<(PathBuf, Node)>,
        links: &mut HashMap<u64, PathBuf>,
    ) {
        let result = (|| -> Result<()> {
            match node.kind {
                NodeKind::Dir => {
                    match fs::create_dir(dest) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(BackupError::file(dest)(e)),
                    }
                    dirs.push((dest.to_path_buf(), node.clone()));
                    if let Some(sub) = &node.subtree {
                        let tree = self.load_tree(sub, salts)?;
                        for child in &tree.nodes {
                            let name = std::ffi::OsStr::from_bytes(&child.name);
                            self.restore_node(child, &dest.join(name), salts, report, dirs, links);
                        }
                    }
                    set_owner_mode(dest, node)
                }
                NodeKind::File if node.hardlink.is_some_and(|g| links.contains_key(&g)) => {
                    let first = &links[&node.hardlink.expect("checked")];
                    fs::hard_link(first, dest).map_err(BackupError::file(dest))?;
                    report.files += 1;
                    Ok(())
                }
                NodeKind::File => {
                    // Write to a temporary name; rename only once every blob
                    // opened, so a damaged file never appears with wrong bytes.
                    let tmp = dest.with_file_name(format!(
                        ".atrest-restore-{}",
                        hex(&atrest_core::random_array::<6>())
                    ));
                    let mut write = || -> Result<u64> {
                        let mut f = fs::File::create(&tmp).map_err(BackupError::file(&tmp))?;
                        let mut n = 0u64;
                        for id in &node.content {
                            let data = self.read_blob(&parse_id(id)?, salts)?;
                            // Zero chunks become holes: sparse files stay sparse.
                            if data.len() >= 4096 && data.iter().all(|b| *b == 0) {
                                std::io::Seek::seek(
                                    &mut f,
                                    std::io::SeekFrom::Current(data.len() as i64),
                                )
                                .map_err(BackupError::file(&tmp))?;
                            } else {
                                std::io::Write::write_all(&mut f, &data)
                                    .map_err(BackupError::file(&tmp))?;
                            }
                            n += data.len() as u64;
                        }
                        f.set_len(n).map_err(BackupError::file(&tmp))?;
                        f.sync_all().map_err(BackupError::file(&tmp))?;
                        Ok(n)
                    };
                    match write() {
                        Ok(n) => {
                            fs::rename(&tmp, dest).map_err(BackupError::file(dest))?;
                            report.files += 1;
                            report.bytes += n;
                            if let Some(g) = node.hardlink {
                                links.insert(g, dest.to_path_buf());
                            }
                        }
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(e);
                        }
                    }
                    set_owner_mode(dest, node)?;
                    set_times(dest, node);
                    Ok(())
                }
                NodeKind::Symlink => {
                    let target = std::ffi::OsStr::from_bytes(&node.target);
                    std::os::unix::fs::symlink(target, dest).map_err(BackupError::file(dest))?;
                    let _ = std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid));
                    set_times(dest, node);
                    Ok(())
                }
                NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                    let kind = match node.kind {
                        NodeKind::Fifo => rustix::fs::FileType::Fifo,
                        NodeKind::Chardev => rustix::fs::FileType::CharacterDevice,
                        NodeKind::Blockdev => rustix::fs::FileType::BlockDevice,
                        _ => rustix::fs::FileType::Socket,
                    };
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        dest,
                        kind,
                        rustix::fs::Mode::from_raw_mode(node.mode & 0o7777),
                        node.rdev,
                    )
                    .map_err(|e| BackupError::file(dest)(e.into()))?;
                    set_owner_mode(dest, node)?;
                    set_times(dest, node);
                    Ok(())
                }
            }
        })();
        if let Err(e) = result {
            report.failed.push(format!("{}: {e}", dest.display()));
        }
    }

    /// Checks every snapshot, tree and index entry; with `read_data`, reads
    /// every pack and opens every blob.
    pub fn check(&self, read_data: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut salts = HashMap::new();
        for name in self.backend.list("index")? {
            if let Err(e) = self.read_index(&name) {
                report.problems.push(e.to_string());
            }
        }
        for name in self.backend.list("snapshots")? {
            match self.load_snapshot_file(&name) {
                Ok(snap) => {
                    report.snapshots += 1;
                    let mut stack = vec![snap.tree.clone()];
                    while let Some(t) = stack.pop() {
                        match self.load_tree(&t, &mut salts) {
                            Ok(tree) => {
                                report.trees += 1;
                                for node in &tree.nodes {
                                    if let Some(sub) = &node.subtree {
                                        stack.push(sub.clone());
                                    }
                                    for id in &node.content {
                                        match parse_id(id) {
                                            Ok(id) if self.index.contains_key(&id) => {}
                                            _ => report.problems.push(format!(
                                                "blob {id} is missing from the repository"
                                            )),
                                        }
                                    }
                                }
                            }
                            Err(e) => report.problems.push(e.to_string()),
                        }
                    }
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        if read_data {
            for name in self.backend.list("data")? {
                let Some(pack) = name.rsplit('/').next().and_then(|h| parse_id(h).ok()) else {
                    report.problems.push(format!("{name}: not a pack name"));
                    continue;
                };
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

/// The state of one `backup`: the open pack and the new index entries.
struct Run<'r, B: Backend> {
    repo: &'r mut Repository<B>,
    pack: Option<Vec<(BlobKind, BlobId, Vec<u8>)>>,
    new_index: Vec<(BlobId, Location)>,
    summary: Summary,
    /// Inodes with several names seen so far: (dev, ino) → group, size, content.
    links: HashMap<(u64, u64), (u64, u64, Vec<String>)>,
    options: BackupOptions,
    /// The device of the path being backed up (for --one-file-system).
    root_dev: u64,
    /// Ids and plaintext bytes in the open pack (dedup and the size check
    /// without a walk over the pack at every blob).
    pending: std::collections::HashSet<BlobId>,
    pending_bytes: usize,
}

impl<B: Backend> Run<'_, B> {
    /// Stores a blob unless the repository already has it.
    fn store(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.repo.keys.blob_id(&data);
        if self.repo.index.contains_key(&id) || self.pending.contains(&id) {
            return Ok(id);
        }
        self.summary.new_blobs += 1;
        self.summary.new_bytes += data.len() as u64;
        self.pending.insert(id);
        if self.options.dry_run {
            // Counted once; a dry run never writes a pack, so `pending`
            // keeps every id it would have stored.
            return Ok(id);
        }
        self.pending_bytes += data.len();
        self.pack
            .get_or_insert_with(Vec::new)
            .push((kind, id, data));
        if self.pending_bytes >= PACK_TARGET {
            self.flush()?;
        }
        Ok(id)
    }

    /// Seals and writes the open pack.
    fn flush(&mut self) -> Result<()> {
        let Some(blobs) = self.pack.take() else {
            return Ok(());
        };
        // Once written, the index holds them.
        self.pending.clear();
        self.pending_bytes = 0;
        let mut writer = PackWriter::new(&self.repo.keys);
        for (kind, id, data) in &blobs {
            writer.add(*kind, *id, data)?;
        }
        let (bytes, name, entries) = writer.finish();
        self.repo
            .backend
            .put(&Repository::<B>::pack_name(&name), &bytes)?;
        self.summary.packs += 1;
        for e in entries {
            let loc = e.location(name);
            self.repo.index.insert(e.id, loc);
            self.new_index.push((e.id, loc));
        }
        Ok(())
    }

    fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        self.store(BlobKind::Tree, serde_json::to_vec(tree).expect("json"))
    }

    fn node(&mut self, path: &Path, name: Vec<u8>, md: &fs::Metadata) -> Result<Node> {
        let ft = md.file_type();
        let kind = if ft.is_file() {
            NodeKind::File
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::Chardev
        } else if ft.is_block_device() {
            NodeKind::Blockdev
        } else {
            NodeKind::Socket
        };
        let mut node = Node {
            name,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: Vec::new(),
            rdev: 0,
            hardlink: None,
            xattrs: read_xattrs(path),
        };
        match kind {
            NodeKind::File => {
                self.summary.files += 1;
                if md.nlink() > 1 {
                    let next = self.links.len() as u64 + 1;
                    if let Some((group, size, content)) = self.links.get(&(md.dev(), md.ino())) {
                        node.hardlink = Some(*group);
                        node.size = *size;
                        node.content = content.clone();
                        return Ok(node);
                    }
                    let (size, content) = self.file(path)?;
                    self.links
                        .insert((md.dev(), md.ino()), (next, size, content.clone()));
                    node.hardlink = Some(next);
                    node.size = size;
                    node.content = content;
                } else {
                    let (size, content) = self.file(path)?;
                    node.size = size;
                    node.content = content;
                }
            }
            NodeKind::Dir => {
                self.summary.dirs += 1;
                let mut entries: Vec<_> = fs::read_dir(path)
                    .map_err(BackupError::file(path))?
                    .collect::<std::io::Result<_>>()
                    .map_err(BackupError::file(path))?;
                entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
                let mut tree = Tree::default();
                let descend = !(self.options.one_file_system && md.dev() != self.root_dev);
                for entry in entries.into_iter().filter(|_| descend) {
                    let child = entry.path();
                    if self.options.excluded(&child) {
                        continue;
                    }
                    let result = fs::symlink_metadata(&child)
                        .map_err(BackupError::file(&child))
                        .and_then(|md| {
                            self.node(&child, entry.file_name().as_bytes().to_vec(), &md)
                        });
                    match result {
                        Ok(n) => tree.nodes.push(n),
                        Err(e @ BackupError::File { .. }) => {
                            self.summary.errors.push(e.to_string())
                        }
                        Err(e) => return Err(e),
                    }
                }
                node.subtree = Some(hex(&self.store_tree(&tree)?));
            }
            NodeKind::Symlink => {
                self.summary.others += 1;
                node.target = fs::read_link(path)
                    .map_err(BackupError::file(path))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
            }
            _ => {
                self.summary.others += 1;
                node.rdev = md.rdev();
            }
        }
        Ok(node)
    }

    /// Chunks and stores one file; returns its size and blob ids.
    fn file(&mut self, path: &Path) -> Result<(u64, Vec<String>)> {
        let mut f = fs::File::open(path).map_err(BackupError::file(path))?;
        let max = self.repo.chunker.sizes().max;
        // Grows with what is read (a small file allocates little); never
        // zero-filled ahead of the read.
        let mut buf: Vec<u8> = Vec::new();
        let mut eof = false;
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            if !eof && buf.len() < max {
                let want = max - buf.len();
                let n = (&mut f)
                    .take(want as u64)
                    .read_to_end(&mut buf)
                    .map_err(BackupError::file(path))?;
                eof = n < want;
            }
            if buf.is_empty() {
                break;
            }
            let cut = self.repo.chunker.cut(&buf);
            let chunk: Vec<u8> = buf.drain(..cut).collect();
            size += chunk.len() as u64;
            self.summary.bytes += chunk.len() as u64;
            ids.push(hex(&self.store(BlobKind::Data, chunk)?));
        }
        Ok((size, ids))
    }
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

fn set_owner_mode(path: &Path, node: &Node) -> Result<()> {
    set_xattrs(path, node)?;
    // Owners only as root; elsewhere the restoring user owns everything.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .map_err(BackupError::file(path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
        .map_err(BackupError::file(path))
}

fn set_times(path: &Path, node: &Node) {
    let t = rustix::fs::Timespec {
        tv_sec: node.mtime_sec,
        tv_nsec: i64::from(node.mtime_nsec),
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// The extended attributes of `path` (not following a symlink); none when
/// the file system has none or refuses to list them.
fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let mut names = vec![0u8; 64 << 10];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 64 << 10];
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let os = std::ffi::OsStr::from_bytes(name);
        if let Ok(n) = rustix::fs::lgetxattr(path, os, &mut value[..]) {
            out.push(Xattr {
                name: name.to_vec(),
                value: value[..n].to_vec(),
            });
        }
    }
    out
}

fn set_xattrs(path: &Path, node: &Node) -> Result<()> {
    for x in &node.xattrs {
        rustix::fs::lsetxattr(
            path,
            std::ffi::OsStr::from_bytes(&x.name),
            &x.value,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| BackupError::File {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!(
                    "extended attribute {} not restored: {e}",
                    String::from_utf8_lossy(&x.name)
                ),
            ),
        })?;
    }
    Ok(())
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
        let mut salts = HashMap::new();
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), snap.tree.clone())];
        while let Some((prefix, tree)) = stack.pop() {
            let tree = self.load_tree(&tree, &mut salts)?;
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
