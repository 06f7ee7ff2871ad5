//! Signed generation reports (docs/format.md §16.17.1): a host tells the
//! authority the newest durable generation of a format 2 vault, signed by
//! its identity, so that the authority can witness it and later hold or
//! refuse an unlock of an older copy.
//!
//! As with unlock requests, [`verify_report`] is the only way to build a
//! [`VerifiedReport`]; the stateful checks (enrolled host, boot ticket,
//! nonce, the stored generation) are the authority's.
//!
//! ```
//! use atrest_remote::*;
//!
//! let host = HostIdentity::generate();
//! let head = Generation { checkpoint: 815, seq: 1_204_233, chain: [7; 32] };
//! let report = GenerationReport {
//!     host_id: HostId::new("web-1").unwrap(),
//!     vault_id: [1; 16],
//!     checkpoint: head.checkpoint,
//!     seq: head.seq,
//!     chain: head.chain,
//!     config_generation: 7,
//!     reason: ReportReason::Periodic,
//!     state: ReportedState::Open,
//!     lineage: Lineage::new(vec![head]).unwrap(),
//!     boot_id: BootId::new("0b5c5e4e").unwrap(),
//!     nonce: RequestNonce::random(),
//!     timestamp: 1_800_000_000,
//! };
//! let signed = host.sign_report(report);
//! let verified = verify_report(&signed, &host.public_key(), 1_800_000_001, 300).unwrap();
//! assert_eq!(verified.report().checkpoint, 815);
//! ```

use serde::{Deserialize, Serialize};

use crate::encoding::Canonical;
use crate::identity::{HostPublicKey, RequestSignature};
use crate::request::{
    BootId, BootTicket, HostId, InvalidField, RequestError, RequestNonce, check_signed,
};

/// The version byte of [`GenerationReport::signed_bytes`].
pub const REPORT_VERSION: u8 = 1;

/// Most generations a report's lineage holds (32 recent, 32 acknowledged).
pub const MAX_LINEAGE: usize = 64;

/// One state of a vault: checkpoint `k`, its last sequence number `S` and
/// chain hash `h_S` (format.md §16.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub checkpoint: u64,
    pub seq: u64,
    #[serde(with = "crate::encoding::base64url_array")]
    pub chain: [u8; 32],
}

impl Generation {
    /// `k ‖ S ‖ h`, 48 bytes.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..8].copy_from_slice(&self.checkpoint.to_be_bytes());
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..].copy_from_slice(&self.chain);
        out
    }
}

/// The generations a report's vault descends from and can still show:
/// 1 to [`MAX_LINEAGE`] of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Generation>", into = "Vec<Generation>")]
pub struct Lineage(Vec<Generation>);

impl Lineage {
    pub fn new(generations: Vec<Generation>) -> Result<Self, InvalidField> {
        if generations.is_empty() || generations.len() > MAX_LINEAGE {
            return Err(InvalidField {
                field: "lineage",
                rule: "1 to 64 generations",
            });
        }
        Ok(Self(generations))
    }

    pub fn generations(&self) -> &[Generation] {
        &self.0
    }

    pub fn contains(&self, generation: &Generation) -> bool {
        self.0.contains(generation)
    }
}

impl TryFrom<Vec<Generation>> for Lineage {
    type Error = InvalidField;
    fn try_from(value: Vec<Generation>) -> Result<Self, InvalidField> {
        Self::new(value)
    }
}

impl From<Lineage> for Vec<Generation> {
    fn from(value: Lineage) -> Self {
        value.0
    }
}

/// What an unlock request of a format 2 vault claims about the vault on
/// disk (format.md §16.17.2): read before any key exists, so unauthenticated;
/// the authority judges it against the generation it witnessed, and the
/// host checks the authenticated state after unlock (§16.17.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationClaim {
    pub checkpoint: u64,
    pub seq: u64,
    #[serde(with = "crate::encoding::base64url_array")]
    pub chain: [u8; 32],
    pub config_generation: u64,
    /// The superblock's `recent` then `acknowledged` lists.
    pub lineage: Lineage,
}

impl GenerationClaim {
    /// The claimed generation.
    pub fn generation(&self) -> Generation {
        Generation {
            checkpoint: self.checkpoint,
            seq: self.seq,
            chain: self.chain,
        }
    }

    /// `k ‖ S ‖ h ‖ config generation`, 56 bytes: the request's `claim`
    /// field.
    pub(crate) fn claim_bytes(&self) -> [u8; 56] {
        let mut out = [0u8; 56];
        out[..48].copy_from_slice(&self.generation().to_bytes());
        out[48..].copy_from_slice(&self.config_generation.to_be_bytes());
        out
    }
}

impl Lineage {
    /// `n × (k ‖ S ‖ h)`, as signed.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|g| g.to_bytes()).collect()
    }
}

/// Why the host reports (format.md §16.17.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    Mount = 1,
    Periodic = 2,
    Heartbeat = 3,
    Unmount = 4,
    Lock = 5,
    Repair = 6,
    Migrate = 7,
    RollbackAccepted = 8,
}

impl ReportReason {
    pub const ALL: [ReportReason; 8] = [
        Self::Mount,
        Self::Periodic,
        Self::Heartbeat,
        Self::Unmount,
        Self::Lock,
        Self::Repair,
        Self::Migrate,
        Self::RollbackAccepted,
    ];

    /// The reason of byte `value`, as signed.
    pub fn from_byte(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == value)
    }
}

/// The vault's state as its superblock says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedState {
    Clean = 1,
    Open = 2,
}

/// What a host reports of one vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationReport {
    pub host_id: HostId,
    #[serde(with = "crate::encoding::base64url_array")]
    pub vault_id: [u8; 16],
    pub checkpoint: u64,
    pub seq: u64,
    #[serde(with = "crate::encoding::base64url_array")]
    pub chain: [u8; 32],
    pub config_generation: u64,
    pub reason: ReportReason,
    pub state: ReportedState,
    /// The superblock's `recent` then `acknowledged` lists.
    pub lineage: Lineage,
    pub boot_id: BootId,
    pub nonce: RequestNonce,
    /// Unix seconds when the host made the report.
    pub timestamp: u64,
}

impl GenerationReport {
    /// The reported generation.
    pub fn generation(&self) -> Generation {
        Generation {
            checkpoint: self.checkpoint,
            seq: self.seq,
            chain: self.chain,
        }
    }

    /// The bytes the host signs (format.md §16.17.1, `lp` as in §3.2):
    ///
    /// ```text
    /// lp("atrest generation report v1") ‖ 1 ‖ lp(host_id) ‖ lp(vault_id) ‖ lp(k u64be)
    ///   ‖ lp(S u64be) ‖ lp(h_S) ‖ lp(config generation u64be) ‖ lp(reason u8)
    ///   ‖ lp(state u8) ‖ lp(lineage: n × (k ‖ S ‖ h)) ‖ lp(boot_id) ‖ lp(nonce)
    ///   ‖ lp(timestamp u64be)
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        let lineage = self.lineage.to_bytes();
        let mut out = Canonical::new(
            atrest_core::labels::domain::GENERATION_REPORT,
            REPORT_VERSION,
        );
        out.field(self.host_id.as_str().as_bytes())
            .field(&self.vault_id)
            .field(&self.checkpoint.to_be_bytes())
            .field(&self.seq.to_be_bytes())
            .field(&self.chain)
            .field(&self.config_generation.to_be_bytes())
            .field(&[self.reason as u8])
            .field(&[self.state as u8])
            .field(&lineage)
            .field(self.boot_id.as_str().as_bytes())
            .field(&self.nonce.0)
            .field(&self.timestamp.to_be_bytes());
        out.into_bytes()
    }
}

/// A report with the host's signature, as sent to `POST /v1/generation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedGenerationReport {
    pub report: GenerationReport,
    pub signature: RequestSignature,
    /// The boot's ticket ([`BootTicket`]): only the boot the authority
    /// released to may report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ticket: Option<BootTicket>,
}

/// Proof that a report's signature and timestamp were checked: only
/// [`verify_report`] builds one.
///
/// ```compile_fail
/// # fn forge(report: atrest_remote::GenerationReport) {
/// let forged = atrest_remote::VerifiedReport { report };
/// # }
/// ```
///
/// ```compile_fail
/// fn from_the_wire<T: serde::de::DeserializeOwned>() {}
/// from_the_wire::<atrest_remote::VerifiedReport>();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReport {
    report: GenerationReport,
}

impl VerifiedReport {
    pub fn report(&self) -> &GenerationReport {
        &self.report
    }
}

/// Checks a report as [`crate::verify`] checks an unlock request: strict
/// signature first, then the clock window.
pub fn verify_report(
    signed: &SignedGenerationReport,
    key: &HostPublicKey,
    now: u64,
    max_skew: u64,
) -> Result<VerifiedReport, RequestError> {
    check_signed(
        &signed.report.signed_bytes(),
        &signed.signature,
        signed.report.timestamp,
        key,
        now,
        max_skew,
    )?;
    Ok(VerifiedReport {
        report: signed.report.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostIdentity;

    fn report() -> GenerationReport {
        let head = Generation {
            checkpoint: 815,
            seq: 1_204_233,
            chain: [7; 32],
        };
        let older = Generation {
            checkpoint: 814,
            seq: 1_204_000,
            chain: [6; 32],
        };
        GenerationReport {
            host_id: HostId::new("web-1").unwrap(),
            vault_id: [1; 16],
            checkpoint: head.checkpoint,
            seq: head.seq,
            chain: head.chain,
            config_generation: 7,
            reason: ReportReason::Periodic,
            state: ReportedState::Open,
            lineage: Lineage::new(vec![head, older]).unwrap(),
            boot_id: BootId::new("0b5c5e4e").unwrap(),
            nonce: RequestNonce([9; 16]),
            timestamp: 1_800_000_000,
        }
    }

    #[test]
    fn the_encoding_follows_the_byte_table() {
        let r = report();
        let bytes = r.signed_bytes();
        let (h, b, n) = (5, 8, 2);
        assert_eq!(bytes.len(), 178 + h + 48 * n + b);
        assert_eq!(&bytes[..4], &27u32.to_be_bytes());
        assert_eq!(&bytes[4..31], b"atrest generation report v1");
        assert_eq!(bytes[31], 1);
        assert_eq!(&bytes[32..36], &(h as u32).to_be_bytes());
        assert_eq!(&bytes[36..36 + h], b"web-1");
        assert_eq!(&bytes[60 + h..68 + h], &815u64.to_be_bytes());
        assert_eq!(bytes[132 + h], ReportReason::Periodic as u8);
        assert_eq!(bytes[137 + h], ReportedState::Open as u8);
        assert_eq!(&bytes[138 + h..142 + h], &96u32.to_be_bytes());
    }

    #[test]
    fn verifies_and_refuses_any_change() {
        let host = HostIdentity::generate();
        let signed = host.sign_report(report());
        let ok = verify_report(&signed, &host.public_key(), 1_800_000_010, 300).unwrap();
        assert_eq!(ok.report(), &report());
        let changes: [fn(&mut GenerationReport); 6] = [
            |r| r.seq += 1,
            |r| r.chain[0] ^= 1,
            |r| r.config_generation -= 1,
            |r| r.reason = ReportReason::RollbackAccepted,
            |r| r.lineage = Lineage::new(vec![r.generation()]).unwrap(),
            |r| r.vault_id[15] ^= 1,
        ];
        for change in changes {
            let mut bad = signed.clone();
            change(&mut bad.report);
            assert_eq!(
                verify_report(&bad, &host.public_key(), 1_800_000_010, 300),
                Err(RequestError::BadSignature)
            );
        }
        let other = HostIdentity::generate();
        assert!(verify_report(&signed, &other.public_key(), 1_800_000_010, 300).is_err());
        assert!(matches!(
            verify_report(&signed, &host.public_key(), 1_800_001_000, 300),
            Err(RequestError::Stale { .. })
        ));
    }

    #[test]
    fn json_round_trips_and_bounds_the_lineage() {
        let host = HostIdentity::generate();
        let signed = host.sign_report(report());
        let json = serde_json::to_string(&signed).unwrap();
        assert!(json.contains("\"reason\":\"periodic\""), "{json}");
        let back: SignedGenerationReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
        assert!(Lineage::new(Vec::new()).is_err());
        assert!(Lineage::new(vec![report().generation(); MAX_LINEAGE + 1]).is_err());
        let empty = json.replace(
            &serde_json::to_string(&signed.report.lineage).unwrap(),
            "[]",
        );
        let err = serde_json::from_str::<SignedGenerationReport>(&empty).unwrap_err();
        assert!(err.to_string().contains("lineage"), "{err}");
    }
}
