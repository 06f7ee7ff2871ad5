//! Every HKDF `info` label and associated-data domain tag in atrest, in one
//! table. A label is never reused for a second purpose; changing one is a
//! format change. `docs/format.md` lists the same table.

/// Key-encryption key of a keyslot, from the slot's secret (Argon2id output,
/// recovery key or key file). Salt: the vault id.
pub const KEYSLOT_WRAP: &[u8] = b"atrest v1 keyslot wrap";
/// MAC key for the vault config (header), from the vault master key.
pub const CONFIG_MAC: &[u8] = b"atrest v1 config mac";
/// Content key, from the vault master key.
pub const CONTENT_KEY: &[u8] = b"atrest v1 content key";
/// Per-file content key, from the content key. Salt: the file id.
pub const FILE_KEY: &[u8] = b"atrest v1 file key";
/// 64-byte AES-SIV key for names, from the vault master key.
pub const NAME_KEY: &[u8] = b"atrest v1 name key";
/// Key for small metadata (symlink targets, xattr values), from the vault
/// master key.
pub const METADATA_KEY: &[u8] = b"atrest v1 metadata key";
/// The 64-byte master key of an fscrypt-backend vault, given to the kernel.
/// Salt: the vault id.
pub const FSCRYPT_KEY: &[u8] = b"atrest v1 fscrypt key";
/// Reserved for the backup repository key (a later issue).
pub const BACKUP_KEY: &[u8] = b"atrest v1 backup key";
/// Reserved for scoped application keys (a later issue).
pub const RECORDS_KEY: &[u8] = b"atrest v1 records key";

/// Associated-data domain tags, so a ciphertext made for one purpose never
/// authenticates as another.
pub mod domain {
    pub const KEYSLOT: &[u8] = b"atrest keyslot v1";
    pub const FILE_NAME: &[u8] = b"atrest name v1";
    pub const XATTR_NAME: &[u8] = b"atrest xattr name v1";
    pub const XATTR_VALUE: &[u8] = b"atrest xattr value v1";
    pub const SYMLINK: &[u8] = b"atrest symlink v1";
    /// Prefix of the SHA-256 input whose first 16 bits check a recovery key.
    pub const RECOVERY_CHECKSUM: &[u8] = b"atrest recovery key checksum v1";
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_distinct() {
        let all = [
            super::KEYSLOT_WRAP,
            super::CONFIG_MAC,
            super::CONTENT_KEY,
            super::FILE_KEY,
            super::NAME_KEY,
            super::METADATA_KEY,
            super::FSCRYPT_KEY,
            super::BACKUP_KEY,
            super::RECORDS_KEY,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
