//! `atrest migrate` (docs/format.md §16.19) through the real binary and
//! real mounts: the checked-in format 1 fixtures (`testdata/vaults/`)
//! read as their manifests say before and after the migration, a vault
//! with xattrs is refused untouched, a corrupt block stops it naming the
//! file (and `--drop-corrupt` finishes), too little space stops it before
//! anything changes, and `kill -9` at random moments loses nothing, also
//! of a vault holding the demo's data and a PostgreSQL cluster.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{
    Mounted, SmallFs, assert_fsck_clean, copy_dir, failure, pattern, postgres_bin, rng,
};

/// What `atrest demo` writes (its own code, included).
#[path = "../../src/commands/demo_data.rs"]
mod demo_data;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vaults")
}

/// The plaintext manifest of what is mounted at `mnt`
/// (`testdata/vaults/manifest.py`, which also wrote the fixtures').
fn manifest(mnt: &Path) -> String {
    let out = Command::new("python3")
        .arg(fixtures().join("manifest.py"))
        .arg(mnt)
        .output()
        .expect("python3 is missing (apt install python3)");
    assert!(
        out.status.success(),
        "manifest.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the manifest is ASCII")
}

/// A copy of the fixture `name` in a temporary directory, extracted with
/// owners, times, links, device nodes and xattrs.
fn fixture(name: &str) -> (Mounted, String) {
    let dir = tempfile::Builder::new()
        .prefix("atrest-e2e-migrate-")
        .tempdir()
        .unwrap();
    let out = Command::new("tar")
        .args([
            "--extract",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
        ])
        .args(["--same-permissions", "--same-owner", "-f"])
        .arg(fixtures().join(name).join("vault.tar"))
        .arg("-C")
        .arg(dir.path())
        .output()
        .expect("tar is missing");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = dir.path().join("pass");
    fs::copy(fixtures().join(name).join("passphrase"), &pass).unwrap();
    let expected = fs::read_to_string(fixtures().join(name).join("manifest")).unwrap();
    let vault = dir.path().join("vault");
    (Mounted::existing(dir, vault, pass), expected)
}

/// `atrest migrate` of `m`'s vault with `extra` arguments.
fn migrate_command(m: &Mounted, extra: &[&str]) -> Command {
    let mut cmd = crate::common::atrest();
    cmd.arg("migrate")
        .arg(&m.vault)
        .arg("--passphrase-file")
        .arg(&m.pass)
        .args(extra);
    cmd
}

fn migrate(m: &Mounted, extra: &[&str]) -> Output {
    migrate_command(m, extra).output().expect("run atrest")
}

/// `atrest migrate` in the background, its output discarded: to be killed.
fn spawn_migrate(m: &Mounted, extra: &[&str]) -> std::process::Child {
    migrate_command(m, extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run atrest")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The config's version field (bytes 8–9 of `atrest.conf`, §4.1).
fn config_version(vault: &Path) -> u16 {
    let bytes = fs::read(vault.join("atrest.conf")).unwrap();
    u16::from_be_bytes([bytes[8], bytes[9]])
}

/// A finished migration leaves the format 2 files of §16.1 and nothing of
/// format 1.
fn assert_only_format_2(vault: &Path) {
    let mut names: Vec<String> = fs::read_dir(vault)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let allowed = [
        "atrest.conf",
        "atrest.conf.bak",
        "atrest.lock",
        "atrest.log",
        "atrest.meta",
        "objects",
    ];
    assert!(
        names.iter().all(|n| allowed.contains(&n.as_str())),
        "format 1 files left in {}: {names:?}",
        vault.display()
    );
    assert_eq!(config_version(vault), 2);
}

/// The format 1 fixture reads as its manifest says (format 1 read
/// behaviour unchanged), migrates, and the format 2 vault reads the same
/// and passes fsck.
#[test]
fn the_format_1_fixture_migrates_to_a_vault_with_the_same_manifest() {
    let (mut m, expected) = fixture("format1-small");
    assert_eq!(config_version(&m.vault), 1);
    m.mount();
    assert_eq!(manifest(&m.mnt), expected, "format 1 reads the fixture");
    m.unmount();
    let out = migrate(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("migrated to format 2"),
        "{}",
        text(&out)
    );
    assert_only_format_2(&m.vault);
    m.mount();
    assert_eq!(manifest(&m.mnt), expected, "format 2 after the migration");
    m.unmount();
    assert_fsck_clean(&m);
    let again = migrate(&m, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("format 2 vault already"));
}

/// Xattrs (on a directory, a file and a hard-linked file, decrypted from
/// format 1's backing xattrs) arrive in format 2's store: the manifest,
/// which lists every user xattr, is the fixture's.
#[test]
fn the_format_1_fixture_with_xattrs_migrates_them() {
    let (mut m, expected) = fixture("format1-xattrs");
    assert!(expected.contains("xattr:user."), "the fixture holds xattrs");
    let out = migrate(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_only_format_2(&m.vault);
    m.mount();
    assert_eq!(manifest(&m.mnt), expected, "format 2 after the migration");
    m.unmount();
    assert_fsck_clean(&m);
}

#[test]
fn a_mounted_vault_is_refused() {
    let m = Mounted::new();
    let said = failure(migrate_command(&m, &[]));
    assert!(said.contains("unmounted"), "{said}");
    assert_eq!(config_version(&m.vault), 1);
}

/// A block that fails authentication stops the migration (exit 4, the
/// file named); the vault is then half migrated, which a format 2 mount
/// refuses and a format 1 build cannot read (config version 2); with
/// `--drop-corrupt` it finishes, the block a hole.
#[test]
fn a_corrupt_block_stops_it_and_drop_corrupt_finishes() {
    let mut m = Mounted::new();
    let data = pattern(7, 3 * 4096);
    fs::write(m.path("damaged.bin"), &data).unwrap();
    fs::write(m.path("fine.txt"), b"fine").unwrap();
    m.unmount();
    let backing = m.backing_file_of_len(18 + 3 * 4124);
    // Flip bits rather than write a constant: the ciphertext is random, so a
    // fixed byte would equal the one on disk once in 256 runs.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&backing)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 18 + 4124 + 100).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], 18 + 4124 + 100)
        .unwrap();
    drop(file);

    let out = migrate(&m, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("/damaged.bin"), "{said}");
    assert!(said.contains("block 1"), "{said}");
    assert!(said.contains("--drop-corrupt"), "{said}");
    assert_eq!(config_version(&m.vault), 2, "past the first commit point");
    let refused = m.try_mount();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("atrest migrate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out = migrate(&m, &["--drop-corrupt"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("dropped:"), "{}", text(&out));
    assert!(text(&out).contains("/damaged.bin"), "{}", text(&out));
    assert_only_format_2(&m.vault);
    m.mount();
    let read = fs::read(m.path("damaged.bin")).unwrap();
    assert_eq!(read.len(), data.len());
    assert_eq!(&read[..4096], &data[..4096]);
    assert!(read[4096..8192].iter().all(|&b| b == 0), "the hole");
    assert_eq!(&read[8192..], &data[8192..]);
    assert_eq!(fs::read(m.path("fine.txt")).unwrap(), b"fine");
    m.unmount();
    assert_fsck_clean(&m);
}

/// Too little space for a batch and the metadata: refused before anything
/// changes, saying how much it needs; once space is freed it runs.
#[test]
fn too_little_space_stops_it_before_any_change_and_a_rerun_finishes() {
    let small = SmallFs::tmpfs(64);
    let mut m = Mounted::new_in(small.path());
    let data = pattern(11, 6 << 20);
    fs::write(m.path("big"), &data).unwrap();
    m.unmount();
    let free = rustix::fs::statvfs(small.path()).unwrap();
    let available = free.f_bavail * free.f_frsize;
    let filler = small.path().join("filler");
    fs::write(&filler, vec![1u8; (available - (4 << 20)) as usize]).unwrap();

    let out = migrate(&m, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not enough free space"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("MiB"), "{}", text(&out));
    assert_eq!(config_version(&m.vault), 1);
    assert!(!m.vault.join("atrest.meta").exists());

    fs::remove_file(&filler).unwrap();
    let out = migrate(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    m.mount();
    assert!(fs::read(m.path("big")).unwrap() == data);
}

/// Space runs out half way (another writer fills the file system after
/// the pre-check passed and the conversion began): the run stops with the
/// message of the pre-check, exit 1, the vault half migrated (config
/// version 2, which a format 2 mount refuses); once space is freed the
/// next run resumes to the end and nothing is lost.
#[test]
fn space_running_out_half_way_stops_it_and_a_rerun_after_freeing_finishes() {
    let small = SmallFs::tmpfs(112);
    let mut m = Mounted::new_in(small.path());
    for i in 0..48u64 {
        fs::write(m.path(&format!("f{i:02}")), pattern(100 + i, 1 << 20)).unwrap();
    }
    let expected = manifest(&m.mnt);
    m.unmount();

    // Batches of 4 MiB: twelve checkpoints, so the conversion outlasts
    // the poll below by far.
    let mut child = migrate_command(&m, &["--batch-objects", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::wait_for(60, "the first commit point (config version 2)", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the migration ended before the file system could be filled"
        );
        config_version(&m.vault) == 2
    });
    // The other writer takes all the space it can get, 1 MiB at a time.
    let filler = small.path().join("filler");
    let file = fs::File::create(&filler).unwrap();
    let mut len = 0u64;
    while rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), len, 1 << 20).is_ok() {
        len += 1 << 20;
    }
    drop(file);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    eprintln!("filled {} MiB: {said}", len >> 20);
    assert!(said.contains("not enough free space"), "{said}");
    assert!(said.contains("run `atrest migrate` again"), "{said}");
    assert_eq!(
        config_version(&m.vault),
        2,
        "stopped past the first commit point"
    );
    let refused = m.try_mount();
    assert!(!refused.status.success(), "a half-migrated vault mounted");

    fs::remove_file(&filler).unwrap();
    let out = migrate(&m, &["--batch-objects", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resumed"), "{}", text(&out));
    assert_only_format_2(&m.vault);
    m.mount();
    assert_eq!(manifest(&m.mnt), expected, "format 2 after the resumed run");
    m.unmount();
    assert_fsck_clean(&m);
}

/// A format 1 tree of about `dirs × per_dir` objects of every kind:
/// files of many sizes (some empty, some sparse), hard links across
/// directories, symlinks (some long), FIFOs, sockets, long names, modes,
/// owners and times.
fn populate(root: &Path, dirs: u64, per_dir: u64) {
    use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, mknodat, utimensat};
    let mut next = rng(0x9e37_79b9_7f4a_7c15);
    let stamp = |path: &Path, secs: i64| {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 123_456_789,
        };
        utimensat(
            CWD,
            path,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    };
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..per_dir {
            let name = if i == 5 {
                format!("{}-{i}", "l".repeat(200))
            } else {
                format!("f{i}")
            };
            let path = dir.join(&name);
            match i % 12 {
                0 => {
                    let target = if i % 48 == 0 {
                        // Longer than a backing link holds: a side file.
                        "t/".repeat(1750)
                    } else {
                        format!("../d{}/f{}", next(dirs), next(per_dir))
                    };
                    std::os::unix::fs::symlink(target, &path).unwrap();
                }
                1 if d > 0 => {
                    // A second name for a regular file of the directory before.
                    fs::hard_link(root.join(format!("d{}/f{}", d - 1, i + 5)), &path).unwrap();
                    continue;
                }
                2 => mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap(),
                3 if i % 24 == 3 => drop(std::os::unix::net::UnixListener::bind(&path).unwrap()),
                4 => {
                    let f = fs::File::create(&path).unwrap();
                    f.set_len(200_000).unwrap();
                    f.write_all_at(&pattern(d * 1000 + i, 5000), 100_000)
                        .unwrap();
                }
                _ => {
                    let len = if i % 9 == 0 { 0 } else { next(20_000) as usize };
                    fs::write(&path, pattern(d * 1000 + i, len)).unwrap();
                    fs::set_permissions(
                        &path,
                        fs::Permissions::from_mode(0o600 | (i as u32 % 8) << 3),
                    )
                    .unwrap();
                    if i % 7 == 0 {
                        std::os::unix::fs::lchown(
                            &path,
                            Some(1000 + i as u32),
                            Some(2000 + d as u32),
                        )
                        .unwrap();
                    }
                }
            }
            stamp(&path, 1_500_000_000 + (d * 1000 + i) as i64);
        }
    }
    for d in 0..dirs {
        stamp(&root.join(format!("d{d}")), 1_400_000_000 + d as i64);
    }
}

/// `kill -9` of `atrest migrate` at a random moment, then `atrest migrate`
/// again to the end, 20 times on a generated vault of ~500 objects in
/// batches of 100: the
/// manifest is the format 1 vault's, fsck passes, no format 1 file is
/// left. Every kill after the first commit point leaves a vault a format
/// 1 build refuses (config version 2). (bench/migrate-soak.sh runs 100 ×
/// 20,000; the CI size fits its time budget.)
#[test]
fn kill_9_at_random_moments_loses_nothing() {
    // bench/migrate-soak.sh sets these for the full soak.
    let size = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let rounds = size("ATREST_MIGRATE_SOAK_ROUNDS", 20);
    let dirs = size("ATREST_MIGRATE_SOAK_DIRS", 10);
    // Batches of 100 objects: kills land in every phase of a batch.
    let batch = "100";
    let mut m = Mounted::new();
    let started = Instant::now();
    populate(&m.mnt, dirs, 48);
    let expected = manifest(&m.mnt);
    eprintln!("populated {dirs} directories in {:?}", started.elapsed());
    m.unmount();
    let template = m.dir.path().join("template");
    copy_dir(&m.vault, &template);

    // One run to the end first: how long a whole migration takes.
    let started = Instant::now();
    let out = migrate(&m, &["--batch-objects", batch]);
    assert!(out.status.success(), "{}", text(&out));
    let whole = started.elapsed().as_millis().max(2) as u64;
    eprintln!("one migration: {whole} ms");
    m.mount();
    assert_eq!(manifest(&m.mnt), expected);
    m.unmount();

    let mut next = rng(0x2545_f491_4f6c_dd1d);
    for round in 0..rounds {
        copy_dir(&template, &m.vault);
        // Each round is a new migration of the same format 1 vault: as far
        // as this host's witness knows, an earlier copy put back (format.md
        // §16.17.5); each round starts without it.
        let _ = std::fs::remove_dir_all(m.state().join("witness"));
        let mut child = spawn_migrate(&m, &["--batch-objects", batch]);
        std::thread::sleep(Duration::from_millis(next(whole)));
        let _ = child.kill();
        child.wait().unwrap();
        let version = config_version(&m.vault);
        assert!(
            version == 1 || version == 2,
            "round {round}: version {version}"
        );
        let out = migrate(&m, &["--batch-objects", batch]);
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert_only_format_2(&m.vault);
        m.mount();
        assert_eq!(manifest(&m.mnt), expected, "round {round}");
        m.unmount();
        if round % 4 == 0 {
            assert_fsck_clean(&m);
        }
        eprintln!("round {round} done at {:?}", started.elapsed());
    }
}

/// The port of the test's PostgreSQL cluster: it only names the socket
/// file in the cluster's own directory (no TCP listener).
const PG_PORT: &str = "55462";

/// A PostgreSQL cluster of Debian's binaries ([`postgres_bin`]: the test
/// fails without them), run as the `postgres` user, its data directory
/// `data` in a mount and its socket and server log in `run`. Stopped
/// (immediate) on drop if it still runs; declare it after the `Mounted`.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    run: PathBuf,
}

impl Cluster {
    /// `run` (made, owned by postgres) and `data` (made through the mount,
    /// owned by postgres, mode 0700, as initdb wants it).
    fn new(run: PathBuf, data: PathBuf) -> Self {
        let bin = postgres_bin();
        for dir in [&run, &data] {
            fs::create_dir(dir).unwrap();
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir)
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown postgres (the postgresql package makes the user): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        }
        Self { bin, data, run }
    }

    /// Runs the PostgreSQL program `program` with `args` as postgres and
    /// asserts success; its standard output.
    fn as_postgres(&self, program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .current_dir(&self.run);
        for a in args {
            cmd.arg(a);
        }
        let out = cmd.output().expect("runuser (util-linux)");
        assert!(
            out.status.success(),
            "{program} {:?}: {}{}\n{}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.run.join("server.log")).unwrap_or_default()
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// A client program connected through the cluster's socket.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"-h", &self.run, &"-p", &PG_PORT, &"-U", &"postgres"];
        for a in args {
            all.push(a);
        }
        self.as_postgres(program, &all)
    }

    /// initdb with data checksums (every page read is then verified) and
    /// WAL segments of 1 MiB (a smaller vault to migrate).
    fn initdb(&self) {
        self.as_postgres(
            "initdb",
            &[
                &"-D",
                &self.data,
                &"-U",
                &"postgres",
                &"-A",
                &"trust",
                &"--data-checksums",
                &"--no-sync",
                &"--no-instructions",
                &"--wal-segsize=1",
            ],
        );
    }

    fn start(&self) {
        let options = format!(
            "-k {} -p {PG_PORT} -c listen_addresses='' -c fsync=off -c min_wal_size=2MB",
            self.run.display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                &"-D",
                &self.data,
                &"-l",
                &self.run.join("server.log"),
                &"-w",
                &"-t",
                &"120",
                &"-o",
                &options,
                &"start",
            ],
        );
    }

    /// A clean shutdown (a checkpoint, no recovery at the next start).
    fn stop(&self) {
        self.as_postgres(
            "pg_ctl",
            &[
                &"-D", &self.data, &"-m", &"fast", &"-w", &"-t", &"120", &"stop",
            ],
        );
    }

    /// `pg_dump` of `database` (plain SQL; reads every row), without the
    /// `\restrict` lines that newer versions add with a random key.
    fn dump(&self, database: &str) -> String {
        self.client("pg_dump", &[database])
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Issue 9: a format 1 vault holding the demo's data (`atrest demo`'s
/// files, written by its own code) and a PostgreSQL cluster (initdb with
/// data checksums as postgres through an allow_other mount, `pgbench -i
/// -s 1`, 200 transactions, a clean stop: ~1,300 entries, 60 MiB) migrates
/// through `kill -9` at random moments, each followed by another `atrest
/// migrate` that resumes (batches of 64 objects, so kills land mid-batch),
/// then one to the end.
/// The format 2 vault reads as the manifest taken before, the canary is
/// not in its backing directory, PostgreSQL starts on it and dumps the
/// same database, `pg_amcheck` and `pg_checksums` find nothing, and
/// `atrest fsck` passes.
#[test]
fn a_vault_with_the_demo_data_and_a_postgresql_cluster_migrates_through_kill_9() {
    let started = Instant::now();
    let mut m = Mounted::new();
    // The server runs as postgres: it must get through the test's
    // directory (not to the passphrase) and the mount (allow_other).
    fs::set_permissions(&m.pass, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    m.unmount();
    m.mount_with_options("allow_other");
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o711)).unwrap();
    demo_data::write(&m.mnt).unwrap();
    let pg = Cluster::new(m.dir.path().join("pg"), m.mnt.join("pgdata"));
    pg.initdb();
    pg.start();
    pg.client("createdb", &["bench"]);
    pg.client("pgbench", &["-i", "-s", "1", "-q", "bench"]);
    pg.client(
        "pgbench",
        &["-n", "-c", "2", "-j", "2", "-t", "100", "bench"],
    );
    let dump = pg.dump("bench");
    assert!(dump.contains("pgbench_accounts"), "{dump}");
    pg.stop();
    let expected = manifest(&m.mnt);
    m.unmount();
    eprintln!(
        "format 1 vault with the cluster at {:?}: {} entries",
        started.elapsed(),
        expected.lines().count()
    );

    // Kill k comes at a random moment of the first 250 ms × 2^k of its
    // run: the first ones in the scan and the first commit point, later
    // ones (each run resuming further) in conversion, checkpoints and
    // removals, until a run ends on its own.
    let batch = "64";
    let mut next = rng(0x6a09_e667_f3bc_c908);
    let mut interrupted = 0;
    for kill in 0..8 {
        let mut child = spawn_migrate(&m, &["--batch-objects", batch]);
        let delay = next(250 << kill);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let version = config_version(&m.vault);
        assert!(
            version == 1 || version == 2,
            "kill {kill}: version {version}"
        );
        eprintln!("kill {kill} after {delay} ms: {status}, config version {version}");
        if status.signal() != Some(9) {
            assert!(status.success(), "kill {kill}: migrate {status}");
            break;
        }
        interrupted += 1;
    }
    assert!(interrupted > 0, "no kill landed during a migration");
    let out = migrate(&m, &["--batch-objects", batch]);
    assert!(out.status.success(), "{}", text(&out));
    assert_only_format_2(&m.vault);
    assert!(
        !demo_data::contains(&m.vault, demo_data::CANARY.as_bytes()).unwrap(),
        "the demo's canary is in the clear in the backing directory"
    );

    m.mount_with_options("allow_other");
    assert_eq!(manifest(&m.mnt), expected, "format 2 after the migration");
    pg.start();
    let after = pg.dump("bench");
    if let Some((at, (a, b))) = dump
        .lines()
        .zip(after.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "pg_dump after the migration differs at line {}: {a:?} before, {b:?} after",
            at + 1
        );
    }
    assert_eq!(dump.len(), after.len(), "pg_dump after the migration");
    let problems = pg.client(
        "pg_amcheck",
        &[
            "--all",
            "--heapallindexed",
            "--rootdescend",
            "--install-missing",
        ],
    );
    assert!(problems.trim().is_empty(), "pg_amcheck: {problems}");
    pg.stop();
    pg.as_postgres("pg_checksums", &[&"--check", &"-D", &pg.data]);
    m.unmount();
    assert_fsck_clean(&m);
    eprintln!("done at {:?}", started.elapsed());
}
