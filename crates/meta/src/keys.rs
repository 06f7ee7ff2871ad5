use atrest_core::{BlockCipher, ContentAlgorithm, HeaderMac, SecretKey, labels};

/// The keys of a format 2 vault's metadata (§16.2), derived from the vault
/// master key. Each is zeroized when dropped (atrest-core's key types).
pub struct MetaKeys {
    vault_id: [u8; 16],
    algorithm: ContentAlgorithm,
    page: BlockCipher,
    log: BlockCipher,
    superblock: HeaderMac,
    entry_hash: HeaderMac,
    witness: HeaderMac,
}

impl MetaKeys {
    pub fn derive(master: &SecretKey, vault_id: [u8; 16], algorithm: ContentAlgorithm) -> Self {
        let key = |label| master.derive(&vault_id, label);
        Self {
            vault_id,
            algorithm,
            page: BlockCipher::new(algorithm, &key(labels::META_PAGE_KEY)),
            log: BlockCipher::new(algorithm, &key(labels::LOG_KEY)),
            superblock: HeaderMac::new(&key(labels::SUPERBLOCK_MAC)),
            entry_hash: HeaderMac::new(&key(labels::ENTRY_HASH_KEY)),
            witness: HeaderMac::new(&key(labels::WITNESS_MAC)),
        }
    }

    pub fn vault_id(&self) -> &[u8; 16] {
        &self.vault_id
    }

    pub fn algorithm(&self) -> ContentAlgorithm {
        self.algorithm
    }

    pub(crate) fn page(&self) -> &BlockCipher {
        &self.page
    }

    /// The cipher of the log's records (§16.12).
    pub fn log(&self) -> &BlockCipher {
        &self.log
    }

    pub(crate) fn superblock(&self) -> &HeaderMac {
        &self.superblock
    }

    /// `K_witness`, the MAC key of the host's local witness file (§16.17.5).
    pub(crate) fn witness(&self) -> &HeaderMac {
        &self.witness
    }

    /// The hash of `name` in directory `dir` (§16.8): the first 8 bytes of
    /// HMAC-SHA256(K_hash, u64be dir ‖ name), raised to 3 if below (0, 1
    /// and 2 are `readdir` offsets of the start, `.` and `..`).
    pub fn entry_hash(&self, dir: u64, name: &[u8]) -> u64 {
        let mut input = Vec::with_capacity(8 + name.len());
        input.extend_from_slice(&dir.to_be_bytes());
        input.extend_from_slice(name);
        let mac = self.entry_hash.sign(&input);
        u64::from_be_bytes(mac[..8].try_into().expect("8 bytes")).max(3)
    }
}
