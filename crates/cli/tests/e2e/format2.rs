//! Format 2 vaults through a real mount (docs/plans/format-2.md, stage
//! 3): the hidden `atrest init --format 2` makes one, `status` says so,
//! it mounts, its contents and namespace round-trip and survive a
//! remount, and what an fsync covered survives kill -9 of the mount
//! process (recovery at the next mount); `atrest fsck` (stage 4) finds
//! each of these vaults clean, and refuses only what it cannot do yet.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use crate::common::{
    Foreground, Format, Mounted, assert_fsck_clean, atrest, copy_dir, detach, errno, failure, ok,
    pattern, rng, run,
};

fn vault() -> Mounted {
    Mounted::with_format(Format::V2)
}

#[test]
fn init_format_2_then_status_shows_it_and_fsck_checks_it() {
    let mut m = vault();
    for made in [
        "atrest.conf",
        "atrest.conf.bak",
        "atrest.meta",
        "atrest.log",
        "objects/ab",
    ] {
        assert!(m.vault.join(made).exists(), "{made}");
    }
    let status = ok(&[&"status", &m.vault, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["format_version"], 2);
    let text = ok(&[&"status", &m.vault]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("atrest vault v2"));

    // fsck needs it unmounted (it opens the store as a mount does).
    let mut mounted = atrest();
    mounted
        .arg("fsck")
        .arg(&m.vault)
        .arg("--passphrase-file")
        .arg(&m.pass);
    let err = failure(mounted);
    assert!(err.contains("needs") && err.contains("unmounted"), "{err}");
    m.unmount();
    assert_fsck_clean(&m);
    let text = ok(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("checked 1 directories, 0 files"), "{text}");
    // --repair of a sound vault repairs nothing, and it is still sound.
    let text = ok(&[
        &"fsck",
        &m.vault,
        &"--repair",
        &"--passphrase-file",
        &m.pass,
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("no problems") && !text.contains("repaired"),
        "{text}"
    );
    assert_fsck_clean(&m);

    // Format 1 stays the default, and --format is hidden from --help.
    let help = ok(&[&"init", &"--help"]);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--format"));
    let mut bad = atrest();
    bad.arg("init")
        .arg(m.dir.path().join("v3"))
        .arg("--format")
        .arg("3");
    assert!(failure(bad).contains("3"));
}

#[test]
fn contents_overwrites_truncates_and_holes_survive_remount() {
    let mut m = vault();
    let path = m.path("f");
    let mut model = pattern(1, 3 * 4096 + 100);
    fs::write(&path, &model).unwrap();
    // Overwrite across a block boundary in the middle.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let patch = pattern(2, 5000);
    file.write_all_at(&patch, 4000).unwrap();
    model[4000..9000].copy_from_slice(&patch);
    // Down inside a block, then up: the cut bytes read as zeros.
    file.set_len(6000).unwrap();
    model.truncate(6000);
    file.set_len(20_000).unwrap();
    model.resize(20_000, 0);
    // A hole: a write far past the end.
    file.write_all_at(b"tail", 1 << 20).unwrap();
    model.resize(1 << 20, 0);
    model.extend_from_slice(b"tail");
    drop(file);
    assert!(fs::read(&path).unwrap() == model);
    m.remount();
    assert!(fs::read(&path).unwrap() == model, "after remount");
    assert_eq!(fs::metadata(&path).unwrap().len(), model.len() as u64);
}

#[test]
fn namespace_operations_round_trip_and_survive_remount() {
    let mut m = vault();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/file"), b"deep").unwrap();
    fs::rename(m.path("a/b/file"), m.path("a/moved")).unwrap();
    fs::hard_link(m.path("a/moved"), m.path("hard")).unwrap();
    std::os::unix::fs::symlink("a/moved", m.path("sym")).unwrap();
    fs::write(m.path("gone"), b"x").unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    fs::set_permissions(m.path("hard"), fs::Permissions::from_mode(0o640)).unwrap();
    let when = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(m.path("hard"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        m.path("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert_eq!(
        errno(fs::remove_dir(m.path("a"))),
        Err(libc_enotempty()),
        "rmdir of a non-empty directory"
    );
    fs::remove_dir(m.path("a/b")).unwrap();
    let dir = m.path("many");
    fs::create_dir(&dir).unwrap();
    for i in 0..1000 {
        fs::write(dir.join(format!("entry-{i:04}")), i.to_string()).unwrap();
    }
    let check = |m: &Mounted| {
        assert_eq!(fs::read(m.path("hard")).unwrap(), b"deep");
        assert_eq!(fs::read(m.path("sym")).unwrap(), b"deep");
        assert_eq!(
            fs::read_link(m.path("sym")).unwrap().to_str(),
            Some("a/moved")
        );
        let meta = fs::metadata(m.path("hard")).unwrap();
        assert_eq!(meta.nlink(), 2);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(meta.modified().unwrap(), when);
        assert!(
            fs::symlink_metadata(m.path("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(!m.path("gone").exists());
        assert!(!m.path("a/b").exists());
        let mut names: Vec<String> = fs::read_dir(m.path("many"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let expected: Vec<String> = (0..1000).map(|i| format!("entry-{i:04}")).collect();
        assert_eq!(names, expected);
        assert_eq!(fs::read(m.path("many/entry-0777")).unwrap(), b"777");
    };
    check(&m);
    m.unmount();
    assert_fsck_clean(&m);
    m.mount();
    check(&m);
    // Outside user. nothing is stored, as in format 1.
    assert_eq!(
        rustix::fs::setxattr(
            m.path("hard"),
            "trusted.k",
            b"v",
            rustix::fs::XattrFlags::empty()
        ),
        Err(rustix::io::Errno::NOTSUP)
    );
}

fn libc_enotempty() -> i32 {
    rustix::io::Errno::NOTEMPTY.raw_os_error()
}

/// kill -9 of the process serving the mount: what was fsync'ed (a file,
/// and a rename made durable by fsyncdir) is there after the next mount,
/// which recovers the vault from its log before it reports ready.
#[test]
fn fsynced_data_survives_kill_9_and_the_vault_remounts() {
    let mut m = vault();
    fs::write(m.path("before"), b"checkpointed at unmount").unwrap();
    m.unmount();
    let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
    let synced = pattern(7, 300_000);
    let mut file = fs::File::create(m.path("synced")).unwrap();
    file.write_all(&synced).unwrap();
    file.sync_all().unwrap();
    // An overwrite of existing blocks (journaled), fsync'ed too.
    file.write_all_at(b"OVERWRITTEN", 4090).unwrap();
    file.sync_all().unwrap();
    drop(file);
    // Attributes, one of them in a blob, set and removed: logged, made
    // durable by the fsync that follows, replayed by recovery.
    let big_value = pattern(9, 40_000);
    let xattr = |name: &str, value: &[u8]| {
        rustix::fs::setxattr(
            m.path("synced"),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap()
    };
    xattr("user.small", b"kept");
    xattr("user.big", &big_value);
    xattr("user.gone", b"removed");
    rustix::fs::removexattr(m.path("synced"), "user.gone").unwrap();
    fs::write(m.path("renamed-from"), b"r").unwrap();
    fs::rename(m.path("renamed-from"), m.path("renamed-to")).unwrap();
    fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    // Not fsync'ed: may or may not survive, but must never break the vault.
    fs::write(m.path("unsynced"), pattern(8, 50_000)).unwrap();
    fg.kill();
    detach(&m.mnt).unwrap();
    drop(fg);
    // status, before any key: changes logged after the last checkpoint.
    let metadata = |m: &Mounted| {
        let out = run(&[&"status", &m.vault, &"--json"]);
        assert!(out.status.success(), "{out:?}");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["metadata"].clone()
    };
    let before = metadata(&m);
    assert!(
        before["changes_after_checkpoint"].as_u64().unwrap() > 0,
        "{before}"
    );
    // fsck recovers the vault as the mount would, finds it clean, and
    // leaves it clean.
    assert_fsck_clean(&m);
    let after = metadata(&m);
    assert_eq!(after["state"], "clean", "{after}");
    assert_eq!(after["changes_after_checkpoint"], 0, "{after}");
    assert!(after["checkpoint"].as_u64() > before["checkpoint"].as_u64());
    m.mount();
    let mut expected = synced.clone();
    expected[4090..4101].copy_from_slice(b"OVERWRITTEN");
    assert!(fs::read(m.path("synced")).unwrap() == expected);
    let mut value = vec![0u8; 65_536];
    let n = rustix::fs::getxattr(m.path("synced"), "user.big", &mut value[..]).unwrap();
    assert!(value[..n] == big_value[..], "user.big after recovery");
    let n = rustix::fs::getxattr(m.path("synced"), "user.small", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"kept");
    assert_eq!(
        rustix::fs::getxattr(m.path("synced"), "user.gone", &mut value[..]),
        Err(rustix::io::Errno::NODATA)
    );
    assert_eq!(fs::read(m.path("renamed-to")).unwrap(), b"r");
    assert!(!m.path("renamed-from").exists());
    assert_eq!(
        fs::read(m.path("before")).unwrap(),
        b"checkpointed at unmount"
    );
    // Its blocks are its contents or holes, never an error.
    match fs::read(m.path("unsynced")) {
        Ok(data) => assert!(data.len() <= 50_000),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
    }
    // And it keeps working, across another clean remount.
    fs::write(m.path("after"), b"after recovery").unwrap();
    m.unmount();
    assert_fsck_clean(&m);
    m.mount();
    assert_eq!(fs::read(m.path("after")).unwrap(), b"after recovery");
    let _ = run(&[&"status", &m.vault]);
}

/// kill -9 of the mount process at a moment chosen by a seeded generator,
/// 20 times, during a workload of creates, writes, fsyncs and renames made
/// durable by fsyncdir: each time the vault mounts again (recovering it
/// before it reports ready, or `atrest fsck` does and finds it clean) and
/// every file an fsync or fsyncdir covered before the kill is there, under
/// its name, with its contents.
#[test]
fn kill_9_at_random_moments_loses_nothing_fsynced() {
    let mut m = vault();
    m.unmount();
    // (name, seed, length) of every file made durable so far.
    let mut durable: Vec<(String, u64, usize)> = Vec::new();
    let mut next = rng(0x2545_f491_4f6c_dd1d);
    for round in 0..20u64 {
        let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
        for (name, seed, len) in &durable {
            let data = fs::read(m.mnt.join(name))
                .unwrap_or_else(|e| panic!("round {round}: {name} lost: {e}"));
            assert!(
                data == pattern(*seed, *len),
                "round {round}: {name} differs"
            );
        }
        let pid = fg.child.id().to_string();
        let delay = Duration::from_millis(20 + next(300));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        });
        let mnt = m.mnt.clone();
        let mut lens: Vec<usize> = (0..2000).map(|_| next(20_000) as usize).collect();
        let workload = std::thread::spawn(move || -> Vec<(String, u64, usize)> {
            let mut made = Vec::new();
            for i in 0..2000u64 {
                let seed = round * 10_000 + i;
                let len = lens.pop().unwrap_or(0);
                let name = format!("r{round}-f{i}");
                let done = (|| -> std::io::Result<String> {
                    let mut f = fs::File::create(mnt.join(&name))?;
                    f.write_all(&pattern(seed, len))?;
                    f.sync_all()?;
                    // Not fsync'ed: must never break what is.
                    fs::write(mnt.join(format!("r{round}-junk{i}")), pattern(seed, 5000))?;
                    if i % 4 == 0 {
                        let renamed = format!("r{round}-renamed{i}");
                        fs::rename(mnt.join(&name), mnt.join(&renamed))?;
                        fs::File::open(&mnt)?.sync_all()?;
                        return Ok(renamed);
                    }
                    Ok(name.clone())
                })();
                match done {
                    Ok(name) => made.push((name, seed, len)),
                    // The mount is gone: what this step did may be half done.
                    Err(_) => break,
                }
            }
            made
        });
        killer.join().unwrap();
        let made = workload.join().unwrap();
        fg.kill();
        detach(&m.mnt).unwrap();
        drop(fg);
        durable.extend(made);
        // Every other round fsck recovers the vault (and must find it
        // clean); the others leave recovery to the next mount.
        if round % 2 == 1 {
            assert_fsck_clean(&m);
        }
    }
    m.mount();
    for (name, seed, len) in &durable {
        assert!(
            fs::read(m.path(name)).unwrap() == pattern(*seed, *len),
            "{name}"
        );
    }
    assert!(
        durable.len() > 20,
        "the workload made progress: {}",
        durable.len()
    );
}

/// Whole-vault rollback without a key authority (docs/format.md §16.17.5):
/// the backing directory put back from an earlier copy is refused at mount
/// (exit 5, naming both generations and what to do) with nothing on the
/// disk changed; `--accept-rollback` mounts it, says so and logs it;
/// `status` says the local witness cannot see a rollback of the whole
/// disk; kill -9 of the mount process is no false alarm.
#[test]
fn a_restored_copy_is_refused_until_accepted_and_kill_9_is_no_false_alarm() {
    let mut m = vault();
    fs::write(m.path("kept"), b"before the copy").unwrap();
    m.unmount();
    let saved = m.dir.path().join("saved");
    copy_dir(&m.vault, &saved);
    m.mount();
    fs::write(m.path("later"), b"after the copy").unwrap();
    m.unmount();
    assert!(
        fs::read_dir(m.state().join("witness")).unwrap().count() == 1,
        "one witness file"
    );

    copy_dir(&saved, &m.vault);
    let meta_before = fs::read(m.vault.join("atrest.meta")).unwrap();
    let out = m.try_mount();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("older than this host last saw") && err.contains("--accept-rollback"),
        "{err}"
    );
    assert!(err.contains("disk: checkpoint") && err.contains("witnessed: checkpoint"));
    assert!(fs::read(m.vault.join("atrest.meta")).unwrap() == meta_before);

    let status = m.command().arg("status").arg(&m.vault).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("witness:    local only")
            && text.contains("rollback of the whole disk cannot be detected"),
        "{text}"
    );
    let json = m
        .command()
        .args(["status", "--json"])
        .arg(&m.vault)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["witness"]["detects_whole_disk_rollback"], false);

    let out = m.try_mount_with(&["--accept-rollback"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rollback accepted (older)"), "{err}");
    assert!(
        m.log_text().contains("rollback accepted"),
        "{}",
        m.log_text()
    );
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"before the copy");
    assert!(!m.path("later").exists());
    m.unmount();

    // kill -9 of the mount, twice (the second time of a vault the first
    // mount after a kill recovered and checkpointed): the next mount finds
    // the witnessed generation in the vault's lineage.
    for _ in 0..2 {
        let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
        let mut file = fs::File::create(m.path("during")).unwrap();
        file.write_all(b"fsynced").unwrap();
        file.sync_all().unwrap();
        drop(file);
        fg.kill();
        detach(&m.mnt).unwrap();
        drop(fg);
        m.mount();
        assert_eq!(fs::read(m.path("during")).unwrap(), b"fsynced");
        m.unmount();
    }
}

/// Requests in parallel (reads run outside the store's lock, writes seal
/// outside it, `fsync`s flush outside it and share the log's flush):
/// four writers, each rewriting its own file at random offsets and
/// fsyncing, while two readers read a shared file through and check it;
/// then kill -9 of the mount. Every reader saw the shared file's bytes,
/// every writer read back its own model, and after recovery (fsck's,
/// then the mount's) every file holds its model: a kill -9 of the mount
/// alone loses nothing (§16.15), fsync'ed or not.
#[test]
fn parallel_reads_writes_and_fsyncs_agree_and_survive_kill_9() {
    let mut m = vault();
    let shared = pattern(99, 3 << 20);
    fs::write(m.path("shared"), &shared).unwrap();
    m.unmount();
    let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (path, shared, stop) = (m.path("shared"), shared.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 2 {
                    let data = fs::read(&path).unwrap();
                    assert!(data == shared, "reader {r}: the shared file differs");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let path = m.path(&format!("w{w}"));
            std::thread::spawn(move || -> Vec<u8> {
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let mut model = Vec::new();
                let mut x = w + 1;
                for i in 0..60u64 {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let offset = ((x >> 33) % 200_000) as usize;
                    let data = pattern(w * 1000 + i, 1 + ((x >> 13) % 20_000) as usize);
                    file.write_all_at(&data, offset as u64).unwrap();
                    if model.len() < offset + data.len() {
                        model.resize(offset + data.len(), 0);
                    }
                    model[offset..offset + data.len()].copy_from_slice(&data);
                    if i % 3 == 0 {
                        file.sync_all().unwrap();
                    }
                    let mut back = vec![0; model.len()];
                    file.read_exact_at(&mut back, 0).unwrap();
                    assert!(
                        back == model,
                        "writer {w}, step {i}: reads back another file"
                    );
                }
                model
            })
        })
        .collect();
    let models: Vec<Vec<u8>> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() >= 2);
    }
    fg.kill();
    detach(&m.mnt).unwrap();
    drop(fg);
    assert_fsck_clean(&m);
    m.mount();
    for (w, model) in models.iter().enumerate() {
        let found = fs::read(m.path(&format!("w{w}"))).unwrap();
        assert!(
            found == *model,
            "writer {w}: its file differs after recovery"
        );
    }
    assert!(fs::read(m.path("shared")).unwrap() == shared);
}
