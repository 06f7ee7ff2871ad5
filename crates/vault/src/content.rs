//! File contents: a random per-file id in an 18-byte header, then
//! fixed-size plaintext blocks each sealed under a per-file key with
//! `AAD = file id ‖ block number`, so blocks cannot be moved, reordered or
//! swapped between files.
//!
//! An all-zero sealed block reads as zeros: that is how holes (sparse files)
//! work without writing ciphertext for them.
//!
//! [`ContentFile`] does random-access reads and writes on an open backing
//! file. It is not synchronized: callers serialize writers per file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey, labels};

use crate::ContentError;
use crate::layout::{HEADER_LEN, Layout};

pub const FILE_FORMAT_VERSION: u16 = 1;

/// The content key of a vault, from which every file's key derives.
pub struct ContentKey {
    key: SecretKey,
    algorithm: ContentAlgorithm,
    layout: Layout,
}

impl ContentKey {
    pub fn new(key: SecretKey, algorithm: ContentAlgorithm, block_size: u32) -> Self {
        Self {
            key,
            algorithm,
            layout: Layout::new(block_size, algorithm.overhead()),
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn file_cipher(&self, file_id: [u8; 16]) -> FileCipher {
        let key = self.key.derive(&file_id, labels::FILE_KEY);
        FileCipher {
            file_id,
            cipher: BlockCipher::new(self.algorithm, &key),
            layout: self.layout,
        }
    }

    /// Reads the header of `file`: `Ok(None)` for an empty file.
    pub fn read_header(&self, file: &File) -> Result<Option<FileCipher>, ContentError> {
        let mut header = [0u8; HEADER_LEN as usize];
        let n = read_full_at(file, &mut header, 0)?;
        if n == 0 {
            return Ok(None);
        }
        if n < header.len() {
            return Err(ContentError::Corrupt("file header truncated".into()));
        }
        Ok(Some(self.file_cipher(parse_header(&header)?)))
    }

    /// Writes a fresh header with a new random file id.
    pub fn write_header(&self, file: &File) -> Result<FileCipher, ContentError> {
        let id: [u8; 16] = atrest_core::random_array();
        let mut header = [0u8; HEADER_LEN as usize];
        header[..2].copy_from_slice(&FILE_FORMAT_VERSION.to_be_bytes());
        header[2..].copy_from_slice(&id);
        file.write_all_at(&header, 0)?;
        Ok(self.file_cipher(id))
    }

    /// The header if present, else a new one (for a file that a crash left
    /// empty, or that another program created in the backing directory).
    pub fn open_or_init(&self, file: &File) -> Result<FileCipher, ContentError> {
        match self.read_header(file)? {
            Some(cipher) => Ok(cipher),
            None => self.write_header(file),
        }
    }
}

/// Parses a file header; never panics.
pub fn parse_header(header: &[u8]) -> Result<[u8; 16], ContentError> {
    if header.len() != HEADER_LEN as usize {
        return Err(ContentError::Corrupt("file header truncated".into()));
    }
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != FILE_FORMAT_VERSION {
        return Err(ContentError::Corrupt(format!(
            "unknown file format version {version}"
        )));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&header[2..]);
    Ok(id)
}

/// The keyed cipher of one file.
pub struct FileCipher {
    file_id: [u8; 16],
    cipher: BlockCipher,
    layout: Layout,
}

impl FileCipher {
    pub fn file_id(&self) -> [u8; 16] {
        self.file_id
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn aad(&self, block: u64) -> [u8; 24] {
        let mut aad = [0u8; 24];
        aad[..16].copy_from_slice(&self.file_id);
        aad[16..].copy_from_slice(&block.to_be_bytes());
        aad
    }

    /// Seals block `n` into `out` (`plain.len() + overhead` bytes).
    pub fn seal_block(&self, n: u64, plain: &[u8], out: &mut [u8]) {
        self.cipher.seal_to(&self.aad(n), plain, out);
    }

    /// Opens block `n` in place; returns the plaintext inside `sealed`.
    pub fn open_block<'a>(&self, n: u64, sealed: &'a mut [u8]) -> Result<&'a [u8], ContentError> {
        if sealed.len() <= self.layout.overhead as usize {
            return Err(ContentError::Corrupt(format!("block {n} truncated")));
        }
        if sealed.iter().all(|&b| b == 0) {
            // A hole: never written, reads as zeros.
            let len = sealed.len() - self.layout.overhead as usize;
            return Ok(&sealed[..len]);
        }
        self.cipher
            .open_in_place(&self.aad(n), sealed)
            .map(|p| &*p)
            .map_err(|_| ContentError::Corrupt(format!("block {n} failed authentication")))
    }
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A torn last block found by [`ContentFile::torn_tail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The backing size now.
    pub backing_len: u64,
    /// The backing size after the cut: the end of the last block that
    /// authenticates (the header alone when block 0 is torn).
    pub cut_to: u64,
    /// The plaintext size after the cut.
    pub plaintext_len: u64,
}

impl TornTail {
    /// Backing bytes the cut drops.
    pub fn dropped(&self) -> u64 {
        self.backing_len - self.cut_to
    }
}

/// Random-access plaintext I/O on one open backing file.
pub struct ContentFile<'a> {
    pub file: &'a File,
    pub cipher: &'a FileCipher,
}

impl ContentFile<'_> {
    fn layout(&self) -> Layout {
        self.cipher.layout
    }

    fn ciphertext_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The plaintext size, from the backing size alone.
    pub fn plaintext_len(&self) -> Result<u64, ContentError> {
        let c = self.ciphertext_len()?;
        self.layout()
            .plaintext_size(c)
            .ok_or_else(|| ContentError::Corrupt(format!("impossible backing size {c}")))
    }

    /// Reads and opens block `n`, whose plaintext is `len` bytes long.
    fn read_block(&self, n: u64, len: u64) -> Result<Vec<u8>, ContentError> {
        let mut sealed = vec![0u8; (len + self.layout().overhead) as usize];
        let got = read_full_at(self.file, &mut sealed, self.layout().block_offset(n))?;
        if got != sealed.len() {
            return Err(ContentError::Corrupt(format!("block {n} truncated")));
        }
        Ok(self.cipher.open_block(n, &mut sealed)?.to_vec())
    }

    /// Reads up to `len` bytes at `offset`; short at end of file.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, ContentError> {
        let size = self.plaintext_len()?;
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let layout = self.layout();
        let end = size.min(offset.saturating_add(len as u64));
        let first = offset / layout.block;
        let last = (end - 1) / layout.block;
        let start = layout.block_offset(first);
        let stop = layout
            .ciphertext_size(size)
            .min(layout.block_offset(last + 1));
        let mut sealed = vec![0u8; (stop - start) as usize];
        let got = read_full_at(self.file, &mut sealed, start)?;
        if got != sealed.len() {
            return Err(ContentError::Corrupt("file shorter than its size".into()));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, chunk) in sealed
            .chunks_mut(layout.sealed_block() as usize)
            .enumerate()
        {
            let n = first + i as u64;
            let plain = self.cipher.open_block(n, chunk)?;
            let block_start = n * layout.block;
            let lo = offset.max(block_start) - block_start;
            let hi = (end - block_start).min(plain.len() as u64);
            out.extend_from_slice(&plain[lo as usize..hi as usize]);
        }
        Ok(out)
    }

    /// Writes `data` at `offset`, extending the file (with a hole) if
    /// needed. On an error nothing that was readable before is lost.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ContentError> {
        if data.is_empty() {
            return Ok(());
        }
        let layout = self.layout();
        let old_cipher_len = self.ciphertext_len()?;
        let size = layout.plaintext_size(old_cipher_len).ok_or_else(|| {
            ContentError::Corrupt(format!("impossible backing size {old_cipher_len}"))
        })?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc_efbig()))?;
        let first = offset / layout.block;
        let last = (end - 1) / layout.block;

        // A partial last block before the write's first block must become a
        // full block, or the bytes between would be lost.
        let mut restore: Option<(u64, Vec<u8>)> = None;
        let tail = size % layout.block;
        let tail_block = size / layout.block;
        if tail != 0 && first > tail_block {
            let off = layout.block_offset(tail_block);
            let mut old = vec![0u8; (tail + layout.overhead) as usize];
            if read_full_at(self.file, &mut old, off)? != old.len() {
                return Err(ContentError::Corrupt(format!(
                    "block {tail_block} truncated"
                )));
            }
            let mut plain = self
                .cipher
                .open_block(tail_block, &mut old.clone())?
                .to_vec();
            plain.resize(layout.block as usize, 0);
            let mut sealed = vec![0u8; layout.sealed_block() as usize];
            self.cipher.seal_block(tail_block, &plain, &mut sealed);
            self.reserve(old_cipher_len, layout.block_offset(tail_block + 1))?;
            if let Err(e) = self.file.write_all_at(&sealed, off) {
                self.undo(old_cipher_len, Some((off, old)));
                return Err(e.into());
            }
            restore = Some((off, old));
        }

        let mut out = Vec::with_capacity(((last - first + 1) * layout.sealed_block()) as usize);
        let mut plain = Vec::with_capacity(layout.block as usize);
        for n in first..=last {
            let block_start = n * layout.block;
            let lo = offset.max(block_start) - block_start;
            let hi = end.min(block_start + layout.block) - block_start;
            let existing = size.saturating_sub(block_start).min(layout.block);
            plain.clear();
            if existing > 0 && (lo > 0 || hi < existing) {
                plain.extend_from_slice(&self.read_block(n, existing)?);
            }
            let new_len = hi.max(existing) as usize;
            plain.resize(new_len, 0);
            let src = (block_start + lo - offset) as usize..(block_start + hi - offset) as usize;
            plain[lo as usize..hi as usize].copy_from_slice(&data[src]);
            let at = out.len();
            out.resize(at + new_len + layout.overhead as usize, 0);
            self.cipher.seal_block(n, &plain, &mut out[at..]);
        }
        let start = layout.block_offset(first);
        let result = self
            .reserve(old_cipher_len.max(start), start + out.len() as u64)
            .and_then(|()| {
                self.file
                    .write_all_at(&out, start)
                    .map_err(ContentError::from)
            });
        if let Err(e) = result {
            self.undo(old_cipher_len, restore);
            return Err(e);
        }
        Ok(())
    }

    /// Reserves disk space for `[from, to)` without changing the size, so
    /// ENOSPC shows up before any existing block is overwritten.
    fn reserve(&self, from: u64, to: u64) -> Result<(), ContentError> {
        if to <= from {
            return Ok(());
        }
        match rustix::fs::fallocate(
            self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            from,
            to - from,
        ) {
            Ok(()) => Ok(()),
            // Not every backing file system can preallocate; then the
            // rollback in `undo` is the only protection.
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            Err(e) => Err(ContentError::Io(e.into())),
        }
    }

    /// Best effort after a failed write: put back the old tail block and
    /// cut the file to its old size.
    fn undo(&self, old_cipher_len: u64, restore: Option<(u64, Vec<u8>)>) {
        if let Some((off, bytes)) = restore {
            let _ = self.file.write_all_at(&bytes, off);
        }
        if let Ok(now) = self.ciphertext_len()
            && now > old_cipher_len
        {
            let _ = self.file.set_len(old_cipher_len);
        }
    }

    /// Whether the file ends in a block that a crash tore (format §6.5), and
    /// if so where to cut it. A crash in the middle of a write to the page
    /// cache leaves the backing file ending at a page boundary, inside the
    /// block being written; that block can then never authenticate. The
    /// tail counts as torn only when all of these hold:
    ///
    /// - the backing size is a multiple of
    ///   [`TEAR_ALIGNMENT`](crate::layout::TEAR_ALIGNMENT) and falls inside
    ///   a block, not at a block boundary ([`Layout::may_end_torn`]);
    /// - those last bytes do not open as a (shorter) block;
    /// - the block before them authenticates (or is a hole), or they are
    ///   block 0 (behind a header that parsed).
    ///
    /// Anything else that fails is corruption, and stays so: `Ok(None)`,
    /// and reading the end fails as before.
    pub fn torn_tail(&self) -> Result<Option<TornTail>, ContentError> {
        let layout = self.layout();
        let backing_len = self.ciphertext_len()?;
        if !layout.may_end_torn(backing_len) {
            return Ok(None);
        }
        let body = backing_len - HEADER_LEN;
        let last = body / layout.sealed_block();
        let rest = body % layout.sealed_block();
        if rest > layout.overhead && self.read_block(last, rest - layout.overhead).is_ok() {
            // A complete short block: the size is page-aligned by chance.
            return Ok(None);
        }
        if last > 0 {
            match self.read_block(last - 1, layout.block) {
                Ok(_) => {}
                Err(ContentError::Corrupt(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(TornTail {
            backing_len,
            cut_to: layout.block_offset(last),
            plaintext_len: last * layout.block,
        }))
    }

    /// Cuts a torn tail ([`Self::torn_tail`]) off, durably; what was cut.
    pub fn cut_torn_tail(&self) -> Result<Option<TornTail>, ContentError> {
        let Some(tear) = self.torn_tail()? else {
            return Ok(None);
        };
        self.file.set_len(tear.cut_to)?;
        self.file.sync_all()?;
        Ok(Some(tear))
    }

    /// Truncates or extends (with a hole) to `new_size` plaintext bytes.
    pub fn set_len(&self, new_size: u64) -> Result<(), ContentError> {
        let layout = self.layout();
        let size = self.plaintext_len()?;
        if new_size == size {
            return Ok(());
        }
        // The block that ends the file partially after the change (if its
        // content has to be resealed at a new length).
        let (block, keep) = if new_size < size {
            (new_size / layout.block, new_size % layout.block)
        } else {
            (
                size / layout.block,
                (new_size - (size / layout.block) * layout.block).min(layout.block),
            )
        };
        let reseal = keep != 0
            && block * layout.block < size
            && (new_size < size || size % layout.block != 0);
        if reseal {
            let existing = (size - block * layout.block).min(layout.block);
            let mut plain = self.read_block(block, existing)?;
            plain.resize(keep as usize, 0);
            let mut sealed = vec![0u8; plain.len() + layout.overhead as usize];
            self.cipher.seal_block(block, &plain, &mut sealed);
            self.file
                .write_all_at(&sealed, layout.block_offset(block))?;
        }
        self.file.set_len(layout.ciphertext_size(new_size))?;
        Ok(())
    }
}

fn libc_efbig() -> i32 {
    27 // EFBIG on Linux
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::TEAR_ALIGNMENT;
    use proptest::prelude::*;

    fn setup(alg: ContentAlgorithm) -> (ContentKey, File) {
        let key = ContentKey::new(SecretKey::random(), alg, 4096);
        let file = tempfile::tempfile().unwrap();
        (key, file)
    }

    #[test]
    fn sizes_round_trip() {
        for alg in [
            ContentAlgorithm::Aes256Gcm,
            ContentAlgorithm::XChaCha20Poly1305,
        ] {
            for len in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 3] {
                let (key, file) = setup(alg);
                let cipher = key.write_header(&file).unwrap();
                let f = ContentFile {
                    file: &file,
                    cipher: &cipher,
                };
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                f.write_at(0, &data).unwrap();
                assert_eq!(f.plaintext_len().unwrap(), len as u64);
                assert_eq!(f.read_at(0, len + 10).unwrap(), data);
                assert_eq!(
                    file.metadata().unwrap().len(),
                    key.layout().ciphertext_size(len as u64)
                );
                let reopened = key.read_header(&file).unwrap().unwrap();
                assert_eq!(reopened.file_id(), cipher.file_id());
            }
        }
    }

    #[test]
    fn flipped_bit_anywhere_in_a_block_is_refused() {
        let (key, file) = setup(ContentAlgorithm::Aes256Gcm);
        let cipher = key.write_header(&file).unwrap();
        let f = ContentFile {
            file: &file,
            cipher: &cipher,
        };
        f.write_at(0, &[42u8; 5000]).unwrap();
        let len = file.metadata().unwrap().len();
        for pos in (HEADER_LEN..len).step_by(97) {
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, pos).unwrap();
            file.write_all_at(&[b[0] ^ 4], pos).unwrap();
            assert!(
                matches!(f.read_at(0, 5000), Err(ContentError::Corrupt(_))),
                "pos {pos}"
            );
            file.write_all_at(&b, pos).unwrap();
        }
        assert_eq!(f.read_at(0, 5000).unwrap(), vec![42u8; 5000]);
    }

    #[test]
    fn swapped_blocks_and_foreign_blocks_are_refused() {
        let (key, file) = setup(ContentAlgorithm::Aes256Gcm);
        let cipher = key.write_header(&file).unwrap();
        let f = ContentFile {
            file: &file,
            cipher: &cipher,
        };
        f.write_at(0, &[1u8; 8192]).unwrap();
        let l = key.layout();
        let mut b0 = vec![0u8; l.sealed_block() as usize];
        let mut b1 = b0.clone();
        file.read_exact_at(&mut b0, l.block_offset(0)).unwrap();
        file.read_exact_at(&mut b1, l.block_offset(1)).unwrap();
        file.write_all_at(&b1, l.block_offset(0)).unwrap();
        file.write_all_at(&b0, l.block_offset(1)).unwrap();
        assert!(f.read_at(0, 10).is_err());
        assert!(f.read_at(4096, 10).is_err());

        // The same block in another file (another id, another key).
        let other = tempfile::tempfile().unwrap();
        let other_cipher = key.write_header(&other).unwrap();
        let g = ContentFile {
            file: &other,
            cipher: &other_cipher,
        };
        g.write_at(0, &[1u8; 4096]).unwrap();
        other.write_all_at(&b0, l.block_offset(0)).unwrap();
        assert!(g.read_at(0, 10).is_err());
    }

    #[test]
    fn truncated_block_is_refused() {
        let (key, file) = setup(ContentAlgorithm::Aes256Gcm);
        let cipher = key.write_header(&file).unwrap();
        let f = ContentFile {
            file: &file,
            cipher: &cipher,
        };
        f.write_at(0, &[9u8; 6000]).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len - 10).unwrap();
        assert!(f.read_at(4096, 100).is_err());
        file.set_len(len - 1910).unwrap(); // leaves 22 bytes of a block: impossible size
        assert!(f.plaintext_len().is_err());
    }

    /// A file of `len` plaintext bytes (a pattern), its key and cipher.
    fn written(alg: ContentAlgorithm, len: usize) -> (ContentKey, File, FileCipher, Vec<u8>) {
        let (key, file) = setup(alg);
        let cipher = key.write_header(&file).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 4096) as u8).collect();
        ContentFile {
            file: &file,
            cipher: &cipher,
        }
        .write_at(0, &data)
        .unwrap();
        (key, file, cipher, data)
    }

    /// A copy of `file`'s first `len` backing bytes, as a crash that cut
    /// the write there leaves it.
    fn cut_copy(file: &File, len: u64) -> File {
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        let copy = tempfile::tempfile().unwrap();
        copy.write_all_at(&bytes, 0).unwrap();
        copy
    }

    fn flip(file: &File, pos: u64) {
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, pos).unwrap();
        file.write_all_at(&[b[0] ^ 0x20], pos).unwrap();
    }

    #[test]
    fn a_write_cut_at_any_page_boundary_inside_a_block_is_a_torn_tail() {
        for alg in [
            ContentAlgorithm::Aes256Gcm,
            ContentAlgorithm::XChaCha20Poly1305,
        ] {
            let (key, file, cipher, data) = written(alg, 70_000);
            let layout = key.layout();
            let full = file.metadata().unwrap().len();
            let mut tears = 0;
            for len in (TEAR_ALIGNMENT..full).step_by(TEAR_ALIGNMENT as usize) {
                let torn = cut_copy(&file, len);
                let f = ContentFile {
                    file: &torn,
                    cipher: &cipher,
                };
                let last = (len - HEADER_LEN) / layout.sealed_block();
                if (len - HEADER_LEN).is_multiple_of(layout.sealed_block()) {
                    assert_eq!(f.torn_tail().unwrap(), None, "{alg:?} {len}");
                    continue;
                }
                tears += 1;
                assert!(f.read_at(0, data.len()).is_err(), "{alg:?} {len}");
                let expected = TornTail {
                    backing_len: len,
                    cut_to: layout.block_offset(last),
                    plaintext_len: last * layout.block,
                };
                assert_eq!(f.torn_tail().unwrap(), Some(expected), "{alg:?} {len}");
                assert_eq!(f.cut_torn_tail().unwrap(), Some(expected));
                assert_eq!(torn.metadata().unwrap().len(), expected.cut_to);
                assert_eq!(f.torn_tail().unwrap(), None);
                let kept = expected.plaintext_len as usize;
                assert_eq!(f.read_at(0, data.len()).unwrap(), data[..kept]);
                // And the file takes writes at its new end again.
                f.write_at(kept as u64, b"after the repair").unwrap();
                assert_eq!(f.read_at(kept as u64, 100).unwrap(), b"after the repair");
            }
            assert!(tears >= 16, "{alg:?}: only {tears} tears tried");
        }
    }

    #[test]
    fn a_tear_in_block_0_cuts_back_to_the_header() {
        let (_, file, cipher, _) = written(ContentAlgorithm::Aes256Gcm, 10_000);
        let torn = cut_copy(&file, TEAR_ALIGNMENT);
        let f = ContentFile {
            file: &torn,
            cipher: &cipher,
        };
        let tear = f.cut_torn_tail().unwrap().unwrap();
        assert_eq!((tear.cut_to, tear.dropped()), (HEADER_LEN, 4096 - 18));
        assert_eq!(f.plaintext_len().unwrap(), 0);
    }

    #[test]
    fn a_tear_that_leaves_less_than_the_overhead_is_a_torn_tail() {
        // 18 + k·4124 + r with 1 <= r <= 28 is no valid size at all; find a
        // page boundary there.
        let (key, file, cipher, _) = written(ContentAlgorithm::Aes256Gcm, 4_200_000);
        let layout = key.layout();
        let len = (1..)
            .map(|p| p * TEAR_ALIGNMENT)
            .find(|&p| {
                let rest = (p - HEADER_LEN) % layout.sealed_block();
                (1..=layout.overhead).contains(&rest)
            })
            .unwrap();
        let torn = cut_copy(&file, len);
        let f = ContentFile {
            file: &torn,
            cipher: &cipher,
        };
        assert!(f.plaintext_len().is_err());
        let tear = f.torn_tail().unwrap().unwrap();
        assert!(tear.dropped() <= layout.overhead);
        f.cut_torn_tail().unwrap();
        assert!(f.plaintext_len().is_ok());
    }

    #[test]
    fn failures_a_crash_cannot_explain_are_not_torn_tails() {
        let (key, file, cipher, _) = written(ContentAlgorithm::Aes256Gcm, 70_000);
        let layout = key.layout();
        // A page boundary inside a block, not in block 0.
        let len = 3 * TEAR_ALIGNMENT;
        let last = (len - HEADER_LEN) / layout.sealed_block();
        assert!(last > 0 && !(len - HEADER_LEN).is_multiple_of(layout.sealed_block()));
        let not_torn = |f: &File, what: &str| {
            let content = ContentFile {
                file: f,
                cipher: &cipher,
            };
            assert_eq!(content.torn_tail().unwrap(), None, "{what}");
            assert_eq!(content.cut_torn_tail().unwrap(), None, "{what}");
            assert!(
                matches!(content.read_at(0, 1 << 20), Err(ContentError::Corrupt(_))),
                "{what}"
            );
        };

        // Cut one byte before or after the page boundary.
        not_torn(&cut_copy(&file, len - 1), "size not page-aligned (-1)");
        not_torn(&cut_copy(&file, len + 1), "size not page-aligned (+1)");

        // The block before the cut fails too: tampering, not a crash.
        let torn = cut_copy(&file, len);
        flip(&torn, layout.block_offset(last - 1) + 100);
        not_torn(&torn, "previous block damaged");

        // A tag flipped in a complete last block: at a block boundary, and
        // in a short last block.
        let whole = cut_copy(&file, layout.block_offset(last));
        flip(&whole, layout.block_offset(last) - 1);
        not_torn(&whole, "full last block, tag flipped");
        let (_, short, short_cipher, _) = written(ContentAlgorithm::Aes256Gcm, 9_000);
        let end = short.metadata().unwrap().len();
        assert_ne!(end % TEAR_ALIGNMENT, 0);
        flip(&short, end - 1);
        let content = ContentFile {
            file: &short,
            cipher: &short_cipher,
        };
        assert_eq!(content.torn_tail().unwrap(), None);
        assert!(content.read_at(0, 9_000).is_err());
    }

    #[test]
    fn intact_files_have_no_torn_tail() {
        // Including every size below 40,000 whose backing size is
        // page-aligned by chance (4,050: 18 + 4,050 + 28 = 4,096).
        let layout = Layout::new(4096, ContentAlgorithm::Aes256Gcm.overhead());
        let aligned: Vec<usize> = (1..40_000u64)
            .filter(|&p| layout.ciphertext_size(p).is_multiple_of(TEAR_ALIGNMENT))
            .map(|p| p as usize)
            .collect();
        assert!(aligned.contains(&4050));
        for len in aligned.into_iter().chain([0, 1, 4096, 8192, 10_000]) {
            let (_, file, cipher, data) = written(ContentAlgorithm::Aes256Gcm, len);
            let f = ContentFile {
                file: &file,
                cipher: &cipher,
            };
            assert_eq!(f.torn_tail().unwrap(), None, "{len}");
            assert_eq!(f.read_at(0, len).unwrap(), data);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0u64..20_000,
                proptest::collection::vec(any::<u8>(), 0..9000)
            )
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0u64..20_000).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random writes and truncates agree with a plain in-memory model.
        #[test]
        fn matches_in_memory_model(ops in proptest::collection::vec(op(), 1..24)) {
            let (key, file) = setup(ContentAlgorithm::Aes256Gcm);
            let cipher = key.write_header(&file).unwrap();
            let f = ContentFile { file: &file, cipher: &cipher };
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        f.write_at(off, &data).unwrap();
                        if !data.is_empty() {
                            let end = off as usize + data.len();
                            if model.len() < end { model.resize(end, 0); }
                            model[off as usize..end].copy_from_slice(&data);
                        }
                    }
                    Op::Truncate(n) => {
                        f.set_len(n).unwrap();
                        model.resize(n as usize, 0);
                    }
                }
                prop_assert_eq!(f.plaintext_len().unwrap(), model.len() as u64);
            }
            prop_assert_eq!(f.read_at(0, model.len() + 1).unwrap(), model.clone());
            let mid = model.len() / 3;
            prop_assert_eq!(f.read_at(mid as u64, 5000).unwrap(), model[mid..model.len().min(mid + 5000)].to_vec());
        }
    }
}
