//! Object records (docs/format.md §16.6): every file, directory, symlink
//! and special file is one 256-byte record in the object table, in one
//! canonical form. Bytes 0–111 are the record's *head*, which log records
//! carry.

use atrest_core::ContentAlgorithm;

use crate::bytes::{Put, Reader, is_zero};
use crate::page::{PageRef, REF_LEN};
use crate::superblock::Root;

/// Plaintext bytes per content block of a regular file.
pub const BLOCK_SIZE: usize = 4096;
pub const RECORD_LEN: usize = 256;
pub const HEAD_LEN: usize = 112;
const CONTENT_LEN: usize = 96;
/// The root directory's object id.
pub const ROOT_ID: u64 = 1;
/// Longest symlink target (the kernel's PATH_MAX less the NUL).
pub const MAX_TARGET: usize = 4095;
/// Longest symlink target kept inside the record.
pub const INLINE_TARGET: usize = CONTENT_LEN;
/// Deepest directory tree or block map.
pub const MAX_TREE_DEPTH: u8 = 6;

const FLAG_INLINE: u8 = 1;
const FLAG_ORPHAN: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Regular = 1,
    Directory = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl ObjectKind {
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            1 => Self::Regular,
            2 => Self::Directory,
            3 => Self::Symlink,
            4 => Self::Fifo,
            5 => Self::Socket,
            6 => Self::CharDevice,
            7 => Self::BlockDevice,
            _ => return None,
        })
    }

    pub fn is_device(self) -> bool {
        matches!(self, Self::CharDevice | Self::BlockDevice)
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// The wall clock: what the times of files made or changed now are.
    #[allow(
        clippy::disallowed_methods,
        reason = "file times are the wall clock, as on any file system"
    )]
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }

    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let t = Self {
            secs: r.i64()?,
            nanos: r.u32()?,
        };
        (t.nanos < 1_000_000_000).then_some(t)
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.put_i64(self.secs).put_u32(self.nanos);
    }
}

/// A block's map entry (§16.9): where its nonce and tag live, since the
/// data file holds only ciphertext. A hole is never read from the disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapEntry {
    Hole,
    /// The block's nonce ‖ tag; the algorithm's overhead bytes are used
    /// (28 for AES-256-GCM, 40 for XChaCha20-Poly1305), the rest zero.
    Sealed([u8; 40]),
}

impl std::fmt::Debug for MapEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hole => f.write_str("Hole"),
            Self::Sealed(b) => write!(f, "Sealed({:02x}{:02x}…)", b[0], b[1]),
        }
    }
}

impl MapEntry {
    /// Bytes of one entry: 32 (GCM) or 48 (XChaCha).
    pub fn len(algorithm: ContentAlgorithm) -> usize {
        match algorithm {
            ContentAlgorithm::Aes256Gcm => 32,
            ContentAlgorithm::XChaCha20Poly1305 => 48,
        }
    }

    pub fn encode(&self, algorithm: ContentAlgorithm, out: &mut Vec<u8>) {
        let len = Self::len(algorithm);
        match self {
            Self::Hole => {
                out.put_zeros(len);
            }
            Self::Sealed(nonce_tag) => {
                let used = algorithm.overhead();
                out.put(&nonce_tag[..used])
                    .put_u8(1)
                    .put_zeros(len - used - 1);
            }
        }
    }

    /// Decodes one entry of `algorithm`'s length.
    pub fn decode(algorithm: ContentAlgorithm, bytes: &[u8]) -> Option<Self> {
        let used = algorithm.overhead();
        if bytes.len() != Self::len(algorithm) {
            return None;
        }
        match bytes[used] {
            0 if is_zero(bytes) => Some(Self::Hole),
            1 if is_zero(&bytes[used + 1..]) => {
                let mut nonce_tag = [0u8; 40];
                nonce_tag[..used].copy_from_slice(&bytes[..used]);
                Some(Self::Sealed(nonce_tag))
            }
            _ => None,
        }
    }
}

/// Blocks of a regular file kept in its record (§16.6).
pub fn inline_blocks(algorithm: ContentAlgorithm) -> u64 {
    (CONTENT_LEN / MapEntry::len(algorithm)) as u64
}

/// Blocks covering `size` bytes.
pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

/// The part of a record that log records carry (bytes 0–111).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectHead {
    pub id: u64,
    pub kind: ObjectKind,
    /// The record's content is inline (canonical: see [`ObjectRecord`]).
    pub inline: bool,
    /// No name left, still open at the last checkpoint.
    pub orphan: bool,
    /// Permission bits, set-id and sticky included.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub atime: Timestamp,
    pub btime: Timestamp,
    pub rdev: u64,
    /// A directory's parent (the root's is itself); 0 otherwise.
    pub parent: u64,
    /// A regular file's random id (its blocks' key and AAD); 0 otherwise.
    pub file_id: [u8; 16],
}

/// A head as a log record carries it: an object's new head, or its slot
/// freed (kind 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadChange {
    Set(ObjectHead),
    Freed(u64),
}

impl HeadChange {
    pub fn id(&self) -> u64 {
        match self {
            Self::Set(h) => h.id,
            Self::Freed(id) => *id,
        }
    }

    pub fn encode(&self) -> [u8; HEAD_LEN] {
        match self {
            Self::Set(head) => head.encode(),
            Self::Freed(id) => {
                let mut out = [0u8; HEAD_LEN];
                out[..8].copy_from_slice(&id.to_be_bytes());
                out
            }
        }
    }

    /// Decodes a head: a freed slot is its id and zeros.
    pub fn decode(bytes: &[u8; HEAD_LEN]) -> Result<Self, String> {
        let id = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        if id == 0 {
            return Err("object id 0".into());
        }
        if bytes[8] == 0 {
            return if is_zero(&bytes[8..]) {
                Ok(Self::Freed(id))
            } else {
                Err("a freed head with fields set".into())
            };
        }
        ObjectHead::decode(bytes).map(Self::Set)
    }
}

impl ObjectHead {
    pub fn encode(&self) -> [u8; HEAD_LEN] {
        let mut out = Vec::with_capacity(HEAD_LEN);
        let flags =
            if self.inline { FLAG_INLINE } else { 0 } | if self.orphan { FLAG_ORPHAN } else { 0 };
        out.put_u64(self.id)
            .put_u8(self.kind.id())
            .put_u8(flags)
            .put_u16(self.mode)
            .put_u32(self.uid)
            .put_u32(self.gid)
            .put_u32(self.nlink)
            .put_u64(self.size);
        for t in [self.mtime, self.ctime, self.atime, self.btime] {
            t.put(&mut out);
        }
        out.put_u64(self.rdev)
            .put_u64(self.parent)
            .put(&self.file_id);
        out.try_into().expect("112 bytes")
    }

    /// Decodes and checks the fields a head alone decides.
    pub fn decode(bytes: &[u8; HEAD_LEN]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let id = r.u64().expect("in head");
        let kind = ObjectKind::from_id(r.u8().expect("in head"))
            .ok_or_else(|| format!("object {id}: unknown kind"))?;
        let flags = r.u8().expect("in head");
        let mode = r.u16().expect("in head");
        let (uid, gid, nlink) = (
            r.u32().expect("in head"),
            r.u32().expect("in head"),
            r.u32().expect("in head"),
        );
        let size = r.u64().expect("in head");
        let mut times = [Timestamp::default(); 4];
        for t in &mut times {
            *t = Timestamp::read(&mut r).ok_or_else(|| format!("object {id}: bad time"))?;
        }
        let [mtime, ctime, atime, btime] = times;
        let (rdev, parent) = (r.u64().expect("in head"), r.u64().expect("in head"));
        let file_id: [u8; 16] = r.array().expect("in head");
        let head = Self {
            id,
            kind,
            inline: flags & FLAG_INLINE != 0,
            orphan: flags & FLAG_ORPHAN != 0,
            mode,
            uid,
            gid,
            nlink,
            size,
            mtime,
            ctime,
            atime,
            btime,
            rdev,
            parent,
            file_id,
        };
        if id == 0 {
            return Err("object id 0".into());
        }
        if flags & !(FLAG_INLINE | FLAG_ORPHAN) != 0 {
            return Err(format!("object {id}: unknown flags {flags:#x}"));
        }
        if mode > 0o7777 {
            return Err(format!("object {id}: mode {mode:o} has type bits"));
        }
        if rdev != 0 && !kind.is_device() {
            return Err(format!("object {id}: a device number on a non-device"));
        }
        match kind {
            ObjectKind::Directory if parent == 0 => {
                return Err(format!("directory {id} without a parent"));
            }
            ObjectKind::Directory => {}
            _ if parent != 0 => return Err(format!("object {id}: a parent on a non-directory")),
            _ => {}
        }
        if (kind == ObjectKind::Regular) == is_zero(&file_id) {
            return Err(format!(
                "object {id}: file id set on the wrong kind, or missing"
            ));
        }
        match kind {
            ObjectKind::Symlink if !(1..=MAX_TARGET as u64).contains(&size) => {
                return Err(format!("symlink {id}: target of {size} bytes"));
            }
            ObjectKind::Fifo
            | ObjectKind::Socket
            | ObjectKind::CharDevice
            | ObjectKind::BlockDevice
                if size != 0 =>
            {
                return Err(format!("special file {id} with a size"));
            }
            _ => {}
        }
        if head.orphan && kind == ObjectKind::Directory {
            return Err(format!("directory {id} marked orphan"));
        }
        Ok(head)
    }
}

/// What a record's content bytes (112–207) hold, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// FIFO, socket, devices.
    None,
    /// A regular file of few blocks: the entries of blocks
    /// `0 .. blocks_for(size)`.
    InlineMap(Vec<MapEntry>),
    /// A regular file's block map or a directory's entry tree.
    Tree(Root),
    /// A symlink target of at most 96 bytes.
    InlineTarget(Vec<u8>),
    /// A longer symlink target, in blob pages.
    Blob(PageRef),
}

/// One object's full record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    pub head: ObjectHead,
    pub content: Content,
    /// The first xattr page, or null.
    pub xattrs: PageRef,
    /// Sequence number of the last log record that changed this record.
    pub changed_at: u64,
}

impl ObjectRecord {
    /// The 256 bytes of the record. Panics on a non-canonical record:
    /// what the store builds is canonical by construction.
    pub fn encode(&self, algorithm: ContentAlgorithm) -> [u8; RECORD_LEN] {
        debug_assert_eq!(self.check(algorithm), Ok(()));
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.put(&self.head.encode());
        match &self.content {
            Content::None => {}
            Content::InlineMap(entries) => {
                for e in entries {
                    e.encode(algorithm, &mut out);
                }
            }
            Content::Tree(root) => {
                out.put(&root.reference.encode()).put_u8(root.depth);
            }
            Content::InlineTarget(target) => {
                out.put(target);
            }
            Content::Blob(reference) => {
                out.put(&reference.encode());
            }
        }
        out.resize(HEAD_LEN + CONTENT_LEN, 0);
        out.put(&self.xattrs.encode()).put_u64(self.changed_at);
        out.try_into().expect("256 bytes")
    }

    /// Decodes one slot: `None` for a free one (256 zero bytes).
    pub fn decode(
        algorithm: ContentAlgorithm,
        bytes: &[u8; RECORD_LEN],
    ) -> Result<Option<Self>, String> {
        if is_zero(bytes) {
            return Ok(None);
        }
        let head_bytes: &[u8; HEAD_LEN] = bytes[..HEAD_LEN].try_into().expect("112 bytes");
        let head = match HeadChange::decode(head_bytes)? {
            HeadChange::Set(head) => head,
            HeadChange::Freed(id) => {
                return Err(format!("slot of object {id}: kind 0 with fields set"));
            }
        };
        let content_bytes = &bytes[HEAD_LEN..HEAD_LEN + CONTENT_LEN];
        let mut r = Reader::new(&bytes[HEAD_LEN + CONTENT_LEN..]);
        let xattrs = PageRef::read(&mut r)
            .ok_or_else(|| format!("object {}: bad xattr reference", head.id))?;
        let changed_at = r.u64().expect("in record");
        let content = decode_content(algorithm, &head, content_bytes)?;
        let record = Self {
            head,
            content,
            xattrs,
            changed_at,
        };
        record.check(algorithm)?;
        Ok(Some(record))
    }

    /// The canonical-form rules of §16.6 that tie head and content.
    pub fn check(&self, algorithm: ContentAlgorithm) -> Result<(), String> {
        let id = self.head.id;
        let inline = self.head.inline;
        let ok = match (&self.head.kind, &self.content) {
            (ObjectKind::Regular, Content::InlineMap(entries)) => {
                let blocks = blocks_for(self.head.size);
                inline && blocks <= inline_blocks(algorithm) && entries.len() as u64 == blocks
            }
            (ObjectKind::Regular, Content::Tree(root)) => {
                !inline
                    && blocks_for(self.head.size) > inline_blocks(algorithm)
                    && root.depth <= MAX_TREE_DEPTH
            }
            (ObjectKind::Directory, Content::Tree(root)) => {
                !inline
                    && root.depth <= MAX_TREE_DEPTH
                    && (root.depth == 0 || !root.reference.is_null())
            }
            (ObjectKind::Symlink, Content::InlineTarget(t)) => {
                inline && t.len() <= INLINE_TARGET && t.len() as u64 == self.head.size
            }
            (ObjectKind::Symlink, Content::Blob(r)) => {
                !inline && self.head.size > INLINE_TARGET as u64 && !r.is_null()
            }
            (
                ObjectKind::Fifo
                | ObjectKind::Socket
                | ObjectKind::CharDevice
                | ObjectKind::BlockDevice,
                Content::None,
            ) => !inline,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("object {id}: content not in its canonical form"))
        }
    }
}

fn decode_content(
    algorithm: ContentAlgorithm,
    head: &ObjectHead,
    bytes: &[u8],
) -> Result<Content, String> {
    let id = head.id;
    let bad = || format!("object {id}: bad content bytes");
    let tree = |bytes: &[u8]| -> Result<Content, String> {
        let reference =
            PageRef::decode(bytes[..REF_LEN].try_into().expect("40 bytes")).ok_or_else(bad)?;
        let depth = bytes[REF_LEN];
        if !is_zero(&bytes[REF_LEN + 1..]) {
            return Err(bad());
        }
        Ok(Content::Tree(Root { reference, depth }))
    };
    Ok(match head.kind {
        ObjectKind::Regular if head.inline => {
            let len = MapEntry::len(algorithm);
            let blocks = usize::try_from(blocks_for(head.size)).map_err(|_| bad())?;
            if blocks as u64 > inline_blocks(algorithm) {
                return Err(bad());
            }
            let entries = (0..blocks)
                .map(|i| {
                    MapEntry::decode(algorithm, &bytes[i * len..(i + 1) * len]).ok_or_else(bad)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !is_zero(&bytes[blocks * len..]) {
                return Err(bad());
            }
            Content::InlineMap(entries)
        }
        ObjectKind::Regular | ObjectKind::Directory => tree(bytes)?,
        ObjectKind::Symlink if head.inline => {
            let len = usize::try_from(head.size).map_err(|_| bad())?;
            if len > INLINE_TARGET || !is_zero(&bytes[len..]) {
                return Err(bad());
            }
            Content::InlineTarget(bytes[..len].to_vec())
        }
        ObjectKind::Symlink => {
            let reference =
                PageRef::decode(bytes[..REF_LEN].try_into().expect("40 bytes")).ok_or_else(bad)?;
            if !is_zero(&bytes[REF_LEN..]) {
                return Err(bad());
            }
            Content::Blob(reference)
        }
        _ => {
            if !is_zero(bytes) {
                return Err(bad());
            }
            Content::None
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;
    const XCHACHA: ContentAlgorithm = ContentAlgorithm::XChaCha20Poly1305;

    fn head(id: u64, kind: ObjectKind) -> ObjectHead {
        ObjectHead {
            id,
            kind,
            inline: false,
            orphan: false,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            nlink: 1,
            size: 0,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
            ctime: Timestamp {
                secs: 1_700_000_001,
                nanos: 6,
            },
            atime: Timestamp {
                secs: -1,
                nanos: 999_999_999,
            },
            btime: Timestamp { secs: 0, nanos: 0 },
            rdev: 0,
            parent: if kind == ObjectKind::Directory { 1 } else { 0 },
            file_id: if kind == ObjectKind::Regular {
                [0x11; 16]
            } else {
                [0; 16]
            },
        }
    }

    fn record(head: ObjectHead, content: Content) -> ObjectRecord {
        ObjectRecord {
            head,
            content,
            xattrs: PageRef::NULL,
            changed_at: 9,
        }
    }

    fn sealed(b: u8) -> MapEntry {
        MapEntry::Sealed([b; 40])
    }

    fn round_trip(algorithm: ContentAlgorithm, r: &ObjectRecord) {
        let mut r = r.clone();
        // Bytes past the algorithm's nonce and tag are not stored.
        if let Content::InlineMap(entries) = &mut r.content {
            for e in entries {
                if let MapEntry::Sealed(b) = e {
                    b[algorithm.overhead()..].fill(0);
                }
            }
        }
        let bytes = r.encode(algorithm);
        assert_eq!(ObjectRecord::decode(algorithm, &bytes).unwrap(), Some(r));
    }

    #[test]
    fn every_kind_round_trips_in_its_canonical_form() {
        let regular_inline = ObjectHead {
            inline: true,
            size: 9000,
            ..head(5, ObjectKind::Regular)
        };
        round_trip(
            GCM,
            &record(
                regular_inline.clone(),
                Content::InlineMap(vec![sealed(1), MapEntry::Hole, sealed(3)]),
            ),
        );
        let empty = ObjectHead {
            inline: true,
            ..head(5, ObjectKind::Regular)
        };
        round_trip(XCHACHA, &record(empty, Content::InlineMap(vec![])));
        let big = ObjectHead {
            size: 3 * 4096 + 1,
            ..head(6, ObjectKind::Regular)
        };
        let root = Root {
            reference: PageRef::to_sealed(9, &[1; 4096]),
            depth: 1,
        };
        round_trip(GCM, &record(big, Content::Tree(root)));
        round_trip(
            GCM,
            &record(
                head(7, ObjectKind::Directory),
                Content::Tree(Root {
                    reference: PageRef::NULL,
                    depth: 0,
                }),
            ),
        );
        let link = ObjectHead {
            inline: true,
            size: 96,
            ..head(8, ObjectKind::Symlink)
        };
        round_trip(GCM, &record(link, Content::InlineTarget(vec![b'x'; 96])));
        let long = ObjectHead {
            size: 97,
            ..head(8, ObjectKind::Symlink)
        };
        round_trip(GCM, &record(long, Content::Blob(root.reference)));
        let dev = ObjectHead {
            rdev: 0x0801,
            ..head(10, ObjectKind::BlockDevice)
        };
        round_trip(GCM, &record(dev, Content::None));
        round_trip(GCM, &record(head(11, ObjectKind::Fifo), Content::None));
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        // Four blocks cannot be inline with GCM; three cannot with XChaCha.
        let four = ObjectHead {
            inline: true,
            size: 3 * 4096 + 1,
            ..head(5, ObjectKind::Regular)
        };
        let r = record(four, Content::InlineMap(vec![MapEntry::Hole; 4]));
        assert!(r.check(GCM).is_err());
        let three = ObjectHead {
            inline: true,
            size: 3 * 4096,
            ..head(5, ObjectKind::Regular)
        };
        assert!(
            record(three.clone(), Content::InlineMap(vec![MapEntry::Hole; 3]))
                .check(XCHACHA)
                .is_err()
        );
        assert!(
            record(three, Content::InlineMap(vec![MapEntry::Hole; 3]))
                .check(GCM)
                .is_ok()
        );
        // A small file with a tree, a short target in a blob.
        let small = ObjectHead {
            size: 10,
            ..head(5, ObjectKind::Regular)
        };
        assert!(
            record(
                small,
                Content::Tree(Root {
                    reference: PageRef::NULL,
                    depth: 0
                })
            )
            .check(GCM)
            .is_err()
        );
        let short = ObjectHead {
            size: 5,
            ..head(8, ObjectKind::Symlink)
        };
        assert!(
            record(short, Content::Blob(PageRef::to_sealed(2, &[0; 4096])))
                .check(GCM)
                .is_err()
        );
    }

    #[test]
    fn head_rules_are_checked() {
        let bad_heads = [
            ObjectHead {
                mode: 0o100644,
                ..head(5, ObjectKind::Regular)
            },
            ObjectHead {
                file_id: [0; 16],
                ..head(5, ObjectKind::Regular)
            },
            ObjectHead {
                parent: 0,
                ..head(5, ObjectKind::Directory)
            },
            ObjectHead {
                parent: 3,
                ..head(5, ObjectKind::Fifo)
            },
            ObjectHead {
                rdev: 1,
                ..head(5, ObjectKind::Fifo)
            },
            ObjectHead {
                size: 0,
                ..head(5, ObjectKind::Symlink)
            },
            ObjectHead {
                size: 4096,
                ..head(5, ObjectKind::Symlink)
            },
            ObjectHead {
                size: 1,
                ..head(5, ObjectKind::Socket)
            },
        ];
        for h in bad_heads {
            assert!(ObjectHead::decode(&h.encode()).is_err(), "{h:?}");
        }
        let mut bytes = head(5, ObjectKind::Regular).encode();
        bytes[9] = 4;
        assert!(ObjectHead::decode(&bytes).is_err(), "unknown flag");
        let mut bytes = head(5, ObjectKind::Regular).encode();
        bytes[32 + 8..32 + 12].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert!(ObjectHead::decode(&bytes).is_err(), "nanoseconds");
    }

    #[test]
    fn freed_heads_and_free_slots() {
        let freed = HeadChange::Freed(77);
        assert_eq!(HeadChange::decode(&freed.encode()).unwrap(), freed);
        let mut bytes = freed.encode();
        bytes[20] = 1;
        assert!(HeadChange::decode(&bytes).is_err());
        assert_eq!(ObjectRecord::decode(GCM, &[0; RECORD_LEN]).unwrap(), None);
    }

    proptest! {
        #[test]
        fn any_record_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), RECORD_LEN)) {
            let bytes: [u8; RECORD_LEN] = bytes.try_into().unwrap();
            let _ = ObjectRecord::decode(GCM, &bytes);
            let _ = ObjectRecord::decode(XCHACHA, &bytes);
        }
    }
}
