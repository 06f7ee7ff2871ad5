//! The host side of atrest's key authority: what `atrest enroll`,
//! `atrest unlock` and `atrest reboot --planned` do, without the command
//! line.
//!
//! - [`StateDir`]: the host's Ed25519 identity (`identity`, mode 0600) and
//!   the newest signed tree head (and format-1 checkpoint) seen from each
//!   authority's audit log, and any alarm raised about it.
//! - [`AuthorityClient`]: one authority's `/v1` API over HTTPS that trusts
//!   only the CA pinned by fingerprint ([`PinnedVerifier`]).
//! - [`enroll`]: registers the host with one authority (a remote keyslot)
//!   or several (a k-of-n threshold keyslot) and adds the slot to an
//!   unlocked vault. The authority never sees the vault key.
//! - [`unlock`]: opens a [`LockedVault`] through its remote or threshold
//!   slot: signed, blinded requests, bounded retries with backoff while an
//!   authority is unreachable, long polls while a request waits for
//!   approval, each release checked to be in the authority's audit log and the
//!   log checked to extend the one seen before (a rollback or fork raises an
//!   alarm kept until an operator acknowledges it), and re-binding
//!   after the authority rotated this host's secret.
//! - [`announce_reboot`]: tells every authority of a vault that the next
//!   boot is planned.
//! - [`Reporter`]: a mounted format 2 vault's generation reports to its
//!   authorities (docs/format.md §16.17.1), from a thread of its own; the
//!   unlock sends the vault's claim (§16.17.2) and returns what each
//!   authority witnessed ([`Unlocked::witnessed`]) for the mount to check.
//! - [`ReleasedBoot`]: how an authority accounted for each boot it released
//!   to (planned, unannounced, ...), kept from the checked release entries
//!   for `atrest doctor`.
//! - [`AuthorityClient::probe`]: whether an authority answers and presents
//!   the pinned CA, for `atrest doctor`.
//!
//! ```no_run
//! # async fn demo(vault: &mut atrest_vault::Vault) -> Result<(), atrest_agent::AgentError> {
//! use atrest_agent::{AuthoritySpec, StateDir, UnlockOptions, parse_fingerprint};
//!
//! let state = StateDir::from_env();
//! let keys = AuthoritySpec {
//!     url: "https://keys.example:7443".into(),
//!     token: Some(String::from("one-time token").into()),
//!     ca_fingerprint: parse_fingerprint(&format!("SHA256:{}", "ab".repeat(32)))?,
//!     // Other replicas of the same authority, tried in order at unlock.
//!     replicas: vec!["https://keys-b.example:7443".into()],
//! };
//! atrest_agent::enroll(vault, &state, &[keys], None, "web-1", "keys").await?;
//!
//! // At boot:
//! let locked = atrest_vault::LockedVault::open(vault.root())?;
//! let unlocked = atrest_agent::unlock(locked, &state, &UnlockOptions::default()).await?;
//! # drop(unlocked);
//! # Ok(()) }
//! ```
//!
//! Secrets (exchange keys, shares, the slot secret, the identity seed) are
//! zeroizing types and are never logged.

mod boots;
mod client;
mod error;
mod remote;
mod report;
mod state;
mod tls;
mod witness;

pub use boots::{KEPT_BOOTS, ReleasedBoot};
pub use client::{AuthorityClient, EnrollReply, Probe, Rebind, RebootReply, UnlockReply};
pub use error::AgentError;
pub use remote::{
    AuthoritySpec, Enrolled, EnrolledAt, RebootAnnounced, Release, UnlockOptions, Unlocked,
    announce_reboot, enroll, enroll_members, release_remote, release_threshold, remote_authorities,
    unlock,
};
pub use report::{DEFAULT_INTERVAL as REPORT_INTERVAL, FINISH_TIMEOUT, HEARTBEAT, Reporter};
#[cfg(feature = "test-hooks")]
pub use state::BOOT_ID_ENV;
pub use state::{DEFAULT_STATE_DIR, STATE_DIR_ENV, StateDir, boot_id};
pub use tls::{PinMismatch, PinnedVerifier, format_fingerprint, parse_fingerprint, pinned_client};
pub use witness::{Alarm, KeptAlarm};
