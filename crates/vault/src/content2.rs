//! File contents of format 2 vaults (docs/format.md §16.9): every block a
//! full 4,096-byte plaintext sealed under a per-file key with `AAD =
//! file id ‖ block number`; the 4,096 ciphertext bytes go to the file's
//! data file (or, journaled, through the log), the nonce and tag into
//! the block map kept by atrest-meta. There is no unauthenticated zero
//! block: a hole is a map entry, never bytes on the disk.
//!
//! [`ContentKey2`] is the vault's content key; it derives a
//! [`FileCipher2`] per file and answers the store's [`BlockVerifier`]
//! questions at recovery. [`ContentFile2`] reads and writes plaintext at
//! any offset through an open [`Store`], resealing partial blocks.
//!
//! ```
//! # use std::sync::Arc;
//! # use atrest_core::{ContentAlgorithm, SecretKey};
//! # use atrest_meta::{ConfigBinding, MemBacking, MetaKeys, NewObject, Store, record::*};
//! use atrest_vault::{ContentFile2, ContentKey2};
//! # let master = SecretKey::from_bytes([7; 32]);
//! # let algorithm = ContentAlgorithm::Aes256Gcm;
//! # let config = ConfigBinding { generation: 1, hash: [0; 32] };
//! # let now = Timestamp { secs: 1, nanos: 0 };
//! # let keys = MetaKeys::derive(&master, [1; 16], algorithm);
//! # let mut store = Store::format(keys, Arc::new(MemBacking::new()), config, (0o700, 0, 0), now).unwrap();
//! # let new = NewObject { kind: ObjectKind::Regular, mode: 0o600, uid: 0, gid: 0, rdev: 0, target: vec![] };
//! let content = ContentKey2::derive(&master, &[1; 16], algorithm);
//! let id = store.create(ROOT_ID, b"notes", new, now).unwrap().id;
//! let mut file = ContentFile2::new(&mut store, &content, id);
//! file.write_at(5000, b"hello", now).unwrap();
//! assert_eq!(file.read_at(4998, 10).unwrap(), b"\0\0hello");
//! assert_eq!(file.len().unwrap(), 5005);
//! ```

use std::sync::Arc;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretBuffer, SecretKey, labels};
use atrest_meta::record::{MapEntry, Timestamp};
use atrest_meta::{BlockPlan, BlockVerifier, FsError, MetaError, SealedBlock, Store};

use crate::ContentError;
use crate::layout2::{BLOCK, Span, block_of, blocks_for};

const BLOCK_LEN: usize = BLOCK as usize;

/// The content key of a format 2 vault (`K_content2`, §16.2), from which
/// every file's key derives. It never seals anything itself.
pub struct ContentKey2 {
    key: SecretKey,
    algorithm: ContentAlgorithm,
}

impl ContentKey2 {
    /// `K_content2 = HKDF(VMK, vault_id, "atrest v2 content key")`.
    pub fn derive(master: &SecretKey, vault_id: &[u8; 16], algorithm: ContentAlgorithm) -> Self {
        Self::new(master.derive(vault_id, labels::CONTENT_KEY_V2), algorithm)
    }

    pub fn new(key: SecretKey, algorithm: ContentAlgorithm) -> Self {
        Self { key, algorithm }
    }

    pub fn algorithm(&self) -> ContentAlgorithm {
        self.algorithm
    }

    /// `K_file2 = HKDF(K_content2, file_id, "atrest v2 file key")`.
    pub fn file_cipher(&self, file_id: [u8; 16]) -> FileCipher2 {
        FileCipher2 {
            file_id,
            cipher: BlockCipher::new(
                self.algorithm,
                &self.key.derive(&file_id, labels::FILE_KEY_V2),
            ),
        }
    }
}

impl BlockVerifier for ContentKey2 {
    fn verify(
        &self,
        file_id: &[u8; 16],
        block: u64,
        nonce_tag: &[u8; 40],
        ciphertext: &[u8],
    ) -> bool {
        let cipher = self.file_cipher(*file_id);
        ciphertext.len() == BLOCK_LEN
            && cipher
                .open_block(
                    block,
                    &SealedBlock {
                        nonce_tag: *nonce_tag,
                        ciphertext: ciphertext.to_vec(),
                    },
                )
                .is_ok()
    }
}

/// The keyed cipher of one format 2 file.
pub struct FileCipher2 {
    file_id: [u8; 16],
    cipher: BlockCipher,
}

impl FileCipher2 {
    pub fn file_id(&self) -> [u8; 16] {
        self.file_id
    }

    /// `file_id (16) ‖ u64be n`.
    fn aad(&self, n: u64) -> [u8; 24] {
        let mut aad = [0u8; 24];
        aad[..16].copy_from_slice(&self.file_id);
        aad[16..].copy_from_slice(&n.to_be_bytes());
        aad
    }

    /// Seals plaintext block `n` (exactly 4,096 bytes) into its map
    /// entry's nonce and tag and its 4,096 ciphertext bytes.
    pub fn seal_block(&self, n: u64, plain: &[u8]) -> SealedBlock {
        let mut ciphertext = plain.to_vec();
        let nonce_tag = self.seal_in_place(n, &mut ciphertext);
        SealedBlock {
            nonce_tag,
            ciphertext,
        }
    }

    /// Seals plaintext block `n` (exactly 4,096 bytes) in place; returns
    /// its map entry's nonce and tag.
    fn seal_in_place(&self, n: u64, block: &mut [u8]) -> [u8; 40] {
        assert_eq!(block.len(), BLOCK_LEN, "format 2 blocks are full blocks");
        let mut nonce_tag = [0u8; 40];
        let overhead = self.cipher.overhead();
        self.cipher
            .seal_detached(&self.aad(n), block, &mut nonce_tag[..overhead]);
        nonce_tag
    }

    /// Opens block `n`; the error never carries plaintext.
    pub fn open_block(&self, n: u64, block: &SealedBlock) -> Result<SecretBuffer, ContentError> {
        if block.ciphertext.len() != BLOCK_LEN {
            return Err(ContentError::Corrupt(format!(
                "block {n} is not 4,096 bytes"
            )));
        }
        let mut plain = SecretBuffer::new();
        plain.extend_from_slice(&block.ciphertext);
        self.open_in_place(n, &block.nonce_tag, &mut plain)?;
        Ok(plain)
    }

    /// Opens block `n`, whose 4,096 ciphertext bytes are `body`, in
    /// place. On failure `body` holds no plaintext the caller may use.
    fn open_in_place(
        &self,
        n: u64,
        nonce_tag: &[u8; 40],
        body: &mut [u8],
    ) -> Result<(), ContentError> {
        self.cipher
            .open_detached(&self.aad(n), &nonce_tag[..self.cipher.overhead()], body)
            .map_err(|_| ContentError::Corrupt(format!("block {n} failed authentication")))
    }
}

fn content_error(e: FsError) -> ContentError {
    match e {
        FsError::Meta(MetaError::Io { what, source }) => ContentError::Io(std::io::Error::new(
            source.kind(),
            format!("{what}: {source}"),
        )),
        FsError::Meta(m) => ContentError::Corrupt(m.to_string()),
        other => ContentError::Io(std::io::Error::other(other.to_string())),
    }
}

/// Random-access plaintext I/O on one regular file of an open store.
/// Not synchronized: callers serialize writers per file (the mount's
/// per-inode lock).
///
/// Reads and writes come in two halves for callers that share the store
/// between threads (the mount): [`Self::plan_read`] under the store,
/// [`PlannedRead::run`] (the data file read and the opening) without it;
/// [`Self::begin_write`] under the store, [`WriteEdges::seal`] without
/// it, [`Self::finish_write`] under it again. Between the halves the
/// caller keeps every other write and truncate of the file out.
pub struct ContentFile2<'a> {
    store: &'a mut Store,
    cipher: Arc<FileCipher2>,
    id: u64,
}

/// A read planned by [`ContentFile2::plan_read`].
pub struct PlannedRead {
    cipher: Arc<FileCipher2>,
    /// `None`: nothing to read (at or past the end).
    plan: Option<BlockPlan>,
    /// The located blocks' ciphertext so far, opened in place by `run`.
    buf: SecretBuffer,
    /// The bytes of `buf` asked for.
    from: usize,
    to: usize,
}

impl PlannedRead {
    /// Reads the blocks the plan names from the data file (one read per
    /// contiguous run) and opens each in place: the plaintext asked for.
    pub fn run(mut self) -> Result<SecretBuffer, ContentError> {
        let Some(plan) = &self.plan else {
            return Ok(SecretBuffer::new());
        };
        plan.fetch(&mut self.buf).map_err(content_error)?;
        let first = plan.first();
        for (i, (entry, body)) in plan
            .entries()
            .iter()
            .zip(self.buf.chunks_exact_mut(BLOCK_LEN))
            .enumerate()
        {
            match entry {
                MapEntry::Hole => body.fill(0),
                MapEntry::Sealed(nonce_tag) => {
                    self.cipher
                        .open_in_place(first + i as u64, nonce_tag, body)?
                }
            }
        }
        if self.from > 0 {
            self.buf.copy_within(self.from..self.to, 0);
        }
        self.buf.truncate(self.to - self.from);
        Ok(self.buf)
    }
}

/// The first half of a write ([`ContentFile2::begin_write`]): the
/// plaintext of the blocks it covers only in part, read before.
pub struct WriteEdges {
    cipher: Arc<FileCipher2>,
    offset: u64,
    len: usize,
    span: Option<Span>,
    /// The file's size when the write began.
    size: u64,
    edges: Vec<(u64, SecretBuffer)>,
}

/// A write sealed by [`WriteEdges::seal`], for [`ContentFile2::finish_write`].
pub struct SealedWrite {
    first: u64,
    /// Each block's nonce and tag.
    nonce_tags: Vec<[u8; 40]>,
    /// The blocks' ciphertext, one after the other: written to the data
    /// file or the log as it is.
    ciphertext: Vec<u8>,
    /// The file's size after the write.
    size: u64,
}

impl WriteEdges {
    /// Seals every block `data` (the write's bytes at its offset, as
    /// many as [`ContentFile2::begin_write`] was given) touches, whole:
    /// the edges' old bytes around the new ones, zeros past the end of
    /// the file.
    pub fn seal(self, data: &[u8]) -> SealedWrite {
        assert_eq!(data.len(), self.len, "the length the write began with");
        let Some(span) = self.span else {
            return SealedWrite {
                first: 0,
                nonce_tags: Vec::new(),
                ciphertext: Vec::new(),
                size: self.size,
            };
        };
        let offset = self.offset;
        let end = offset + data.len() as u64;
        let count = (span.end - span.first) as usize;
        // Each block's plaintext is put together here and sealed in
        // place at once, so no plaintext is left in the buffer.
        let mut ciphertext = Vec::with_capacity(count * BLOCK_LEN);
        let mut nonce_tags = Vec::with_capacity(count);
        for n in span.first..span.end {
            let start = n * BLOCK;
            let from = offset.max(start);
            let to = end.min(start + BLOCK);
            let new = &data[(from - offset) as usize..(to - offset) as usize];
            let at = ciphertext.len();
            if new.len() == BLOCK_LEN {
                ciphertext.extend_from_slice(new);
            } else {
                match self.edges.iter().find(|(m, _)| *m == n) {
                    Some((_, old)) => ciphertext.extend_from_slice(old),
                    None => ciphertext.resize(at + BLOCK_LEN, 0),
                }
                let inside = at + (from - start) as usize;
                ciphertext[inside..inside + new.len()].copy_from_slice(new);
            }
            nonce_tags.push(self.cipher.seal_in_place(n, &mut ciphertext[at..]));
        }
        SealedWrite {
            first: span.first,
            nonce_tags,
            ciphertext,
            size: end.max(self.size),
        }
    }
}

impl<'a> ContentFile2<'a> {
    /// File `id` of `store`, keyed from `content` by its file id. A
    /// missing object or one that is not a regular file fails at the
    /// first call.
    pub fn new(store: &'a mut Store, content: &ContentKey2, id: u64) -> Self {
        let file_id = store.getattr(id).map(|h| h.file_id).unwrap_or([0; 16]);
        Self::with_cipher(store, Arc::new(content.file_cipher(file_id)), id)
    }

    /// File `id` of `store` with its cipher already derived (the mount
    /// keeps one per open file): `cipher` must be the one of the file's
    /// file id, or every block fails to open.
    pub fn with_cipher(store: &'a mut Store, cipher: Arc<FileCipher2>, id: u64) -> Self {
        Self { store, cipher, id }
    }

    /// The plaintext size.
    pub fn len(&mut self) -> Result<u64, ContentError> {
        Ok(self.store.getattr(self.id).map_err(content_error)?.size)
    }

    pub fn is_empty(&mut self) -> Result<bool, ContentError> {
        Ok(self.len()? == 0)
    }

    /// Plaintext block `n`: zeros for a hole.
    fn read_block(&mut self, n: u64) -> Result<SecretBuffer, ContentError> {
        match self.store.read_block(self.id, n).map_err(content_error)? {
            None => Ok(SecretBuffer::zeroed(BLOCK_LEN)),
            Some(sealed) => self.cipher.open_block(n, &sealed),
        }
    }

    /// Up to `len` bytes at `offset`; fewer at the end of the file.
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, ContentError> {
        let mut plain = self.plan_read(offset, len)?.run()?;
        Ok(std::mem::take(&mut *plain))
    }

    /// The first half of [`Self::read_at`]: what to read for up to `len`
    /// bytes at `offset`, with the journaled blocks among them copied
    /// already.
    pub fn plan_read(&mut self, offset: u64, len: usize) -> Result<PlannedRead, ContentError> {
        let size = self.len()?;
        let end = offset.saturating_add(len as u64).min(size);
        let mut read = PlannedRead {
            cipher: self.cipher.clone(),
            plan: None,
            buf: SecretBuffer::new(),
            from: 0,
            to: 0,
        };
        if offset >= end {
            return Ok(read);
        }
        let first = block_of(offset);
        read.buf
            .resize(((blocks_for(end) - first) * BLOCK) as usize, 0);
        read.from = (offset - first * BLOCK) as usize;
        read.to = (end - first * BLOCK) as usize;
        read.plan = Some(
            self.store
                .locate_blocks(self.id, first, &mut read.buf)
                .map_err(content_error)?,
        );
        Ok(read)
    }

    /// Writes `data` at `offset` (`pwrite`): blocks covered in part are
    /// read and opened first (zeros past the end of the file), every
    /// touched block is sealed whole. mtime and ctime become `now`.
    pub fn write_at(
        &mut self,
        offset: u64,
        data: &[u8],
        now: Timestamp,
    ) -> Result<(), ContentError> {
        let sealed = self.begin_write(offset, data.len())?.seal(data);
        self.finish_write(sealed, now)
    }

    /// The first half of [`Self::write_at`] of `len` bytes at `offset`:
    /// the blocks it covers only in part, read and opened.
    pub fn begin_write(&mut self, offset: u64, len: usize) -> Result<WriteEdges, ContentError> {
        let size = self.len()?;
        let span = Span::of(offset, len as u64);
        let mut edges = Vec::new();
        if let Some(span) = span {
            for n in [span.first, span.end - 1] {
                if span.partial(n) && n * BLOCK < size && !edges.iter().any(|(m, _)| *m == n) {
                    edges.push((n, self.read_block(n)?));
                }
            }
        }
        Ok(WriteEdges {
            cipher: self.cipher.clone(),
            offset,
            len,
            span,
            size,
            edges,
        })
    }

    /// The last half of [`Self::write_at`]: the sealed blocks to the
    /// store (or nothing, for an empty write).
    pub fn finish_write(&mut self, write: SealedWrite, now: Timestamp) -> Result<(), ContentError> {
        if write.nonce_tags.is_empty() {
            return Ok(());
        }
        self.store
            .write_sealed(
                self.id,
                write.first,
                &write.nonce_tags,
                &write.ciphertext,
                write.size,
                now,
            )
            .map_err(content_error)?;
        Ok(())
    }

    /// `ftruncate`: a shrink inside a sealed block reseals it with its
    /// bytes past the new end zeroed, so a later extension reads zeros
    /// there; an extension adds holes.
    pub fn set_len(&mut self, new_size: u64, now: Timestamp) -> Result<(), ContentError> {
        let size = self.len()?;
        let n = block_of(new_size);
        let tail = if new_size < size && !new_size.is_multiple_of(BLOCK) {
            match self.store.read_block(self.id, n).map_err(content_error)? {
                None => None,
                Some(sealed) => {
                    let mut plain = self.cipher.open_block(n, &sealed)?;
                    plain[(new_size % BLOCK) as usize..].fill(0);
                    Some(self.cipher.seal_block(n, &plain))
                }
            }
        } else {
            None
        };
        self.store
            .truncate(self.id, new_size, tail, now)
            .map_err(content_error)?;
        Ok(())
    }

    /// `fsync` (§16.15).
    pub fn sync(&mut self) -> Result<(), ContentError> {
        self.store
            .sync_file(self.id)
            .map_err(|e| content_error(FsError::Meta(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atrest_meta::record::{ObjectKind, ROOT_ID};
    use atrest_meta::{Backing, ConfigBinding, MemBacking, MetaKeys, NewObject, data_file_name};
    use proptest::prelude::*;

    use super::*;

    const CONFIG: ConfigBinding = ConfigBinding {
        generation: 1,
        hash: [9; 32],
    };
    const NOW: Timestamp = Timestamp { secs: 7, nanos: 0 };

    fn setup(algorithm: ContentAlgorithm) -> (Store, ContentKey2, Arc<MemBacking>, u64) {
        let master = SecretKey::from_bytes([3; 32]);
        let backing = Arc::new(MemBacking::new());
        let keys = MetaKeys::derive(&master, [5; 16], algorithm);
        let mut store = Store::format(keys, backing.clone(), CONFIG, (0o700, 0, 0), NOW).unwrap();
        let new = NewObject {
            kind: ObjectKind::Regular,
            mode: 0o600,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: Vec::new(),
        };
        let id = store.create(ROOT_ID, b"f", new, NOW).unwrap().id;
        (
            store,
            ContentKey2::derive(&master, &[5; 16], algorithm),
            backing,
            id,
        )
    }

    fn reopen(backing: &Arc<MemBacking>, content: &ContentKey2) -> Store {
        let keys = MetaKeys::derive(
            &SecretKey::from_bytes([3; 32]),
            [5; 16],
            content.algorithm(),
        );
        Store::open(keys, backing.clone(), CONFIG, content).unwrap()
    }

    #[test]
    fn blocks_are_bound_to_their_file_and_number() {
        let content = ContentKey2::derive(
            &SecretKey::from_bytes([1; 32]),
            &[2; 16],
            ContentAlgorithm::Aes256Gcm,
        );
        let a = content.file_cipher([1; 16]);
        let b = content.file_cipher([2; 16]);
        let sealed = a.seal_block(3, &[0x55; 4096]);
        assert_eq!(&*a.open_block(3, &sealed).unwrap(), &[0x55; 4096]);
        assert!(a.open_block(4, &sealed).is_err(), "another block number");
        assert!(b.open_block(3, &sealed).is_err(), "another file");
        for i in [0, 4095] {
            let mut flipped = sealed.clone();
            flipped.ciphertext[i] ^= 1;
            assert!(a.open_block(3, &flipped).is_err());
        }
        let mut zero = sealed.clone();
        zero.ciphertext.fill(0);
        assert!(a.open_block(3, &zero).is_err(), "zeros are no hole");
        let mut tag = sealed;
        tag.nonce_tag[27] ^= 1;
        assert!(a.open_block(3, &tag).is_err());
    }

    #[test]
    fn a_changed_data_file_block_is_an_error_never_plaintext() {
        let (mut store, content, backing, id) = setup(ContentAlgorithm::XChaCha20Poly1305);
        let mut file = ContentFile2::new(&mut store, &content, id);
        file.write_at(0, &[1; 10_000], NOW).unwrap();
        file.sync().unwrap();
        drop(store);
        backing
            .with_file(&data_file_name(id), |f| f[5000] ^= 0x80)
            .unwrap();
        let mut store = reopen(&backing, &content);
        let mut file = ContentFile2::new(&mut store, &content, id);
        assert_eq!(file.read_at(0, 4096).unwrap(), vec![1; 4096]);
        let err = file.read_at(4096, 10).unwrap_err();
        assert!(err.to_string().contains("block 1"), "{err}");
    }

    #[test]
    fn truncate_reseals_the_tail_so_an_extension_reads_zeros() {
        let (mut store, content, backing, id) = setup(ContentAlgorithm::Aes256Gcm);
        let mut file = ContentFile2::new(&mut store, &content, id);
        file.write_at(0, &[9; 6000], NOW).unwrap();
        file.set_len(4100, NOW).unwrap();
        file.set_len(6000, NOW).unwrap();
        let mut expected = vec![9; 4100];
        expected.resize(6000, 0);
        assert_eq!(file.read_at(0, 10_000).unwrap(), expected);
        store.checkpoint(NOW).unwrap();
        assert_eq!(backing.len(&data_file_name(id)).unwrap(), Some(8192));
        let mut store = reopen(&backing, &content);
        assert_eq!(
            ContentFile2::new(&mut store, &content, id)
                .read_at(0, 10_000)
                .unwrap(),
            expected
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// testdata/vectors-v2/block-*.json (written by atrest-meta's
    /// `make_content_vectors` from §16.9, apart from this code): the key
    /// schedule and `FileCipher2` open what they must and refuse the
    /// rest; sealing again gives a block that opens to the same bytes.
    #[test]
    fn block_vectors() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("block-") && name.ends_with(".json")) {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(v["kind"], "block", "{name}");
            let algorithm = match v["algorithm"].as_str().unwrap() {
                "aes-256-gcm" => ContentAlgorithm::Aes256Gcm,
                _ => ContentAlgorithm::XChaCha20Poly1305,
            };
            let master = SecretKey::from_slice(&unhex(v["master_key"].as_str().unwrap())).unwrap();
            let vault: [u8; 16] = unhex(v["vault_id"].as_str().unwrap()).try_into().unwrap();
            let file_id: [u8; 16] = unhex(v["file_id"].as_str().unwrap()).try_into().unwrap();
            let content = ContentKey2::derive(&master, &vault, algorithm);
            let cipher = content.file_cipher(file_id);
            let n = v["block"].as_u64().unwrap();
            assert_eq!(unhex(v["aad"].as_str().unwrap()), cipher.aad(n), "{name}");
            let entry = unhex(v["entry"].as_str().unwrap());
            let overhead = algorithm.overhead();
            assert_eq!(entry.len(), atrest_meta::record::MapEntry::len(algorithm));
            let mut nonce_tag = [0u8; 40];
            nonce_tag[..overhead].copy_from_slice(&entry[..overhead]);
            let sealed = SealedBlock {
                nonce_tag,
                ciphertext: unhex(v["ciphertext"].as_str().unwrap()),
            };
            let verifies = content.verify(&file_id, n, &nonce_tag, &sealed.ciphertext);
            match v["expect"].as_str().unwrap() {
                "success" => {
                    let plain = cipher
                        .open_block(n, &sealed)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(
                        &plain[..],
                        &unhex(v["plaintext"].as_str().unwrap())[..],
                        "{name}"
                    );
                    assert!(verifies, "{name}");
                    let again = cipher.seal_block(n, &plain);
                    assert_ne!(again, sealed, "{name}: a fresh nonce every seal");
                    assert_eq!(&cipher.open_block(n, &again).unwrap()[..], &plain[..]);
                }
                "auth-failure" => {
                    assert!(cipher.open_block(n, &sealed).is_err(), "{name}");
                    assert!(!verifies, "{name}");
                }
                other => panic!("{name}: expect {other}"),
            }
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} block vectors");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Sync,
        Checkpoint,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000, proptest::collection::vec(any::<u8>(), 0..9000))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..600_000, proptest::collection::vec(any::<u8>(), 1..300))
                .prop_map(|(o, d)| Op::Write(o, d)),
            2 => (0u64..20_000).prop_map(Op::Truncate),
            1 => Just(Op::Sync),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Random writes (overwrites, partial blocks, holes), truncates up
        /// and down, fsyncs, checkpoints and reopening agree with a plain
        /// in-memory model, as format 1's `matches_in_memory_model`.
        #[test]
        fn matches_in_memory_model(ops in proptest::collection::vec(op(), 1..24), xchacha in any::<bool>()) {
            let algorithm = if xchacha {
                ContentAlgorithm::XChaCha20Poly1305
            } else {
                ContentAlgorithm::Aes256Gcm
            };
            let (mut store, content, backing, id) = setup(algorithm);
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        ContentFile2::new(&mut store, &content, id).write_at(off, &data, NOW).unwrap();
                        if !data.is_empty() {
                            let end = off as usize + data.len();
                            if model.len() < end { model.resize(end, 0); }
                            model[off as usize..end].copy_from_slice(&data);
                        }
                    }
                    Op::Truncate(n) => {
                        ContentFile2::new(&mut store, &content, id).set_len(n, NOW).unwrap();
                        model.resize(n as usize, 0);
                    }
                    Op::Sync => ContentFile2::new(&mut store, &content, id).sync().unwrap(),
                    Op::Checkpoint => { store.checkpoint(NOW).unwrap(); }
                    Op::Reopen => {
                        drop(store);
                        store = reopen(&backing, &content);
                    }
                }
                let mut file = ContentFile2::new(&mut store, &content, id);
                prop_assert_eq!(file.len().unwrap(), model.len() as u64);
            }
            let mut file = ContentFile2::new(&mut store, &content, id);
            prop_assert!(file.read_at(0, model.len() + 1).unwrap() == model);
            let mid = model.len() / 3;
            prop_assert!(file.read_at(mid as u64, 5000).unwrap() == model[mid..model.len().min(mid + 5000)].to_vec());
            drop(store);
            let mut store = reopen(&backing, &content);
            let mut file = ContentFile2::new(&mut store, &content, id);
            prop_assert!(file.read_at(0, model.len()).unwrap() == model);
        }
    }
}
