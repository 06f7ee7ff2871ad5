//! Every legal plaintext path works, however long the backing path gets
//! (encrypted names are ~1.5x longer), and the mount root has a mode and
//! owner of its own.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, XattrFlags};

use crate::common::{Mounted, errno, success};

const PATH_MAX: usize = 4096;
const ENAMETOOLONG: i32 = 36;

/// A directory of the host's temporary file system whose own path is
/// `len` bytes long; all of it goes with the returned guard.
fn long_dir(len: usize) -> (tempfile::TempDir, PathBuf) {
    let guard = tempfile::Builder::new()
        .prefix("atrest-long-")
        .tempdir()
        .expect("tempdir");
    let mut path = guard.path().to_path_buf();
    while path.as_os_str().len() < len {
        let room = len - path.as_os_str().len() - 1;
        path.push("d".repeat(room.clamp(1, 60)));
    }
    fs::create_dir_all(&path).unwrap();
    assert_eq!(path.as_os_str().len(), len);
    (guard, path)
}

/// A name of `len` bytes, distinct per `tag`.
fn name(tag: char, len: usize) -> String {
    std::iter::once(tag)
        .chain(std::iter::repeat_n('n', len - 1))
        .collect()
}

/// Lengths of the directory names that lead from a root of `root_len`
/// bytes to a directory in which a `len`-byte name makes a path of exactly
/// PATH_MAX - 1 bytes; all `len` bytes long except the first one or two.
fn chain(root_len: usize, len: usize) -> Vec<usize> {
    let step = len + 1;
    let mut budget = PATH_MAX - 1 - root_len - step;
    let mut out = Vec::new();
    match budget % step {
        0 => {}
        1 => {
            out.extend([len / 2, len - len / 2]);
            budget -= step + 1;
        }
        r => {
            out.push(r - 1);
            budget -= r;
        }
    }
    out.extend(std::iter::repeat_n(len, budget / step));
    out
}

/// The directory at the end of the chain below `root`.
fn chain_dir(root: &Path, len: usize) -> PathBuf {
    let mut dir = root.to_path_buf();
    for (i, l) in chain(root.as_os_str().len(), len).into_iter().enumerate() {
        dir.push(name(char::from(b'a' + (i % 26) as u8), l));
    }
    dir
}

fn open_dir(path: &Path) -> OwnedFd {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
}

/// Builds a tree of `len`-byte names under `root` and runs every operation
/// at PATH_MAX - 1; then one byte more, and deeper through directory
/// handles. 255-byte names are stored hashed (format §7.2); 175-byte ones
/// are the longest stored as they are, which makes the longest backing
/// paths (1.46 times the plaintext).
fn exercise(root: &Path, len: usize) {
    fs::create_dir(root).unwrap();
    let dir = chain_dir(root, len);
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("mkdir -p at {} bytes: {e}", dir.as_os_str().len()));
    let at = |tag: char| dir.join(name(tag, len));
    let file = at('f');
    assert_eq!(file.as_os_str().len(), PATH_MAX - 1);

    // create, write, read, stat
    File::create(&file).unwrap().write_all(b"deep").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"deep");
    assert_eq!(fs::metadata(&file).unwrap().len(), 4);
    // chmod, chown, truncate
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::lchown(&file, Some(1234), Some(4321)).unwrap();
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(10_000)
        .unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), 10_000);
    // link, rename, unlink
    fs::hard_link(&file, at('h')).unwrap();
    assert_eq!(fs::metadata(&file).unwrap().nlink(), 2);
    fs::rename(at('h'), at('r')).unwrap();
    assert_eq!(fs::read(at('r')).unwrap()[..4], *b"deep");
    fs::remove_file(at('r')).unwrap();
    assert_eq!(fs::metadata(&file).unwrap().nlink(), 1);
    // mkdir, rmdir
    fs::create_dir(at('d')).unwrap();
    assert!(fs::metadata(at('d')).unwrap().is_dir());
    fs::remove_dir(at('d')).unwrap();
    // mkfifo, mknod
    rustix::fs::mknodat(CWD, at('p'), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(at('p')).unwrap().file_type()
    ));
    let null = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        CWD,
        at('c'),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        null,
    )
    .unwrap();
    assert_eq!(fs::symlink_metadata(at('c')).unwrap().rdev(), null);
    // symlink (its target as long as a target may be), readlink
    let target = PathBuf::from(OsString::from_vec(vec![b't'; PATH_MAX - 1]));
    std::os::unix::fs::symlink(&target, at('s')).unwrap();
    assert_eq!(fs::read_link(at('s')).unwrap(), target);
    assert_eq!(
        fs::symlink_metadata(at('s')).unwrap().len(),
        PATH_MAX as u64 - 1
    );
    // xattr
    rustix::fs::lsetxattr(&file, "user.k", b"v", XattrFlags::empty()).unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(&file, "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    let n = rustix::fs::llistxattr(&file, &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"user.k\0");
    rustix::fs::lremovexattr(&file, "user.k").unwrap();
    // readdir
    let mut listed: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    listed.sort();
    let mut want: Vec<_> = "cfps"
        .chars()
        .map(|t| OsString::from(name(t, len)))
        .collect();
    want.sort();
    assert_eq!(listed, want);

    // One byte more: refused, as for every path argument.
    let mut over = at('o').into_os_string();
    over.push("x");
    assert_eq!(over.len(), PATH_MAX);
    assert_eq!(errno(File::create(&over).map(drop)), Err(ENAMETOOLONG));
    assert_eq!(errno(fs::create_dir(&over)), Err(ENAMETOOLONG));
    assert_eq!(
        errno(fs::symlink_metadata(&over).map(drop)),
        Err(ENAMETOOLONG)
    );

    // Deeper than any path can name: through directory handles.
    let mut handle = open_dir(&dir);
    for i in 0..3 {
        let sub = name(char::from(b'k' + i), 255);
        rustix::fs::mkdirat(&handle, sub.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        handle = rustix::fs::openat(
            &handle,
            sub.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    let deep = name('z', 255);
    let fd = rustix::fs::openat(
        &handle,
        deep.as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    File::from(fd).write_all(b"deeper").unwrap();
    rustix::fs::renameat(&handle, deep.as_str(), &handle, "moved").unwrap();
    let mut text = String::new();
    File::from(rustix::fs::openat(&handle, "moved", OFlags::RDONLY, Mode::empty()).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "deeper");
    assert_eq!(
        rustix::fs::statat(&handle, "moved", AtFlags::empty())
            .unwrap()
            .st_size,
        6
    );
    rustix::fs::unlinkat(&handle, "moved", AtFlags::empty()).unwrap();
}

/// Reads back what `exercise` left, from a fresh start (after a remount:
/// no directory handle cached).
fn check_again(root: &Path, len: usize) {
    let dir = chain_dir(root, len);
    let file = dir.join(name('f', len));
    assert_eq!(fs::metadata(&file).unwrap().len(), 10_000);
    assert_eq!(fs::read(&file).unwrap()[..4], *b"deep");
    let mut handle = open_dir(&dir);
    for i in 0..3 {
        let sub = name(char::from(b'k' + i), 255);
        handle = rustix::fs::openat(
            &handle,
            sub.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    assert!(
        fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        ))
        .unwrap()
        .next()
        .is_none()
    );
}

#[test]
fn every_path_up_to_path_max_works_on_a_long_backing_path() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (chown, mknod)"
    );
    let (_host_guard, host) = long_dir(200);
    for len in [255, 175] {
        let root = host.join(len.to_string());
        exercise(&root, len);
        check_again(&root, len);
    }

    // Declared before the mount, so dropped after it is unmounted.
    let (_base_guard, base) = long_dir(200);
    let mut m = Mounted::new_in(&base);
    assert!(m.vault.as_os_str().len() > 200);
    for len in [255, 175] {
        exercise(&m.mnt.join(len.to_string()), len);
    }
    // fsck reaches every backing file too, though their paths pass PATH_MAX.
    m.unmount();
    let out = crate::common::ok(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no problems"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.mount();
    for len in [255, 175] {
        check_again(&m.mnt.join(len.to_string()), len);
    }
}

fn stat_mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_service_user_uses_an_allow_other_mount_whose_backing_root_stays_private() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (allow_other, setpriv)"
    );
    let mut m = Mounted::new();
    // Others must reach the mount point; the vault beside it stays 0700.
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    m.unmount();
    m.mount_with_options("allow_other");
    assert_eq!(stat_mode(&m.vault), 0o700);
    // No record yet: the backing root's mode, as before.
    assert_eq!(stat_mode(&m.mnt), 0o700);

    let nobody = |script: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ]);
        cmd
    };
    let attempt = nobody(&format!("ls {}", m.mnt.display())).output().unwrap();
    assert!(!attempt.status.success(), "0700 root must keep others out");

    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&m.mnt, Some(0), Some(65534)).unwrap();
    let meta = fs::metadata(&m.mnt).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o755, 0, 65534)
    );
    assert_eq!(stat_mode(&m.vault), 0o700, "the backing root is untouched");
    assert_eq!(fs::metadata(&m.vault).unwrap().uid(), 0);

    let svc = m.path("svc");
    fs::create_dir(&svc).unwrap();
    std::os::unix::fs::chown(&svc, Some(65534), Some(65534)).unwrap();
    success(nobody(&format!(
        "echo hello > {0}/data && mkdir {0}/sub && cat {0}/data > {0}/sub/copy",
        svc.display()
    )));
    let out = success(nobody(&format!("cat {}/sub/copy", svc.display())));
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(fs::metadata(svc.join("data")).unwrap().uid(), 65534);
    // The root itself is root's: nobody may list it, not write to it.
    success(nobody(&format!("ls {}", m.mnt.display())));
    assert!(
        !nobody(&format!("touch {}/x", m.mnt.display()))
            .output()
            .unwrap()
            .status
            .success()
    );

    // Kept across mounts, in the vault.
    m.unmount();
    m.mount_with_options("allow_other");
    let meta = fs::metadata(&m.mnt).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o755, 0, 65534)
    );
    assert_eq!(stat_mode(&m.vault), 0o700);

    // A record that fails authentication stops the mount (fail closed).
    m.unmount();
    let record = m.vault.join("atrest.root");
    let mut bytes = fs::read(&record).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&record, bytes).unwrap();
    let err = crate::common::failure({
        let mut cmd = crate::common::atrest();
        cmd.arg("mount")
            .arg(&m.vault)
            .arg(&m.mnt)
            .arg("--passphrase-file")
            .arg(&m.pass);
        cmd
    });
    assert!(err.contains("atrest.root"), "{err}");
    let out = crate::common::run(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
    assert_eq!(out.status.code(), Some(4), "fsck reports the record");
    assert!(String::from_utf8_lossy(&out.stdout).contains("atrest.root"));
    // Deleting it falls back to the backing root's mode and owner.
    fs::remove_file(&record).unwrap();
    m.mount_with_options("allow_other");
    assert_eq!(stat_mode(&m.mnt), 0o700);
}
