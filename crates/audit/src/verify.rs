//! Walks the whole log and proves it unaltered: every entry's hash, every
//! link, every checkpoint's signature and head, and (given one) a
//! checkpoint held outside the log.
//!
//! What each check catches:
//!
//! | change to the stored log | caught as |
//! |---|---|
//! | an entry's content edited | `HashMismatch` at that entry |
//! | an entry edited and its hash recomputed | `BrokenLink` at the next entry |
//! | the whole tail rewritten with recomputed hashes | `CheckpointMismatch` at the first checkpoint covering it |
//! | an entry deleted | `MissingEntry` at its seq |
//! | entries swapped or moved | `HashMismatch` (the seq is hashed) |
//! | a checkpoint forged or edited | `BadCheckpointSignature` |
//! | the tail truncated | `CheckpointBeyondHead` if a checkpoint covered it |
//! | tail and its checkpoints truncated (rollback) | `RolledBack`, against a checkpoint the caller held |
//!
//! Entries after the last checkpoint are only as good as the hash chain:
//! someone who can write the database could rewrite them undetected, which
//! is why checkpoints are frequent and hosts keep the latest.

use std::collections::BTreeMap;

use crate::checkpoint::{AuditPublicKey, Checkpoint};
use crate::entry::EntryHash;
use crate::store::{AuditStore, ChainHead, StoreError};

/// Entries read per query while walking.
const PAGE: u32 = 1000;

/// What a successful verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub head: ChainHead,
    pub checkpoints: u64,
    pub latest_checkpoint: Option<Checkpoint>,
    /// Entries after the latest checkpoint: protected by the chain only.
    pub unsealed: u64,
}

/// The first problem found, in sequence order.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(StoreError),
    #[error("entry {seq} is unreadable: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error("entry {seq} is missing (deleted, or the log was cut)")]
    MissingEntry { seq: u64 },
    #[error("entry {seq} does not match its hash: it was changed or moved")]
    HashMismatch { seq: u64 },
    #[error("entry {seq} does not link to entry {}: one of them was changed", seq.saturating_sub(1))]
    BrokenLink { seq: u64 },
    #[error("entry {seq} is older than the entry before it: entries were reordered")]
    TimeWentBackwards { seq: u64 },
    #[error("the checkpoint at entry {seq} is not signed by the audit key")]
    BadCheckpointSignature { seq: u64 },
    #[error(
        "the signed checkpoint at entry {seq} names another head: \
         the log up to entry {seq} was rewritten"
    )]
    CheckpointMismatch { seq: u64 },
    #[error("a signed checkpoint covers entry {seq}, but the log ends at {head}: it was truncated")]
    CheckpointBeyondHead { seq: u64, head: u64 },
    #[error(
        "the log ends at entry {head}, behind the checkpoint at entry {held} that you hold: \
         it was rolled back"
    )]
    RolledBack { held: u64, head: u64 },
    #[error(
        "entry {seq} differs from the checkpoint you hold for it: \
         the log was rewritten since that checkpoint"
    )]
    Forked { seq: u64 },
}

impl VerifyError {
    /// The sequence number of the first bad entry or checkpoint, if the
    /// problem is in the log (not in reading it).
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            Self::Store(_) => None,
            Self::Unreadable { seq, .. }
            | Self::MissingEntry { seq }
            | Self::HashMismatch { seq }
            | Self::BrokenLink { seq }
            | Self::TimeWentBackwards { seq }
            | Self::BadCheckpointSignature { seq }
            | Self::CheckpointMismatch { seq }
            | Self::CheckpointBeyondHead { seq, .. }
            | Self::Forked { seq } => Some(*seq),
            Self::RolledBack { head, .. } => Some(head.saturating_add(1)),
        }
    }
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { seq, reason } => Self::Unreadable { seq, reason },
            other => Self::Store(other),
        }
    }
}

/// Verifies the whole log in `store` against the authority's audit key.
pub async fn verify<S: AuditStore>(
    store: &S,
    key: &AuditPublicKey,
) -> Result<VerifyReport, VerifyError> {
    walk(store, key, None).await
}

/// [`verify`], and also that the log still contains `held`, a checkpoint
/// the caller got earlier (a host keeps the one that came with its key):
/// this catches a log rolled back to before it, which the log alone cannot
/// show.
pub async fn verify_against<S: AuditStore>(
    store: &S,
    key: &AuditPublicKey,
    held: &Checkpoint,
) -> Result<VerifyReport, VerifyError> {
    held.verify(key)
        .map_err(|e| VerifyError::BadCheckpointSignature { seq: e.seq })?;
    walk(store, key, Some(held)).await
}

async fn walk<S: AuditStore>(
    store: &S,
    key: &AuditPublicKey,
    held: Option<&Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    // Checkpoints are read first: one committed after this read cannot be
    // missed for an entry read later, since entries commit no later than
    // the checkpoints over them.
    let mut checkpoints = BTreeMap::new();
    loop {
        let from = checkpoints.keys().next_back().map_or(1, |s| s + 1);
        let page = store.read_checkpoints(from, PAGE).await?;
        let full = page.len() == PAGE as usize;
        checkpoints.extend(page.into_iter().map(|c| (c.seq, c)));
        if !full {
            break;
        }
    }

    let mut head = ChainHead::EMPTY;
    loop {
        let page = store.read_entries(head.seq + 1, PAGE).await?;
        let full = page.len() == PAGE as usize;
        for entry in page {
            let seq = head.seq + 1;
            if entry.seq != seq {
                return Err(VerifyError::MissingEntry { seq });
            }
            if entry.compute_hash() != entry.hash {
                return Err(VerifyError::HashMismatch { seq });
            }
            if entry.prev_hash != head.hash {
                return Err(VerifyError::BrokenLink { seq });
            }
            if entry.timestamp_ms < head.timestamp_ms {
                return Err(VerifyError::TimeWentBackwards { seq });
            }
            if let Some(cp) = checkpoints.get(&seq) {
                check_checkpoint(cp, key, &entry.hash)?;
            }
            if let Some(held) = held.filter(|h| h.seq == seq)
                && held.head_hash != entry.hash
            {
                return Err(VerifyError::Forked { seq });
            }
            head = ChainHead {
                seq,
                hash: entry.hash,
                timestamp_ms: entry.timestamp_ms,
            };
        }
        if !full {
            break;
        }
    }

    if let Some((&seq, _)) = checkpoints.range(head.seq + 1..).next() {
        return Err(VerifyError::CheckpointBeyondHead {
            seq,
            head: head.seq,
        });
    }
    if let Some(held) = held.filter(|h| h.seq > head.seq) {
        return Err(VerifyError::RolledBack {
            held: held.seq,
            head: head.seq,
        });
    }
    let latest_checkpoint = checkpoints.values().next_back().copied();
    Ok(VerifyReport {
        head,
        checkpoints: checkpoints.len() as u64,
        unsealed: head.seq - latest_checkpoint.map_or(0, |c| c.seq),
        latest_checkpoint,
    })
}

fn check_checkpoint(
    cp: &Checkpoint,
    key: &AuditPublicKey,
    hash: &EntryHash,
) -> Result<(), VerifyError> {
    cp.verify(key)
        .map_err(|e| VerifyError::BadCheckpointSignature { seq: e.seq })?;
    if cp.head_hash != *hash {
        return Err(VerifyError::CheckpointMismatch { seq: cp.seq });
    }
    Ok(())
}
