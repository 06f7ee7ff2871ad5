use std::sync::Arc;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey};
use atrest_meta::record::{BLOCK_SIZE as BLOCK, Timestamp};
use atrest_meta::{
    BlockVerifier, ConfigBinding, FsError, MemBacking, MetaKeys, NoContents, SealedBlock, Store,
};

pub const CONFIG: ConfigBinding = ConfigBinding {
    generation: 1,
    hash: [0xc0; 32],
};

pub fn keys(algorithm: ContentAlgorithm) -> MetaKeys {
    MetaKeys::derive(&SecretKey::from_bytes([0x42; 32]), [0x17; 16], algorithm)
}

pub fn at(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

/// A new store on a fresh in-memory backing.
pub fn new_store(algorithm: ContentAlgorithm) -> (Store, Arc<MemBacking>) {
    let backing = Arc::new(MemBacking::new());
    let store = Store::format(
        keys(algorithm),
        backing.clone(),
        CONFIG,
        (0o755, 0, 0),
        at(1),
    )
    .unwrap();
    (store, backing)
}

pub fn reopen(backing: &Arc<MemBacking>, algorithm: ContentAlgorithm) -> Store {
    Store::open(keys(algorithm), backing.clone(), CONFIG, &NoContents).unwrap()
}

/// A stand-in for the content layer (atrest-vault's `content2`), which
/// the store never sees: per-file keys, AAD `file id ‖ block`, full
/// 4,096-byte blocks, split into map entry and ciphertext.
pub struct TestContent {
    key: SecretKey,
    algorithm: ContentAlgorithm,
}

impl TestContent {
    pub fn new(algorithm: ContentAlgorithm) -> Self {
        Self {
            key: SecretKey::from_bytes([0x5c; 32]),
            algorithm,
        }
    }

    fn cipher(&self, file_id: &[u8; 16]) -> BlockCipher {
        BlockCipher::new(self.algorithm, &self.key.derive(file_id, b"test file key"))
    }

    fn aad(file_id: &[u8; 16], n: u64) -> Vec<u8> {
        [&file_id[..], &n.to_be_bytes()].concat()
    }

    pub fn seal(&self, file_id: &[u8; 16], n: u64, plain: &[u8]) -> SealedBlock {
        assert_eq!(plain.len(), BLOCK);
        let sealed = self.cipher(file_id).seal(&Self::aad(file_id, n), plain);
        let nonce_len = self.algorithm.nonce_len();
        let mut nonce_tag = [0u8; 40];
        nonce_tag[..nonce_len].copy_from_slice(&sealed[..nonce_len]);
        nonce_tag[nonce_len..self.algorithm.overhead()]
            .copy_from_slice(&sealed[nonce_len + BLOCK..]);
        SealedBlock {
            nonce_tag,
            ciphertext: sealed[nonce_len..nonce_len + BLOCK].to_vec(),
        }
    }

    pub fn open(
        &self,
        file_id: &[u8; 16],
        n: u64,
        nonce_tag: &[u8; 40],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        let nonce_len = self.algorithm.nonce_len();
        let sealed = [
            &nonce_tag[..nonce_len],
            ciphertext,
            &nonce_tag[nonce_len..self.algorithm.overhead()],
        ]
        .concat();
        self.cipher(file_id)
            .open(&Self::aad(file_id, n), &sealed)
            .ok()
    }

    /// Reads the whole file `id`.
    pub fn read(&self, store: &mut Store, id: u64) -> Result<Vec<u8>, String> {
        let head = store.getattr(id).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for n in 0..head.size.div_ceil(BLOCK as u64) {
            match store.read_block(id, n).map_err(|e| e.to_string())? {
                None => out.extend_from_slice(&[0; BLOCK]),
                Some(b) => out.extend_from_slice(
                    &self
                        .open(&head.file_id, n, &b.nonce_tag, &b.ciphertext)
                        .ok_or_else(|| format!("block {n} of object {id} does not open"))?,
                ),
            }
        }
        out.truncate(head.size as usize);
        Ok(out)
    }

    fn plain_block(
        &self,
        store: &mut Store,
        id: u64,
        file_id: &[u8; 16],
        n: u64,
    ) -> Result<Vec<u8>, FsError> {
        Ok(match store.read_block(id, n)? {
            None => vec![0; BLOCK],
            Some(b) => self
                .open(file_id, n, &b.nonce_tag, &b.ciphertext)
                .expect("blocks open"),
        })
    }

    /// `pwrite` of `data` at `offset`: partial blocks read, changed and
    /// resealed.
    pub fn write(
        &self,
        store: &mut Store,
        id: u64,
        offset: u64,
        data: &[u8],
        t: i64,
    ) -> Result<(), FsError> {
        if data.is_empty() {
            return Ok(());
        }
        let head = store.getattr(id)?;
        let end = offset + data.len() as u64;
        let first = offset / BLOCK as u64;
        let last = (end - 1) / BLOCK as u64;
        let mut blocks = Vec::new();
        for n in first..=last {
            let start = n * BLOCK as u64;
            let mut plain = if offset <= start && end >= start + BLOCK as u64 {
                vec![0; BLOCK]
            } else {
                self.plain_block(store, id, &head.file_id, n)?
            };
            let from = offset.max(start);
            let to = end.min(start + BLOCK as u64);
            plain[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            blocks.push(self.seal(&head.file_id, n, &plain));
        }
        store.write_blocks(id, first, &blocks, end, at(t))?;
        Ok(())
    }

    /// `ftruncate` to `size`, resealing a cut block with its tail zeroed.
    pub fn truncate(&self, store: &mut Store, id: u64, size: u64, t: i64) -> Result<(), FsError> {
        let head = store.getattr(id)?;
        let n = size / BLOCK as u64;
        let tail = if size < head.size && !size.is_multiple_of(BLOCK as u64) {
            match store.read_block(id, n)? {
                None => None,
                Some(b) => {
                    let mut plain = self
                        .open(&head.file_id, n, &b.nonce_tag, &b.ciphertext)
                        .expect("blocks open");
                    plain[(size % BLOCK as u64) as usize..].fill(0);
                    Some(self.seal(&head.file_id, n, &plain))
                }
            }
        } else {
            None
        };
        store.truncate(id, size, tail, at(t))?;
        Ok(())
    }
}

impl BlockVerifier for TestContent {
    fn verify(&self, file_id: &[u8; 16], n: u64, nonce_tag: &[u8; 40], ciphertext: &[u8]) -> bool {
        self.open(file_id, n, nonce_tag, ciphertext).is_some()
    }
}
