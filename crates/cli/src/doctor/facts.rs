//! Gathering: everything the checks read from the machine, in one struct.
//! Nothing here decides anything.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    /// `fuse.atrest` for every atrest vault mount (root's direct mounts,
    /// type `fuse` in mountinfo, are renamed so by [`gather`]).
    /// Mount and super-block options, comma-separated.
    pub options: String,
}

/// A file's mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMode {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub is_dir: bool,
}

/// What a sensitive file is, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A vault config (keyslots) or its backup.
    VaultConfig,
    /// A file under /etc/atrest (key files, the vault list).
    EtcAtrest,
    /// The host identity and state (/var/lib/atrest/host).
    HostState,
    /// The key authority's data dir.
    AuthorityData,
}

/// A LUKS volume among the block devices (`lsblk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksVolume {
    pub device: String,
    /// Opened: a dm-crypt mapping sits on it.
    pub open: bool,
    /// Authority URLs of its atrest bindings (none: passphrase or key
    /// file only; LUKS1 volumes cannot carry one).
    pub bound_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// LUKS volumes found among the block devices.
    pub luks_volumes: Vec<LuksVolume>,
    pub mounts: Vec<Mount>,
    /// Block devices (as mount sources and swap names) backed by dm-crypt.
    pub encrypted_devices: BTreeSet<String>,
    /// Directories protected by a vault although no FUSE mount shows it:
    /// fscrypt vault directories.
    pub vault_roots: Vec<PathBuf>,
    /// Swap areas from /proc/swaps: (name, type).
    pub swaps: Vec<(String, String)>,
    /// The hibernation image device: /sys/power/resume (MAJ:MIN, "0:0" none)
    /// resolved to a device path when possible, or resume= on the command line.
    pub resume: Option<String>,
    pub core_pattern: String,
    /// fs.suid_dumpable.
    pub suid_dumpable: u32,
    /// RLIMIT_CORE soft limit of PID 1's children by default: systemd's
    /// DefaultLimitCORE, read as this process's own limit (None = unlimited).
    pub core_rlimit: Option<u64>,
    /// Storage= of systemd-coredump (coredump.conf and drop-ins), if set.
    pub coredump_storage: Option<String>,
    /// atrest processes (mount processes) whose core limit is not 0: (pid, limit).
    pub dumpable_atrest: Vec<(u32, String)>,
    /// atrest processes of users other than root that are dumpable (their
    /// /proc/PID files belong to their user, not root): (pid, uid).
    pub dumpable_user_atrest: Vec<(u32, u32)>,
    /// Storage= of journald, if set; and whether /var/log/journal exists.
    pub journald_storage: Option<String>,
    pub var_log_journal_exists: bool,
    /// Data directories of known services that exist and are not empty:
    /// (service, path).
    pub service_dirs: Vec<(String, PathBuf)>,
    /// Local units' ReadWritePaths/WorkingDirectory: (unit, path).
    pub unit_paths: Vec<(String, PathBuf)>,
    /// The owner uid of each of those directories that exists (a service
    /// running as its own user needs its vault mounted with allow_other).
    pub dir_owners: std::collections::BTreeMap<PathBuf, u32>,
    /// Sensitive files and directories with their modes.
    pub secrets: Vec<(SecretKind, FileMode)>,
    /// Copies of a vault config found outside the vault (backups).
    pub config_copies: Vec<FileMode>,
    /// The driver the kernel picks for xts(aes) (/proc/crypto), if any.
    pub xts_aes_driver: Option<String>,
    /// Whether a vault on this machine uses the fscrypt backend.
    pub has_fscrypt_vault: bool,
    /// Whether doctor runs as root (owner checks only mean something then).
    pub is_root: bool,
    /// Every authority of the vaults' remote and threshold keyslots, with
    /// what a short request to it found.
    pub authorities: Vec<AuthorityFact>,
    /// This boot's id (/proc/sys/kernel/random/boot_id).
    pub boot_id: Option<String>,
    /// How the authorities accounted for the boots they released keys to,
    /// as this host kept it (oldest first).
    pub released_boots: Vec<atrest_agent::ReleasedBoot>,
    /// The host state directory those are kept in.
    pub host_state: PathBuf,
}

/// How long doctor waits for each key authority (all are asked at once).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One authority of one keyslot of one vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityFact {
    pub vault: PathBuf,
    pub slot: u8,
    /// A threshold slot's (k, n); `None` for a remote slot.
    pub threshold: Option<(u8, usize)>,
    pub url: String,
    /// The CA fingerprint the keyslot pins.
    pub pinned: [u8; 32],
    /// The audit public key the keyslot pinned at enrollment (its release
    /// checkpoints must verify under it).
    pub pinned_audit_key: [u8; 32],
    pub probe: atrest_agent::Probe,
}

impl Facts {
    /// The mount holding `path`: the longest mount point it is under.
    pub fn mount_of(&self, path: &Path) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| path.starts_with(&m.target))
            .max_by_key(|m| m.target.components().count())
    }

    /// Whether a file system keeps nothing in the clear on disk.
    pub fn is_encrypted_fs(&self, m: &Mount) -> bool {
        matches!(m.fstype.as_str(), "tmpfs" | "ramfs")
            || self.encrypted_devices.contains(&m.source)
            || m.source.starts_with("/dev/zram")
    }
}

/// Reads the machine. `vaults` are the `--vault` arguments; the vaults in
/// /etc/atrest/vaults and the mounted ones are added.
pub fn gather(vaults: &[PathBuf]) -> anyhow::Result<Facts> {
    let mut mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo")?);
    // A vault mounted by root directly shows as type `fuse` (through
    // fusermount3, `fuse.atrest`); its source is the vault, config inside.
    for m in &mut mounts {
        if m.fstype == "fuse"
            && Path::new(&m.source)
                .join(atrest_vault::CONFIG_FILE)
                .exists()
        {
            m.fstype = "fuse.atrest".into();
        }
    }
    let mut f = Facts {
        is_root: rustix::process::geteuid().is_root(),
        ..Facts::default()
    };
    let mut devices: BTreeSet<String> = mounts.iter().map(|m| m.source.clone()).collect();
    f.swaps = parse_swaps(&fs::read_to_string("/proc/swaps").unwrap_or_default());
    devices.extend(f.swaps.iter().map(|s| s.0.clone()));
    f.resume = resume_device();
    devices.extend(f.resume.clone());
    f.encrypted_devices = devices.into_iter().filter(|d| is_dm_crypt(d)).collect();
    f.mounts = mounts;
    f.luks_volumes = luks_volumes();

    f.core_pattern = read_trim("/proc/sys/kernel/core_pattern");
    f.suid_dumpable = read_trim("/proc/sys/fs/suid_dumpable").parse().unwrap_or(0);
    f.core_rlimit = rustix::process::getrlimit(rustix::process::Resource::Core).current;
    f.coredump_storage = systemd_setting("coredump.conf", "Storage");
    f.dumpable_atrest = atrest_processes_with_core();
    f.dumpable_user_atrest = dumpable_user_processes();
    f.journald_storage = systemd_setting("journald.conf", "Storage");
    f.var_log_journal_exists = Path::new("/var/log/journal").is_dir();

    f.service_dirs = service_dirs();
    f.unit_paths = unit_paths(Path::new("/etc/systemd/system"));
    f.dir_owners = f
        .service_dirs
        .iter()
        .chain(&f.unit_paths)
        .filter_map(|(_, p)| Some((p.clone(), fs::metadata(p).ok()?.uid())))
        .collect();

    // Vaults: named, listed, mounted.
    let mut all: Vec<PathBuf> = vaults.to_vec();
    all.extend(
        read_trim("/etc/atrest/vaults")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(PathBuf::from),
    );
    all.extend(
        f.mounts
            .iter()
            .filter(|m| m.fstype == "fuse.atrest")
            .map(|m| PathBuf::from(&m.source)),
    );
    all.sort();
    all.dedup();
    for v in &all {
        let Ok(loc) = atrest_vault::locate(v) else {
            if vaults.contains(v) {
                anyhow::bail!(
                    "{}: not a vault (no atrest.conf in it or beside it)",
                    v.display()
                );
            }
            continue;
        };
        if loc.backend == atrest_vault::Backend::Fscrypt {
            f.has_fscrypt_vault = true;
            f.vault_roots.push(loc.data.clone());
        }
        for name in [atrest_vault::CONFIG_FILE, atrest_vault::BACKUP_FILE] {
            if let Some(m) = file_mode(&loc.config_dir.join(name)) {
                f.secrets.push((SecretKind::VaultConfig, m));
            }
        }
        if let Ok(locked) = atrest_vault::LockedVault::open(&loc.config_dir) {
            f.authorities
                .extend(keyslot_authorities(v, locked.config()));
        }
    }
    probe_authorities(&mut f.authorities);
    walk_modes(
        Path::new("/etc/atrest"),
        SecretKind::EtcAtrest,
        &mut f.secrets,
    );
    let host = std::env::var_os(atrest_agent::STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(atrest_agent::DEFAULT_STATE_DIR));
    walk_modes(&host, SecretKind::HostState, &mut f.secrets);
    f.boot_id = atrest_agent::boot_id().ok().map(|b| b.as_str().to_owned());
    f.released_boots = atrest_agent::StateDir::new(&host)
        .released_boots()
        .unwrap_or_else(|e| {
            eprintln!("atrest doctor: cannot read the boot records: {e}");
            Vec::new()
        });
    f.host_state = host;
    walk_modes(
        Path::new("/var/lib/atrest/keyd"),
        SecretKind::AuthorityData,
        &mut f.secrets,
    );
    f.config_copies = config_copies(&f);
    f.xts_aes_driver = xts_aes_driver(&fs::read_to_string("/proc/crypto").unwrap_or_default());
    Ok(f)
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        out.push(Mount {
            source: unescape(r[1]),
            target: PathBuf::from(unescape(l[4])),
            fstype: r[0].to_string(),
            options: format!("{},{}", l[5], r[2]),
        });
    }
    out
}

pub fn parse_swaps(text: &str) -> Vec<(String, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((unescape(it.next()?), it.next()?.to_string()))
        })
        .collect()
}

/// Whether a device path is (a symlink to) a dm-crypt mapping.
fn is_dm_crypt(dev: &str) -> bool {
    let Ok(real) = fs::canonicalize(dev) else {
        return false;
    };
    let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if !name.starts_with("dm-") {
        return false;
    }
    read_trim(&format!("/sys/block/{name}/dm/uuid")).starts_with("CRYPT-")
}

fn resume_device() -> Option<String> {
    let sys = read_trim("/sys/power/resume");
    if !sys.is_empty() && sys != "0:0" {
        let link = format!("/sys/dev/block/{sys}");
        if let Ok(real) = fs::canonicalize(&link)
            && let Some(name) = real.file_name()
        {
            return Some(format!("/dev/{}", name.to_string_lossy()));
        }
        return Some(sys);
    }
    read_trim("/proc/cmdline")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("resume=").map(str::to_string))
}

/// The last value of `key` in /etc/systemd/NAME, then its drop-ins in order.
fn systemd_setting(name: &str, key: &str) -> Option<String> {
    let mut files = vec![PathBuf::from(format!("/etc/systemd/{name}"))];
    let dropins = PathBuf::from(format!("/etc/systemd/{name}.d"));
    if let Ok(rd) = fs::read_dir(&dropins) {
        let mut d: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        d.sort();
        files.extend(d);
    }
    let mut value = None;
    for f in files {
        if let Ok(text) = fs::read_to_string(&f)
            && let Some(v) = ini_value(&text, key)
        {
            value = Some(v);
        }
    }
    value
}

/// The last uncommented `key=value` in an INI-like text.
pub fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .next_back()
}

/// atrest processes (comm "atrest") whose core limit is not 0: a mount
/// process always sets it to 0, so another value means an old binary or
/// a process that never hardened itself.
fn atrest_processes_with_core() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || read_trim(&format!("/proc/{pid}/comm")) != "atrest" {
            continue;
        }
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        if let Some(soft) = core_limit(&limits)
            && soft != "0"
        {
            out.push((pid, soft));
        }
    }
    out
}

/// atrest processes of other users than root that are dumpable.
///
/// Linux has no field that shows another process's dumpable flag, but
/// proc(5) documents its effect on /proc: the files under /proc/PID of a
/// process whose dumpable attribute is not 1 belong to root (the root of
/// its user namespace), while /proc/PID itself keeps the process's
/// effective uid (kernel: task_dump_owner). So a process of user U whose
/// /proc/PID/status belongs to U is dumpable: U's other processes may
/// ptrace it and read /proc/PID/mem. Root's own processes cannot be told
/// apart this way (both owners are 0); a mount by root is the root-owned
/// atrest, which always marks itself non-dumpable. Nor can a process in
/// another user namespace, whose "root" may map to its own user (a
/// rootless container): it is left out.
fn dumpable_user_processes() -> Vec<(u32, u32)> {
    let my_namespace = fs::read_link("/proc/self/ns/user").ok();
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || read_trim(&format!("/proc/{pid}/comm")) != "atrest" {
            continue;
        }
        let (Ok(dir), Ok(status)) = (
            fs::metadata(format!("/proc/{pid}")),
            fs::metadata(format!("/proc/{pid}/status")),
        ) else {
            continue;
        };
        // A zombie has no memory left, and the kernel then shows its files
        // as its user's whatever its flag was.
        let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if is_zombie(&text) {
            continue;
        }
        let same_namespace = my_namespace.is_some()
            && fs::read_link(format!("/proc/{pid}/ns/user")).ok() == my_namespace;
        if is_dumpable_by_owner(dir.uid(), status.uid(), same_namespace) == Some(true) {
            out.push((pid, dir.uid()));
        }
    }
    out.sort_unstable();
    out
}

/// Whether a /proc/PID/status text is a zombie's (or a dying process's).
pub fn is_zombie(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|v| matches!(v.trim().chars().next(), Some('Z' | 'X')))
}

/// A process's dumpable flag from the owners of /proc/PID (its effective
/// uid) and of /proc/PID/status (root when not dumpable): `None` for
/// root's processes, where both are 0 either way, and for processes in
/// another user namespace (or whose namespace could not be read).
pub fn is_dumpable_by_owner(dir_uid: u32, status_uid: u32, same_namespace: bool) -> Option<bool> {
    (dir_uid != 0 && same_namespace).then_some(status_uid == dir_uid)
}

/// The authorities of `config`'s remote and threshold keyslots, not yet
/// asked.
fn keyslot_authorities(vault: &Path, config: &atrest_vault::VaultConfig) -> Vec<AuthorityFact> {
    let fact = |slot: u8, threshold, a: &atrest_vault::AuthorityRef| AuthorityFact {
        vault: vault.to_path_buf(),
        slot,
        threshold,
        url: a.url.clone(),
        pinned: a.ca_fingerprint,
        pinned_audit_key: a.audit_public_key,
        probe: atrest_agent::Probe::Reachable { audit_key: None },
    };
    let mut out = Vec::new();
    for s in &config.keyslots {
        match &s.kind {
            atrest_vault::SlotKind::Remote(r) => out.push(fact(s.id, None, &r.authority)),
            atrest_vault::SlotKind::Threshold(t) => out.extend(
                t.members
                    .iter()
                    .map(|m| fact(s.id, Some((t.threshold, t.members.len())), &m.authority)),
            ),
            _ => {}
        }
    }
    out
}

/// Asks every distinct (URL, pinned CA) at once, each within
/// [`PROBE_TIMEOUT`], and fills in each fact's answer.
fn probe_authorities(facts: &mut [AuthorityFact]) {
    let mut distinct: Vec<(String, [u8; 32])> =
        facts.iter().map(|a| (a.url.clone(), a.pinned)).collect();
    distinct.sort();
    distinct.dedup();
    if distinct.is_empty() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("cannot start the async runtime: {e}");
            for a in facts.iter_mut() {
                a.probe = atrest_agent::Probe::Unreachable {
                    reason: reason.clone(),
                };
            }
            return;
        }
    };
    let answers: Vec<atrest_agent::Probe> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (url, pin)) in distinct.iter().enumerate() {
            let (url, pin) = (url.clone(), *pin);
            tasks.spawn(async move {
                let probe = match atrest_agent::AuthorityClient::new(&url, pin) {
                    Ok(client) => client.probe(PROBE_TIMEOUT).await,
                    Err(e) => atrest_agent::Probe::Unreachable {
                        reason: e.to_string(),
                    },
                };
                (i, probe)
            });
        }
        let mut answers = vec![
            atrest_agent::Probe::Unreachable {
                reason: "not asked".into()
            };
            distinct.len()
        ];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, probe)) = joined {
                answers[i] = probe;
            }
        }
        answers
    });
    for a in facts.iter_mut() {
        if let Ok(i) = distinct.binary_search(&(a.url.clone(), a.pinned)) {
            a.probe = answers[i].clone();
        }
    }
}

/// The soft "Max core file size" of a /proc/PID/limits text.
pub fn core_limit(limits: &str) -> Option<String> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))?;
    line["Max core file size".len()..]
        .split_whitespace()
        .next()
        .map(str::to_string)
}

fn non_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn service_dirs() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    // PostgreSQL: data_directory of every cluster's postgresql.conf, or
    // where Debian's pg_ctlcluster looks without one.
    if let Ok(versions) = fs::read_dir("/etc/postgresql") {
        for v in versions.flatten() {
            for c in fs::read_dir(v.path()).into_iter().flatten().flatten() {
                let conf = c.path().join("postgresql.conf");
                if let Ok(text) = fs::read_to_string(&conf) {
                    let dir = pg_data_directory(&text)
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            Path::new("/var/lib/postgresql")
                                .join(v.file_name())
                                .join(c.file_name())
                        });
                    out.push((format!("PostgreSQL ({})", conf.display()), dir));
                }
            }
        }
    }
    // MySQL/MariaDB: datadir in any my.cnf fragment (the last one read,
    // each directory in name order as !includedir reads it), else the
    // default.
    let mut mysql = None;
    for dir in [
        "/etc/mysql",
        "/etc/mysql/conf.d",
        "/etc/mysql/mariadb.conf.d",
        "/etc/mysql/mysql.conf.d",
    ] {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            if let Ok(text) = fs::read_to_string(&path)
                && let Some(d) = ini_value(&text, "datadir")
            {
                mysql = Some(PathBuf::from(d));
            }
        }
    }
    out.push((
        "MySQL/MariaDB".into(),
        mysql.unwrap_or_else(|| "/var/lib/mysql".into()),
    ));
    for (name, dir) in [
        ("mail spool", "/var/mail"),
        ("virtual mail", "/var/vmail"),
        ("Docker", "/var/lib/docker"),
        ("containerd", "/var/lib/containerd"),
        ("Redis", "/var/lib/redis"),
        ("/srv", "/srv"),
    ] {
        out.push((name.into(), dir.into()));
    }
    out.retain(|(_, p)| non_empty_dir(p));
    out
}

/// `data_directory = '...'` of a postgresql.conf.
pub fn pg_data_directory(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (k, v) = l.split_once('=')?;
            (k.trim() == "data_directory").then(|| v.trim().trim_matches('\'').to_string())
        })
        .next_back()
}

/// ReadWritePaths= and WorkingDirectory= of the units in `dir` (local
/// units: the ones an operator wrote for their own services).
fn unit_paths(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "service") || !path.is_file() {
            continue;
        }
        let unit = e.file_name().to_string_lossy().into_owned();
        if let Ok(text) = fs::read_to_string(&path) {
            out.extend(
                parse_unit_paths(&text)
                    .into_iter()
                    .map(|p| (unit.clone(), p)),
            );
        }
    }
    out
}

pub fn parse_unit_paths(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        match k.trim() {
            "ReadWritePaths" => out.extend(
                v.split_whitespace()
                    .map(|p| PathBuf::from(p.trim_start_matches(['-', '+']))),
            ),
            "WorkingDirectory" => {
                let p = v.trim().trim_start_matches('-');
                if p.starts_with('/') {
                    out.push(PathBuf::from(p));
                }
            }
            _ => {}
        }
    }
    out.retain(|p| p.is_absolute());
    out
}

fn file_mode(p: &Path) -> Option<FileMode> {
    let m = fs::symlink_metadata(p).ok()?;
    Some(FileMode {
        path: p.to_path_buf(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        is_dir: m.is_dir(),
    })
}

/// `root` and everything under it (not following symlinks), up to a depth.
fn walk_modes(root: &Path, kind: SecretKind, out: &mut Vec<(SecretKind, FileMode)>) {
    fn go(p: &Path, depth: u32, kind: SecretKind, out: &mut Vec<(SecretKind, FileMode)>) {
        let Some(m) = file_mode(p) else { return };
        let is_dir = m.is_dir;
        out.push((kind, m));
        if is_dir && depth < 6 {
            for e in fs::read_dir(p).into_iter().flatten().flatten() {
                go(&e.path(), depth + 1, kind, out);
            }
        }
    }
    go(root, 0, kind, out);
}

/// Files named like a vault config (atrest.conf*) in the usual backup
/// places, other than the vaults' own. The walk stays on each place's file
/// system, as `find -xdev`: it never enters a mount below it (a mounted
/// vault's plaintext view under /tmp, a backup mount), where an open
/// directory would make that file system busy for `umount`. Both the
/// mount table read at the start and each directory's device are checked:
/// a mount made while the walk runs is not in the table.
fn config_copies(f: &Facts) -> Vec<FileMode> {
    let own: BTreeSet<PathBuf> = f
        .secrets
        .iter()
        .filter(|(k, _)| *k == SecretKind::VaultConfig)
        .map(|(_, m)| m.path.clone())
        .collect();
    let mounts: BTreeSet<&Path> = f.mounts.iter().map(|m| m.target.as_path()).collect();
    let mut out = Vec::new();
    let walk = Walk {
        own: &own,
        mounts: &mounts,
    };
    for dir in ["/root", "/var/backups", "/home", "/srv", "/tmp", "/var/tmp"] {
        let Ok(root) = fs::symlink_metadata(dir) else {
            continue;
        };
        walk.go(Path::new(dir), root.dev(), 0, &mut out);
    }
    out
}

struct Walk<'a> {
    own: &'a BTreeSet<PathBuf>,
    mounts: &'a BTreeSet<&'a Path>,
}

impl Walk<'_> {
    fn go(&self, p: &Path, dev: u64, depth: u32, out: &mut Vec<FileMode>) {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir()
                && depth < 4
                && !self.mounts.contains(path.as_path())
                && fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev)
            {
                self.go(&path, dev, depth + 1, out);
            } else if ft.is_file()
                && e.file_name().to_string_lossy().starts_with("atrest.conf")
                && !self.own.contains(&path)
            {
                out.extend(file_mode(&path));
            }
        }
    }
}

/// The highest-priority driver for xts(aes) in a /proc/crypto text.
pub fn xts_aes_driver(text: &str) -> Option<String> {
    let mut best: Option<(i64, String)> = None;
    for block in text.split("\n\n") {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (a, b) = l.split_once(':')?;
                (a.trim() == k).then(|| b.trim().to_string())
            })
        };
        if field("name").as_deref() != Some("xts(aes)") {
            continue;
        }
        let (Some(driver), Some(prio)) = (
            field("driver"),
            field("priority").and_then(|p| p.parse().ok()),
        ) else {
            continue;
        };
        if best.as_ref().is_none_or(|(p, _)| prio > *p) {
            best = Some((prio, driver));
        }
    }
    best.map(|b| b.1)
}

/// LUKS volumes among the block devices: `blkid` probing every device
/// (no cache, so it works without udev); none when blkid is missing.
fn luks_volumes() -> Vec<LuksVolume> {
    let Ok(out) = std::process::Command::new("blkid")
        .args(["-c", "/dev/null", "-o", "device", "-t", "TYPE=crypto_LUKS"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let mut found: Vec<LuksVolume> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|device| LuksVolume {
            device: device.to_owned(),
            open: has_crypt_holder(device),
            bound_to: atrest_luks::bindings(&atrest_luks::Device::new(device))
                .map(|(_, list)| {
                    list.into_iter()
                        .filter_map(Result::ok)
                        .flat_map(|b| {
                            b.authorities
                                .urls()
                                .into_iter()
                                .map(str::to_owned)
                                .collect::<Vec<_>>()
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    found.sort_by(|a, b| a.device.cmp(&b.device));
    found
}

/// Whether a dm-crypt mapping sits on `device` (a holder whose dm uuid
/// starts with `CRYPT-`).
fn has_crypt_holder(device: &str) -> bool {
    let Some(name) = Path::new(device).file_name() else {
        return false;
    };
    let holders = Path::new("/sys/class/block").join(name).join("holders");
    fs::read_dir(holders)
        .map(|entries| {
            entries.flatten().any(|h| {
                read_trim(&format!(
                    "/sys/class/block/{}/dm/uuid",
                    h.file_name().to_string_lossy()
                ))
                .starts_with("CRYPT-")
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n\
                    40 22 0:40 / /srv/my\\040data rw,nosuid,nodev shared:5 - fuse.atrest /srv/d.enc rw,user_id=0,group_id=0,allow_other\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].target, PathBuf::from("/srv/my data"));
        assert_eq!(m[1].fstype, "fuse.atrest");
        assert_eq!(m[1].source, "/srv/d.enc");
        assert!(m[1].options.contains("allow_other"));
    }

    #[test]
    fn swaps_ini_limits_and_pg_parse() {
        let s = parse_swaps(
            "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n/dev/zram0 partition 10 0 100\n",
        );
        assert_eq!(
            s,
            vec![
                ("/swapfile".into(), "file".into()),
                ("/dev/zram0".into(), "partition".into())
            ]
        );
        assert_eq!(
            ini_value("[Journal]\n#Storage=auto\nStorage=persistent\n", "Storage").as_deref(),
            Some("persistent")
        );
        assert_eq!(ini_value("#Storage=none\n", "Storage"), None);
        let limits = "Limit Soft Hard Units\nMax core file size        0                    unlimited            bytes\n";
        assert_eq!(core_limit(limits).as_deref(), Some("0"));
        assert_eq!(
            pg_data_directory(
                "data_directory = '/var/lib/postgresql/15/main'  # use data in another directory\n"
            )
            .as_deref(),
            Some("/var/lib/postgresql/15/main")
        );
        assert_eq!(
            parse_unit_paths(
                "[Service]\nWorkingDirectory=-/opt/app\nReadWritePaths=/var/lib/app -/data\nWorkingDirectory=~\n"
            ),
            vec![
                PathBuf::from("/opt/app"),
                "/var/lib/app".into(),
                "/data".into()
            ]
        );
    }

    #[test]
    fn dumpable_state_follows_the_owner_of_proc_pid_files() {
        // A user's process: its files are the user's when dumpable, root's
        // when not; root's processes cannot be told apart.
        assert_eq!(is_dumpable_by_owner(1000, 1000, true), Some(true));
        assert_eq!(is_dumpable_by_owner(1000, 0, true), Some(false));
        assert_eq!(is_dumpable_by_owner(0, 0, true), None);
        // Another user namespace: its root may be uid 1000 out here.
        assert_eq!(is_dumpable_by_owner(1000, 1000, false), None);
        assert!(is_zombie("Name:\tatrest\nState:\tZ (zombie)\n"));
        assert!(!is_zombie("Name:\tatrest\nState:\tS (sleeping)\n"));
        assert!(!is_zombie(""));
    }

    #[test]
    fn crypto_picks_the_highest_priority_xts_driver() {
        let text = "name         : xts(aes)\ndriver       : xts(ecb(aes-generic))\npriority     : 100\n\n\
                    name         : xts(aes)\ndriver       : xts-aes-aesni\npriority     : 401\n\n\
                    name         : aes\ndriver       : aes-generic\npriority     : 100\n";
        assert_eq!(xts_aes_driver(text).as_deref(), Some("xts-aes-aesni"));
        assert_eq!(
            xts_aes_driver("name : aes\ndriver : aes-generic\npriority : 1\n"),
            None
        );
    }
}
