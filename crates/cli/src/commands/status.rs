use std::process::ExitCode;

use atrest_vault::{LockedVault, MountLock, SlotKind};
use serde::Serialize;

use crate::cli::StatusArgs;

#[derive(Serialize)]
pub struct SlotInfo {
    pub id: u8,
    pub kind: &'static str,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2: Option<String>,
    /// Remote and threshold slots: the authorities they ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorities: Option<AuthoritiesInfo>,
}

#[derive(Serialize)]
pub struct AuthoritiesInfo {
    /// k of a threshold slot (1 for a remote slot).
    pub threshold: u8,
    pub members: Vec<AuthorityInfo>,
}

#[derive(Serialize)]
pub struct AuthorityInfo {
    pub url: String,
    pub host_id: String,
    pub ca_fingerprint: String,
    /// Other URLs of the same authority (replicas), tried in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// The alarm this host keeps for the authority's audit log (a rollback
    /// or fork it caught): unlocks through it are refused until acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_alarm: Option<String>,
}

impl AuthorityInfo {
    fn new(a: &atrest_vault::AuthorityRef) -> Self {
        let alarm = atrest_agent::StateDir::from_env()
            .alarm(&a.audit_public_key)
            .ok()
            .flatten();
        Self {
            url: a.url.clone(),
            host_id: a.host_id.to_string(),
            ca_fingerprint: atrest_agent::format_fingerprint(&a.ca_fingerprint),
            replicas: Vec::new(),
            audit_alarm: alarm.map(|k| k.alarm.reason),
        }
    }
}

impl AuthoritiesInfo {
    /// `https://k:7443 as web-1`, or `2 of: https://a as web-1, https://b as web-1`.
    pub fn describe(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                if m.replicas.is_empty() {
                    format!("{} as {}", m.url, m.host_id)
                } else {
                    format!(
                        "{} (replicas {}) as {}",
                        m.url,
                        m.replicas.join(", "),
                        m.host_id
                    )
                }
            })
            .collect();
        if self.members.len() == 1 {
            members.join("")
        } else {
            format!("{} of: {}", self.threshold, members.join(", "))
        }
    }
}

#[derive(Serialize)]
struct Status {
    vault: String,
    format_version: u16,
    vault_id: String,
    backend: &'static str,
    cipher: &'static str,
    block_size: u32,
    created_unix: u64,
    keyslots: Vec<SlotInfo>,
    mounted_at: Vec<String>,
    mount_process: Option<String>,
    config_problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fscrypt: Option<super::fscrypt::FscryptStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    witness: Option<WitnessStatus>,
}

/// Who witnesses a format 2 vault's latest state (docs/format.md §16.17):
/// the host's local witness file, and the key authorities of its remote
/// and threshold slots, which its mounts report to.
#[derive(Serialize)]
struct WitnessStatus {
    /// "local": no authority witnesses the vault; "authority": the
    /// authorities in `authorities` do, with the local file.
    kind: &'static str,
    /// The URLs of the authorities that witness it.
    authorities: Vec<String>,
    path: String,
    /// Unix milliseconds of the file's last write; `None` before the
    /// first mount on this host.
    written_unix_ms: Option<u64>,
    /// Whether the witness file is on the vault's file system (a snapshot
    /// of it rolls both back).
    same_file_system: Option<bool>,
    /// A restored VM image or disk snapshot holding the state directory as
    /// well goes unnoticed: only a key authority can see that.
    detects_whole_disk_rollback: bool,
}

impl WitnessStatus {
    fn of(config: &atrest_vault::VaultConfig, root: &std::path::Path) -> Option<Self> {
        if config.format != atrest_vault::VERSION_2 {
            return None;
        }
        let file = atrest_vault::LocalWitnessFile::in_state_dir(
            atrest_agent::StateDir::from_env().path(),
            &config.vault_id,
        );
        let written_unix_ms = std::fs::metadata(file.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        let authorities: Vec<String> = atrest_agent::remote_authorities(config)
            .into_iter()
            .map(|a| a.url)
            .collect();
        Some(Self {
            kind: if authorities.is_empty() {
                "local"
            } else {
                "authority"
            },
            detects_whole_disk_rollback: !authorities.is_empty(),
            authorities,
            path: file.path().display().to_string(),
            written_unix_ms,
            same_file_system: file.same_file_system(root),
        })
    }

    fn print(&self) {
        let written = match self.written_unix_ms {
            Some(ms) => format!("last written {}", super::keyd::rfc3339(ms / 1000)),
            None => "not written yet: the first mount on this host writes it".into(),
        };
        if !self.authorities.is_empty() {
            println!(
                "witness:    key authority {} (reports at mount, after checkpoints and at \
                 unmount), and locally {} ({written})",
                self.authorities.join(", "),
                self.path
            );
            println!(
                "            an earlier copy of the vault or of the whole disk is held or \
                 refused at unlock by the authority's rollback policy"
            );
            return;
        }
        println!("witness:    local only, {} ({written})", self.path);
        println!(
            "            a copy of the backing directory put back is refused at mount; \
             rollback of the whole disk cannot be detected"
        );
        if self.same_file_system == Some(true) {
            println!(
                "            (the witness is on the vault's file system: a restored VM image or \
                 disk snapshot is not detected)"
            );
        }
    }
}

pub fn slot_infos(locked: &LockedVault) -> Vec<SlotInfo> {
    locked
        .config()
        .keyslots
        .iter()
        .map(|s| SlotInfo {
            id: s.id,
            kind: s.kind.name(),
            label: s.label.clone(),
            argon2: match &s.kind {
                SlotKind::Passphrase { params, .. } => Some(format!(
                    "argon2id m={}MiB t={} p={}",
                    params.memory_kib / 1024,
                    params.iterations,
                    params.parallelism
                )),
                _ => None,
            },
            authorities: AuthoritiesInfo::of(&s.kind),
        })
        .collect()
}

impl AuthoritiesInfo {
    /// The authorities a remote or threshold slot asks (of a vault or of a
    /// backup repository); `None` for other kinds.
    pub fn of(kind: &SlotKind) -> Option<Self> {
        match kind {
            SlotKind::Remote(r) => Some(Self {
                threshold: 1,
                members: vec![AuthorityInfo {
                    replicas: r.replicas.clone(),
                    ..AuthorityInfo::new(&r.authority)
                }],
            }),
            SlotKind::Threshold(t) => Some(Self {
                threshold: t.threshold,
                members: t
                    .members
                    .iter()
                    .map(|m| AuthorityInfo::new(&m.authority))
                    .collect(),
            }),
            _ => None,
        }
    }

    /// `https://a:7443 as web-1` or `2-of-3: https://a as web-1, ...`.
    pub fn line(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let replicas = if m.replicas.is_empty() {
                    String::new()
                } else {
                    format!(" (replicas: {})", m.replicas.join(", "))
                };
                format!("{} as {}{replicas}", m.url, m.host_id)
            })
            .collect();
        if self.threshold == 1 && members.len() == 1 {
            members.join("")
        } else {
            format!(
                "{}-of-{}: {}",
                self.threshold,
                members.len(),
                members.join(", ")
            )
        }
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    // A LUKS2 volume (a block device, or an image file): its keyslots and
    // atrest bindings, as `atrest luks list` shows them.
    if !args.vault.is_dir()
        && atrest_luks::Device::new(&args.vault)
            .is_luks2()
            .unwrap_or(false)
    {
        return super::luks::list(crate::cli::LuksListArgs {
            device: args.vault,
            json: args.json,
        });
    }
    let (location, locked) = super::open_locked(&args.vault)?;
    let root = std::fs::canonicalize(&location.data)?;
    let config = locked.config();
    let fscrypt = (config.backend == atrest_vault::Backend::Fscrypt)
        .then(|| super::fscrypt::status(&location.data));
    let status = Status {
        vault: root.display().to_string(),
        format_version: config.format,
        vault_id: config.vault_id.iter().map(|b| format!("{b:02x}")).collect(),
        backend: config.backend.name(),
        cipher: config.algorithm.name(),
        block_size: config.block_size,
        created_unix: config.created_unix,
        keyslots: slot_infos(&locked),
        mounted_at: super::unmount::atrest_mounts()
            .into_iter()
            .filter(|(vault, _)| *vault == root)
            .map(|(_, mnt)| mnt.display().to_string())
            .collect(),
        mount_process: MountLock::holder(&root),
        config_problems: locked.config_problems(),
        fscrypt,
        metadata: locked.metadata_state().map(MetadataStatus::from),
        witness: WitnessStatus::of(config, &root),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("vault:      {}", status.vault);
    println!(
        "format:     atrest vault v{} ({} backend)",
        status.format_version, status.backend
    );
    println!("vault id:   {}", status.vault_id);
    match &status.fscrypt {
        None => println!(
            "cipher:     {}, {}-byte blocks; names AES-SIV",
            status.cipher, status.block_size
        ),
        Some(f) => f.print(),
    }
    println!("keyslots:");
    for slot in &status.keyslots {
        let extra = slot
            .argon2
            .clone()
            .or_else(|| slot.authorities.as_ref().map(AuthoritiesInfo::describe))
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        println!(
            "  {:>3}  {:<13} {}{}",
            slot.id, slot.kind, slot.label, extra
        );
    }
    match (&status.mounted_at[..], &status.mount_process) {
        _ if status.fscrypt.is_some() => {}
        ([], None) => println!("mounted:    no"),
        ([], Some(p)) => {
            println!("mounted:    held by a mount process ({p}), mount point not visible here")
        }
        (mnts, _) => println!("mounted:    {}", mnts.join(", ")),
    }
    if let Some(metadata) = &status.metadata {
        let mounted = !status.mounted_at.is_empty() || status.mount_process.is_some();
        metadata.print(mounted);
    } else if status.format_version == atrest_vault::VERSION_2 {
        println!("metadata:   atrest.meta has no superblock that parses (`atrest fsck` says more)");
    }
    if let Some(witness) = &status.witness {
        witness.print();
    }
    for problem in &status.config_problems {
        println!("warning:    {problem} (unlocking repairs it)");
    }
    let members = status
        .keyslots
        .iter()
        .filter_map(|s| s.authorities.as_ref())
        .flat_map(|a| &a.members);
    for member in members {
        if let Some(reason) = &member.audit_alarm {
            println!(
                "ALARM:      {}: {reason}; unlocks through it are refused (`atrest alarm list`)",
                member.url
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a format 2 vault's superblock and log say (docs/format.md §16.5,
/// §16.12), read before unlock: unauthenticated, a description of the
/// disk (the mount and `fsck` verify it).
#[derive(Serialize)]
struct MetadataStatus {
    checkpoint: u64,
    sequence: u64,
    checkpoint_unix_ms: u64,
    /// `clean`, `open`, `migrating` or `recovered` (§16.5 byte 11).
    state: &'static str,
    /// Changes logged after the checkpoint, which the next open replays.
    changes_after_checkpoint: u64,
}

impl From<atrest_vault::MetadataState> for MetadataStatus {
    fn from(m: atrest_vault::MetadataState) -> Self {
        use atrest_vault::MetadataStateKind as Kind;
        Self {
            checkpoint: m.checkpoint,
            sequence: m.sequence,
            checkpoint_unix_ms: m.time_ms,
            state: match m.state {
                Kind::Clean => "clean",
                Kind::Open => "open",
                Kind::Migrating => "migrating",
                Kind::Recovered => "recovered",
            },
            changes_after_checkpoint: m.changes_after,
        }
    }
}

impl MetadataStatus {
    /// `mounted`: a mount process holds the vault (the superblock says
    /// what its last checkpoint wrote, maybe *clean* from before it).
    fn print(&self, mounted: bool) {
        println!(
            "checkpoint: {} (log sequence {}), written {} (read before unlock, not authenticated)",
            self.checkpoint,
            self.sequence,
            super::keyd::rfc3339(self.checkpoint_unix_ms / 1000)
        );
        let state = match self.state {
            "clean" | "open" if mounted => "open: mounted".to_string(),
            "clean" => "clean: unmounted after its last checkpoint".to_string(),
            "migrating" => "migrating from format 1: run `atrest migrate` to finish".to_string(),
            "recovered" => "recovered: a crash was recovered since the last complete check \
                 (writes not fsync'ed before it may be lost; the mount that recovered it \
                 logged what it reverted); run `atrest fsck` to check the vault and clear this"
                .to_string(),
            _ => "open: mounted, or its mount stopped without unmounting".to_string(),
        };
        println!("state:      {state}");
        if self.changes_after_checkpoint > 0 {
            println!(
                "log:        {} changes after the checkpoint (the next mount or fsck replays them)",
                self.changes_after_checkpoint
            );
        }
    }
}
