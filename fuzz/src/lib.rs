//! Helpers shared by the fuzz targets: an independent encoder of the vault
//! config format (written from the format, not by calling the parser), the
//! invariants every accepted config must satisfy, and name transforms under
//! fixed keys (so seed files made by `examples/gen_seeds.rs` decrypt).
//!
//! Constants the vault crate keeps private (`MAX_SLOTS`, `MAX_LABEL`,
//! `WRAPPED_LEN`, `MAX_CONFIG_LEN`) are restated here; a change there that
//! is not mirrored here shows up as a fuzz failure, which is the point.

use std::ffi::OsStr;

use atrest_core::{BlockCipher, ContentAlgorithm, MAC_LEN, NameCipher, SecretBytes, SecretKey};
use atrest_vault::names::NameTransform;
use atrest_vault::{Backend, SlotKind, VaultConfig};

pub const MAGIC: &[u8; 8] = atrest_vault::MAGIC;
pub const VERSION: u16 = atrest_vault::VERSION;
pub const BLOCK_SIZE: u32 = atrest_vault::BLOCK_SIZE;
pub const MAX_SLOTS: usize = 32;
pub const MAX_LABEL: usize = 64;
pub const WRAPPED_LEN: usize = 32 + 28;
pub const MAX_CONFIG_LEN: usize = 64 * 1024;
/// `magic (8) ‖ version (2) ‖ body length (4)`.
pub const FRAME_HEAD: usize = 14;
/// Body bytes before the keyslot count: vault id, created, generation,
/// algorithm, block size, backend, flags.
pub const BODY_FIXED: usize = 16 + 8 + 8 + 1 + 4 + 1 + 2;

/// The fixed fields of a config body.
#[derive(Debug, Clone, Copy)]
pub struct Fixed {
    pub vault_id: [u8; 16],
    pub created_unix: u64,
    pub generation: u64,
    pub algorithm: u8,
    pub block_size: u32,
    pub backend: u8,
    pub flags: u16,
}

impl Fixed {
    pub fn valid(
        vault_id: [u8; 16],
        created_unix: u64,
        generation: u64,
        algorithm: ContentAlgorithm,
    ) -> Self {
        Self {
            vault_id,
            created_unix,
            generation,
            algorithm: algorithm.id(),
            block_size: BLOCK_SIZE,
            backend: 1,
            flags: 0,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.vault_id);
        out.extend_from_slice(&self.created_unix.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(self.algorithm);
        out.extend_from_slice(&self.block_size.to_be_bytes());
        out.push(self.backend);
        out.extend_from_slice(&self.flags.to_be_bytes());
    }
}

/// The on-disk parameter bytes of a slot kind.
pub fn kind_params(kind: &SlotKind) -> Vec<u8> {
    match kind {
        SlotKind::Passphrase { params, salt } => {
            let mut out = Vec::with_capacity(28);
            out.extend_from_slice(&params.memory_kib.to_be_bytes());
            out.extend_from_slice(&params.iterations.to_be_bytes());
            out.extend_from_slice(&params.parallelism.to_be_bytes());
            out.extend_from_slice(salt);
            out
        }
        SlotKind::RecoveryKey | SlotKind::KeyFile => Vec::new(),
        // A backup repository's kind; a vault config never decodes to it.
        SlotKind::Vault { vault_id } => vault_id.to_vec(),
        SlotKind::Remote(slot) => {
            let mut out = vec![1];
            authority_bytes(&mut out, &slot.authority);
            out.extend_from_slice(&slot.binding.to_bytes());
            out
        }
        SlotKind::Threshold(slot) => {
            let mut out = vec![1, slot.threshold, slot.members.len() as u8];
            for m in &slot.members {
                authority_bytes(&mut out, &m.authority);
                out.extend_from_slice(&m.binding.to_bytes());
                out.extend_from_slice(m.sealed_share());
            }
            out
        }
    }
}

/// The authority record of remote and threshold parameters.
fn authority_bytes(out: &mut Vec<u8>, a: &atrest_vault::AuthorityRef) {
    out.push(a.url.len() as u8);
    out.extend_from_slice(a.url.as_bytes());
    out.extend_from_slice(&a.ca_fingerprint);
    out.push(a.host_id.as_str().len() as u8);
    out.extend_from_slice(a.host_id.as_str().as_bytes());
    out.extend_from_slice(&a.audit_public_key);
}

/// One keyslot record with every length field explicit, so callers can
/// write malformed records too.
pub fn encode_slot(
    out: &mut Vec<u8>,
    id: u8,
    kind: u8,
    params: &[u8],
    label: &[u8],
    wrapped: &[u8],
) {
    out.push(id);
    out.push(kind);
    out.extend_from_slice(&(params.len() as u16).to_be_bytes());
    out.extend_from_slice(params);
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(wrapped);
}

/// `magic ‖ version ‖ body length ‖ body ‖ mac`.
pub fn frame(version: u16, body: &[u8], mac: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEAD + body.len() + mac.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(mac);
    out
}

/// A config whose fixed fields are valid and whose keyslot section (the
/// count byte and the records) is `slot_section`, verbatim; all-zero MAC.
pub fn config_with_slot_section(slot_section: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_FIXED + slot_section.len());
    Fixed::valid([0x42; 16], 1_700_000_000, 7, ContentAlgorithm::Aes256Gcm).encode(&mut body);
    body.extend_from_slice(slot_section);
    frame(VERSION, &body, &[0u8; MAC_LEN])
}

/// Re-encodes a decoded config. The wrapped keys and the MAC are not
/// visible outside the vault crate, so they are copied from `original` at
/// the offsets the format puts them; everything else comes from the parsed
/// fields. A parser that accepts only canonical encodings gives back
/// exactly `original`.
pub fn reencode(cfg: &VaultConfig, original: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    Fixed {
        vault_id: cfg.vault_id,
        created_unix: cfg.created_unix,
        generation: cfg.generation,
        algorithm: cfg.algorithm.id(),
        block_size: cfg.block_size,
        backend: backend_id(cfg.backend),
        flags: u16::from(cfg.migrating),
    }
    .encode(&mut body);
    body.push(cfg.keyslots.len() as u8);
    for slot in &cfg.keyslots {
        let params = kind_params(&slot.kind);
        // Offset of the wrapped key in the whole file.
        let at = FRAME_HEAD + body.len() + 1 + 1 + 2 + params.len() + 1 + slot.label.len() + 2;
        let wrapped = original.get(at..at + WRAPPED_LEN).unwrap_or(&[]);
        encode_slot(
            &mut body,
            slot.id,
            slot.kind.id(),
            &params,
            slot.label.as_bytes(),
            wrapped,
        );
    }
    let mac = original
        .get(original.len().saturating_sub(MAC_LEN)..)
        .unwrap_or(&[]);
    frame(cfg.format, &body, mac)
}

/// The on-disk backend byte (an exhaustive match: a new backend is a
/// format change this file must learn about).
pub fn backend_id(b: Backend) -> u8 {
    match b {
        Backend::Fuse => 1,
        Backend::Fscrypt => 2,
    }
}

/// What every config that `decode` accepts must satisfy.
pub fn check_config(cfg: &VaultConfig, original: &[u8]) {
    assert!(
        original.len() <= MAX_CONFIG_LEN,
        "accepted a config over 64 KiB"
    );
    assert!(
        (1..=MAX_SLOTS).contains(&cfg.keyslots.len()),
        "keyslot count {} out of range",
        cfg.keyslots.len()
    );
    for (i, a) in cfg.keyslots.iter().enumerate() {
        for b in &cfg.keyslots[i + 1..] {
            assert_ne!(a.id, b.id, "duplicate keyslot id accepted");
        }
        assert!(
            a.label.len() <= MAX_LABEL,
            "label of {} bytes accepted",
            a.label.len()
        );
        assert!((1..=5).contains(&a.kind.id()));
        if let SlotKind::Passphrase { params, .. } = &a.kind {
            assert!(
                params.validate().is_ok(),
                "out-of-range Argon2 params accepted: {params:?}"
            );
        }
    }
    assert_eq!(cfg.block_size, BLOCK_SIZE);
    assert!(
        cfg.format == VERSION || cfg.format == atrest_vault::VERSION_2,
        "unknown format {} accepted",
        cfg.format
    );
    assert!(
        !cfg.migrating || cfg.format == atrest_vault::VERSION_2,
        "the migrating flag accepted on format {}",
        cfg.format
    );
    assert!(
        cfg.format == VERSION || cfg.backend == atrest_vault::Backend::Fuse,
        "a format 2 config of another backend accepted"
    );
    assert!(ContentAlgorithm::from_id(cfg.algorithm.id()) == Some(cfg.algorithm));
    let again = reencode(cfg, original);
    assert!(
        again == original,
        "decode accepted a non-canonical encoding:\n original {original:02x?}\n re-encode {again:02x?}"
    );
}

/// Decodes arbitrary bytes; checks the invariants if they parse.
pub fn decode_and_check(data: &[u8]) -> Option<VaultConfig> {
    let cfg = VaultConfig::decode(data).ok()?;
    check_config(&cfg, data);
    // Decoding is a pure function of the bytes.
    assert_eq!(VaultConfig::decode(data).ok().as_ref(), Some(&cfg));
    Some(cfg)
}

/// Fixed fuzzing keys: seeds made with these decrypt, so the fuzzer starts
/// on the success paths of the name transforms.
pub const NAME_KEY: [u8; 64] = [0x5a; 64];
pub const METADATA_KEY: [u8; 32] = [0xa5; 32];

pub fn algorithm(selector: u8) -> ContentAlgorithm {
    if selector & 1 == 0 {
        ContentAlgorithm::Aes256Gcm
    } else {
        ContentAlgorithm::XChaCha20Poly1305
    }
}

pub fn transform(algorithm: ContentAlgorithm) -> NameTransform {
    NameTransform::new(
        NameCipher::new(SecretBytes::new(NAME_KEY.to_vec())),
        BlockCipher::new(algorithm, &SecretKey::from_bytes(METADATA_KEY)),
    )
}

/// A plain file name the vault accepts: non-empty, at most 255 bytes, no
/// `/` or NUL, not `.` or `..`.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Turns arbitrary bytes into a valid name, or `None` if nothing is left.
pub fn make_valid_name(raw: &[u8]) -> Option<Vec<u8>> {
    let mut name: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'/' && b != 0)
        .collect();
    name.truncate(255);
    is_valid_name(&name).then_some(name)
}

pub fn os(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}
