//! Structured round trip of the config format. From arbitrary input, build
//! a valid config (1..=32 slots with unique ids, labels of at most 64 bytes
//! of UTF-8, in-range Argon2 parameters) with the independent encoder in
//! `atrest_fuzz`, and check that `decode` accepts it with every field as
//! written. Then, if the input asks for it, break exactly one rule of the
//! format and check that `decode` refuses the result.
#![no_main]

use arbitrary::Arbitrary;
use atrest_core::{Argon2Params, ContentAlgorithm, MAC_LEN};
use atrest_fuzz::{
    Fixed, MAX_LABEL, MAX_SLOTS, VERSION, WRAPPED_LEN, encode_slot, frame, kind_params,
};
use atrest_vault::{Backend, SlotKind, VaultConfig, VaultError};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum KindSpec {
    Passphrase {
        memory: u32,
        iterations: u32,
        parallelism: u32,
        salt: [u8; 16],
    },
    RecoveryKey,
    KeyFile,
}

#[derive(Debug, Arbitrary)]
struct SlotSpec {
    id: u8,
    kind: KindSpec,
    label: String,
    wrapped: [u8; WRAPPED_LEN],
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Break {
    Magic(u8, u8),
    Version(u16),
    BodyLongerThanFile(u16),
    BodyShorterThanFile(u16),
    TrailingAfterMac(u8),
    ShortMac(u8),
    Algorithm(u8),
    BlockSize(u32),
    Backend(u8),
    Flags(u16),
    CountZero,
    CountAbove(u8),
    CountMismatch(bool),
    DuplicateId(u8, u8),
    UnknownKind(u8, u8),
    ArgonOutOfRange(u8, u8, u32),
    ParamsLength(u8, bool),
    LabelTooLong(u8, u8),
    LabelNotUtf8(u8, u8),
    WrappedLength(u8, u16),
    TrailingInBody(u8),
    Truncate(u16),
    Oversize,
}

#[derive(Debug, Arbitrary)]
struct Input {
    vault_id: [u8; 16],
    created_unix: u64,
    generation: u64,
    xchacha: bool,
    fscrypt: bool,
    slots: Vec<SlotSpec>,
    mac: [u8; MAC_LEN],
    broken: Option<Break>,
}

/// A slot as it will be written: kind byte, parameter bytes, label bytes.
struct Slot {
    id: u8,
    kind: SlotKind,
    kind_byte: u8,
    params: Vec<u8>,
    label: Vec<u8>,
    wrapped: Vec<u8>,
}

fn in_range(v: u32, lo: u32, hi: u32) -> u32 {
    lo + v % (hi - lo + 1)
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

fn valid_slots(specs: Vec<SlotSpec>) -> Vec<Slot> {
    let mut out: Vec<Slot> = Vec::new();
    for spec in specs {
        if out.len() == MAX_SLOTS {
            break;
        }
        if out.iter().any(|s| s.id == spec.id) {
            continue;
        }
        let kind = match spec.kind {
            KindSpec::Passphrase {
                memory,
                iterations,
                parallelism,
                salt,
            } => SlotKind::Passphrase {
                params: Argon2Params {
                    memory_kib: in_range(memory, 8 * 1024, 4 * 1024 * 1024),
                    iterations: in_range(iterations, 1, 64),
                    parallelism: in_range(parallelism, 1, 16),
                },
                salt,
            },
            KindSpec::RecoveryKey => SlotKind::RecoveryKey,
            KindSpec::KeyFile => SlotKind::KeyFile,
        };
        let label = truncate_utf8(spec.label, MAX_LABEL).into_bytes();
        out.push(Slot {
            id: spec.id,
            kind_byte: kind.id(),
            params: kind_params(&kind),
            kind,
            label,
            wrapped: spec.wrapped.to_vec(),
        });
    }
    out
}

fn encode(
    fixed: &Fixed,
    count: u8,
    slots: &[Slot],
    body_extra: &[u8],
    mac: &[u8],
    version: u16,
) -> Vec<u8> {
    let mut body = Vec::new();
    fixed.encode(&mut body);
    body.push(count);
    for s in slots {
        encode_slot(
            &mut body,
            s.id,
            s.kind_byte,
            &s.params,
            &s.label,
            &s.wrapped,
        );
    }
    body.extend_from_slice(body_extra);
    frame(version, &body, mac)
}

/// An edit of the encoded bytes, for the rules below the encoder.
type PostEdit = Box<dyn FnOnce(&mut Vec<u8>)>;

fn pick(slots: &[Slot], i: u8) -> usize {
    usize::from(i) % slots.len()
}

fuzz_target!(|input: Input| {
    let algorithm = if input.xchacha {
        ContentAlgorithm::XChaCha20Poly1305
    } else {
        ContentAlgorithm::Aes256Gcm
    };
    let mut fixed = Fixed::valid(
        input.vault_id,
        input.created_unix,
        input.generation,
        algorithm,
    );
    let backend = if input.fscrypt {
        Backend::Fscrypt
    } else {
        Backend::Fuse
    };
    fixed.backend = atrest_fuzz::backend_id(backend);
    let mut slots = valid_slots(input.slots);
    if slots.is_empty() {
        return;
    }
    let mut count = slots.len() as u8;
    let mut version = VERSION;
    let mut body_extra: Vec<u8> = Vec::new();
    let mut mac = input.mac.to_vec();

    let Some(broken) = input.broken else {
        let bytes = encode(&fixed, count, &slots, &[], &mac, version);
        let cfg =
            VaultConfig::decode(&bytes).unwrap_or_else(|e| panic!("valid config refused: {e}"));
        assert_eq!(cfg.vault_id, input.vault_id);
        assert_eq!(cfg.created_unix, input.created_unix);
        assert_eq!(cfg.generation, input.generation);
        assert_eq!(cfg.algorithm, algorithm);
        assert_eq!(cfg.backend, backend);
        assert_eq!(cfg.block_size, atrest_fuzz::BLOCK_SIZE);
        assert_eq!(cfg.keyslots.len(), slots.len());
        for (got, want) in cfg.keyslots.iter().zip(&slots) {
            assert_eq!(got.id, want.id);
            assert_eq!(got.kind, want.kind);
            assert_eq!(got.label.as_bytes(), &want.label[..]);
        }
        atrest_fuzz::check_config(&cfg, &bytes);
        return;
    };

    // Everything below must be refused.
    let mut post: Option<PostEdit> = None;
    let mut want_version_error = None;
    match broken {
        Break::Magic(i, x) => {
            let x = x.max(1);
            post = Some(Box::new(move |b: &mut Vec<u8>| b[usize::from(i) % 8] ^= x));
        }
        Break::Version(v) => {
            // Both formats this build reads are valid versions, not breaks.
            if v == VERSION || v == atrest_vault::VERSION_2 {
                return;
            }
            version = v;
            want_version_error = Some(v);
        }
        Break::BodyLongerThanFile(d) | Break::BodyShorterThanFile(d) => {
            let longer = matches!(broken, Break::BodyLongerThanFile(_));
            let d = u32::from(d.max(1));
            post = Some(Box::new(move |b: &mut Vec<u8>| {
                let len = u32::from_be_bytes(b[10..14].try_into().expect("4 bytes"));
                let new = if longer {
                    len.wrapping_add(d)
                } else {
                    len.saturating_sub(d)
                };
                b[10..14].copy_from_slice(&new.to_be_bytes());
            }));
        }
        Break::TrailingAfterMac(n) => mac.extend(std::iter::repeat_n(0u8, usize::from(n.max(1)))),
        Break::ShortMac(n) => mac.truncate(usize::from(n) % MAC_LEN),
        Break::Algorithm(a) => {
            if ContentAlgorithm::from_id(a).is_some() {
                return;
            }
            fixed.algorithm = a;
        }
        Break::BlockSize(s) => {
            if s == atrest_fuzz::BLOCK_SIZE {
                return;
            }
            fixed.block_size = s;
        }
        Break::Backend(b) => {
            if b == 1 || b == 2 {
                return;
            }
            fixed.backend = b;
        }
        Break::Flags(f) => fixed.flags = f.max(1),
        Break::CountZero => count = 0,
        Break::CountAbove(c) => count = (MAX_SLOTS as u8).saturating_add(c.max(1)),
        Break::CountMismatch(more) => {
            if more {
                count += 1;
            } else {
                count -= 1;
                if count == 0 {
                    return;
                }
            }
        }
        Break::DuplicateId(i, j) => {
            if slots.len() < 2 {
                return;
            }
            let (i, j) = (pick(&slots, i), pick(&slots, j));
            if i == j {
                return;
            }
            slots[j].id = slots[i].id;
        }
        Break::UnknownKind(i, k) => {
            // 4 and 5 (remote, threshold) are valid kinds too; their
            // parameters never parse from another kind's.
            if (1..=5).contains(&k) {
                return;
            }
            let i = pick(&slots, i);
            slots[i].kind_byte = k;
        }
        Break::ArgonOutOfRange(i, which, v) => {
            let i = pick(&slots, i);
            let SlotKind::Passphrase { .. } = slots[i].kind else {
                return;
            };
            let (at, bad) = match which % 3 {
                0 => (
                    0,
                    if v % 2 == 0 {
                        v % (8 * 1024)
                    } else {
                        (4 * 1024 * 1024 + 1).max(v)
                    },
                ),
                1 => (4, if v % 2 == 0 { 0 } else { 65.max(v) }),
                _ => (8, if v % 2 == 0 { 0 } else { 17.max(v) }),
            };
            slots[i].params[at..at + 4].copy_from_slice(&bad.to_be_bytes());
        }
        Break::ParamsLength(i, longer) => {
            let i = pick(&slots, i);
            if longer {
                slots[i].params.push(0);
            } else if slots[i].params.pop().is_none() {
                return;
            }
        }
        Break::LabelTooLong(i, n) => {
            let i = pick(&slots, i);
            let len = MAX_LABEL + 1 + usize::from(n) % (255 - MAX_LABEL);
            slots[i].label = vec![b'x'; len];
        }
        Break::LabelNotUtf8(i, n) => {
            let i = pick(&slots, i);
            let label = &mut slots[i].label;
            let at = usize::from(n) % (label.len() + 1);
            label.insert(at, 0xff);
            if label.len() > MAX_LABEL {
                label.remove(if at == 0 { 1 } else { 0 });
            }
        }
        Break::WrappedLength(i, n) => {
            if usize::from(n) == WRAPPED_LEN {
                return;
            }
            let i = pick(&slots, i);
            slots[i].wrapped.resize(usize::from(n), 0x77);
        }
        Break::TrailingInBody(n) => body_extra = vec![0; usize::from(n.max(1))],
        Break::Truncate(n) => {
            post = Some(Box::new(move |b: &mut Vec<u8>| {
                let keep = usize::from(n) % b.len();
                b.truncate(keep);
            }));
        }
        Break::Oversize => {
            // A well-formed frame just over the 64 KiB limit.
            body_extra = vec![0; atrest_fuzz::MAX_CONFIG_LEN];
        }
    }
    let mut bytes = encode(&fixed, count, &slots, &body_extra, &mac, version);
    if let Some(f) = post {
        f(&mut bytes);
    }
    match VaultConfig::decode(&bytes) {
        Ok(cfg) => panic!("broken config ({broken:?}) accepted: {cfg:?}"),
        Err(VaultError::UnknownVersion(v)) => assert_eq!(Some(v), want_version_error),
        Err(VaultError::Corrupt(_)) => assert_eq!(want_version_error, None),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
