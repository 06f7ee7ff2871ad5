//! Record bodies of §16.12 (the plaintext inside the seal). Object heads
//! and map entries are kept as their bytes: the log states them, the
//! store interprets them (record.rs).

use crate::bytes::{Put, Reader};
use crate::record::HEAD_LEN;

/// A record kind (the header's byte 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Meta = 1,
    Write = 2,
    Truncate = 3,
    Sync = 4,
    Checkpoint = 5,
    Mount = 6,
    Recovery = 7,
    Config = 8,
    Witnessed = 9,
    RollbackAccepted = 10,
    Migrate = 11,
    Repair = 12,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Meta,
            2 => Self::Write,
            3 => Self::Truncate,
            4 => Self::Sync,
            5 => Self::Checkpoint,
            6 => Self::Mount,
            7 => Self::Recovery,
            8 => Self::Config,
            9 => Self::Witnessed,
            10 => Self::RollbackAccepted,
            11 => Self::Migrate,
            12 => Self::Repair,
            _ => return None,
        })
    }
}

/// One entry change of a `META` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    /// 1 insert, 2 remove.
    pub action: u8,
    pub dir: u64,
    pub object: u64,
    pub kind: u8,
    /// 1 ..= 255 bytes.
    pub name: Vec<u8>,
}

/// A record body after its `time` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Meta {
        op: u8,
        heads: Vec<[u8; HEAD_LEN]>,
        entries: Vec<EntryChange>,
        extra: Vec<u8>,
    },
    Write {
        head: [u8; HEAD_LEN],
        first_block: u64,
        /// 1 fresh, 2 journaled.
        mode: u8,
        settled_size: u64,
        /// `c` = `entries.len()` map entries of `e` bytes each.
        entries: Vec<Vec<u8>>,
    },
    Truncate {
        head: [u8; HEAD_LEN],
        old_size: u64,
        /// 0 none, 1 fresh, 2 journaled.
        tail: u8,
        /// Present exactly when `tail` ≠ 0.
        tail_entry: Option<Vec<u8>>,
    },
    Sync {
        object: u64,
        through: u64,
    },
    Checkpoint {
        k: u64,
    },
    Mount {
        reason: u8,
        host_id: Vec<u8>,
        boot_id: Vec<u8>,
    },
    Recovery {
        replayed: u64,
        reverted: u64,
        cut_back: u64,
        trimmed: u64,
        removed: u64,
    },
    Config {
        generation: u64,
        hash: [u8; 32],
    },
    Witnessed {
        k: u64,
        s: u64,
        h: [u8; 32],
        witness: u8,
        audit_key: [u8; 32],
    },
    RollbackAccepted {
        k: u64,
        s: u64,
        h: [u8; 32],
        disk_s: u64,
        audit_seq: u64,
    },
    Migrate {
        action: u8,
        path_hash: [u8; 32],
        object: u64,
        inode: u64,
    },
    Repair {
        action: u8,
        object: u64,
        detail: u64,
    },
}

/// Longest name of an entry change, and of host/boot ids.
const MAX_NAME: usize = 255;

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Meta { .. } => Kind::Meta,
            Self::Write { .. } => Kind::Write,
            Self::Truncate { .. } => Kind::Truncate,
            Self::Sync { .. } => Kind::Sync,
            Self::Checkpoint { .. } => Kind::Checkpoint,
            Self::Mount { .. } => Kind::Mount,
            Self::Recovery { .. } => Kind::Recovery,
            Self::Config { .. } => Kind::Config,
            Self::Witnessed { .. } => Kind::Witnessed,
            Self::RollbackAccepted { .. } => Kind::RollbackAccepted,
            Self::Migrate { .. } => Kind::Migrate,
            Self::Repair { .. } => Kind::Repair,
        }
    }

    /// The payload length `P` this body requires.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Write {
                mode: 2, entries, ..
            } => entries.len() * 4096,
            Self::Truncate { tail: 2, .. } => 4096,
            _ => 0,
        }
    }

    /// Checks the field ranges of §16.12 (what `decode` enforces), so the
    /// writer never seals a body the reader would refuse.
    pub fn validate(&self, entry_len: usize) -> Result<(), &'static str> {
        match self {
            Self::Meta {
                op,
                heads,
                entries,
                extra,
            } => {
                if !(1..=12).contains(op) {
                    return Err("unknown META op");
                }
                if !(1..=4).contains(&heads.len()) {
                    return Err("META head count not 1 ..= 4");
                }
                if entries.len() > 4 {
                    return Err("META entry change count above 4");
                }
                for e in entries {
                    if !(1..=2).contains(&e.action) {
                        return Err("unknown entry change action");
                    }
                    if e.name.is_empty() || e.name.len() > MAX_NAME {
                        return Err("entry change name length not 1 ..= 255");
                    }
                }
                if u32::try_from(extra.len()).is_err() {
                    return Err("META extra too long");
                }
            }
            Self::Write { mode, entries, .. } => {
                if !(1..=2).contains(mode) {
                    return Err("unknown WRITE mode");
                }
                if !(1..=256).contains(&entries.len()) {
                    return Err("WRITE count not 1 ..= 256");
                }
                if entries.iter().any(|e| e.len() != entry_len) {
                    return Err("WRITE entry of the wrong length");
                }
            }
            Self::Truncate {
                tail, tail_entry, ..
            } => match (tail, tail_entry) {
                (0, None) => {}
                (1 | 2, Some(e)) if e.len() == entry_len => {}
                (1 | 2, Some(_)) => return Err("TRUNCATE tail entry of the wrong length"),
                _ => return Err("TRUNCATE tail and tail entry disagree"),
            },
            Self::Mount {
                reason,
                host_id,
                boot_id,
            } => {
                if !(1..=3).contains(reason) {
                    return Err("unknown MOUNT reason");
                }
                if host_id.len() > MAX_NAME || boot_id.len() > MAX_NAME {
                    return Err("MOUNT id longer than 255 bytes");
                }
            }
            Self::Witnessed {
                witness, audit_key, ..
            } => {
                if !(1..=2).contains(witness) {
                    return Err("unknown witness");
                }
                if *witness == 2 && audit_key.iter().any(|&b| b != 0) {
                    return Err("local witness with an audit key");
                }
            }
            Self::Migrate { action, .. } => {
                if !(1..=6).contains(action) {
                    return Err("unknown MIGRATE action");
                }
            }
            Self::Repair { action, .. } => {
                if !(1..=5).contains(action) {
                    return Err("unknown REPAIR action");
                }
            }
            Self::Sync { .. }
            | Self::Checkpoint { .. }
            | Self::Recovery { .. }
            | Self::Config { .. }
            | Self::RollbackAccepted { .. } => {}
        }
        Ok(())
    }

    /// The body bytes, `time` first.
    pub fn encode(&self, time: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u64(time);
        match self {
            Self::Meta {
                op,
                heads,
                entries,
                extra,
            } => {
                out.put_u8(*op).put_u8(heads.len() as u8);
                for h in heads {
                    out.put(h);
                }
                out.put_u8(entries.len() as u8);
                for e in entries {
                    out.put_u8(e.action)
                        .put_u64(e.dir)
                        .put_u64(e.object)
                        .put_u8(e.kind)
                        .put_u8(e.name.len() as u8)
                        .put(&e.name);
                }
                out.put_u32(extra.len() as u32).put(extra);
            }
            Self::Write {
                head,
                first_block,
                mode,
                settled_size,
                entries,
            } => {
                out.put(head)
                    .put_u64(*first_block)
                    .put_u32(entries.len() as u32)
                    .put_u8(*mode)
                    .put_u64(*settled_size);
                for e in entries {
                    out.put(e);
                }
            }
            Self::Truncate {
                head,
                old_size,
                tail,
                tail_entry,
            } => {
                out.put(head).put_u64(*old_size).put_u8(*tail);
                if let Some(e) = tail_entry {
                    out.put(e);
                }
            }
            Self::Sync { object, through } => {
                out.put_u64(*object).put_u64(*through);
            }
            Self::Checkpoint { k } => {
                out.put_u64(*k);
            }
            Self::Mount {
                reason,
                host_id,
                boot_id,
            } => {
                out.put_u8(*reason)
                    .put_u8(host_id.len() as u8)
                    .put(host_id)
                    .put_u8(boot_id.len() as u8)
                    .put(boot_id);
            }
            Self::Recovery {
                replayed,
                reverted,
                cut_back,
                trimmed,
                removed,
            } => {
                for v in [replayed, reverted, cut_back, trimmed, removed] {
                    out.put_u64(*v);
                }
            }
            Self::Config { generation, hash } => {
                out.put_u64(*generation).put(hash);
            }
            Self::Witnessed {
                k,
                s,
                h,
                witness,
                audit_key,
            } => {
                out.put_u64(*k)
                    .put_u64(*s)
                    .put(h)
                    .put_u8(*witness)
                    .put(audit_key);
            }
            Self::RollbackAccepted {
                k,
                s,
                h,
                disk_s,
                audit_seq,
            } => {
                out.put_u64(*k)
                    .put_u64(*s)
                    .put(h)
                    .put_u64(*disk_s)
                    .put_u64(*audit_seq);
            }
            Self::Migrate {
                action,
                path_hash,
                object,
                inode,
            } => {
                out.put_u8(*action)
                    .put(path_hash)
                    .put_u64(*object)
                    .put_u64(*inode);
            }
            Self::Repair {
                action,
                object,
                detail,
            } => {
                out.put_u8(*action).put_u64(*object).put_u64(*detail);
            }
        }
        out
    }

    /// Parses a body of `kind`; returns `(time, body)`. The whole input
    /// must be used, and every field must be in its range.
    pub fn decode(kind: Kind, bytes: &[u8], entry_len: usize) -> Result<(u64, Self), &'static str> {
        const SHORT: &str = "record body too short";
        let mut r = Reader::new(bytes);
        let time = r.u64().ok_or(SHORT)?;
        let body = match kind {
            Kind::Meta => {
                let op = r.u8().ok_or(SHORT)?;
                let h = r.u8().ok_or(SHORT)?;
                if !(1..=4).contains(&h) {
                    return Err("META head count not 1 ..= 4");
                }
                let mut heads = Vec::with_capacity(h as usize);
                for _ in 0..h {
                    heads.push(r.array().ok_or(SHORT)?);
                }
                let e = r.u8().ok_or(SHORT)?;
                if e > 4 {
                    return Err("META entry change count above 4");
                }
                let mut entries = Vec::with_capacity(e as usize);
                for _ in 0..e {
                    let action = r.u8().ok_or(SHORT)?;
                    let dir = r.u64().ok_or(SHORT)?;
                    let object = r.u64().ok_or(SHORT)?;
                    let kind = r.u8().ok_or(SHORT)?;
                    let n = r.u8().ok_or(SHORT)?;
                    let name = r.take(n as usize).ok_or(SHORT)?.to_vec();
                    entries.push(EntryChange {
                        action,
                        dir,
                        object,
                        kind,
                        name,
                    });
                }
                let x = r.u32().ok_or(SHORT)?;
                let extra = r.take(x as usize).ok_or(SHORT)?.to_vec();
                Self::Meta {
                    op,
                    heads,
                    entries,
                    extra,
                }
            }
            Kind::Write => {
                let head = r.array().ok_or(SHORT)?;
                let first_block = r.u64().ok_or(SHORT)?;
                let c = r.u32().ok_or(SHORT)?;
                if !(1..=256).contains(&c) {
                    return Err("WRITE count not 1 ..= 256");
                }
                let mode = r.u8().ok_or(SHORT)?;
                let settled_size = r.u64().ok_or(SHORT)?;
                let mut entries = Vec::with_capacity(c as usize);
                for _ in 0..c {
                    entries.push(r.take(entry_len).ok_or(SHORT)?.to_vec());
                }
                Self::Write {
                    head,
                    first_block,
                    mode,
                    settled_size,
                    entries,
                }
            }
            Kind::Truncate => {
                let head = r.array().ok_or(SHORT)?;
                let old_size = r.u64().ok_or(SHORT)?;
                let tail = r.u8().ok_or(SHORT)?;
                let tail_entry = if tail == 0 {
                    None
                } else {
                    Some(r.take(entry_len).ok_or(SHORT)?.to_vec())
                };
                Self::Truncate {
                    head,
                    old_size,
                    tail,
                    tail_entry,
                }
            }
            Kind::Sync => Self::Sync {
                object: r.u64().ok_or(SHORT)?,
                through: r.u64().ok_or(SHORT)?,
            },
            Kind::Checkpoint => Self::Checkpoint {
                k: r.u64().ok_or(SHORT)?,
            },
            Kind::Mount => {
                let reason = r.u8().ok_or(SHORT)?;
                let n = r.u8().ok_or(SHORT)?;
                let host_id = r.take(n as usize).ok_or(SHORT)?.to_vec();
                let n = r.u8().ok_or(SHORT)?;
                let boot_id = r.take(n as usize).ok_or(SHORT)?.to_vec();
                Self::Mount {
                    reason,
                    host_id,
                    boot_id,
                }
            }
            Kind::Recovery => Self::Recovery {
                replayed: r.u64().ok_or(SHORT)?,
                reverted: r.u64().ok_or(SHORT)?,
                cut_back: r.u64().ok_or(SHORT)?,
                trimmed: r.u64().ok_or(SHORT)?,
                removed: r.u64().ok_or(SHORT)?,
            },
            Kind::Config => Self::Config {
                generation: r.u64().ok_or(SHORT)?,
                hash: r.array().ok_or(SHORT)?,
            },
            Kind::Witnessed => Self::Witnessed {
                k: r.u64().ok_or(SHORT)?,
                s: r.u64().ok_or(SHORT)?,
                h: r.array().ok_or(SHORT)?,
                witness: r.u8().ok_or(SHORT)?,
                audit_key: r.array().ok_or(SHORT)?,
            },
            Kind::RollbackAccepted => Self::RollbackAccepted {
                k: r.u64().ok_or(SHORT)?,
                s: r.u64().ok_or(SHORT)?,
                h: r.array().ok_or(SHORT)?,
                disk_s: r.u64().ok_or(SHORT)?,
                audit_seq: r.u64().ok_or(SHORT)?,
            },
            Kind::Migrate => Self::Migrate {
                action: r.u8().ok_or(SHORT)?,
                path_hash: r.array().ok_or(SHORT)?,
                object: r.u64().ok_or(SHORT)?,
                inode: r.u64().ok_or(SHORT)?,
            },
            Kind::Repair => Self::Repair {
                action: r.u8().ok_or(SHORT)?,
                object: r.u64().ok_or(SHORT)?,
                detail: r.u64().ok_or(SHORT)?,
            },
        };
        if !r.remaining().is_empty() {
            return Err("trailing bytes after record body");
        }
        body.validate(entry_len)?;
        Ok((time, body))
    }
}
