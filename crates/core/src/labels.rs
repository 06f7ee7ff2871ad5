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
/// Wrap key of a remote keyslot, from the blinded exchange's shared point
/// `K`. Salt: `C ‖ S` (the keyslot's point and the authority's public key).
pub const REMOTE_WRAP: &[u8] = b"atrest v1 remote wrap";
/// MAC key that authenticates the shares of one threshold split, from the
/// split secret. Salt: the split id.
pub const SHARE_MAC: &[u8] = b"atrest v1 share mac";
/// Key that seals member `i`'s share in a threshold keyslot, from that
/// member's exchange key `K_i`; `info` is this label ‖ u8 i. Salt: the
/// vault id.
pub const THRESHOLD_SHARE_KEY: &[u8] = b"atrest v1 threshold share";

/// Seals the answer to a request `atrest keyd` held for an approver, kept
/// in its database for the request's later polls, from the request's poll
/// token. Salt: the request id.
pub const HELD_GRANT: &[u8] = b"atrest v1 held grant";

/// Host exchange secrets at rest in `atrest keyd`'s database
/// (docs/format.md, "Key authority: host secrets at rest"). IKM: the
/// secrets key `K_e` of epoch `e`; salt: `e` as a big-endian u32, except
/// [`KEYD_SECRETS_RATCHET`] (`e + 1`).
///
/// AES-256-GCM key that wraps every host secret of epoch `e`.
pub const KEYD_SECRETS_WRAP: &[u8] = b"atrest v1 keyd secrets wrap";
/// The one-way step `K_{e+1} = HKDF(K_e)` a shred takes.
pub const KEYD_SECRETS_RATCHET: &[u8] = b"atrest v1 keyd secrets ratchet";
/// The check value the database keeps of the epoch's key, so a data
/// directory with another authority's key file is refused at start.
pub const KEYD_SECRETS_CHECK: &[u8] = b"atrest v1 keyd secrets check";

/// Scope bucket keys at rest in `atrest keyd`'s database (decision 0020,
/// docs/format.md "Key authority: scope bucket keys at rest"): the same
/// three uses as the secrets key's, of the records epoch key `K_e` in
/// `records.key`, with the same salts.
///
/// AES-256-GCM key that wraps every bucket key of epoch `e`.
pub const KEYD_RECORDS_WRAP: &[u8] = b"atrest v1 keyd records wrap";
/// The one-way step `K_{e+1} = HKDF(K_e)` a scope's shred takes.
pub const KEYD_RECORDS_RATCHET: &[u8] = b"atrest v1 keyd records ratchet";
/// The check value the database keeps of the records epoch's key.
pub const KEYD_RECORDS_CHECK: &[u8] = b"atrest v1 keyd records check";
/// `K_0` of a data directory whose `records.key` is still the 32-byte
/// master of before decision 0020 (IKM: that master; salt: empty), so a
/// migration interrupted before the file is replaced can be finished from
/// the old file.
pub const KEYD_RECORDS_ORIGIN: &[u8] = b"atrest v1 keyd records origin";

/// Format 2 (docs/format.md §16.2). Salt: the vault id, except
/// [`FILE_KEY_V2`] (the file id).
///
/// Content key of format 2, from the vault master key; never seals.
pub const CONTENT_KEY_V2: &[u8] = b"atrest v2 content key";
/// Per-file block key of format 2, from [`CONTENT_KEY_V2`]'s key.
pub const FILE_KEY_V2: &[u8] = b"atrest v2 file key";
/// Seals format 2 metadata pages.
pub const META_PAGE_KEY: &[u8] = b"atrest v2 metadata page key";
/// Seals the bodies of format 2 log records.
pub const LOG_KEY: &[u8] = b"atrest v2 log key";
/// HMAC-SHA256 key of the format 2 superblock.
pub const SUPERBLOCK_MAC: &[u8] = b"atrest v2 superblock mac";
/// HMAC-SHA256 key of format 2 directory entry hashes.
pub const ENTRY_HASH_KEY: &[u8] = b"atrest v2 entry hash key";
/// HMAC-SHA256 key of the local witness file.
pub const WITNESS_MAC: &[u8] = b"atrest v2 witness mac";

/// Scoped application encryption (docs/format.md §17). Salts as noted.
///
/// Key-encryption key that wraps one scope's key, from the records key
/// (salt: the scope id).
pub const SCOPE_WRAP: &[u8] = b"atrest v1 scope wrap";
/// A scope key combined with a client share (IKM: scope key ‖ share; salt:
/// the canonical scope id and key version).
pub const SCOPE_SESSION: &[u8] = b"atrest v1 scope session";
/// Field-encryption key of one scope key version (salt: the scope id).
pub const SCOPE_FIELD_KEY: &[u8] = b"atrest v1 scope field key";
/// HMAC-SHA256 key of one blind index (salt: the index definition).
pub const BLIND_INDEX_KEY: &[u8] = b"atrest v1 blind index key";
/// Per-file key of an encrypted stream (salt: the stream's random salt).
pub const STREAM_KEY: &[u8] = b"atrest v1 stream key";
/// Key-encryption key that wraps a group scope's key for one member (salt:
/// the group's scope id).
pub const GROUP_WRAP: &[u8] = b"atrest v1 group wrap";

/// LUKS2 volumes bound to a key authority (docs/format.md §19). Salt: the
/// binding id kept in the volume's `atrest` token. IKM: the exchange key
/// the authority's answer unblinded to.
///
/// The passphrase of the LUKS keyslot the binding added.
pub const LUKS_PASSPHRASE: &[u8] = b"atrest v1 luks passphrase";
/// HMAC-SHA256 key of the token's parameters.
pub const LUKS_TOKEN_MAC: &[u8] = b"atrest v1 luks token mac";

/// Backup repositories (docs/format.md §18). Salt: the repository id,
/// except [`BACKUP_PACK_KEY`] (the pack's random salt).
///
/// BLAKE3 key of blob ids.
pub const BACKUP_ID_KEY: &[u8] = b"atrest v1 backup id key";
/// Seed of the chunker's gear table.
pub const BACKUP_CHUNKER_KEY: &[u8] = b"atrest v1 backup chunker key";
/// Parent of every pack key; also seals the repository's other objects.
pub const BACKUP_OBJECT_KEY: &[u8] = b"atrest v1 backup object key";
/// A pack's own key, from [`BACKUP_OBJECT_KEY`]'s key.
pub const BACKUP_PACK_KEY: &[u8] = b"atrest v1 backup pack key";
/// Key-encryption key of one repository keyslot, followed by the slot's
/// kind byte (IKM: the slot secret).
pub const BACKUP_KEYSLOT_WRAP: &[u8] = b"atrest v1 backup keyslot wrap";
/// HMAC-SHA256 key over a repository's keyslot objects (IKM: the
/// repository's master key).
pub const BACKUP_KEYSLOT_MAC: &[u8] = b"atrest v1 backup keyslot mac";

/// Associated-data domain tags, so a ciphertext made for one purpose never
/// authenticates as another.
pub mod domain {
    pub const KEYSLOT: &[u8] = b"atrest keyslot v1";
    pub const FILE_NAME: &[u8] = b"atrest name v1";
    pub const XATTR_NAME: &[u8] = b"atrest xattr name v1";
    pub const XATTR_VALUE: &[u8] = b"atrest xattr value v1";
    pub const SYMLINK: &[u8] = b"atrest symlink v1";
    /// First bytes of the AAD of a FUSE vault's sealed root attributes.
    pub const ROOT_ATTR: &[u8] = b"atrest root attributes v1";
    /// Prefix of the SHA-256 input whose first 16 bits check a recovery key.
    pub const RECOVERY_CHECKSUM: &[u8] = b"atrest recovery key checksum v1";
    /// Prefix of the SHA-256 input whose first 16 bytes name an authority's
    /// exchange public key (the key id a host sends with its request).
    pub const EXCHANGE_KEY_ID: &[u8] = b"atrest exchange key id v1";
    /// Prefix of the bytes a LUKS volume's `atrest` token MAC covers.
    pub const LUKS_TOKEN: &[u8] = b"atrest luks token v1";
    /// Prefix of the bytes a host signs in an unlock request.
    pub const UNLOCK_REQUEST: &[u8] = b"atrest unlock request v1";
    /// Prefix of the bytes a host signs to announce a planned reboot.
    pub const REBOOT_NOTICE: &[u8] = b"atrest reboot notice v1";
    /// The AAD of a held request's sealed answer, followed by the request id.
    pub const HELD_GRANT: &[u8] = b"atrest held grant v1";
    /// First field of the AAD of a host secret wrapped at rest by keyd.
    pub const KEYD_HOST_SECRET: &[u8] = b"atrest keyd host secret v1";
    /// First field of the AAD of a scope bucket key wrapped at rest by keyd.
    pub const KEYD_SCOPE_BUCKET: &[u8] = b"atrest keyd scope bucket v1";
    /// Signed bind requests (`POST /v1/bind`).
    pub const BIND_REQUEST: &[u8] = b"atrest bind request v1";
    /// Prefix of the bytes a threshold share's MAC covers.
    pub const THRESHOLD_SHARE: &[u8] = b"atrest threshold share v1";
    /// First bytes of the AAD of a threshold keyslot's sealed share.
    pub const THRESHOLD_MEMBER: &[u8] = b"atrest threshold member v1";
    /// Prefix of the SHA-256 input that hashes one audit log entry.
    pub const AUDIT_ENTRY: &[u8] = b"atrest audit entry v1";
    /// Prefix of the bytes the authority signs in an audit checkpoint.
    pub const AUDIT_CHECKPOINT: &[u8] = b"atrest audit checkpoint v1";
    /// Prefix of the bytes the authority signs in an audit tree head (the
    /// Merkle root over the whole log, signed at every committed batch).
    pub const AUDIT_TREE_HEAD: &[u8] = b"atrest audit tree head v1";
    /// First bytes of a format 2 metadata page's AAD.
    pub const META_PAGE: &[u8] = b"atrest meta page v2";
    /// First bytes of a format 2 log record's AAD.
    pub const LOG_RECORD: &[u8] = b"atrest log record v2";
    /// First bytes of every format 2 log chain hash input (not an AAD).
    pub const LOG_CHAIN: &[u8] = b"atrest log chain v2";
    /// First bytes of the format 2 superblock's MAC input.
    pub const SUPERBLOCK: &[u8] = b"atrest superblock v2";
    /// First field of a host's signed generation report.
    pub const GENERATION_REPORT: &[u8] = b"atrest generation report v1";
    /// First bytes of the local witness file's MAC input.
    pub const LOCAL_WITNESS: &[u8] = b"atrest local witness v1";
    /// Prefix of the hash naming a format 1 path in migration records.
    pub const MIGRATE: &[u8] = b"atrest migrate v2";
    /// First field of an encrypted application field's AAD.
    pub const SCOPED_FIELD: &[u8] = b"atrest scoped field v1";
    /// First field of a blind index's MAC input.
    pub const BLIND_INDEX: &[u8] = b"atrest blind index v1";
    /// First field of a blind index key's salt (the index definition).
    pub const BLIND_INDEX_DEFINITION: &[u8] = b"atrest blind index definition v1";
    /// First field of an encrypted stream chunk's AAD.
    pub const SCOPED_STREAM: &[u8] = b"atrest scoped stream v1";
    /// First field of a wrapped scope key's AAD.
    pub const SCOPE_KEY_WRAP: &[u8] = b"atrest scope key wrap v1";
    /// First field of a group key wrapped for a member: its AAD.
    pub const GROUP_KEY_WRAP: &[u8] = b"atrest group key wrap v1";
    /// First field of the salt that combines a scope key with a client share.
    pub const SCOPE_SESSION: &[u8] = b"atrest scope session v1";
    /// First field of a backup blob's AAD.
    pub const BACKUP_BLOB: &[u8] = b"atrest backup blob v1";
    /// First field of the AAD of a backup repository file (config, pack
    /// header and trailer, index, snapshot).
    pub const BACKUP_FILE: &[u8] = b"atrest backup file v1";
    /// First bytes of a backup repository keyslot's AAD.
    pub const BACKUP_KEYSLOT: &[u8] = b"atrest backup keyslot v1";
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
            super::REMOTE_WRAP,
            super::SHARE_MAC,
            super::THRESHOLD_SHARE_KEY,
            super::CONTENT_KEY_V2,
            super::FILE_KEY_V2,
            super::META_PAGE_KEY,
            super::LOG_KEY,
            super::SUPERBLOCK_MAC,
            super::ENTRY_HASH_KEY,
            super::WITNESS_MAC,
            super::SCOPE_WRAP,
            super::SCOPE_SESSION,
            super::SCOPE_FIELD_KEY,
            super::BLIND_INDEX_KEY,
            super::STREAM_KEY,
            super::GROUP_WRAP,
            super::BACKUP_ID_KEY,
            super::BACKUP_CHUNKER_KEY,
            super::BACKUP_OBJECT_KEY,
            super::BACKUP_PACK_KEY,
            super::LUKS_PASSPHRASE,
            super::LUKS_TOKEN_MAC,
            super::BACKUP_KEYSLOT_WRAP,
            super::BACKUP_KEYSLOT_MAC,
            super::HELD_GRANT,
            super::KEYD_SECRETS_WRAP,
            super::KEYD_SECRETS_RATCHET,
            super::KEYD_SECRETS_CHECK,
            super::KEYD_RECORDS_WRAP,
            super::KEYD_RECORDS_RATCHET,
            super::KEYD_RECORDS_CHECK,
            super::KEYD_RECORDS_ORIGIN,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn domain_tags_are_distinct() {
        use super::domain::*;
        let all = [
            KEYSLOT,
            FILE_NAME,
            XATTR_NAME,
            XATTR_VALUE,
            ROOT_ATTR,
            SYMLINK,
            RECOVERY_CHECKSUM,
            EXCHANGE_KEY_ID,
            UNLOCK_REQUEST,
            REBOOT_NOTICE,
            BIND_REQUEST,
            LUKS_TOKEN,
            THRESHOLD_SHARE,
            THRESHOLD_MEMBER,
            AUDIT_ENTRY,
            AUDIT_CHECKPOINT,
            AUDIT_TREE_HEAD,
            META_PAGE,
            LOG_RECORD,
            LOG_CHAIN,
            SUPERBLOCK,
            GENERATION_REPORT,
            LOCAL_WITNESS,
            MIGRATE,
            SCOPED_FIELD,
            BLIND_INDEX,
            BLIND_INDEX_DEFINITION,
            SCOPED_STREAM,
            SCOPE_KEY_WRAP,
            GROUP_KEY_WRAP,
            SCOPE_SESSION,
            BACKUP_BLOB,
            BACKUP_FILE,
            BACKUP_KEYSLOT,
            HELD_GRANT,
            KEYD_HOST_SECRET,
            KEYD_SCOPE_BUCKET,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
