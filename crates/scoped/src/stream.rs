//! Encrypted streams: files of any size (uploads) sealed in chunks, read
//! back in constant memory and at any offset (docs/format.md §17.5).
//!
//! Layout: a 44-byte header, `ATRS ‖ version (1) ‖ algorithm (1) ‖ key
//! version (4, BE) ‖ log2 chunk size (1) ‖ 0 (1) ‖ salt (32)`, then chunks,
//! each `nonce (12) ‖ ciphertext ‖ tag (16)`; every chunk but the last
//! holds exactly one chunk size of plaintext, the last holds 0 to one chunk
//! size. The file key is HKDF of the scope key with the salt; each chunk's
//! AAD binds the header, the scope, the table and object it belongs to, its
//! index and whether it is the last. So chunks cannot be reordered, dropped,
//! moved to another file, and the stream cannot be cut or extended
//! unnoticed (the last chunk must say it is the last; no other may).

use std::io::{self, Read, Seek, SeekFrom, Write};

use atrest_core::{BlockCipher, Canonical, ContentAlgorithm, labels, random_array};
use zeroize::Zeroizing;

use crate::error::{Result, ScopedError};
use crate::keys::{Keyring, ScopeKey};
use crate::name::{RowId, ScopeId, Table};

pub const STREAM_MAGIC: &[u8; 4] = b"ATRS";
pub const STREAM_VERSION: u8 = 1;
pub const STREAM_HEADER_LEN: usize = 44;
/// 64 KiB chunks unless asked otherwise.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;
/// Chunk sizes from 4 KiB to 16 MiB.
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=24;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes each chunk adds.
pub const CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const WHAT: &str = "encrypted stream";

/// Which object a stream belongs to: part of every chunk's AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamContext {
    pub table: Table,
    pub object: RowId,
}

impl StreamContext {
    pub fn new(table: &str, object: &str) -> Result<Self> {
        Ok(Self {
            table: Table::new(table)?,
            object: RowId::new(object)?,
        })
    }
}

struct Header {
    bytes: [u8; STREAM_HEADER_LEN],
    key_version: u32,
    chunk: usize,
}

impl Header {
    fn parse(bytes: [u8; STREAM_HEADER_LEN]) -> Result<Self> {
        if &bytes[..4] != STREAM_MAGIC {
            return Err(ScopedError::malformed(
                WHAT,
                "no ATRS magic: not an atrest stream",
            ));
        }
        if bytes[4] != STREAM_VERSION {
            return Err(ScopedError::UnknownVersion {
                what: WHAT,
                version: bytes[4].into(),
            });
        }
        if ContentAlgorithm::from_id(bytes[5]) != Some(ContentAlgorithm::Aes256Gcm) {
            return Err(ScopedError::UnknownAlgorithm(bytes[5]));
        }
        let key_version = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        if key_version == 0 {
            return Err(ScopedError::malformed(WHAT, "key version 0"));
        }
        if !CHUNK_LOG2_RANGE.contains(&bytes[10]) || bytes[11] != 0 {
            return Err(ScopedError::malformed(
                WHAT,
                "bad chunk size or reserved byte",
            ));
        }
        Ok(Self {
            bytes,
            key_version,
            chunk: 1 << bytes[10],
        })
    }
}

/// The keyed state both directions share.
struct ChunkSealer {
    cipher: BlockCipher,
    aad_prefix: Vec<u8>,
}

impl ChunkSealer {
    fn new(key: &ScopeKey, header: &Header, ctx: &StreamContext) -> Self {
        let file_key = key.derive(&header.bytes[12..44], labels::STREAM_KEY);
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &file_key);
        let aad_prefix = aad_prefix(key.scope(), ctx, &header.bytes);
        Self { cipher, aad_prefix }
    }

    fn aad(&self, index: u64, last: bool) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.aad_prefix.len() + 17);
        aad.extend_from_slice(&self.aad_prefix);
        aad.extend_from_slice(&8u32.to_be_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.extend_from_slice(&1u32.to_be_bytes());
        aad.push(u8::from(last));
        aad
    }

    /// Opens one sealed chunk (`nonce ‖ ciphertext ‖ tag`) in place: the
    /// plaintext is at `NONCE_LEN..` afterwards.
    fn open(&self, index: u64, last: bool, sealed: &mut [u8]) -> Result<()> {
        let copy = last.then(|| Zeroizing::new(sealed.to_vec()));
        if self
            .cipher
            .open_in_place(&self.aad(index, last), sealed)
            .is_ok()
        {
            return Ok(());
        }
        // The last chunk by length that opens as an inner chunk: the stream
        // was cut at a chunk boundary. Anything else: changed, or not this
        // object's stream.
        let cut = copy.is_some_and(|mut c| {
            self.cipher
                .open_in_place(&self.aad(index, false), &mut c[..])
                .is_ok()
        });
        Err(if cut {
            ScopedError::Truncated
        } else {
            ScopedError::Authentication
        })
    }
}

/// `Canonical(SCOPED_STREAM, 1)` over scope, table, object and header; the
/// index (8 bytes) and the last flag (1 byte) follow as two more fields.
fn aad_prefix(scope: &ScopeId, ctx: &StreamContext, header: &[u8]) -> Vec<u8> {
    let mut aad = Canonical::new(labels::domain::SCOPED_STREAM, STREAM_VERSION);
    aad.field(scope.as_bytes())
        .field(ctx.table.as_bytes())
        .field(ctx.object.as_bytes())
        .field(header);
    aad.into_bytes()
}

/// Seals a stream chunk by chunk. Call [`StreamWriter::finish`]: a stream
/// dropped without it has no last chunk and will not open.
pub struct StreamWriter<W: Write> {
    out: W,
    sealer: ChunkSealer,
    chunk: usize,
    buf: Zeroizing<Vec<u8>>,
    sealed: Vec<u8>,
    index: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header at once. `chunk_log2`: `None` for 64 KiB.
    pub fn new(
        key: &ScopeKey,
        ctx: &StreamContext,
        chunk_log2: Option<u8>,
        mut out: W,
    ) -> Result<Self> {
        let log2 = chunk_log2.unwrap_or(DEFAULT_CHUNK_LOG2);
        if !CHUNK_LOG2_RANGE.contains(&log2) {
            return Err(ScopedError::malformed(
                WHAT,
                format!("chunk size 2^{log2}; choose 2^12 to 2^24"),
            ));
        }
        let mut bytes = [0u8; STREAM_HEADER_LEN];
        bytes[..4].copy_from_slice(STREAM_MAGIC);
        bytes[4] = STREAM_VERSION;
        bytes[5] = ContentAlgorithm::Aes256Gcm.id();
        bytes[6..10].copy_from_slice(&key.version().get().to_be_bytes());
        bytes[10] = log2;
        bytes[12..44].copy_from_slice(&random_array::<32>());
        let header = Header::parse(bytes)?;
        out.write_all(&header.bytes)?;
        let chunk = header.chunk;
        Ok(Self {
            out,
            sealer: ChunkSealer::new(key, &header, ctx),
            chunk,
            buf: Zeroizing::new(Vec::with_capacity(chunk)),
            sealed: vec![0u8; chunk + CHUNK_OVERHEAD],
            index: 0,
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let aad = self.sealer.aad(self.index, last);
        let out = &mut self.sealed[..self.buf.len() + CHUNK_OVERHEAD];
        self.sealer.cipher.seal_to(&aad, &self.buf, out);
        self.out.write_all(out)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the last chunk and returns the writer underneath (not synced).
    pub fn finish(mut self) -> Result<W> {
        self.seal(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl StreamWriter<Vec<u8>> {
    /// Takes what has been sealed so far (the header first), for callers
    /// that pass a stream on piece by piece (an HTTP answer): constant
    /// memory, one chunk at a time.
    pub fn take_sealed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl<W: Write> Write for StreamWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            // A full chunk is sealed only when more data comes: the last
            // chunk may be full, and only `finish` knows it is the last.
            if self.buf.len() == self.chunk {
                self.seal(false)?;
            }
            let take = (self.chunk - self.buf.len()).min(data.len() - done);
            self.buf.extend_from_slice(&data[done..done + take]);
            done += take;
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a stream back: `Read` and `Seek` over the plaintext, one chunk in
/// memory at a time. The length is taken from the underlying reader's end.
pub struct StreamReader<R: Read + Seek> {
    inner: R,
    sealer: ChunkSealer,
    chunk: usize,
    chunks: u64,
    last_len: usize,
    /// Plaintext position.
    pos: u64,
    /// Index and plaintext of the chunk in `plain`, if any.
    loaded: Option<u64>,
    plain: Zeroizing<Vec<u8>>,
}

impl<R: Read + Seek> StreamReader<R> {
    /// Reads and checks the header and opens the last chunk, so that the
    /// header, the length and the stream's end are authenticated before the
    /// first read (an empty stream is authenticated too). Fails if the key
    /// version is not in the keyring, or the stream was cut or changed.
    pub fn new(keyring: &Keyring, ctx: &StreamContext, mut inner: R) -> Result<Self> {
        let total = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        let mut bytes = [0u8; STREAM_HEADER_LEN];
        if total < STREAM_HEADER_LEN as u64 {
            return Err(ScopedError::malformed(
                WHAT,
                format!("{total} bytes, shorter than its header"),
            ));
        }
        inner.read_exact(&mut bytes)?;
        let header = Header::parse(bytes)?;
        let key = keyring.get(header.key_version)?;
        let sealed_chunk = (header.chunk + CHUNK_OVERHEAD) as u64;
        let body = total - STREAM_HEADER_LEN as u64;
        let (full, rest) = (body / sealed_chunk, body % sealed_chunk);
        let (chunks, last_len) = match (full, rest) {
            (0, 0) => return Err(ScopedError::Truncated),
            (n, 0) => (n, header.chunk),
            (n, r) if r >= CHUNK_OVERHEAD as u64 => (n + 1, (r - CHUNK_OVERHEAD as u64) as usize),
            _ => return Err(ScopedError::Truncated),
        };
        let mut reader = Self {
            sealer: ChunkSealer::new(key, &header, ctx),
            chunk: header.chunk,
            inner,
            chunks,
            last_len,
            pos: 0,
            loaded: None,
            plain: Zeroizing::new(vec![0u8; header.chunk + CHUNK_OVERHEAD]),
        };
        reader.load(chunks - 1)?;
        Ok(reader)
    }

    /// The plaintext length.
    pub fn len(&self) -> u64 {
        (self.chunks - 1) * self.chunk as u64 + self.last_len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn load(&mut self, index: u64) -> Result<()> {
        if self.loaded == Some(index) {
            return Ok(());
        }
        self.loaded = None;
        let last = index + 1 == self.chunks;
        let len = if last { self.last_len } else { self.chunk };
        let offset = STREAM_HEADER_LEN as u64 + index * (self.chunk + CHUNK_OVERHEAD) as u64;
        self.inner.seek(SeekFrom::Start(offset))?;
        let buf = &mut self.plain[..len + CHUNK_OVERHEAD];
        self.inner.read_exact(buf)?;
        self.sealer.open(index, last, buf)?;
        self.plain.copy_within(NONCE_LEN..NONCE_LEN + len, 0);
        self.loaded = Some(index);
        Ok(())
    }

    /// Opens every chunk without returning plaintext: `Ok` only for a whole,
    /// untouched stream.
    pub fn verify(&mut self) -> Result<()> {
        for index in 0..self.chunks {
            self.load(index)?;
        }
        Ok(())
    }
}

fn to_io(e: ScopedError) -> io::Error {
    match e {
        ScopedError::Io(msg) => io::Error::other(msg),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<R: Read + Seek> Read for StreamReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len() || out.is_empty() {
            return Ok(0);
        }
        let index = self.pos / self.chunk as u64;
        self.load(index).map_err(to_io)?;
        let within = (self.pos % self.chunk as u64) as usize;
        let len = if index + 1 == self.chunks {
            self.last_len
        } else {
            self.chunk
        };
        let n = (len - within).min(out.len());
        out[..n].copy_from_slice(&self.plain[within..within + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for StreamReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the stream",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

/// Opens a stream that arrives in pieces, front to back, with no way to
/// seek (an HTTP request body): feed it with [`StreamOpener::update`] and
/// end with [`StreamOpener::finish`]. Plaintext is handed out chunk by
/// chunk as each authenticates, so a caller that has passed some on must
/// treat a later error as the failure of the whole stream (an HTTP answer
/// is cut, never ended cleanly). One chunk is held back until more input
/// shows it is not the last: the last chunk must say it is.
pub struct StreamOpener {
    sealer: ChunkSealer,
    chunk: usize,
    index: u64,
    /// Sealed bytes not yet opened: less than two sealed chunks.
    pending: Zeroizing<Vec<u8>>,
}

impl StreamOpener {
    /// The key version a stream's header names (to pick the keyring before
    /// the stream arrives). Checks the header as [`StreamOpener::new`] does.
    pub fn key_version(header: &[u8; STREAM_HEADER_LEN]) -> Result<u32> {
        Ok(Header::parse(*header)?.key_version)
    }

    /// Checks the header (the stream's first [`STREAM_HEADER_LEN`] bytes)
    /// and takes its key version's key from the keyring.
    pub fn new(
        keyring: &Keyring,
        ctx: &StreamContext,
        header: &[u8; STREAM_HEADER_LEN],
    ) -> Result<Self> {
        let header = Header::parse(*header)?;
        let key = keyring.get(header.key_version)?;
        Ok(Self {
            sealer: ChunkSealer::new(key, &header, ctx),
            chunk: header.chunk,
            index: 0,
            pending: Zeroizing::new(Vec::with_capacity(2 * (header.chunk + CHUNK_OVERHEAD))),
        })
    }

    fn sealed_chunk(&self) -> usize {
        self.chunk + CHUNK_OVERHEAD
    }

    /// Takes the next bytes of the stream (after the header); appends to
    /// `out` the plaintext of every chunk now known not to be the last.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let sealed = self.sealed_chunk();
        while !input.is_empty() {
            let take = (2 * sealed - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            // More than one sealed chunk held: the first is not the last.
            while self.pending.len() > sealed {
                self.sealer
                    .open(self.index, false, &mut self.pending[..sealed])?;
                out.extend_from_slice(&self.pending[NONCE_LEN..NONCE_LEN + self.chunk]);
                self.pending.drain(..sealed);
                self.index += 1;
            }
        }
        Ok(())
    }

    /// The stream has ended: opens what is held as the last chunk and
    /// appends its plaintext to `out`. A stream cut at a chunk boundary
    /// ([`ScopedError::Truncated`]) or anywhere else fails here.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        let len = self.pending.len();
        if len < CHUNK_OVERHEAD {
            return Err(ScopedError::Truncated);
        }
        self.sealer.open(self.index, true, &mut self.pending[..])?;
        out.extend_from_slice(&self.pending[NONCE_LEN..len - TAG_LEN]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::keys::ScopeSecret;
    use crate::name::KeyVersion;

    fn ring() -> Keyring {
        Keyring::new(ScopeKey::new(
            ScopeId::new("user:1").unwrap(),
            KeyVersion::FIRST,
            &ScopeSecret::random(),
            None,
        ))
    }

    fn ctx() -> StreamContext {
        StreamContext::new("uploads", "f-1").unwrap()
    }

    fn seal(ring: &Keyring, data: &[u8], log2: u8) -> Vec<u8> {
        let mut w = StreamWriter::new(ring.current(), &ctx(), Some(log2), Vec::new()).unwrap();
        // Uneven writes cross chunk boundaries.
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn open(ring: &Keyring, sealed: Vec<u8>) -> Result<Vec<u8>> {
        let mut r = StreamReader::new(ring, &ctx(), Cursor::new(sealed))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| match e.into_inner() {
            Some(inner) => match inner.downcast::<ScopedError>() {
                Ok(e) => *e,
                Err(e) => ScopedError::Io(e.to_string()),
            },
            None => ScopedError::Io("read".into()),
        })?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let ring = ring();
        let chunk: usize = 4096;
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal(&ring, &data, 12);
            let chunks = len.div_ceil(chunk).max(1);
            assert_eq!(
                sealed.len(),
                STREAM_HEADER_LEN + len + chunks * CHUNK_OVERHEAD,
                "len {len}"
            );
            assert_eq!(open(&ring, sealed).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn random_access_reads_the_right_bytes() {
        let ring = ring();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let sealed = seal(&ring, &data, 12);
        let mut r = StreamReader::new(&ring, &ctx(), Cursor::new(sealed)).unwrap();
        assert_eq!(r.len(), data.len() as u64);
        for start in [0usize, 4095, 4096, 12_345, 49_990] {
            r.seek(SeekFrom::Start(start as u64)).unwrap();
            let mut buf = vec![0u8; 9000];
            let mut got = 0;
            while got < buf.len() {
                let n = r.read(&mut buf[got..]).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            let end = (start + 9000).min(data.len());
            assert_eq!(&buf[..got], &data[start..end]);
        }
        r.verify().unwrap();
    }

    #[test]
    fn cut_extended_reordered_or_moved_streams_are_refused() {
        let ring = ring();
        let data = vec![3u8; 3 * 4096 + 10];
        let sealed = seal(&ring, &data, 12);
        let sealed_chunk = 4096 + CHUNK_OVERHEAD;
        // Cut at a chunk boundary: the new last chunk does not say so.
        let cut = sealed[..STREAM_HEADER_LEN + 2 * sealed_chunk].to_vec();
        assert_eq!(open(&ring, cut).unwrap_err(), ScopedError::Truncated);
        // Cut inside a chunk.
        let cut = sealed[..sealed.len() - 5].to_vec();
        assert!(open(&ring, cut).is_err());
        // Only the header.
        assert_eq!(
            open(&ring, sealed[..STREAM_HEADER_LEN].to_vec()).unwrap_err(),
            ScopedError::Truncated
        );
        // Two chunks swapped.
        let mut swapped = sealed.clone();
        let (a, b) = (STREAM_HEADER_LEN, STREAM_HEADER_LEN + sealed_chunk);
        let first = swapped[a..b].to_vec();
        let second = swapped[b..b + sealed_chunk].to_vec();
        swapped[a..b].copy_from_slice(&second);
        swapped[b..b + sealed_chunk].copy_from_slice(&first);
        assert_eq!(
            open(&ring, swapped).unwrap_err(),
            ScopedError::Authentication
        );
        // Extended by a copy of a middle chunk.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[a..b]);
        assert!(open(&ring, longer).is_err());
        // Another object's context: refused when opened.
        let moved = StreamReader::new(
            &ring,
            &StreamContext::new("uploads", "f-2").unwrap(),
            Cursor::new(sealed.clone()),
        );
        assert_eq!(moved.err().unwrap(), ScopedError::Authentication);
        // Every flipped header or body bit.
        for i in (0..sealed.len()).step_by(97) {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(open(&ring, bad).is_err(), "byte {i}");
        }
    }

    /// Opens `sealed` through [`StreamOpener`], fed in pieces of `piece`
    /// bytes.
    fn open_in_pieces(
        ring: &Keyring,
        ctx: &StreamContext,
        sealed: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>> {
        let header: &[u8; STREAM_HEADER_LEN] = sealed
            .get(..STREAM_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(ScopedError::Truncated)?;
        let mut opener = StreamOpener::new(ring, ctx, header)?;
        let mut out = Vec::new();
        for bytes in sealed[STREAM_HEADER_LEN..].chunks(piece) {
            opener.update(bytes, &mut out)?;
        }
        opener.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_stream_fed_in_pieces_opens_as_the_reader_opens_it() {
        let ring = ring();
        let chunk: usize = 4096;
        for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 11 % 253) as u8).collect();
            let sealed = seal(&ring, &data, 12);
            for piece in [1, 7, chunk, chunk + CHUNK_OVERHEAD, 3 * chunk + 1, 1 << 20] {
                assert_eq!(
                    open_in_pieces(&ring, &ctx(), &sealed, piece).unwrap(),
                    data,
                    "len {len}, pieces of {piece}"
                );
            }
        }
        // The writer's output taken piece by piece is the same stream.
        let data = vec![9u8; 3 * chunk + 5];
        let mut w = StreamWriter::new(ring.current(), &ctx(), Some(12), Vec::new()).unwrap();
        let mut sealed = w.take_sealed();
        assert_eq!(sealed.len(), STREAM_HEADER_LEN);
        for piece in data.chunks(1500) {
            w.write_all(piece).unwrap();
            sealed.extend(w.take_sealed());
        }
        sealed.extend(w.finish().unwrap());
        assert_eq!(open(&ring, sealed.clone()).unwrap(), data);
        assert_eq!(open_in_pieces(&ring, &ctx(), &sealed, 999).unwrap(), data);
    }

    #[test]
    fn a_stream_fed_in_pieces_refuses_what_the_reader_refuses() {
        let ring = ring();
        let data = vec![5u8; 3 * 4096 + 10];
        let sealed = seal(&ring, &data, 12);
        let sealed_chunk = 4096 + CHUNK_OVERHEAD;
        let feed = |bytes: &[u8]| open_in_pieces(&ring, &ctx(), bytes, 1000);
        let cut = &sealed[..STREAM_HEADER_LEN + 2 * sealed_chunk];
        assert_eq!(feed(cut).unwrap_err(), ScopedError::Truncated);
        assert_eq!(
            feed(&sealed[..STREAM_HEADER_LEN]).unwrap_err(),
            ScopedError::Truncated
        );
        assert!(feed(&sealed[..sealed.len() - 5]).is_err());
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[STREAM_HEADER_LEN..STREAM_HEADER_LEN + sealed_chunk]);
        assert!(feed(&longer).is_err());
        let other = StreamContext::new("uploads", "f-2").unwrap();
        assert_eq!(
            open_in_pieces(&ring, &other, &sealed, 1000).unwrap_err(),
            ScopedError::Authentication
        );
        for i in (0..sealed.len()).step_by(89) {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(feed(&bad).is_err(), "byte {i}");
        }
        let header: &[u8; STREAM_HEADER_LEN] = sealed[..STREAM_HEADER_LEN].try_into().unwrap();
        assert_eq!(StreamOpener::key_version(header).unwrap(), 1);
    }

    #[test]
    fn bad_headers_have_clear_errors() {
        let ring = ring();
        let sealed = seal(&ring, b"hello", 12);
        let mut bad = sealed.clone();
        bad[0] = b'X';
        assert_eq!(open(&ring, bad).unwrap_err().code(), "malformed");
        let mut bad = sealed.clone();
        bad[4] = 2;
        assert_eq!(open(&ring, bad).unwrap_err().code(), "unknown_version");
        let mut bad = sealed.clone();
        bad[10] = 40;
        assert_eq!(open(&ring, bad).unwrap_err().code(), "malformed");
        let mut bad = sealed;
        bad[9] = 9;
        assert_eq!(open(&ring, bad).unwrap_err().code(), "unknown_key_version");
        assert_eq!(open(&ring, b"AT".to_vec()).unwrap_err().code(), "malformed");
        assert!(StreamWriter::new(ring.current(), &ctx(), Some(30), Vec::new()).is_err());
    }
}
