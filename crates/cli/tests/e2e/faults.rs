//! Failures around the mount: a full backing file system, a mount process
//! killed with SIGKILL, and mount requests that must be refused.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{
    Foreground, Format, Mounted, SmallFs, detach, errno, fsck, is_mount_point, on_both_formats,
    pattern, run, wait_for,
};

// The ENOSPC and SIGKILL tests here (which end with fsck) make format 1
// vaults only; format2.rs has its own kill -9 tests, which end with fsck
// on format 2.
on_both_formats!(
    atrest_unmount_cleans_up_a_dead_mount_and_mount_says_what_is_wrong,
    mount_refuses_bad_mount_points_and_non_vaults,
);

const ENOSPC: i32 = 28;
const ENOTCONN: i32 = 107;
const ECONNABORTED: i32 = 103;

/// Fills the file system the vault lives on through the mount, and checks
/// that nothing acknowledged is lost and the failure is ENOSPC.
fn fill_up_and_check(small: &SmallFs, what: &str) {
    let mut m = Mounted::new_in(small.path());

    // A first file, written completely and fsync'ed.
    let first = pattern(1, (1 << 20) + 12_345);
    let mut f = File::create(m.path("first")).unwrap();
    f.write_all(&first).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // A second one, appended to until the file system is full: big chunks,
    // then smaller ones to squeeze out the last blocks. Unaligned sizes, so
    // the last block is read, resealed and rewritten on every write.
    let second = m.path("second");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&second)
        .unwrap();
    let mut acked: Vec<u8> = Vec::new();
    let mut failures: Vec<(usize, std::io::Error)> = Vec::new();
    for chunk in [65_537usize, 4099, 1] {
        loop {
            let data = pattern(acked.len() as u64 + 7, chunk);
            match f.write(&data) {
                Ok(0) => panic!("{what}: write returned 0"),
                Ok(n) => acked.extend_from_slice(&data[..n]),
                Err(e) => {
                    failures.push((chunk, e));
                    break;
                }
            }
            assert!(
                acked.len() < 256 << 20,
                "{what}: the small file system never filled up"
            );
        }
    }
    for (chunk, e) in &failures {
        assert_eq!(
            e.raw_os_error(),
            Some(ENOSPC),
            "{what}: a write of {chunk} bytes failed with {e}, not ENOSPC"
        );
    }
    // The file is exactly what was acknowledged, nothing of the failed writes.
    assert_eq!(
        f.metadata().unwrap().len(),
        acked.len() as u64,
        "{what}: size after the failed writes"
    );
    drop(f);

    // Full now: creating a file either works or fails with ENOSPC, and then
    // the file does not exist (as on ext4). A write to a created one fails
    // with ENOSPC and leaves it empty.
    let long = "n".repeat(200); // hashed name with a side file on the backing side
    // What went wrong here, asserted at the end (after the data checks).
    let mut wrong: Vec<String> = Vec::new();
    for name in ["third", long.as_str()] {
        let short = &name[..5];
        match errno(File::create(m.path(name))) {
            Ok(mut f) => {
                let w = errno(f.write_all(&[b'x'; 5000]));
                let len = fs::metadata(m.path(name)).unwrap().len();
                if !matches!(w, Ok(()) | Err(ENOSPC)) || len != if w.is_ok() { 5000 } else { 0 } {
                    wrong.push(format!(
                        "writing 5000 bytes to new file {short}: {w:?}, size now {len}"
                    ));
                }
            }
            Err(e) => {
                let exists = fs::symlink_metadata(m.path(name)).is_ok();
                let listed = fs::read_dir(&m.mnt)
                    .unwrap()
                    .any(|e| e.unwrap().file_name() == name);
                if e != ENOSPC || exists || listed {
                    wrong.push(format!(
                        "creating {short} failed with errno {e}, yet stat finds it: {exists}, readdir lists it: {listed}"
                    ));
                }
            }
        }
    }
    match errno(fs::create_dir(m.path("newdir"))) {
        Ok(()) => {}
        Err(e) => {
            if e != ENOSPC || m.path("newdir").exists() {
                wrong.push(format!(
                    "mkdir failed with errno {e}, exists: {}",
                    m.path("newdir").exists()
                ));
            }
        }
    }

    let check = |m: &Mounted, when: &str| {
        assert!(
            fs::read(m.path("first")).unwrap() == first,
            "{what}: first file damaged ({when})"
        );
        let back = fs::read(m.path("second")).unwrap();
        assert_eq!(
            back.len(),
            acked.len(),
            "{what}: second file's size ({when})"
        );
        let bad = back.iter().zip(&acked).position(|(a, b)| a != b);
        assert_eq!(
            bad, None,
            "{what}: second file differs from what was acknowledged ({when})"
        );
    };
    check(&m, "still mounted");
    m.remount();
    check(&m, "after remount");

    m.unmount();
    let checked = fsck(&m, false);
    let (code, problems, text) = (checked.code, checked.problems, checked.text);

    // With space freed, writes work again.
    m.mount();
    fs::remove_file(m.path("second")).unwrap();
    fs::write(m.path("after"), pattern(9, 300_000)).unwrap();
    assert!(fs::read(m.path("after")).unwrap() == pattern(9, 300_000));

    assert!(
        wrong.is_empty(),
        "{what}: on the full file system:\n{}\nfsck then said: {text}",
        wrong.join("\n")
    );
    assert!(
        problems.is_empty() && code == Some(0),
        "{what}: fsck after ENOSPC: {text}"
    );
}

#[test]
fn enospc_on_a_full_tmpfs_fails_cleanly_and_loses_nothing() {
    let small = SmallFs::tmpfs(8);
    fill_up_and_check(&small, "tmpfs");
}

#[test]
fn enospc_on_a_full_ext4_fails_cleanly_and_loses_nothing() {
    let small = SmallFs::ext4(16);
    fill_up_and_check(&small, "ext4");
}

#[derive(Default)]
struct Writer {
    /// Files the writer thread began (it creates each one new).
    started: Vec<String>,
    /// Files completely written (every write acknowledged), with content.
    finished: Vec<(String, Vec<u8>)>,
}

#[test]
fn sigkill_of_the_mount_process_loses_no_fsynced_data() {
    let mut m = Mounted::new();
    m.unmount();
    let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
    let mnt = fg.mnt.clone();

    // Written and fsync'ed (files and directory) before the crash.
    fs::create_dir(m.path("durable")).unwrap();
    let sizes = [0usize, 1, 4095, 4096, 4097, 100_003, (1 << 20) + 1];
    let durable: Vec<(String, Vec<u8>)> = (0..14)
        .map(|i| {
            (
                format!("durable/f{i}"),
                pattern(100 + i as u64, sizes[i % sizes.len()] + i),
            )
        })
        .collect();
    for (name, data) in &durable {
        let mut f = File::create(m.path(name)).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
    }
    // One more, fsync'ed after being overwritten in place.
    let mut rewritten = pattern(200, 50_000);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("durable/rewritten"))
        .unwrap();
    f.write_all_at(&rewritten, 0).unwrap();
    f.write_all_at(b"patched in the middle", 20_000).unwrap();
    rewritten[20_000..20_021].copy_from_slice(b"patched in the middle");
    f.sync_data().unwrap();
    drop(f);
    File::open(m.path("durable")).unwrap().sync_all().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();

    // Then a thread keeps writing new files, in unaligned chunks...
    let state = Arc::new(Mutex::new(Writer::default()));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (state, progress, mnt) = (state.clone(), progress.clone(), mnt.clone());
        std::thread::spawn(move || -> std::io::Error {
            for i in 0u64.. {
                let name = format!("w{i}");
                state.lock().unwrap().started.push(name.clone());
                let data = pattern(1000 + i, 200_003 + (i as usize * 4099) % 300_000);
                let result = (|| {
                    let mut f = File::create(mnt.join(&name))?;
                    for chunk in data.chunks(12_289) {
                        f.write_all(chunk)?;
                        progress.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => state.lock().unwrap().finished.push((name, data)),
                    Err(e) => return e,
                }
            }
            unreachable!()
        })
    };
    // ...and the mount process dies in the middle of it.
    wait_for(60, "the writer thread to get going", || {
        progress.load(Ordering::SeqCst) >= 40
    });
    fg.kill();
    let err = writer.join().expect("writer thread");
    assert!(
        matches!(err.raw_os_error(), Some(ENOTCONN) | Some(ECONNABORTED)),
        "writes after the kill failed with {err}, expected ENOTCONN"
    );
    let state = std::mem::take(&mut *state.lock().unwrap());
    let in_flight: Vec<&String> = state
        .started
        .iter()
        .filter(|s| !state.finished.iter().any(|(f, _)| f == *s))
        .collect();

    assert_eq!(in_flight.len(), 1, "the writer writes one file at a time");

    // A dead mount: still listed, "not connected".
    assert!(is_mount_point(&mnt), "the dead mount vanished by itself");
    assert_eq!(errno(fs::metadata(&m.mnt).map(|_| ())), Err(ENOTCONN));
    // Clean it up as an administrator would, and mount again.
    detach(&mnt).expect("umount -l of the dead mount");
    m.mount();
    for (name, data) in &durable {
        assert!(
            fs::read(m.path(name)).unwrap() == *data,
            "fsync'ed {name} lost or damaged"
        );
    }
    assert!(
        fs::read(m.path("durable/rewritten")).unwrap() == rewritten,
        "fsync'ed durable/rewritten damaged"
    );
    // Nothing is buffered in the mount process either: every write it
    // acknowledged reached the backing file system.
    for (name, data) in &state.finished {
        assert!(
            fs::read(m.path(name)).unwrap() == *data,
            "{name}: all writes were acknowledged, yet it differs"
        );
    }
    m.unmount();
    let checked = fsck(&m, false);
    let (code, problems, text) = (checked.code, checked.problems, checked.text);
    for p in &problems {
        let (backing, what) = (&p.backing, &p.what);
        let plain = p.plain.as_deref().unwrap_or("<no plaintext path>");
        assert!(
            in_flight.iter().any(|w| plain == format!("/{w}")),
            "fsck reports {plain} ({backing}: {what}), which was not being written at the kill (in flight: {in_flight:?})\n{text}"
        );
    }
    assert_eq!(
        code,
        Some(if problems.is_empty() { 0 } else { 4 }),
        "{text}"
    );
    m.mount();
}

fn atrest_unmount_cleans_up_a_dead_mount_and_mount_says_what_is_wrong(format: Format) {
    let mut m = Mounted::with_format(format);
    m.unmount();
    let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
    fs::write(m.path("f"), b"before the kill").unwrap();
    fg.kill();
    assert_eq!(errno(fs::metadata(&m.mnt).map(|_| ())), Err(ENOTCONN));

    // Mounting over the dead mount is refused (checked below, after the
    // clean-up, so that a wrong message does not hide a failing clean-up).
    let refused = run(&[&"mount", &m.vault, &m.mnt, &"--passphrase-file", &m.pass]);
    let message = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "mounted over a dead mount");

    // The documented way to get rid of it: atrest unmount (--lazy).
    let out = run(&[&"unmount", &"--lazy", &m.mnt]);
    assert!(
        out.status.success(),
        "atrest unmount --lazy of a dead mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mount_point(&fg.mnt));
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"before the kill");

    // The refusal told the truth: the directory exists; it is a dead mount.
    assert!(
        !message.contains("does not exist"),
        "misleading error for a dead mount: {message}"
    );
    assert!(
        message.contains("dead mount") && message.contains("atrest unmount"),
        "unclear error for a dead mount: {message}"
    );
}

/// `atrest mount` with these arguments fails, and stderr contains `needle`.
fn refused(args: &[&dyn AsRef<std::ffi::OsStr>], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mount succeeded: {args:?}",
        args = args
            .iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>()
    );
    assert!(
        err.contains(needle),
        "expected an error containing {needle:?}, got: {err}"
    );
}

fn mount_refuses_bad_mount_points_and_non_vaults(format: Format) {
    let m = Mounted::with_format(format);
    let dir = m.dir.path();
    let free = dir.join("free");
    fs::create_dir(&free).unwrap();

    // The mount point is a file; or a directory with files in it.
    let file = dir.join("a-file");
    fs::write(&file, b"").unwrap();
    refused(
        &[&"mount", &m.vault, &file, &"--passphrase-file", &m.pass],
        "not a directory",
    );
    let full = dir.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("precious"), b"would be hidden").unwrap();
    refused(
        &[&"mount", &m.vault, &full, &"--passphrase-file", &m.pass],
        "not empty",
    );

    // Not vaults: a directory of ordinary files; a file; a vault whose
    // config and its backup copy are both garbage.
    let ordinary = dir.join("ordinary");
    fs::create_dir(&ordinary).unwrap();
    fs::write(ordinary.join("notes.txt"), b"hello").unwrap();
    refused(
        &[&"mount", &ordinary, &free, &"--passphrase-file", &m.pass],
        "not an atrest vault",
    );
    refused(&[&"mount", &file, &free, &"--passphrase-file", &m.pass], "");
    let broken = dir.join("broken");
    fs::create_dir(&broken).unwrap();
    for entry in fs::read_dir(&m.vault).unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("atrest.conf") {
            fs::write(broken.join(&name), vec![0x5a; 600]).unwrap();
        }
    }
    assert!(
        fs::read_dir(&broken).unwrap().count() >= 1,
        "no atrest.conf* in the vault to copy"
    );
    let out = run(&[&"mount", &broken, &free, &"--passphrase-file", &m.pass]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") || err.contains("not an atrest vault") || err.contains("bad magic"),
        "{err}"
    );
    assert!(
        !is_mount_point(&fs::canonicalize(&free).unwrap()),
        "a failed mount left a mount behind"
    );

    // The same vault through another path (a symlink to it) is still the
    // same vault: refused while mounted.
    let alias = dir.join("alias");
    std::os::unix::fs::symlink(&m.vault, &alias).unwrap();
    refused(
        &[&"mount", &alias, &free, &"--passphrase-file", &m.pass],
        "already mounted",
    );
    // And the mount that is there still works.
    fs::write(m.path("still"), b"fine").unwrap();
    assert_eq!(fs::read(m.path("still")).unwrap(), b"fine");
}
