//! Test harness: a vault in a temporary directory, mounted through the real
//! `atrest` binary, unmounted on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn atrest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
}

/// Runs atrest with `args`; returns the output (not checked).
pub fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = atrest();
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run atrest")
}

/// Runs `cmd` and asserts success; the output.
pub fn success(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Runs `cmd` and asserts failure; its stderr.
pub fn failure(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs atrest and asserts success.
pub fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "atrest {:?} failed: {}\n{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "these tests mount a real FUSE file system: /dev/fuse is missing (load the fuse module; install fuse3)"
    );
    assert!(
        rustix::process::geteuid().is_root() || which("fusermount3"),
        "these tests need root or fusermount3 (apt install fuse3)"
    );
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false)
}

/// Cheap Argon2 parameters: these tests are about the file system.
pub const FAST_KDF: [&str; 4] = ["--argon2-memory", "8", "--argon2-iterations", "1"];

/// The vault format a test runs on (format 2 is made by the hidden
/// `init --format 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

impl Format {
    fn init_args(self) -> &'static [&'static str] {
        match self {
            Format::V1 => &[],
            Format::V2 => &["--format", "2"],
        }
    }
}

/// `on_both_formats!(name);` turns `fn name(format: Format)` into the
/// tests `name::format_1` and `name::format_2`.
macro_rules! on_both_formats {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn format_1() {
                super::$name($crate::common::Format::V1)
            }
            #[test]
            fn format_2() {
                super::$name($crate::common::Format::V2)
            }
        }
    )+};
}
pub(crate) use on_both_formats;

pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub mnt: PathBuf,
    pub pass: PathBuf,
    pub log: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// A new vault, mounted. `base` chooses the file system it lives on.
    pub fn new_in(base: &Path) -> Self {
        Self::new_in_format(base, Format::V1)
    }

    /// A new vault of `format`, mounted.
    pub fn with_format(format: Format) -> Self {
        Self::new_in_format(&std::env::temp_dir(), format)
    }

    pub fn new_in_format(base: &Path, format: Format) -> Self {
        require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("atrest-e2e-")
            .tempdir_in(base)
            .expect("tempdir");
        let vault = dir.path().join("vault");
        let pass = dir.path().join("pass");
        fs::write(&pass, "test passphrase\n").unwrap();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"init",
            &vault,
            &"--passphrase-file",
            &pass,
            &"--no-recovery-key",
        ];
        for a in &FAST_KDF {
            args.push(a);
        }
        for a in format.init_args() {
            args.push(a);
        }
        ok(&args);
        let mut m = Self::existing(dir, vault, pass);
        m.mount();
        m
    }

    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    /// A vault that already exists at `vault` (inside `dir`), opened with
    /// the passphrase in `pass`; not mounted yet.
    pub fn existing(dir: tempfile::TempDir, vault: PathBuf, pass: PathBuf) -> Self {
        require_fuse();
        let mnt = dir.path().join("mnt");
        let log = dir.path().join("mount.log");
        fs::create_dir_all(&mnt).unwrap();
        Self {
            dir,
            vault,
            mnt,
            pass,
            log,
            mounted: false,
        }
    }

    pub fn mount(&mut self) {
        let out = self.try_mount();
        assert!(
            out.status.success(),
            "atrest mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `atrest mount`, whose failure the caller inspects.
    pub fn try_mount(&mut self) -> Output {
        self.try_mount_with(&[])
    }

    /// `atrest mount` with `extra` arguments, whose failure the caller
    /// inspects.
    pub fn try_mount_with(&mut self, extra: &[&str]) -> Output {
        let out = self
            .command()
            .arg("mount")
            .arg(&self.vault)
            .arg(&self.mnt)
            .arg("--passphrase-file")
            .arg(&self.pass)
            .arg("--log-file")
            .arg(&self.log)
            .args(extra)
            .output()
            .expect("run atrest");
        self.mounted = out.status.success();
        out
    }

    /// The host state directory of this test's vault (its local witness of
    /// a format 2 vault): one per test, never the machine's.
    pub fn state(&self) -> PathBuf {
        state_dir_beside(&self.log)
    }

    /// `atrest` with this test's host state directory.
    pub fn command(&self) -> Command {
        let mut cmd = atrest();
        cmd.env("ATREST_STATE_DIR", self.state());
        cmd
    }

    pub fn unmount(&mut self) {
        ok(&[&"unmount", &self.mnt]);
        self.mounted = false;
    }

    /// Mounts with `atrest mount -o OPTIONS`.
    pub fn mount_with_options(&mut self, options: &str) {
        let out = self.try_mount_with(&["-o", options]);
        assert!(
            out.status.success(),
            "atrest mount -o {options} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every regular file of the backing directory that holds content.
    pub fn backing_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    walk(&e.path(), out);
                } else if t.is_file() && !e.file_name().to_string_lossy().contains('.') {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.vault, &mut out);
        out
    }

    /// The backing file that is `len` bytes long (tests choose distinct
    /// plaintext sizes to tell the backing files apart).
    pub fn backing_file_of_len(&self, len: u64) -> PathBuf {
        self.backing_files()
            .into_iter()
            .find(|p| fs::metadata(p).unwrap().len() == len)
            .unwrap_or_else(|| panic!("no backing file of {len} bytes"))
    }
}

/// One finding of `atrest fsck --json`.
#[derive(Debug)]
pub struct FsckProblem {
    pub backing: String,
    pub plain: Option<String>,
    /// `corrupt` or `torn`.
    pub kind: String,
    pub what: String,
}

/// What `atrest fsck --json` (with `--repair`) said.
#[derive(Debug)]
pub struct Fsck {
    pub code: Option<i32>,
    pub problems: Vec<FsckProblem>,
    pub repaired: Vec<FsckProblem>,
    /// Stdout and stderr, for messages.
    pub text: String,
}

pub fn fsck(m: &Mounted, repair: bool) -> Fsck {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"fsck", &m.vault, &"--passphrase-file", &m.pass, &"--json"];
    if repair {
        args.push(&"--repair");
    }
    let out = run(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck --json output ({e}): {text}"));
    let list = |key: &str| -> Vec<FsckProblem> {
        report[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .iter()
            .map(|p| FsckProblem {
                backing: p["backing"].as_str().unwrap_or_default().to_string(),
                plain: p["plain"].as_str().map(str::to_string),
                kind: p["kind"].as_str().unwrap_or_default().to_string(),
                what: p["what"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    };
    Fsck {
        code: out.status.code(),
        problems: list("problems"),
        repaired: list("repaired"),
        text,
    }
}

/// `atrest fsck` of the unmounted vault: exit 0, no damage (notes allowed).
pub fn assert_fsck_clean(m: &Mounted) {
    let report = fsck(m, false);
    assert_eq!(report.code, Some(0), "{}", report.text);
    assert!(
        report.problems.iter().all(|p| p.kind == "note"),
        "{}",
        report.text
    );
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(&[&"unmount", &"--lazy", &self.mnt]);
        }
    }
}

/// The host state directory of the test whose mount log is `log` (a
/// format 2 mount keeps its local witness there).
pub fn state_dir_beside(log: &Path) -> PathBuf {
    log.parent()
        .expect("a log file in the test's directory")
        .join("state")
}

/// Replaces `to` with a copy of `from` (`cp -a`: modes, owners, times).
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A deterministic pseudo-random generator (xorshift) seeded with `seed`:
/// each call gives a number below its argument, so failures replay.
pub fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

/// A deterministic pseudo-random byte stream (xorshift), so failures replay.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The raw errno of a failed call, or the value (for `assert_eq!` against
/// what the host file system does).
pub fn errno<T>(r: std::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| {
        e.raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}"))
    })
}

/// Runs `f` on a thread of its own whose umask is `mask`. The umask belongs
/// to the process (all threads share it), so setting it on a test thread
/// would leak into the tests running in parallel; `unshare(CLONE_FS)` gives
/// this one thread its own umask (and cwd), which dies with the thread.
pub fn with_umask<T: Send>(mask: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // `unshare_unsafe` needs unsafe code, which the workspace forbids;
            // the deprecated safe wrapper is sound for CLONE_FS alone.
            #[allow(deprecated)]
            rustix::thread::unshare(rustix::thread::UnshareFlags::FS).expect("unshare(CLONE_FS)");
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Whether `path` (absolute, canonical) is a mount point now.
pub fn is_mount_point(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|f| unescape_mountinfo(f) == path)
    })
}

/// Detaches whatever is mounted at `path` (umount -l), even a FUSE mount
/// whose process is dead. Ok if nothing is mounted there.
pub fn detach(path: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn require_root(what: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "{what} needs root (run the e2e tests as root, as CI does)"
    );
}

/// The newest PostgreSQL server's `bin` directory under
/// /usr/lib/postgresql (Debian's packages): the tests that run a cluster
/// fail without one, they do not skip.
pub fn postgres_bin() -> PathBuf {
    fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .max_by_key(|b| {
            let v = b.parent().unwrap().file_name().unwrap().to_string_lossy();
            v.parse::<u32>().unwrap_or(0)
        })
        .expect("no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql")
}

/// Polls `cond` until it holds; panics with `what` after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `atrest mount --foreground` as a child process of the test, so the test
/// knows the PID of the process serving the mount (and can kill it).
pub struct Foreground {
    pub child: std::process::Child,
    pub mnt: PathBuf,
}

impl Foreground {
    /// Starts serving `vault` at `mnt` and returns once the kernel lists
    /// the mount.
    pub fn start(vault: &Path, mnt: &Path, pass: &Path, log: &Path) -> Self {
        require_fuse();
        let mnt = fs::canonicalize(mnt).expect("mount point");
        let child = atrest()
            .arg("mount")
            .arg(vault)
            .arg(&mnt)
            .arg("--passphrase-file")
            .arg(pass)
            .arg("--log-file")
            .arg(log)
            .env("ATREST_STATE_DIR", state_dir_beside(log))
            .arg("--foreground")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start atrest mount --foreground");
        let mut fg = Self { child, mnt };
        let mnt = fg.mnt.clone();
        wait_for(
            30,
            "the foreground mount to appear in /proc/self/mountinfo",
            || {
                if let Some(status) = fg.child.try_wait().expect("try_wait") {
                    panic!(
                        "atrest mount --foreground exited early ({status}): {}",
                        fs::read_to_string(log).unwrap_or_default()
                    );
                }
                is_mount_point(&mnt)
            },
        );
        fg
    }

    /// SIGKILL, and reap it. The mount stays, dead ("not connected").
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the mount process");
        self.child.wait().expect("reap the mount process");
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = detach(&self.mnt);
    }
}

/// A small file system of its own, mounted on a temporary directory, to
/// fill up: tmpfs, or ext4 in a loop-mounted image. Detached on drop (even
/// when the test fails); declare it before the `Mounted` that lives on it,
/// so that is dropped first.
pub struct SmallFs {
    pub mnt: PathBuf,
    /// The image file of a loop-mounted ext4.
    pub image: Option<PathBuf>,
    _holder: tempfile::TempDir,
}

impl SmallFs {
    pub fn tmpfs(size_mib: u32) -> Self {
        require_root("mounting a small tmpfs");
        let holder = tempfile::Builder::new()
            .prefix("atrest-smallfs-")
            .tempdir()
            .expect("tempdir");
        let mnt = holder.path().join("fs");
        fs::create_dir(&mnt).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0755"),
                "atrest-e2e-tmpfs",
            ])
            .arg(&mnt)
            .output()
            .expect("the mount command is missing: apt install mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            mnt,
            image: None,
            _holder: holder,
        }
    }

    pub fn ext4(size_mib: u32) -> Self {
        Self::ext4_with(size_mib, &[])
    }

    /// ext4 with extra `mkfs.ext4` options (e.g. `-O encrypt`).
    pub fn ext4_with(size_mib: u32, mkfs_options: &[&str]) -> Self {
        require_root("loop-mounting a small ext4 image");
        let holder = tempfile::Builder::new()
            .prefix("atrest-smallfs-")
            .tempdir()
            .expect("tempdir");
        let image = holder.path().join("ext4.img");
        let mnt = holder.path().join("fs");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&image)
            .unwrap()
            .set_len(u64::from(size_mib) << 20)
            .unwrap();
        // No blocks reserved for root: the tests run as root and must hit ENOSPC.
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .args(mkfs_options)
            .arg(&image)
            .output()
            .expect("mkfs.ext4 is missing: apt install e2fsprogs");
        assert!(
            mkfs.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&mkfs.stderr)
        );
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .expect("the mount command is missing: apt install mount");
        assert!(
            out.status.success(),
            "mount -o loop (needs /dev/loop-control and loop devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            mnt,
            image: Some(image),
            _holder: holder,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl SmallFs {
    /// Unmounts now (to read the image file at rest).
    pub fn unmount(&self) {
        let out = Command::new("umount")
            .arg(&self.mnt)
            .output()
            .expect("umount");
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn mount_again(&self) {
        let image = self
            .image
            .as_ref()
            .expect("only an ext4 image can be mounted again");
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(&self.mnt)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount -o loop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: a mount process may still hold files open here for a moment.
        let _ = detach(&self.mnt);
    }
}
