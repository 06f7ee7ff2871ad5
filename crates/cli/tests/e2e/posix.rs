//! POSIX semantics exactly as the kernel's own file systems give them. Most
//! tests run the same operations in a plain directory of the host (under
//! $TMPDIR: ext4 or tmpfs) and in the mount, and compare what they return;
//! where the expected values are spelled out as well, the plain run checks
//! that the expectation itself is right.

use std::fmt::Debug;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{
    DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use rustix::fs::{AtFlags, CWD, RenameFlags, Timespec, Timestamps, XattrFlags};

use crate::common::{Format, Mounted, errno, ok, on_both_formats, pattern, run, with_umask};

const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ERANGE: i32 = 34;
const ENAMETOOLONG: i32 = 36;
const ENOTEMPTY: i32 = 39;
const ENODATA: i32 = 61;

on_both_formats!(
    rename_over_an_open_file_keeps_the_old_content_behind_its_descriptor,
    an_unlinked_open_file_is_still_read_written_and_stat_ed,
    new_files_and_directories_get_exactly_the_requested_mode,
    setgid_directory_hands_down_its_group_and_the_setgid_bit,
    root_creates_entries_in_directories_without_write_permission,
    symlink_targets_of_every_length_up_to_4095_bytes,
    utimensat_now_omit_and_exact_nanoseconds,
    rename_a_directory_over_an_empty_one_but_not_over_a_full_one,
    rename_a_directory_into_its_own_empty_subdirectory_fails_einval_and_changes_nothing,
    renameat2_noreplace_refuses_existing_targets,
    renameat2_exchange_swaps_files_and_directories,
    hard_links_count_and_outlive_each_other,
    truncate_up_and_down_by_descriptor_and_by_path,
    o_append_writes_from_two_descriptors_all_land_at_the_end,
    o_trunc_on_open_empties_the_file,
    fifos_are_created_and_carry_data,
    chmod_and_chown_read_back,
    statfs_and_df_work_on_the_mount,
    fsync_and_fdatasync_succeed,
    concurrent_pwrites_to_disjoint_regions_of_one_file_all_land,
    xattrs_set_get_list_remove_and_flags,
);

/// A mount and a plain directory of the host side by side.
struct Both {
    m: Mounted,
    plain: tempfile::TempDir,
}

impl Both {
    fn new(format: Format) -> Self {
        let plain = tempfile::Builder::new()
            .prefix("atrest-plain-")
            .tempdir()
            .expect("tempdir");
        // The reference: ext4 (0xEF53) or tmpfs (0x01021994).
        let kind = rustix::fs::statfs(plain.path()).expect("statfs").f_type as i64;
        assert!(
            kind == 0xEF53 || kind == 0x0102_1994,
            "the POSIX tests compare with the host file system under $TMPDIR, which must be \
             ext4 or tmpfs (f_type {kind:#x}); point TMPDIR at one"
        );
        Self {
            m: Mounted::with_format(format),
            plain,
        }
    }

    fn roots(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("host", self.plain.path().to_path_buf()),
            ("atrest", self.m.mnt.clone()),
        ]
    }

    /// Runs `op` in the plain directory and in the mount; asserts both give
    /// the same result; returns it.
    fn same<T: Debug + PartialEq>(&self, what: &str, op: impl Fn(&Path) -> T) -> T {
        let host = op(self.plain.path());
        let ours = op(&self.m.mnt);
        assert_eq!(
            ours, host,
            "{what}: the mount (left) differs from the host file system (right)"
        );
        ours
    }

    /// Runs the same checks (which assert) in both; the host run proves the
    /// checks themselves right.
    fn each(&self, mut check: impl FnMut(&str, &Path)) {
        for (label, root) in self.roots() {
            check(label, &root);
        }
    }

    /// `atrest fsck` of the vault: must be clean. Unmounts for the check.
    fn fsck_clean(&mut self) {
        self.m.unmount();
        let out = run(&[&"fsck", &self.m.vault, &"--passphrase-file", &self.m.pass]);
        assert!(
            out.status.success(),
            "fsck found problems:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.m.mount();
    }
}

fn perm(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn read_fd(f: &File) -> Vec<u8> {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0) as usize;
    let mut buf = vec![0u8; len + 4096];
    let mut n = 0;
    loop {
        let got = f.read_at(&mut buf[n..], n as u64).expect("pread");
        if got == 0 {
            break;
        }
        n += got;
        if n == buf.len() {
            buf.resize(n * 2, 0);
        }
    }
    buf.truncate(n);
    buf
}

/// `truncate(2)` by path (not ftruncate): FUSE sends it without a file
/// handle. Neither std nor rustix has it, and unsafe code is forbidden here.
fn truncate_path(p: &Path, len: u64) {
    let out = Command::new("perl")
        .args([
            "-e",
            "truncate($ARGV[0], $ARGV[1]) or die \"truncate: $!\\n\"",
        ])
        .arg(p)
        .arg(len.to_string())
        .output()
        .expect("perl is needed for truncate(2) by path: apt install perl-base");
    assert!(
        out.status.success(),
        "truncate {} {len}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

const MODES: [u32; 13] = [
    0o000, 0o200, 0o400, 0o511, 0o600, 0o644, 0o700, 0o755, 0o777, 0o1777, 0o2775, 0o4755, 0o6711,
];

fn new_files_and_directories_get_exactly_the_requested_mode(format: Format) {
    let b = Both::new(format);
    for umask in [0o000, 0o022] {
        let got = b.same(&format!("modes under umask {umask:03o}"), |root| {
            with_umask(umask, || {
                MODES
                    .iter()
                    .map(|&mode| {
                        let f = root.join(format!("f-{umask:o}-{mode:o}"));
                        let mut file = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(mode)
                            .open(&f)
                            .expect("create");
                        // Writable through the creating descriptor, whatever the mode.
                        file.write_all(b"x").expect("write through the creating fd");
                        let via_fd = file.metadata().expect("fstat").mode() & 0o7777;
                        let d = root.join(format!("d-{umask:o}-{mode:o}"));
                        DirBuilder::new().mode(mode).create(&d).expect("mkdir");
                        (mode, via_fd, perm(&f), perm(&d))
                    })
                    .collect::<Vec<_>>()
            })
        });
        for (requested, via_fd, file, dir) in got {
            // Files keep set-id bits (we are root); mkdir(2) drops them.
            assert_eq!(
                file,
                requested & !umask,
                "file mode {requested:o}, umask {umask:o}"
            );
            assert_eq!(via_fd, file, "fstat vs stat, mode {requested:o}");
            assert_eq!(
                dir,
                requested & 0o1777 & !umask,
                "directory mode {requested:o}, umask {umask:o}"
            );
        }
    }
    // And they stay so.
    let mut m = b.m;
    m.remount();
    for umask in [0o000u32, 0o022] {
        for mode in MODES {
            assert_eq!(
                perm(&m.path(&format!("f-{umask:o}-{mode:o}"))),
                mode & !umask,
                "after remount"
            );
            assert_eq!(
                perm(&m.path(&format!("d-{umask:o}-{mode:o}"))),
                mode & 0o1777 & !umask,
                "after remount"
            );
        }
    }
}

fn setgid_directory_hands_down_its_group_and_the_setgid_bit(format: Format) {
    let b = Both::new(format);
    let got = b.same("setgid directory", |root| {
        let top = root.join("shared");
        with_umask(0o002, || DirBuilder::new().mode(0o2775).create(&top)).unwrap();
        let as_created = perm(&top);
        std::os::unix::fs::chown(&top, None, Some(4242)).unwrap();
        fs::set_permissions(&top, fs::Permissions::from_mode(0o2775)).unwrap();
        with_umask(0o022, || {
            DirBuilder::new()
                .mode(0o777)
                .create(top.join("sub"))
                .unwrap();
            DirBuilder::new()
                .mode(0o700)
                .create(top.join("sub/deeper"))
                .unwrap();
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(top.join("file"))
                .unwrap();
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o2755)
                .open(top.join("sgid-exe"))
                .unwrap();
            std::os::unix::fs::symlink("file", top.join("link")).unwrap();
        });
        let list = ["", "/sub", "/sub/deeper", "/file", "/sgid-exe"]
            .map(|p| owner(&PathBuf::from(format!("{}{p}", top.display()))));
        let link_gid = fs::symlink_metadata(top.join("link")).unwrap().gid();
        (as_created, list, link_gid)
    });
    let (as_created, list, link_gid) = got;
    // mkdir(2) itself never sets S_ISGID (only inheritance does).
    assert_eq!(as_created, 0o775);
    assert_eq!(
        list,
        [
            (0o2775, 0, 4242),
            (0o2755, 0, 4242),
            (0o2700, 0, 4242),
            (0o644, 0, 4242),
            (0o2755, 0, 4242)
        ]
    );
    assert_eq!(link_gid, 4242);
}

fn root_creates_entries_in_directories_without_write_permission(format: Format) {
    let b = Both::new(format);
    let got = b.same("entries in 0000 and 0511 directories", |root| {
        let mut out = Vec::new();
        for m in [0o000, 0o511, 0o555] {
            let d = root.join(format!("d{m:o}"));
            DirBuilder::new().mode(m).create(&d).unwrap();
            let f = errno(fs::write(d.join("file"), b"content"));
            let sub = errno(fs::create_dir(d.join("sub")));
            let back = errno(fs::read(d.join("file")));
            let mut names: Vec<_> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            out.push((perm(&d), f, sub, back, names));
        }
        out
    });
    for (mode, file, sub, back, names) in got {
        assert_eq!(
            (file, sub, back, names.len()),
            (Ok(()), Ok(()), Ok(b"content".to_vec()), 2),
            "mode {mode:o}"
        );
    }
}

fn symlink_targets_of_every_length_up_to_4095_bytes(format: Format) {
    let mut b = Both::new(format);
    let target = |len: usize| -> String {
        let mut t = String::new();
        let mut i = 0;
        while t.len() < len {
            t.push_str(&format!("dir-{i}/"));
            i += 1;
        }
        t.truncate(len);
        t
    };
    const LENGTHS: [usize; 9] = [1, 100, 255, 1000, 2000, 3000, 3100, 4000, 4095];
    b.same("symlinks", |root| {
        LENGTHS
            .iter()
            .map(|&len| {
                let link = root.join(format!("l{len}"));
                let made = errno(std::os::unix::fs::symlink(target(len), &link));
                let back =
                    errno(fs::read_link(&link)).map(|t| t.into_os_string().into_string().unwrap());
                let size = errno(fs::symlink_metadata(&link)).map(|m| m.len());
                assert!(
                    back.as_ref().is_ok_and(|t| *t == target(len)),
                    "target of {len} bytes reads back as {back:?}"
                );
                (len, made, size)
            })
            .collect::<Vec<_>>()
    });
    // One byte more than PATH_MAX allows is refused the same way.
    let too_long = b.same("a 4096-byte target", |root| {
        errno(std::os::unix::fs::symlink(target(4096), root.join("l4096")))
    });
    assert_eq!(too_long, Err(ENAMETOOLONG));
    b.m.remount();
    for len in LENGTHS {
        let back = errno(fs::read_link(b.m.path(&format!("l{len}"))));
        assert_eq!(
            back.map(|t| t.into_os_string().into_string().unwrap()),
            Ok(target(len)),
            "after remount, {len} bytes"
        );
    }
    b.fsck_clean();
    // Removing the links leaves nothing behind in the backing directory.
    for len in LENGTHS {
        fs::remove_file(b.m.path(&format!("l{len}"))).unwrap();
    }
    b.m.unmount();
    let links = b.m.vault.join("atrest.links");
    let left: Vec<_> = fs::read_dir(&links)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "side files of removed symlinks left in {}: {left:?}",
        links.display()
    );
    b.m.mount();
}

fn times(p: &Path) -> ((i64, i64), (i64, i64)) {
    let m = fs::symlink_metadata(p).unwrap();
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

#[allow(clippy::disallowed_methods, reason = "this is the tests' clock")]
fn now() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

/// `t` lies within [before - 1 s, after + 1 s] (kernel timestamps come
/// from a coarse clock that lags the one `now()` reads).
fn around(t: (i64, i64), before: (i64, i64), after: (i64, i64)) -> bool {
    t.0 >= before.0 - 1 && t.0 <= after.0 + 1
}

fn utimensat_now_omit_and_exact_nanoseconds(format: Format) {
    let mut b = Both::new(format);
    let omit = ts(0, rustix::fs::UTIME_OMIT);
    let utime_now = ts(0, rustix::fs::UTIME_NOW);
    let set = |p: &Path, a: Timespec, m: Timespec, flags: AtFlags| {
        rustix::fs::utimensat(
            CWD,
            p,
            &Timestamps {
                last_access: a,
                last_modification: m,
            },
            flags,
        )
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
    };
    b.each(|label, root| {
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        // Both explicit, to the nanosecond.
        set(
            &f,
            ts(1_000_000_000, 123_456_789),
            ts(1_500_000_000, 987_654_321),
            AtFlags::empty(),
        );
        assert_eq!(
            times(&f),
            ((1_000_000_000, 123_456_789), (1_500_000_000, 987_654_321)),
            "{label}: explicit"
        );
        // atime omitted, mtime set.
        set(&f, omit, ts(1_600_000_000, 1), AtFlags::empty());
        assert_eq!(
            times(&f),
            ((1_000_000_000, 123_456_789), (1_600_000_000, 1)),
            "{label}: atime OMIT"
        );
        // atime now, mtime omitted.
        let before = now();
        set(&f, utime_now, omit, AtFlags::empty());
        let after = now();
        let (a, m) = times(&f);
        assert!(
            around(a, before, after),
            "{label}: atime NOW gave {a:?}, now is {after:?}"
        );
        assert_eq!(m, (1_600_000_000, 1), "{label}: mtime OMIT");
        // atime omitted, mtime now.
        set(&f, ts(1_000_000_000, 5), omit, AtFlags::empty());
        let before = now();
        set(&f, omit, utime_now, AtFlags::empty());
        let after = now();
        let (a, m) = times(&f);
        assert_eq!(a, (1_000_000_000, 5), "{label}: atime OMIT (2)");
        assert!(
            around(m, before, after),
            "{label}: mtime NOW gave {m:?}, now is {after:?}"
        );
        // Both omitted: nothing changes.
        let was = times(&f);
        set(&f, omit, omit, AtFlags::empty());
        assert_eq!(times(&f), was, "{label}: both OMIT");
        set(
            &f,
            ts(0, 0),
            ts(4_102_444_800, 999_999_999),
            AtFlags::empty(),
        );
        assert_eq!(
            times(&f),
            ((0, 0), (4_102_444_800, 999_999_999)),
            "{label}: epoch and 2100"
        );
        // Through a file descriptor (futimens).
        let file = File::open(&f).unwrap();
        rustix::fs::futimens(
            &file,
            &Timestamps {
                last_access: ts(1_234_567_890, 42),
                last_modification: omit,
            },
        )
        .unwrap();
        assert_eq!(times(&f).0, (1_234_567_890, 42), "{label}: futimens");
        // A symlink's own times (AT_SYMLINK_NOFOLLOW), not its target's.
        let link = root.join("link");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let target_before = times(&f);
        set(
            &link,
            ts(1_111_111_111, 111),
            ts(1_222_222_222, 222),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        assert_eq!(
            times(&link),
            ((1_111_111_111, 111), (1_222_222_222, 222)),
            "{label}: symlink"
        );
        assert_eq!(
            times(&f),
            target_before,
            "{label}: the symlink's target was touched"
        );
        // A directory.
        let d = root.join("d");
        fs::create_dir(&d).unwrap();
        set(
            &d,
            ts(1_300_000_000, 300),
            ts(1_400_000_000, 400),
            AtFlags::empty(),
        );
        assert_eq!(
            times(&d),
            ((1_300_000_000, 300), (1_400_000_000, 400)),
            "{label}: directory"
        );
        // Before 1970: whole seconds, and with nanoseconds.
        let g = root.join("old");
        fs::write(&g, b"x").unwrap();
        set(&g, ts(-1, 0), ts(-86_400, 0), AtFlags::empty());
        assert_eq!(
            times(&g),
            ((-1, 0), (-86_400, 0)),
            "{label}: before the epoch, whole seconds"
        );
        set(
            &g,
            ts(-1_000_000_000, 999_999_999),
            ts(-2, 500_000_000),
            AtFlags::empty(),
        );
        assert_eq!(
            times(&g),
            ((-1_000_000_000, 999_999_999), (-2, 500_000_000)),
            "{label}: before the epoch"
        );
    });
    b.m.remount();
    assert_eq!(
        times(&b.m.path("f")).0,
        (1_234_567_890, 42),
        "after remount"
    );
    assert_eq!(
        times(&b.m.path("link")),
        ((1_111_111_111, 111), (1_222_222_222, 222)),
        "after remount"
    );
    assert_eq!(
        times(&b.m.path("d")),
        ((1_300_000_000, 300), (1_400_000_000, 400)),
        "after remount"
    );
}

fn rename_over_an_open_file_keeps_the_old_content_behind_its_descriptor(format: Format) {
    let b = Both::new(format);
    let got = b.same("rename over an open file", |root| {
        let (a, n) = (root.join("a"), root.join("new"));
        let old = pattern(1, 10_000);
        fs::write(&a, &old).unwrap();
        let fd = File::open(&a).unwrap();
        let mut first = [0u8; 100];
        fd.read_at(&mut first, 0).unwrap(); // pages in the cache before the rename
        fs::write(&n, pattern(2, 5000)).unwrap();
        fs::rename(&n, &a).unwrap();
        let through_fd = read_fd(&fd) == old;
        let meta = errno(fd.metadata()).map(|m| (m.len(), m.nlink()));
        let by_name = fs::read(&a).unwrap() == pattern(2, 5000);
        let new_gone = errno(fs::metadata(&n)).map(|_| ());
        (through_fd, meta, by_name, new_gone)
    });
    assert_eq!(got, (true, Ok((10_000, 0)), true, Err(ENOENT)));
}

fn an_unlinked_open_file_is_still_read_written_and_stat_ed(format: Format) {
    let b = Both::new(format);
    let got = b.same("an unlinked open file", |root| {
        let p = root.join("doomed");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.write_all(&pattern(3, 6000)).unwrap();
        fs::remove_file(&p).unwrap();
        let gone = errno(fs::metadata(&p)).map(|_| ());
        let listed = fs::read_dir(root).unwrap().count();
        let write = errno(f.write_all_at(b"written after unlink", 5990));
        let content = read_fd(&f);
        let mut expected = pattern(3, 5990);
        expected.extend_from_slice(b"written after unlink");
        let fstat = errno(f.metadata()).map(|m| (m.len(), m.nlink(), m.mode() & 0o7777));
        let ftruncate = errno(f.set_len(100));
        let after_truncate = read_fd(&f) == expected[..100];
        let fchmod = errno(f.set_permissions(fs::Permissions::from_mode(0o600)));
        let fsync = errno(f.sync_all());
        let fstat2 = errno(f.metadata()).map(|m| (m.len(), m.nlink(), m.mode() & 0o7777));
        (
            gone,
            listed,
            write,
            content == expected,
            fstat.map(|s| (s.0, s.1)),
            ftruncate,
            after_truncate,
            fchmod,
            fsync,
            fstat2,
        )
    });
    assert_eq!(
        got,
        (
            Err(ENOENT),
            0,
            Ok(()),
            true,
            Ok((6010, 0)),
            Ok(()),
            true,
            Ok(()),
            Ok(()),
            Ok((100, 0, 0o600))
        )
    );
}

fn rename_a_directory_over_an_empty_one_but_not_over_a_full_one(format: Format) {
    let mut b = Both::new(format);
    let run_it = |root: &Path| {
        let mut out = Vec::new();
        fs::create_dir_all(root.join("src/inner")).unwrap();
        fs::write(root.join("src/inner/file"), b"moved along").unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        out.push((
            "over empty",
            errno(fs::rename(root.join("src"), root.join("empty"))),
        ));
        out.push((
            "src gone",
            errno(fs::metadata(root.join("src")).map(|_| ())),
        ));
        out.push((
            "content follows",
            errno(fs::read(root.join("empty/inner/file")).map(|c| assert_eq!(c, b"moved along"))),
        ));
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/mine"), b"a's").unwrap();
        fs::create_dir(root.join("full")).unwrap();
        fs::write(root.join("full/keep"), b"kept").unwrap();
        out.push((
            "over non-empty",
            errno(fs::rename(root.join("a"), root.join("full"))),
        ));
        out.push((
            "a intact",
            errno(fs::read(root.join("a/mine")).map(|c| assert_eq!(c, b"a's"))),
        ));
        out.push((
            "full intact",
            errno(fs::read(root.join("full/keep")).map(|c| assert_eq!(c, b"kept"))),
        ));
        // Only a subdirectory makes it non-empty, too.
        fs::create_dir_all(root.join("nested/child")).unwrap();
        out.push((
            "over dir with a subdir",
            errno(fs::rename(root.join("a"), root.join("nested"))),
        ));
        fs::write(root.join("plainfile"), b"f").unwrap();
        out.push((
            "dir over file",
            errno(fs::rename(root.join("a"), root.join("plainfile"))),
        ));
        out.push((
            "file over dir",
            errno(fs::rename(root.join("plainfile"), root.join("a"))),
        ));
        // Usable afterwards: a new entry in the replaced-into directory.
        out.push((
            "write into renamed",
            errno(fs::write(root.join("empty/new"), b"n")),
        ));
        out
    };
    let got = b.same("rename directory over directory", run_it);
    assert_eq!(got[0].1, Ok(()));
    assert_eq!(got[3].1, Err(ENOTEMPTY));
    assert_eq!(got[6].1, Err(ENOTEMPTY));
    assert_eq!(got[7].1, Err(ENOTDIR));
    assert_eq!(got[8].1, Err(EISDIR));
    b.m.remount();
    assert_eq!(
        fs::read(b.m.path("empty/inner/file")).unwrap(),
        b"moved along"
    );
    assert_eq!(fs::read(b.m.path("full/keep")).unwrap(), b"kept");
    assert_eq!(fs::read(b.m.path("a/mine")).unwrap(), b"a's");
    b.fsck_clean();
}

fn rename_a_directory_into_its_own_empty_subdirectory_fails_einval_and_changes_nothing(
    format: Format,
) {
    let mut b = Both::new(format);
    let got = b.same("rename into own subdirectory", |root| {
        fs::create_dir_all(root.join("a/sub")).unwrap();
        let r = errno(fs::rename(root.join("a"), root.join("a/sub")));
        let write = errno(fs::write(root.join("a/sub/file"), b"still a directory"));
        (r, write)
    });
    assert_eq!(got.0, Err(EINVAL));
    b.m.remount();
    assert_eq!(
        errno(fs::read(b.m.path("a/sub/file"))),
        Ok(b"still a directory".to_vec()),
        "after remount"
    );
    assert_eq!(
        errno(fs::write(b.m.path("a/sub/second"), b"2")),
        Ok(()),
        "new entry after remount"
    );
    b.fsck_clean();
}

fn rename2(from: &Path, to: &Path, flags: RenameFlags) -> Result<(), i32> {
    rustix::fs::renameat_with(CWD, from, CWD, to, flags).map_err(|e| e.raw_os_error())
}

fn renameat2_noreplace_refuses_existing_targets(format: Format) {
    let mut b = Both::new(format);
    let got = b.same("RENAME_NOREPLACE", |root| {
        let mut out = Vec::new();
        fs::write(root.join("a"), b"a").unwrap();
        fs::write(root.join("b"), b"b").unwrap();
        out.push((
            "file over file",
            rename2(&root.join("a"), &root.join("b"), RenameFlags::NOREPLACE),
        ));
        out.push((
            "a kept",
            errno(fs::read(root.join("a")).map(|c| assert_eq!(c, b"a"))),
        ));
        out.push((
            "b kept",
            errno(fs::read(root.join("b")).map(|c| assert_eq!(c, b"b"))),
        ));
        out.push((
            "to a new name",
            rename2(&root.join("a"), &root.join("c"), RenameFlags::NOREPLACE),
        ));
        out.push((
            "c has a",
            errno(fs::read(root.join("c")).map(|c| assert_eq!(c, b"a"))),
        ));
        fs::create_dir(root.join("d1")).unwrap();
        fs::write(root.join("d1/x"), b"x").unwrap();
        fs::create_dir(root.join("d2")).unwrap();
        out.push((
            "dir over empty dir",
            rename2(&root.join("d1"), &root.join("d2"), RenameFlags::NOREPLACE),
        ));
        out.push((
            "file over empty dir",
            rename2(&root.join("c"), &root.join("d2"), RenameFlags::NOREPLACE),
        ));
        // The empty directory that was not replaced is still a directory one can use.
        out.push(("write into d2", errno(fs::write(root.join("d2/y"), b"y"))));
        out.push((
            "d1 kept",
            errno(fs::read(root.join("d1/x")).map(|c| assert_eq!(c, b"x"))),
        ));
        out
    });
    assert_eq!(got[0].1, Err(EEXIST));
    assert_eq!(got[3].1, Ok(()));
    assert_eq!(got[5].1, Err(EEXIST));
    b.m.remount();
    assert_eq!(
        errno(fs::read(b.m.path("d2/y"))),
        Ok(b"y".to_vec()),
        "after remount"
    );
    b.fsck_clean();
}

fn renameat2_exchange_swaps_files_and_directories(format: Format) {
    let mut b = Both::new(format);
    let state = |root: &Path| {
        (
            fs::read(root.join("f1")).ok(),
            fs::read(root.join("f2")).ok(),
            fs::read(root.join("p/x/inside")).ok(),
            fs::read(root.join("q/y/inside")).ok(),
            fs::read(root.join("p/x")).ok(),
            fs::metadata(root.join("q/y")).map(|m| m.is_dir()).ok(),
        )
    };
    b.same("RENAME_EXCHANGE", |root| {
        let mut out = Vec::new();
        fs::write(root.join("f1"), b"one").unwrap();
        fs::write(root.join("f2"), b"two").unwrap();
        out.push((
            "files",
            rename2(&root.join("f1"), &root.join("f2"), RenameFlags::EXCHANGE),
        ));
        fs::create_dir_all(root.join("p/x")).unwrap();
        fs::create_dir_all(root.join("q/y")).unwrap();
        fs::write(root.join("p/x/inside"), b"in x").unwrap();
        fs::write(root.join("q/y/inside"), b"in y").unwrap();
        // Two directories in different parents.
        out.push((
            "dirs",
            rename2(&root.join("p/x"), &root.join("q/y"), RenameFlags::EXCHANGE),
        ));
        let after_dirs = state(root);
        // A file and a directory.
        fs::write(root.join("p/file"), b"a file").unwrap();
        out.push((
            "file and dir",
            rename2(
                &root.join("p/file"),
                &root.join("q/y"),
                RenameFlags::EXCHANGE,
            ),
        ));
        out.push((
            "with a missing name",
            rename2(
                &root.join("f1"),
                &root.join("missing"),
                RenameFlags::EXCHANGE,
            ),
        ));
        (out, after_dirs, state(root))
    });
    let expect_final = state(b.plain.path());
    b.m.remount();
    assert_eq!(state(&b.m.mnt), expect_final, "after remount");
    assert_eq!(
        fs::read(b.m.path("p/x/inside")).ok(),
        Some(b"in y".to_vec())
    );
    b.fsck_clean();
}

fn hard_links_count_and_outlive_each_other(format: Format) {
    let mut b = Both::new(format);
    b.same("hard links", |root| {
        let nlink = |p: &str| errno(fs::metadata(root.join(p))).map(|m| m.nlink());
        let mut out = Vec::new();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("a"), b"shared").unwrap();
        out.push(("a", nlink("a")));
        fs::hard_link(root.join("a"), root.join("b")).unwrap();
        fs::hard_link(root.join("a"), root.join("sub/c")).unwrap();
        out.push(("a", nlink("a")));
        out.push(("c", nlink("sub/c")));
        let same_ino = fs::metadata(root.join("a")).unwrap().ino()
            == fs::metadata(root.join("sub/c")).unwrap().ino();
        out.push(("same inode", Ok(u64::from(same_ino))));
        let fd = File::open(root.join("a")).unwrap();
        fs::remove_file(root.join("a")).unwrap();
        out.push(("b after unlink a", nlink("b")));
        out.push(("fstat via a's fd", errno(fd.metadata()).map(|m| m.nlink())));
        fs::write(root.join("sub/c"), b"through c").unwrap();
        out.push((
            "b reads c's write",
            errno(fs::read(root.join("b")).map(|c| (c == b"through c") as u64)),
        ));
        fs::remove_file(root.join("b")).unwrap();
        out.push(("c last", nlink("sub/c")));
        out.push((
            "c content",
            errno(fs::read(root.join("sub/c")).map(|c| (c == b"through c") as u64)),
        ));
        // A link to a directory is refused.
        out.push((
            "dir link",
            errno(fs::hard_link(root.join("sub"), root.join("sublink"))).map(|_| 0),
        ));
        out
    });
    b.m.remount();
    assert_eq!(fs::read(b.m.path("sub/c")).unwrap(), b"through c");
    assert_eq!(fs::metadata(b.m.path("sub/c")).unwrap().nlink(), 1);
}

fn truncate_up_and_down_by_descriptor_and_by_path(format: Format) {
    let mut b = Both::new(format);
    let steps: [(&str, u64); 12] = [
        ("fd", 5000),
        ("path", 20_000),
        ("fd", 4096),
        ("fd", 4097),
        ("path", 8191),
        ("path", 100),
        ("fd", 0),
        ("path", 12_345),
        ("fd", 3 * 4096 + 17),
        ("path", 4096 * 2),
        ("fd", 1 << 20),
        ("path", 70_000),
    ];
    let got = b.same("truncate sequence", |root| {
        let p = root.join("t");
        fs::write(&p, pattern(4, 10_000)).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut sizes = Vec::new();
        for (i, (how, len)) in steps.iter().enumerate() {
            match *how {
                "fd" => f.set_len(*len).unwrap(),
                _ => truncate_path(&p, *len),
            }
            // Write into the middle after some steps so there is data to cut.
            if i % 3 == 1 {
                f.write_all_at(&pattern(i as u64, 3000), len / 3).unwrap();
            }
            sizes.push((fs::metadata(&p).unwrap().len(), f.metadata().unwrap().len()));
            assert_eq!(
                read_fd(&f),
                fs::read(&p).unwrap(),
                "fd and path disagree at step {i}"
            );
        }
        (sizes, fs::read(&p).unwrap())
    });
    b.m.remount();
    assert!(
        fs::read(b.m.path("t")).unwrap() == got.1,
        "content after remount"
    );
    b.fsck_clean();
}

fn o_append_writes_from_two_descriptors_all_land_at_the_end(format: Format) {
    let mut b = Both::new(format);
    let got = b.same("O_APPEND", |root| {
        let p = root.join("log");
        fs::write(&p, b"start;").unwrap();
        let mut one = OpenOptions::new().append(true).open(&p).unwrap();
        let mut two = OpenOptions::new().append(true).open(&p).unwrap();
        for i in 0..40u64 {
            let (fd, tag) = if i % 2 == 0 {
                (&mut one, b'A')
            } else {
                (&mut two, b'B')
            };
            let mut rec = vec![tag; (i as usize * 397) % 5000 + 1];
            rec.push(b';');
            fd.write_all(&rec).unwrap();
        }
        // pwrite on an O_APPEND descriptor appends too (Linux).
        one.write_all_at(b"pwrite;", 0).unwrap();
        fs::read(&p).unwrap()
    });
    assert!(got.starts_with(b"start;A;BBB"), "{:?}", &got[..20]);
    b.m.remount();
    assert!(fs::read(b.m.path("log")).unwrap() == got, "after remount");
}

fn o_trunc_on_open_empties_the_file(format: Format) {
    let b = Both::new(format);
    let got = b.same("O_TRUNC", |root| {
        let p = root.join("f");
        fs::write(&p, pattern(5, 10_000)).unwrap();
        let reader = File::open(&p).unwrap();
        let mut page = [0u8; 4096];
        reader.read_at(&mut page, 0).unwrap(); // cached before the truncation
        let mut w = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let sizes = (
            fs::metadata(&p).unwrap().len(),
            w.metadata().unwrap().len(),
            reader.metadata().unwrap().len(),
        );
        let seen_by_reader = read_fd(&reader).len();
        w.write_all(b"short").unwrap();
        let after_write = (fs::read(&p).unwrap(), read_fd(&reader));
        drop(w);
        // O_RDONLY|O_TRUNC truncates as well on Linux.
        fs::write(&p, pattern(6, 5000)).unwrap();
        let ro = errno(
            OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::TRUNC.bits() as i32)
                .open(&p),
        );
        let ro_size = fs::metadata(&p).unwrap().len();
        // O_TRUNC on an empty file and on a new one (O_CREAT|O_TRUNC).
        let e = root.join("empty");
        File::create(&e).unwrap();
        File::create(&e).unwrap().write_all(b"e").unwrap();
        (
            sizes,
            seen_by_reader,
            after_write,
            ro.is_ok(),
            ro_size,
            fs::read(&e).unwrap(),
        )
    });
    assert_eq!(got.0, (0, 0, 0));
    assert_eq!(got.2, (b"short".to_vec(), b"short".to_vec()));
    assert_eq!((got.3, got.4), (true, 0));
}

fn fifos_are_created_and_carry_data(format: Format) {
    let mut b = Both::new(format);
    b.same("mkfifo", |root| {
        let p = root.join("fifo");
        let made = with_umask(0o022, || {
            rustix::fs::mkfifoat(CWD, &p, rustix::fs::Mode::from_raw_mode(0o666))
        });
        made.unwrap();
        let meta = fs::symlink_metadata(&p).unwrap();
        let reader = {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                File::open(&p).unwrap().read_to_string(&mut s).unwrap();
                s
            })
        };
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all(b"through the pipe")
            .unwrap();
        (
            meta.file_type().is_fifo(),
            meta.mode() & 0o7777,
            meta.len(),
            reader.join().unwrap(),
        )
    });
    b.m.remount();
    assert!(
        fs::symlink_metadata(b.m.path("fifo"))
            .unwrap()
            .file_type()
            .is_fifo(),
        "after remount"
    );
}

fn chmod_and_chown_read_back(format: Format) {
    let mut b = Both::new(format);
    let got = b.same("chmod and chown", |root| {
        let mut out = Vec::new();
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        for m in [0o000, 0o4755, 0o2755, 0o1644, 0o7777, 0o200, 0o644] {
            fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
            out.push(("chmod", owner(&f)));
        }
        std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
        out.push(("chown", owner(&f)));
        std::os::unix::fs::chown(&f, None, Some(42)).unwrap();
        out.push(("chgrp only", owner(&f)));
        // chown clears set-user-id (and set-group-id with group exec).
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
        std::os::unix::fs::chown(&f, Some(0), None).unwrap();
        out.push(("chown of set-id file", owner(&f)));
        // Through a descriptor.
        let file = File::open(&f).unwrap();
        std::os::unix::fs::fchown(&file, Some(777), Some(888)).unwrap();
        file.set_permissions(fs::Permissions::from_mode(0o640))
            .unwrap();
        out.push(("fchown+fchmod", owner(&f)));
        // A symlink itself (lchown), not its target.
        std::os::unix::fs::symlink("f", root.join("link")).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(31), Some(32)).unwrap();
        out.push(("lchown link", owner(&root.join("link"))));
        out.push(("lchown target", owner(&f)));
        // A directory.
        let d = root.join("d");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o3710)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        out.push(("dir", owner(&d)));
        out
    });
    assert_eq!(got[7].1, (0o644, 1234, 5678));
    assert_eq!(got[8].1, (0o644, 1234, 42));
    b.m.remount();
    let after: Vec<_> = ["f", "link", "d"]
        .iter()
        .map(|p| owner(&b.m.path(p)))
        .collect();
    assert_eq!(
        after,
        vec![got[10].1, got[11].1, got[13].1],
        "after remount"
    );
}

fn statfs_and_df_work_on_the_mount(format: Format) {
    let m = Mounted::with_format(format);
    let ours = rustix::fs::statfs(&m.mnt).expect("statfs on the mount");
    let backing = rustix::fs::statfs(&m.vault).expect("statfs on the backing directory");
    assert_eq!(
        ours.f_type as i64, 0x6573_5546,
        "f_type is FUSE_SUPER_MAGIC"
    );
    assert!(ours.f_bsize > 0 && ours.f_blocks > 0, "{ours:?}");
    assert_eq!(ours.f_namelen, 255);
    // Sizes are the backing file system's.
    assert_eq!(
        ours.f_blocks as u128 * ours.f_frsize as u128,
        backing.f_blocks as u128 * backing.f_frsize as u128
    );
    assert_eq!(ours.f_files, backing.f_files);
    let vfs = rustix::fs::statvfs(&m.mnt).expect("statvfs");
    assert!(vfs.f_blocks > 0);
    let df = Command::new("df")
        .arg("-P")
        .arg(&m.mnt)
        .output()
        .expect("df is missing: apt install coreutils");
    assert!(
        df.status.success(),
        "df: {}",
        String::from_utf8_lossy(&df.stderr)
    );
    let text = String::from_utf8_lossy(&df.stdout);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with(m.mnt.to_str().unwrap())),
        "{text}"
    );
    let dfi = Command::new("df").arg("-i").arg(&m.mnt).output().unwrap();
    assert!(
        dfi.status.success(),
        "df -i: {}",
        String::from_utf8_lossy(&dfi.stderr)
    );
    // Through a descriptor, too.
    let f = File::create(m.path("f")).unwrap();
    assert_eq!(rustix::fs::fstatfs(&f).unwrap().f_type as i64, 0x6573_5546);
}

fn fsync_and_fdatasync_succeed(format: Format) {
    let b = Both::new(format);
    let got = b.same("fsync", |root| {
        let mut out = Vec::new();
        let mut f = File::create(root.join("f")).unwrap();
        out.push(("fsync empty", errno(f.sync_all())));
        f.write_all(&pattern(7, 100_000)).unwrap();
        out.push(("fsync", errno(f.sync_all())));
        f.write_all(b"more").unwrap();
        out.push(("fdatasync", errno(f.sync_data())));
        let ro = File::open(root.join("f")).unwrap();
        out.push(("fsync read-only fd", errno(ro.sync_all())));
        out.push(("fdatasync read-only fd", errno(ro.sync_data())));
        fs::create_dir(root.join("d")).unwrap();
        out.push((
            "fsync dir",
            errno(File::open(root.join("d")).unwrap().sync_all()),
        ));
        out.push(("fsync root", errno(File::open(root).unwrap().sync_all())));
        out
    });
    for (what, r) in got {
        assert_eq!(r, Ok(()), "{what}");
    }
}

fn getx(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 65536];
    rustix::fs::getxattr(p, name, &mut buf[..])
        .map(|n| buf[..n].to_vec())
        .map_err(|e| e.raw_os_error())
}

fn setx(p: &Path, name: &str, value: &[u8], flags: XattrFlags) -> Result<(), i32> {
    rustix::fs::setxattr(p, name, value, flags).map_err(|e| e.raw_os_error())
}

fn listx(p: &Path) -> Result<Vec<String>, i32> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::listxattr(p, &mut buf[..]).map_err(|e| e.raw_os_error())?;
    let mut names: Vec<String> = buf[..n]
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .filter(|s| s.starts_with("user."))
        .collect();
    names.sort();
    Ok(names)
}

fn xattrs_set_get_list_remove_and_flags(format: Format) {
    let mut b = Both::new(format);
    let big = pattern(8, 3 * 1024);
    let got = b.same("xattrs", |root| {
        let mut out: Vec<(&str, Result<Vec<u8>, i32>)> = Vec::new();
        let unit = |r: Result<(), i32>| r.map(|()| Vec::new());
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        let d = root.join("d");
        fs::create_dir(&d).unwrap();
        for p in [&f, &d] {
            out.push((
                "set small",
                unit(setx(p, "user.small", b"value", XattrFlags::empty())),
            ));
            out.push((
                "set big",
                unit(setx(p, "user.big", &big, XattrFlags::empty())),
            ));
            out.push((
                "set empty",
                unit(setx(p, "user.empty", b"", XattrFlags::empty())),
            ));
            out.push(("get small", getx(p, "user.small")));
            out.push((
                "get big",
                getx(p, "user.big").map(|v| vec![(v == big) as u8, (v.len() / 1024) as u8]),
            ));
            out.push(("get empty", getx(p, "user.empty")));
            out.push(("list", listx(p).map(|l| l.join(",").into_bytes())));
            out.push((
                "size query",
                rustix::fs::getxattr_query(p, "user.big")
                    .map(|n| n.to_string().into_bytes())
                    .map_err(|e| e.raw_os_error()),
            ));
            let mut small = [0u8; 3];
            out.push((
                "too small a buffer",
                rustix::fs::getxattr(p, "user.small", &mut small[..])
                    .map(|_| Vec::new())
                    .map_err(|e| e.raw_os_error()),
            ));
            out.push(("missing", getx(p, "user.missing")));
            out.push((
                "CREATE existing",
                unit(setx(p, "user.small", b"other", XattrFlags::CREATE)),
            ));
            out.push(("after failed CREATE", getx(p, "user.small")));
            out.push((
                "REPLACE missing",
                unit(setx(p, "user.missing", b"v", XattrFlags::REPLACE)),
            ));
            out.push((
                "REPLACE existing",
                unit(setx(p, "user.small", b"replaced", XattrFlags::REPLACE)),
            ));
            out.push(("after REPLACE", getx(p, "user.small")));
            out.push((
                "CREATE new",
                unit(setx(p, "user.fresh", b"f", XattrFlags::CREATE)),
            ));
            out.push((
                "remove",
                unit(rustix::fs::removexattr(p, "user.empty").map_err(|e| e.raw_os_error())),
            ));
            out.push(("get removed", getx(p, "user.empty")));
            out.push((
                "remove missing",
                unit(rustix::fs::removexattr(p, "user.empty").map_err(|e| e.raw_os_error())),
            ));
            out.push(("list after", listx(p).map(|l| l.join(",").into_bytes())));
        }
        out
    });
    let find = |what: &str| got.iter().find(|(w, _)| *w == what).unwrap().1.clone();
    assert_eq!(find("get big"), Ok(vec![1, 3]));
    assert_eq!(find("missing"), Err(ENODATA));
    assert_eq!(find("CREATE existing"), Err(EEXIST));
    assert_eq!(find("too small a buffer"), Err(ERANGE));
    b.m.remount();
    for p in ["f", "d"] {
        let p = b.m.path(p);
        assert_eq!(getx(&p, "user.big"), Ok(big.clone()), "after remount");
        assert_eq!(
            getx(&p, "user.small"),
            Ok(b"replaced".to_vec()),
            "after remount"
        );
        assert_eq!(
            listx(&p),
            Ok(vec![
                "user.big".into(),
                "user.fresh".into(),
                "user.small".into()
            ]),
            "after remount"
        );
    }
    b.fsck_clean();
}

fn concurrent_pwrites_to_disjoint_regions_of_one_file_all_land(format: Format) {
    let mut m = Mounted::with_format(format);
    const THREADS: usize = 4;
    const ROUNDS: u64 = 3;
    let total: u64 = (1 << 20) + 12_345;
    // Segments alternate between whole 4 KiB-aligned blocks and unaligned
    // stretches, so neighbouring threads share blocks.
    let mut segments: Vec<(u64, u64)> = Vec::new();
    let (mut off, mut i) = (0u64, 0u64);
    while off < total {
        let len = if i % 3 == 0 {
            (4096 - off % 4096) + 4096 * (i % 4)
        } else {
            1 + (i * 2654435761) % 7000
        };
        let len = len.min(total - off);
        segments.push((off, len));
        off += len;
        i += 1;
    }
    let data =
        |round: u64, seg: usize| pattern(round * 1_000_003 + seg as u64, segments[seg].1 as usize);
    let path = m.path("shared");
    File::create(&path).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (barrier, path, segments, data) = (barrier.clone(), &path, &segments, &data);
            s.spawn(move || {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                let mine: Vec<usize> = (0..segments.len()).filter(|s| s % THREADS == t).collect();
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Each thread walks its segments in its own order.
                    let order: Vec<usize> = if (t as u64 + round).is_multiple_of(2) {
                        mine.clone()
                    } else {
                        mine.iter().rev().copied().collect()
                    };
                    for seg in order {
                        f.write_all_at(&data(round, seg), segments[seg].0).unwrap();
                    }
                }
            });
        }
    });
    let mut expected = vec![0u8; total as usize];
    for (seg, &(off, len)) in segments.iter().enumerate() {
        expected[off as usize..(off + len) as usize].copy_from_slice(&data(ROUNDS - 1, seg));
    }
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len(), expected.len());
    let first_bad = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "content differs from the merge");
    m.remount();
    let got = fs::read(&path).unwrap();
    let first_bad = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        (got.len(), first_bad),
        (expected.len(), None),
        "after remount"
    );
    if format == Format::V1 {
        m.unmount();
        ok(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
        m.mount();
    }
}
