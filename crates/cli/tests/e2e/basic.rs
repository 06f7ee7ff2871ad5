//! Contents, names and metadata round-trip through a real mount.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use crate::common::{Format, Mounted, ok, on_both_formats, pattern, run};

on_both_formats!(
    file_sizes_round_trip_and_survive_remount,
    random_offset_writes_match_a_model,
    no_plaintext_name_or_content_on_disk,
    readdir_resumed_across_inserts_and_removals_returns_every_old_entry_once,
);

/// A listing read in pieces while other names come and go: every entry
/// that was there all along is returned exactly once (format 2 resumes
/// after an entry hash, format 1 from a snapshot taken at opendir).
fn readdir_resumed_across_inserts_and_removals_returns_every_old_entry_once(format: Format) {
    let m = Mounted::with_format(format);
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    for i in 0..2000 {
        fs::write(dir.join(format!("old-{i:04}")), b"").unwrap();
    }
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let mut listing = fs::read_dir(&dir).unwrap();
    for step in 0.. {
        let Some(entry) = listing.next() else { break };
        let name = entry.unwrap().file_name().into_string().unwrap();
        *seen.entry(name).or_default() += 1;
        if step % 100 == 0 {
            for j in 0..20 {
                fs::write(dir.join(format!("new-{step}-{j}")), b"").unwrap();
            }
            let _ = fs::remove_file(dir.join(format!("new-{}-0", step.max(100) - 100)));
        }
    }
    for i in 0..2000 {
        assert_eq!(seen.get(&format!("old-{i:04}")), Some(&1), "old-{i:04}");
    }
    assert!(seen.values().all(|&n| n == 1), "an entry listed twice");
}

fn file_sizes_round_trip_and_survive_remount(format: Format) {
    let mut m = Mounted::with_format(format);
    let sizes = [0usize, 1, 4095, 4096, 4097, (1 << 20) + 3];
    for (i, &len) in sizes.iter().enumerate() {
        fs::write(m.path(&format!("f{len}")), pattern(i as u64, len)).unwrap();
    }
    for (i, &len) in sizes.iter().enumerate() {
        let data = fs::read(m.path(&format!("f{len}"))).unwrap();
        assert_eq!(data, pattern(i as u64, len), "size {len}");
        assert_eq!(
            fs::metadata(m.path(&format!("f{len}"))).unwrap().len(),
            len as u64
        );
    }
    m.remount();
    for (i, &len) in sizes.iter().enumerate() {
        assert_eq!(
            fs::read(m.path(&format!("f{len}"))).unwrap(),
            pattern(i as u64, len),
            "after remount, size {len}"
        );
    }
}

fn random_offset_writes_match_a_model(format: Format) {
    let m = Mounted::with_format(format);
    let path = m.path("model");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for step in 0..400 {
        match next(10) {
            0 => {
                let len = next(40_000) as usize;
                file.set_len(len as u64).unwrap();
                model.resize(len, 0);
            }
            _ => {
                let off = next(300_000) as usize;
                let len = next(20_000) as usize + 1;
                let data = pattern(step, len);
                file.write_all_at(&data, off as u64).unwrap();
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&data);
            }
        }
        if step % 50 == 0 {
            let mut back = Vec::new();
            file.seek(SeekFrom::Start(0)).unwrap();
            file.read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), model.len(), "step {step}");
            assert!(back == model, "content differs at step {step}");
        }
    }
    drop(file);
    assert!(fs::read(&path).unwrap() == model);
}

#[test]
fn names_links_symlinks_and_xattrs() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::write(m.path("a/b/c/file"), b"deep").unwrap();
    // Rename a directory: its children follow.
    fs::rename(m.path("a/b"), m.path("moved")).unwrap();
    assert_eq!(fs::read(m.path("moved/c/file")).unwrap(), b"deep");
    // Rename over an existing file.
    fs::write(m.path("x"), b"old").unwrap();
    fs::write(m.path("y"), b"new").unwrap();
    fs::rename(m.path("y"), m.path("x")).unwrap();
    assert_eq!(fs::read(m.path("x")).unwrap(), b"new");
    assert!(!m.path("y").exists());
    // Hard links share contents and count.
    fs::hard_link(m.path("x"), m.path("moved/x-link")).unwrap();
    assert_eq!(fs::metadata(m.path("x")).unwrap().nlink(), 2);
    fs::write(m.path("moved/x-link"), b"through the link").unwrap();
    assert_eq!(fs::read(m.path("x")).unwrap(), b"through the link");
    // Symlinks, relative and absolute, with their targets encrypted.
    std::os::unix::fs::symlink("moved/c/file", m.path("rel-link")).unwrap();
    assert_eq!(
        fs::read_link(m.path("rel-link")).unwrap().to_str(),
        Some("moved/c/file")
    );
    assert_eq!(fs::read(m.path("rel-link")).unwrap(), b"deep");
    assert_eq!(
        fs::symlink_metadata(m.path("rel-link")).unwrap().len(),
        "moved/c/file".len() as u64
    );
    // A long name (hashed on the backing side), created, listed, renamed.
    let long = "L".repeat(255);
    fs::write(m.path(&long), b"long").unwrap();
    assert!(
        fs::read_dir(&m.mnt)
            .unwrap()
            .any(|e| e.unwrap().file_name() == long.as_str())
    );
    let long2 = "M".repeat(200);
    fs::rename(m.path(&long), m.path(&long2)).unwrap();
    assert_eq!(fs::read(m.path(&long2)).unwrap(), b"long");
    // Xattrs with encrypted values.
    let out = std::process::Command::new("setfattr")
        .args(["-n", "user.checksum", "-v", "sha256:abc"])
        .arg(m.path("x"))
        .output();
    if let Ok(out) = out {
        assert!(
            out.status.success(),
            "setfattr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", "user.checksum"])
            .arg(m.path("x"))
            .output()
            .unwrap();
        assert_eq!(got.stdout, b"sha256:abc");
    } else {
        panic!("setfattr missing: apt install attr");
    }
    // Modes exactly as asked, directories too.
    fs::create_dir(m.path("private")).unwrap();
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o510)).unwrap();
    assert_eq!(
        fs::metadata(m.path("private")).unwrap().mode() & 0o7777,
        0o510
    );
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o755)).unwrap();

    m.remount();
    assert_eq!(
        fs::read(m.path("moved/x-link")).unwrap(),
        b"through the link"
    );
    assert_eq!(
        fs::read_link(m.path("rel-link")).unwrap().to_str(),
        Some("moved/c/file")
    );
    assert_eq!(fs::read(m.path(&long2)).unwrap(), b"long");
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            long2.clone(),
            "a".into(),
            "moved".into(),
            "private".into(),
            "rel-link".into(),
            "x".into()
        ]
    );
}

/// Neither in backing names nor in any backing file's bytes (format 2
/// keeps names in atrest.meta and its log).
fn no_plaintext_name_or_content_on_disk(format: Format) {
    let mut m = Mounted::with_format(format);
    let canary = "canary-5d1e0b3f-content-marker";
    fs::create_dir(m.path("secret-project-name")).unwrap();
    fs::write(
        m.path("secret-project-name/payroll-2026.xlsx"),
        canary.repeat(300),
    )
    .unwrap();
    std::os::unix::fs::symlink("target-name-canary", m.path("link-name-canary")).unwrap();
    m.unmount();
    let mut stack = vec![m.vault.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Whole names: random base64 holds a short word such as
            // "canary" once in a few hundred million runs.
            for plain in ["secret-project-name", "payroll-2026", "link-name-canary"] {
                assert!(!name.contains(plain), "plaintext name {name} on disk");
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_symlink() {
                assert!(
                    !fs::read_link(e.path())
                        .unwrap()
                        .to_string_lossy()
                        .contains("target-name-canary")
                );
            } else {
                let data = fs::read(e.path()).unwrap();
                for plain in [canary, "secret-project", "payroll", "target-name-canary"] {
                    assert!(
                        !data.windows(plain.len()).any(|w| w == plain.as_bytes()),
                        "{plain} in {name}"
                    );
                }
            }
        }
    }
    m.mount();
}

#[test]
fn wrong_passphrase_and_bad_paths_give_clear_errors() {
    let m = Mounted::new();
    let other = m.dir.path().join("mnt2");
    fs::create_dir(&other).unwrap();
    let wrong = m.dir.path().join("wrong");
    fs::write(&wrong, "not it").unwrap();

    // Second mount of the same vault.
    let out = run(&[&"mount", &m.vault, &other, &"--passphrase-file", &m.pass]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Busy mount point.
    let out = run(&[&"mount", &m.vault, &m.mnt, &"--passphrase-file", &m.pass]);
    assert!(!out.status.success());

    // A directory that is not a vault; a missing mount point.
    let free = m.dir.path().join("mnt3");
    fs::create_dir(&free).unwrap();
    let out = run(&[&"mount", &other, &free, &"--passphrase-file", &m.pass]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an atrest vault"));
    let out = run(&[
        &"mount",
        &m.vault,
        &m.dir.path().join("nope"),
        &"--passphrase-file",
        &m.pass,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // Wrong passphrase (checked through fsck, which unlocks the same way).
    let out = run(&[&"fsck", &m.vault, &"--passphrase-file", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    // Right passphrase: clean.
    ok(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
}

#[test]
fn keyslots_recovery_and_passwd() {
    let m = Mounted::new();
    let rk = m.dir.path().join("recovery.txt");
    ok(&[
        &"keyslot",
        &"add",
        &m.vault,
        &"--kind",
        &"recovery-key",
        &"--recovery-key-out",
        &rk,
        &"--passphrase-file",
        &m.pass,
    ]);
    let kf = m.dir.path().join("key.bin");
    ok(&[
        &"keyslot",
        &"add",
        &m.vault,
        &"--kind",
        &"key-file",
        &"--new-key-file",
        &kf,
        &"--passphrase-file",
        &m.pass,
    ]);
    let list = ok(&[&"keyslot", &"list", &m.vault, &"--json"]);
    let slots: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(slots.as_array().unwrap().len(), 3);
    ok(&[&"fsck", &m.vault, &"--recovery-key-file", &rk]);
    ok(&[&"fsck", &m.vault, &"--key-file", &kf]);

    let newpass = m.dir.path().join("newpass");
    fs::write(&newpass, "a new passphrase").unwrap();
    ok(&[
        &"passwd",
        &m.vault,
        &"--passphrase-file",
        &m.pass,
        &"--new-passphrase-file",
        &newpass,
        &"--argon2-memory",
        &"8",
        &"--argon2-iterations",
        &"1",
    ]);
    assert!(
        !run(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass])
            .status
            .success()
    );
    ok(&[&"fsck", &m.vault, &"--passphrase-file", &newpass]);

    // Remove slots down to one; the last one is refused.
    ok(&[&"keyslot", &"remove", &m.vault, &"2", &"--key-file", &kf]);
    ok(&[
        &"keyslot",
        &"remove",
        &m.vault,
        &"1",
        &"--passphrase-file",
        &newpass,
    ]);
    let out = run(&[
        &"keyslot",
        &"remove",
        &m.vault,
        &"0",
        &"--passphrase-file",
        &newpass,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last keyslot"));

    let status = ok(&[&"status", &m.vault, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["mounted_at"][0].as_str().unwrap(),
        m.mnt.to_str().unwrap()
    );
    let mut f = fs::File::create(m.path("still-works")).unwrap();
    f.write_all(b"yes").unwrap();
}

/// A normal user mounts through fusermount3 (no root), as on any machine
/// with the fuse3 package (whose udev rule makes /dev/fuse 0666; CI's
/// scripts/test-all.sh does the same).
#[test]
fn an_unprivileged_user_mounts_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode();
    assert_eq!(
        mode & 0o006,
        0o006,
        "/dev/fuse must be usable by other users (chmod 0666 /dev/fuse, as fuse3's udev rule does)"
    );
    let dir = tempfile::Builder::new()
        .prefix("atrest-user-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // A copy: the build directory may sit under a directory only root may enter.
    let bin = dir.path().join("atrest");
    fs::copy(env!("CARGO_BIN_EXE_atrest"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        r#"set -e
cd {dir}
printf 'user passphrase\n' > pass
{bin} init v --passphrase-file pass --no-recovery-key --argon2-memory 8 --argon2-iterations 1
mkdir m
{bin} mount v m --passphrase-file pass
grep -q " {dir}/m .* fuse.atrest " /proc/self/mountinfo
echo "written by nobody" > m/note
cat m/note
{bin} unmount m
{bin} mount v m --passphrase-file pass
cat m/note
{bin} unmount m
"#,
        dir = dir.path().display(),
        bin = bin.display()
    );
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", &script])
        .output()
        .expect("runuser (util-linux)");
    assert!(
        out.status.success(),
        "as nobody: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "written by nobody\nwritten by nobody\n"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(
        &fs::metadata(dir.path().join("v/atrest.conf")).unwrap(),
    );
    assert_eq!(owner, 65534, "the vault belongs to the user who made it");
}

/// A mount with a file open under it is not unmounted: the refusal names
/// the mount point and what to do, the vault stays mounted and readable,
/// and the same command works once the file is closed.
#[test]
fn unmount_of_a_busy_mount_is_refused_until_the_file_is_closed() {
    let mut m = Mounted::new();
    fs::write(m.path("held"), b"still here").unwrap();
    let held = fs::File::open(m.path("held")).unwrap();
    let out = run(&[&"unmount", &m.mnt]);
    assert!(!out.status.success(), "a busy mount was unmounted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is busy") && err.contains("--lazy"),
        "unhelpful refusal: {err}"
    );
    assert_eq!(fs::read(m.path("held")).unwrap(), b"still here");
    drop(held);
    m.unmount();
    assert!(!crate::common::is_mount_point(&m.mnt));
}
