//! The host's local witness of a format 2 vault (docs/format.md §16.17.5):
//! `<state dir>/witness/<vault id, 32 hex digits>`, the newest generation
//! this host made durable, MAC'd ([`atrest_meta::witness::LocalWitness`]).
//! A mount refuses a vault that does not descend from it (an earlier copy
//! put back, or another copy written meanwhile) unless told to accept it,
//! and writes it again after every checkpoint.
//!
//! It lives outside the vault, so it catches a backing directory restored
//! on its own; a restored VM image or disk snapshot that holds the state
//! directory as well rolls both back together, which only a key authority
//! can witness: each [`AuthorityWitness`] (what an authority that released
//! the key had witnessed, and the claim it judged) is checked at the same
//! point (§16.17.4), and [`DurableGeneration`] is what a mount reports to
//! the authorities after each durable checkpoint (§16.17.1).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_meta::superblock::{Generation, Superblock};
use atrest_meta::witness::{LocalWitness, Standing, Witness, judge};
use atrest_meta::{Backing, BlockVerifier, ConfigBinding, MetaKeys, Store};
use std::sync::Arc;

use atrest_remote::{GenerationClaim, Lineage, MAX_LINEAGE, ReportedState};
use serde::{Deserialize, Serialize};

use crate::config::write_atomic;
use crate::error::VaultError;

/// A generation as the key authority's wire types write it.
pub(crate) fn to_remote(g: &Generation) -> atrest_remote::Generation {
    atrest_remote::Generation {
        checkpoint: g.checkpoint,
        seq: g.sequence,
        chain: g.chain,
    }
}

fn from_remote(g: &atrest_remote::Generation) -> Generation {
    Generation {
        checkpoint: g.checkpoint,
        sequence: g.seq,
        chain: g.chain,
    }
}

/// What one key authority that released a format 2 vault's key had
/// witnessed of it (its `W`, from the grant), and the claim the host's
/// request made (docs/format.md §16.17.4). The mount checks the
/// authenticated superblock against both before recovery writes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityWitness {
    /// The authority's URL, for messages.
    pub url: String,
    /// `W`.
    pub witnessed: atrest_remote::Generation,
    /// `W`'s config generation.
    pub config_generation: u64,
    /// When `W` was reported, Unix milliseconds.
    pub reported_at_ms: u64,
    /// What the released request claimed.
    pub claim: GenerationClaim,
    /// The audit sequence number of the release: a rollback this release
    /// approved is recorded with it (`ROLLBACK_ACCEPTED`).
    pub approval: u64,
    /// The authority's audit log key, which names it in the `WITNESSED`
    /// record of its `W` (§16.12).
    pub audit_key: [u8; 32],
}

impl AuthorityWitness {
    /// `W` as a local witness, for [`judge`].
    fn as_local(&self, vault_id: [u8; 16]) -> LocalWitness {
        LocalWitness {
            vault_id,
            generation: from_remote(&self.witnessed),
            config_generation: self.config_generation,
            time_ms: self.reported_at_ms,
        }
    }

    /// Whether the claim describes `superblock`: its checkpoint, config
    /// generation and lineage (the sequence and chain may be past it:
    /// the log's tail, which recovery may still cut).
    fn claim_matches(&self, superblock: &Superblock) -> bool {
        self.claim.checkpoint == superblock.generation.checkpoint
            && self.claim.config_generation == superblock.config_generation
            && self.claim.seq >= superblock.generation.sequence
            && self
                .claim
                .lineage
                .generations()
                .iter()
                .map(from_remote)
                .eq(superblock.lineage().copied())
    }
}

/// A key authority accepted this host's report of `generation` (its answer
/// echoed it as its new `W`): the mount logs it as acknowledged
/// (`WITNESSED`, §16.17.1), so that the vault's lineage keeps it however
/// many checkpoints pass before the next report gets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledgement {
    pub generation: atrest_remote::Generation,
    /// The authority's audit log key.
    pub audit_key: [u8; 32],
}

impl Acknowledgement {
    /// The `WITNESSED` record, unless the store lists it for that
    /// authority already; the next checkpoint lists it.
    pub fn record(&self, store: &mut Store) -> Result<bool, VaultError> {
        store
            .acknowledge(
                from_remote(&self.generation),
                Witness::Authority(self.audit_key),
                now(),
            )
            .map_err(VaultError::Metadata)
    }
}

/// The local witness file could not be written after a checkpoint: the
/// generation it still names, `named`, is logged as acknowledged by it
/// (once per run of failures), so that the next mount still finds it in
/// the lineage however many checkpoints pass before a write succeeds.
pub fn acknowledge_local(store: &mut Store, named: Generation) -> Result<bool, VaultError> {
    store
        .acknowledge(named, Witness::Local, now())
        .map_err(VaultError::Metadata)
}

/// A rollback a key authority released the key for (approved, or an
/// `auto` rule): the mount records it and reports `rollback_accepted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityRollback {
    pub url: String,
    pub standing: Standing,
    pub witnessed: Generation,
    pub disk: Generation,
}

/// What the witness checks at mount found: the local witness's, and a
/// rollback the key authorities approved, if one was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub local: WitnessCheck,
    pub authority_rollback: Option<AuthorityRollback>,
}

/// The generation of a durable checkpoint as a report names it
/// (docs/format.md §16.17.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableGeneration {
    pub vault_id: [u8; 16],
    pub generation: atrest_remote::Generation,
    pub config_generation: u64,
    pub state: ReportedState,
    /// The superblock's generation, then its `recent` and `acknowledged`
    /// lists.
    pub lineage: Lineage,
}

impl DurableGeneration {
    /// The generation of `superblock`, which must be durable.
    pub fn of(superblock: &Superblock) -> Self {
        let lineage: Vec<_> = superblock
            .lineage()
            .take(MAX_LINEAGE)
            .map(to_remote)
            .collect();
        Self {
            vault_id: superblock.vault_id,
            generation: to_remote(&superblock.generation),
            config_generation: superblock.config_generation,
            state: match superblock.state {
                atrest_meta::superblock::State::Clean => ReportedState::Clean,
                _ => ReportedState::Open,
            },
            // Never empty: the lineage starts with the superblock's own.
            lineage: Lineage::new(lineage)
                .expect("the superblock's own generation, and at most 64"),
        }
    }
}

/// The directory under the host's state directory that holds the files.
pub const WITNESS_DIR: &str = "witness";

/// One vault's local witness file.
#[derive(Debug, Clone)]
pub struct LocalWitnessFile {
    dir: PathBuf,
    name: String,
}

/// What the witness check at mount found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessCheck {
    /// No file yet: the first mount of this vault on this host.
    First,
    /// The vault descends from the witnessed generation.
    Current,
    /// The vault did not descend from `witnessed` (or the file was
    /// damaged: `witnessed` is then `None`), and the mount took it as it
    /// is because it was told to.
    RollbackAccepted {
        standing: Standing,
        witnessed: Option<Generation>,
        disk: Generation,
    },
}

impl LocalWitnessFile {
    /// The file of vault `vault_id` under the host's state directory.
    pub fn in_state_dir(state_dir: &Path, vault_id: &[u8; 16]) -> Self {
        Self {
            dir: state_dir.join(WITNESS_DIR),
            name: vault_id.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The file's bytes, `None` if there is none.
    fn read_bytes(&self) -> Result<Option<Vec<u8>>, VaultError> {
        match fs::read(self.path()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::io(self.path())(e)),
        }
    }

    /// Writes the witness of `superblock` (a durable checkpoint), atomically.
    pub fn write(&self, superblock: &Superblock, keys: &MetaKeys) -> Result<(), VaultError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(VaultError::io(&self.dir))?;
        let bytes = LocalWitness::of(superblock).encode(keys);
        write_atomic(&self.dir, &self.name, &bytes, 0o600)
    }

    /// Writes the witness of the store's last durable checkpoint.
    pub fn record(&self, store: &Store) -> Result<(), VaultError> {
        self.write(store.superblock(), store.keys())
    }

    /// Whether the file is on the file system at `path` (then a snapshot
    /// of that file system rolls both back together).
    pub fn same_file_system(&self, path: &Path) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let ours = fs::metadata(&self.dir)
            .ok()
            .or_else(|| fs::metadata(self.dir.parent()?).ok())?;
        Some(ours.dev() == fs::metadata(path).ok()?.dev())
    }
}

/// Opens a format 2 vault's store through [`Store::open_witnessed`],
/// checking the authenticated superblock against `file` before recovery
/// writes anything (§16.16 step 4). A vault that does not descend from the
/// witnessed generation is refused ([`VaultError::Witness`]) unless
/// `accept` (then a `ROLLBACK_ACCEPTED` record and a checkpoint mark it).
/// The file is then written for the checkpoint the store is at: a mount
/// that cannot keep its witness is refused.
///
/// Each of `authorities` is checked first (§16.17.4): the superblock must
/// descend from its `W`. If it does not, and the claim that authority
/// judged describes this superblock, the authority released the key
/// knowing (an approved rollback): the local witness's verdict is taken
/// too, and `ROLLBACK_ACCEPTED` names the authority's `W` and the
/// release. Otherwise the claim was not this disk's (edited, or the disk
/// changed since): refused, whatever `accept` says.
pub(crate) fn open_store(
    file: &LocalWitnessFile,
    accept: bool,
    authorities: &[AuthorityWitness],
    keys: MetaKeys,
    backing: Arc<dyn Backing>,
    config: ConfigBinding,
    verifier: &dyn BlockVerifier,
) -> Result<(Store, Witnessed), VaultError> {
    let kept = file.read_bytes()?;
    let mut check = WitnessCheck::First;
    let mut approved: Option<(AuthorityRollback, u64)> = None;
    let mut current: Vec<Acknowledgement> = Vec::new();
    let judge_disk = |superblock: &Superblock, keys: &MetaKeys| {
        for authority in authorities {
            let witnessed = authority.as_local(superblock.vault_id);
            match judge(superblock, &witnessed) {
                Standing::Current => current.push(Acknowledgement {
                    generation: authority.witnessed,
                    audit_key: authority.audit_key,
                }),
                standing if authority.claim_matches(superblock) => {
                    // The past sequence number wins: the record must go
                    // beyond every approved `W`.
                    let further = approved
                        .as_ref()
                        .is_none_or(|(a, _)| a.witnessed.sequence < witnessed.generation.sequence);
                    if further {
                        approved = Some((
                            AuthorityRollback {
                                url: authority.url.clone(),
                                standing,
                                witnessed: witnessed.generation,
                                disk: superblock.generation,
                            },
                            authority.approval,
                        ));
                    }
                }
                standing => {
                    return Err(VaultError::Witness(authority_refusal(
                        standing, superblock, authority,
                    )));
                }
            }
        }
        let accept = accept || approved.is_some();
        let Some(bytes) = &kept else {
            return Ok(());
        };
        let witnessed = match LocalWitness::decode(bytes, keys) {
            Ok(w) => w,
            Err(_) if accept => {
                check = WitnessCheck::RollbackAccepted {
                    standing: Standing::Forked,
                    witnessed: None,
                    disk: superblock.generation,
                };
                return Ok(());
            }
            Err(e) => {
                return Err(VaultError::Witness(format!(
                    "the local witness file {} of this vault is damaged ({e}), so whether the \
                     vault was rolled back cannot be told; if you trust the vault as it is, \
                     mount it with --accept-rollback to write a new one",
                    file.path().display()
                )));
            }
        };
        match judge(superblock, &witnessed) {
            Standing::Current => {
                check = WitnessCheck::Current;
                Ok(())
            }
            standing if accept => {
                check = WitnessCheck::RollbackAccepted {
                    standing,
                    witnessed: Some(witnessed.generation),
                    disk: superblock.generation,
                };
                Ok(())
            }
            standing => Err(VaultError::Witness(refusal(
                standing,
                superblock,
                &witnessed,
                &file.path(),
            ))),
        }
    };
    let mut store = Store::open_witnessed(keys, backing, config, verifier, judge_disk)?;
    match (&approved, check) {
        (Some((rollback, approval)), _) => {
            store
                .accept_rollback(rollback.witnessed, *approval, now())
                .map_err(VaultError::Metadata)?;
        }
        (
            None,
            WitnessCheck::RollbackAccepted {
                witnessed: Some(w), ..
            },
        ) => {
            store
                .accept_rollback(w, 0, now())
                .map_err(VaultError::Metadata)?;
        }
        _ => {}
    }
    // The check passed: each `W` it found in the lineage stays there from
    // now on, listed as acknowledged by every later checkpoint (§16.17.4).
    for acknowledgement in &current {
        acknowledgement.record(&mut store)?;
    }
    file.record(&store).map_err(|e| {
        VaultError::Invalid(format!(
            "cannot keep the vault's local witness: {e}; a format 2 vault mounts only where \
             its witness can be written: run as root, or set ATREST_STATE_DIR to a directory \
             this user can write"
        ))
    })?;
    Ok((
        store,
        Witnessed {
            local: check,
            authority_rollback: approved.map(|(rollback, _)| rollback),
        },
    ))
}

/// Why the mount refuses a vault an authority released against a claim
/// that was not this disk's.
fn authority_refusal(
    standing: Standing,
    disk: &Superblock,
    authority: &AuthorityWitness,
) -> String {
    let what = match standing {
        Standing::Older => "is older than its key authority witnessed",
        _ => "does not continue the state its key authority witnessed (a fork)",
    };
    format!(
        "the vault on disk {what}: disk checkpoint {}, sequence {}, config generation {}; \
         witnessed by {} checkpoint {}, sequence {}, config generation {}, {} ago. The unlock \
         request claimed checkpoint {} (sequence {}), which is not what the disk holds now: the \
         claim was edited or the vault changed during the unlock. Nothing was mounted or \
         changed; put the newest copy of the vault back, or unlock again so that the authority \
         judges the vault as it is",
        disk.generation.checkpoint,
        disk.generation.sequence,
        disk.config_generation,
        authority.url,
        authority.witnessed.checkpoint,
        authority.witnessed.seq,
        authority.config_generation,
        ago(
            authority.reported_at_ms,
            u64::try_from(wall_clock().as_millis()).unwrap_or(u64::MAX)
        ),
        authority.claim.checkpoint,
        authority.claim.seq,
    )
}

fn refusal(standing: Standing, disk: &Superblock, witnessed: &LocalWitness, path: &Path) -> String {
    let what = match standing {
        Standing::Older => {
            "the vault on disk is older than this host last saw it: an earlier copy of its \
             backing directory was put back"
        }
        _ => {
            "the vault on disk does not continue the state this host last saw: another copy of \
             it was written meanwhile (a fork)"
        }
    };
    format!(
        "{what} (disk: checkpoint {}, sequence {}, config generation {}; witnessed: checkpoint {}, \
         sequence {}, config generation {}, {} ago, in {}). Put the newest copy back and mount \
         again; or, to go on with this one and lose what was written since, mount with \
         --accept-rollback",
        disk.generation.checkpoint,
        disk.generation.sequence,
        disk.config_generation,
        witnessed.generation.checkpoint,
        witnessed.generation.sequence,
        witnessed.config_generation,
        ago(
            witnessed.time_ms,
            u64::try_from(wall_clock().as_millis()).unwrap_or(u64::MAX)
        ),
        path.display()
    )
}

/// The wall clock, since the Unix epoch.
#[allow(
    clippy::disallowed_methods,
    reason = "the time of a ROLLBACK_ACCEPTED record and the age in a refusal, as a checkpoint's"
)]
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn now() -> atrest_meta::record::Timestamp {
    let d = wall_clock();
    atrest_meta::record::Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

/// "3 min", "2 h", "5 days": how long before `now_ms` `time_ms` was.
fn ago(time_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(time_ms) / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_sensible_units() {
        let now_ms = 1_800_000_000_000;
        assert_eq!(ago(now_ms - 5_000, now_ms), "5 s");
        assert_eq!(ago(now_ms - 600_000, now_ms), "10 min");
        assert_eq!(ago(now_ms - 3 * 3_600_000, now_ms), "3 h");
        assert_eq!(ago(now_ms - 10 * 86_400_000, now_ms), "10 days");
        assert_eq!(ago(now_ms + 5_000, now_ms), "0 s");
    }
}
