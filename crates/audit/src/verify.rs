//! Walks the whole log and proves it unaltered: every entry's hash and
//! link, the Merkle root at every signed tree head, every format 1
//! checkpoint, and (given them) heads held outside the log by hosts or
//! witnesses.
//!
//! What each check catches:
//!
//! | change to the stored log | caught as |
//! |---|---|
//! | an entry's content edited | `HashMismatch` at that entry |
//! | an entry edited and its hash recomputed | `BrokenLink` at the next entry |
//! | the tail rewritten with recomputed hashes | `TreeHeadMismatch` at the first head covering it |
//! | … and the heads over it deleted | `Unsigned` at the first entry no head covers |
//! | … and new heads signed over it by a restarted server | refused at start: `OpenError::DoesNotMatchSignedHead` |
//! | an entry deleted | `MissingEntry` at its seq |
//! | entries swapped or moved | `HashMismatch` (the seq is hashed) |
//! | a tree head or checkpoint forged or edited | `BadTreeHeadSignature`, `BadCheckpointSignature` |
//! | the tail truncated | `TreeHeadBeyondHead` if a head covered it |
//! | tail and its heads truncated (rollback) | `RolledBack`, against a head a host or witness kept |
//! | the whole log rewritten, heads and all, by someone with the key | `Forked`, against a head a host or witness kept |
//!
//! Since the writer signs a head in the same transaction as every batch,
//! no entry is ever legitimately uncovered: one that is was appended
//! without the audit key, or its heads were removed.

use std::collections::BTreeMap;

use crate::checkpoint::{AuditPublicKey, Checkpoint};
use crate::entry::EntryHash;
use crate::merkle::MerkleTree;
use crate::store::{AuditStore, ChainHead, StoreError};
use crate::tree_head::{TreeHead, entry_leaf_hash};

/// Entries read per query while walking.
const PAGE: u32 = 1000;

/// What a successful verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub head: ChainHead,
    /// Format 1 checkpoints checked.
    pub checkpoints: u64,
    pub latest_checkpoint: Option<Checkpoint>,
    /// Entries after the latest format 1 checkpoint. They are covered by
    /// tree heads; kept for callers that print it.
    pub unsealed: u64,
    /// Signed tree heads checked.
    pub tree_heads: u64,
    /// It covers every entry (`None` only for an empty log).
    pub latest_tree_head: Option<TreeHead>,
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
        "entry {seq} differs from the checkpoint or tree head you hold for it: \
         the log was rewritten since"
    )]
    Forked { seq: u64 },
    #[error("the tree head of size {tree_size} is not signed by the audit key")]
    BadTreeHeadSignature { tree_size: u64 },
    #[error(
        "the signed tree head of size {tree_size} names another root: \
         the log up to entry {tree_size} was rewritten"
    )]
    TreeHeadMismatch { tree_size: u64 },
    #[error(
        "a signed tree head covers {tree_size} entries, but the log ends at {head}: \
         it was truncated"
    )]
    TreeHeadBeyondHead { tree_size: u64, head: u64 },
    #[error(
        "entry {seq} and those after it are covered by no signed tree head: \
         they were added without the audit key, or the heads over them deleted"
    )]
    Unsigned { seq: u64 },
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
            | Self::Forked { seq }
            | Self::Unsigned { seq } => Some(*seq),
            Self::BadTreeHeadSignature { tree_size }
            | Self::TreeHeadMismatch { tree_size }
            | Self::TreeHeadBeyondHead { tree_size, .. } => Some(*tree_size),
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
    Ok(walk(store, key, &Checks::full()).await?.report)
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
    let checks = Checks {
        held: Some(held),
        ..Checks::full()
    };
    Ok(walk(store, key, &checks).await?.report)
}

/// [`verify`], and also that the stored log is consistent with every one
/// of `heads`, tree heads kept by hosts or witnesses: the stored root at
/// each head's size must be that head's root (else `Forked` at that size),
/// and no head may be larger than the log (else `RolledBack`). Each head's
/// signature is checked first. This is what catches a log rewritten by
/// someone holding the audit key, whose own heads would all agree.
pub async fn verify_with_witnesses<S: AuditStore>(
    store: &S,
    key: &AuditPublicKey,
    heads: &[TreeHead],
) -> Result<VerifyReport, VerifyError> {
    for head in heads {
        head.verify(key)
            .map_err(|e| VerifyError::BadTreeHeadSignature {
                tree_size: e.tree_size,
            })?;
    }
    let checks = Checks {
        witnesses: heads,
        ..Checks::full()
    };
    Ok(walk(store, key, &checks).await?.report)
}

/// What [`walk`] checks besides the chain itself.
#[derive(Default)]
pub(crate) struct Checks<'a> {
    /// Every tree head's signature and root; otherwise only the latest.
    pub every_tree_head: bool,
    /// Every checkpoint's signature and head; otherwise none.
    pub every_checkpoint: bool,
    /// The latest tree head must cover the last entry.
    pub require_covered: bool,
    pub held: Option<&'a Checkpoint>,
    /// Signature-checked heads from outside the log.
    pub witnesses: &'a [TreeHead],
}

impl Checks<'_> {
    fn full() -> Self {
        Self {
            every_tree_head: true,
            every_checkpoint: true,
            require_covered: true,
            ..Self::default()
        }
    }
}

/// A walked log: the report, and the Merkle tree rebuilt from it (which
/// [`crate::AuditLog::open`] keeps).
pub(crate) struct Walked {
    pub report: VerifyReport,
    pub tree: MerkleTree,
}

// Two plain loops rather than one helper taking an async closure: such a
// closure's future is not provably `Send` for every lifetime, which keeps
// callers from spawning the server that opens a log.
async fn read_checkpoints<S: AuditStore>(
    store: &S,
) -> Result<BTreeMap<u64, Checkpoint>, StoreError> {
    let mut all = BTreeMap::new();
    loop {
        let from = all.keys().next_back().map_or(1, |s| s + 1);
        let page = store.read_checkpoints(from, PAGE).await?;
        let full = page.len() == PAGE as usize;
        all.extend(page.into_iter().map(|c| (c.seq, c)));
        if !full {
            return Ok(all);
        }
    }
}

async fn read_tree_heads<S: AuditStore>(store: &S) -> Result<BTreeMap<u64, TreeHead>, StoreError> {
    let mut all = BTreeMap::new();
    loop {
        let from = all.keys().next_back().map_or(1, |s| s + 1);
        let page = store.read_tree_heads(from, PAGE).await?;
        let full = page.len() == PAGE as usize;
        all.extend(page.into_iter().map(|h| (h.tree_size, h)));
        if !full {
            return Ok(all);
        }
    }
}

pub(crate) async fn walk<S: AuditStore>(
    store: &S,
    key: &AuditPublicKey,
    checks: &Checks<'_>,
) -> Result<Walked, VerifyError> {
    // Heads and checkpoints are read first: one committed after this read
    // cannot be missed for an entry read later, since entries commit no
    // later than what is signed over them.
    let checkpoints = read_checkpoints(store).await?;
    let tree_heads = if checks.every_tree_head {
        read_tree_heads(store).await?
    } else {
        store
            .latest_tree_head()
            .await?
            .map(|h| (h.tree_size, h))
            .into_iter()
            .collect()
    };
    let latest_tree_head = tree_heads.values().next_back().copied();
    let latest_checkpoint = checkpoints.values().next_back().copied();
    let mut witnesses: BTreeMap<u64, Vec<&TreeHead>> = BTreeMap::new();
    for w in checks.witnesses {
        witnesses.entry(w.tree_size).or_default().push(w);
    }

    let mut head = ChainHead::EMPTY;
    let mut tree = MerkleTree::new();
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
            tree.push(entry_leaf_hash(&entry));
            if let Some(th) = tree_heads.get(&seq) {
                th.verify(key)
                    .map_err(|e| VerifyError::BadTreeHeadSignature {
                        tree_size: e.tree_size,
                    })?;
                if th.root_hash != tree.root() {
                    return Err(VerifyError::TreeHeadMismatch { tree_size: seq });
                }
            }
            if let Some(held) = witnesses.get(&seq) {
                let root = tree.root();
                if held.iter().any(|w| w.root_hash != root) {
                    return Err(VerifyError::Forked { seq });
                }
            }
            if checks.every_checkpoint
                && let Some(cp) = checkpoints.get(&seq)
            {
                check_checkpoint(cp, key, &entry.hash)?;
            }
            if let Some(held) = checks.held.filter(|h| h.seq == seq)
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

    if let Some((&tree_size, _)) = tree_heads.range(head.seq + 1..).next() {
        return Err(VerifyError::TreeHeadBeyondHead {
            tree_size,
            head: head.seq,
        });
    }
    if let Some((&seq, _)) = checkpoints.range(head.seq + 1..).next() {
        return Err(VerifyError::CheckpointBeyondHead {
            seq,
            head: head.seq,
        });
    }
    if let Some((&held, _)) = witnesses.range(head.seq + 1..).next_back() {
        return Err(VerifyError::RolledBack {
            held,
            head: head.seq,
        });
    }
    if let Some(held) = checks.held.filter(|h| h.seq > head.seq) {
        return Err(VerifyError::RolledBack {
            held: held.seq,
            head: head.seq,
        });
    }
    let mut covered = latest_tree_head.map_or(0, |h| h.tree_size);
    let mut latest_tree_head = latest_tree_head;
    if checks.require_covered && covered < head.seq {
        // Another writer (a replica on the same database) may have
        // committed batches between the read of the heads above and the
        // read of their entries: each batch commits its entries and their
        // head in one transaction, so the heads read now cover every entry
        // walked, unless one was added without the key. Each must be
        // signed and name the walked tree's root at its size.
        'pages: loop {
            let page = store.read_tree_heads(covered + 1, PAGE).await?;
            let last_page = page.len() < PAGE as usize;
            for th in page {
                if th.tree_size > head.seq {
                    break 'pages;
                }
                th.verify(key)
                    .map_err(|e| VerifyError::BadTreeHeadSignature {
                        tree_size: e.tree_size,
                    })?;
                if tree
                    .root_at(th.tree_size)
                    .map_err(|_| VerifyError::TreeHeadMismatch {
                        tree_size: th.tree_size,
                    })?
                    != th.root_hash
                {
                    return Err(VerifyError::TreeHeadMismatch {
                        tree_size: th.tree_size,
                    });
                }
                covered = th.tree_size;
                latest_tree_head = Some(th);
            }
            if last_page || covered >= head.seq {
                break;
            }
        }
        if covered < head.seq {
            return Err(VerifyError::Unsigned { seq: covered + 1 });
        }
    }
    Ok(Walked {
        report: VerifyReport {
            head,
            checkpoints: checkpoints.len() as u64,
            unsealed: head.seq - latest_checkpoint.map_or(0, |c| c.seq),
            latest_checkpoint,
            tree_heads: tree_heads.len() as u64,
            latest_tree_head,
        },
        tree,
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
