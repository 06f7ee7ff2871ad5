//! A last block torn by a crash (format §6.5): the mount cuts it back to
//! the last complete block, `fsck` reports it as `torn:` and `fsck
//! --repair` cuts it; tampering at the end of a file stays an error.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Foreground, Mounted, detach, fsck, pattern, run, wait_for};

const HEADER: u64 = 18;
/// A sealed AES-256-GCM block (the default algorithm).
const SEALED: u64 = 4096 + 28;
const PAGE: u64 = 4096;
const EIO: i32 = 5;

fn backing_len(plain: u64) -> u64 {
    let rest = plain % 4096;
    HEADER + plain / 4096 * SEALED + if rest > 0 { rest + 28 } else { 0 }
}

/// Cuts `backing` at the last page boundary before its end, as a crash in
/// the middle of an append leaves it; returns the plaintext bytes that the
/// complete blocks before the cut hold.
fn tear(backing: &Path) -> u64 {
    let len = fs::metadata(backing).unwrap().len();
    let cut = (len - 1) / PAGE * PAGE;
    assert!(
        cut > HEADER && !(cut - HEADER).is_multiple_of(SEALED),
        "{len}: no page boundary inside its last blocks"
    );
    OpenOptions::new()
        .write(true)
        .open(backing)
        .unwrap()
        .set_len(cut)
        .unwrap();
    (cut - HEADER) / SEALED * 4096
}

fn flip_byte(path: &Path, pos: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], pos).unwrap();
}

fn rel<'a>(m: &Mounted, backing: &'a Path) -> &'a str {
    backing.strip_prefix(&m.vault).unwrap().to_str().unwrap()
}

#[test]
fn the_mount_cuts_a_torn_last_block_and_the_file_reads_to_there() {
    let mut m = Mounted::new();
    let data = pattern(7, 100_000);
    fs::write(m.path("appended"), &data).unwrap();
    fs::write(m.path("short"), pattern(8, 6_000)).unwrap();
    m.unmount();
    let backing = m.backing_file_of_len(backing_len(100_000));
    let kept = tear(&backing) as usize;
    // The other one tears inside block 0: only its header is left.
    let short = m.backing_file_of_len(backing_len(6_000));
    assert_eq!(tear(&short), 0);

    m.mount();
    assert_eq!(
        fs::metadata(m.path("appended")).unwrap().len(),
        kept as u64,
        "the size the kernel learns at lookup is the cut one"
    );
    assert!(
        fs::read(m.path("appended")).unwrap() == data[..kept],
        "the complete blocks read as they were written"
    );
    assert_eq!(fs::read(m.path("short")).unwrap(), b"");
    let log = m.log_text();
    for (file, dropped) in [
        (
            &backing,
            backing_len(100_000) / PAGE * PAGE - backing_len(kept as u64),
        ),
        (&short, PAGE - HEADER),
    ] {
        assert!(
            log.lines().any(|l| l.contains(rel(&m, file))
                && l.contains("torn")
                && l.contains(&format!("{dropped} backing bytes dropped"))),
            "no log line names {} and the {dropped} bytes dropped: {log}",
            rel(&m, file)
        );
    }
    assert_eq!(
        fs::metadata(&backing).unwrap().len(),
        backing_len(kept as u64)
    );

    // An append goes to the end of what is left, not past the old size.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("appended"))
        .unwrap();
    f.write_all(b"after the crash").unwrap();
    drop(f);
    let mut expected = data[..kept].to_vec();
    expected.extend_from_slice(b"after the crash");
    assert!(fs::read(m.path("appended")).unwrap() == expected);
    m.unmount();
    let clean = fsck(&m, false);
    assert_eq!(clean.code, Some(0), "{}", clean.text);
}

#[test]
fn fsck_reports_a_torn_tail_and_repair_cuts_it_but_not_while_mounted() {
    let mut m = Mounted::new();
    let data = pattern(9, 70_000);
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/log"), &data).unwrap();
    fs::write(m.path("intact"), pattern(10, 5_000)).unwrap();
    m.unmount();
    let backing = m.backing_file_of_len(backing_len(70_000));
    let kept = tear(&backing);
    let torn_len = fs::metadata(&backing).unwrap().len();

    // Reported, in words and in JSON, as torn; nothing is changed.
    let out = run(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("torn: "))
        .unwrap_or_else(|| panic!("no torn: line: {stdout}"));
    assert!(
        line.contains(rel(&m, &backing)) && line.contains("(/dir/log)"),
        "{line}"
    );
    assert!(!stdout.contains("corrupt:"), "{stdout}");
    let checked = fsck(&m, false);
    assert_eq!(checked.code, Some(4));
    assert_eq!(checked.problems.len(), 1, "{}", checked.text);
    assert_eq!(checked.problems[0].kind, "torn");
    assert_eq!(checked.problems[0].plain.as_deref(), Some("/dir/log"));
    assert!(checked.repaired.is_empty());
    assert_eq!(fs::metadata(&backing).unwrap().len(), torn_len);

    // Refused while mounted (the mount would cut it itself, under its own
    // lock); the message says what to do.
    let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
    let out = run(&[
        &"fsck",
        &m.vault,
        &"--passphrase-file",
        &m.pass,
        &"--repair",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unmount") && err.contains("--repair"),
        "unclear refusal: {err}"
    );
    fg.kill();
    detach(&fg.mnt).unwrap();
    // The foreground mount never looked the file up, so it is still torn.
    assert_eq!(fs::metadata(&backing).unwrap().len(), torn_len);

    let out = run(&[
        &"fsck",
        &m.vault,
        &"--passphrase-file",
        &m.pass,
        &"--repair",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("repaired: ")
            && l.contains(rel(&m, &backing))
            && l.contains("(/dir/log)")
            && l.contains(&format!(
                "{} backing bytes dropped",
                torn_len - backing_len(kept)
            ))),
        "{stdout}"
    );
    assert_eq!(fs::metadata(&backing).unwrap().len(), backing_len(kept));
    let after = fsck(&m, false);
    assert_eq!(after.code, Some(0), "{}", after.text);
    assert!(after.problems.is_empty() && after.repaired.is_empty());
    // Nothing left to repair: the same as a check.
    let again = fsck(&m, true);
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert!(again.repaired.is_empty(), "{}", again.text);

    m.mount();
    assert!(fs::read(m.path("dir/log")).unwrap() == data[..kept as usize]);
    assert!(fs::read(m.path("intact")).unwrap() == pattern(10, 5_000));
}

#[test]
fn tampering_at_the_end_of_a_file_is_not_taken_for_a_tear() {
    let mut m = Mounted::new();
    // The tag of a complete short last block, flipped.
    fs::write(m.path("tag"), pattern(11, 9_000)).unwrap();
    // A cut at a page boundary, but the block before it damaged too.
    fs::write(m.path("both"), pattern(12, 30_000)).unwrap();
    // A cut one byte short of a page boundary.
    fs::write(m.path("offpage"), pattern(13, 50_000)).unwrap();
    m.unmount();
    let tag = m.backing_file_of_len(backing_len(9_000));
    flip_byte(&tag, backing_len(9_000) - 1);
    let both = m.backing_file_of_len(backing_len(30_000));
    let kept = tear(&both);
    flip_byte(&both, HEADER + (kept / 4096 - 1) * SEALED + 100);
    let offpage = m.backing_file_of_len(backing_len(50_000));
    tear(&offpage);
    let len = fs::metadata(&offpage).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&offpage)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let before: Vec<Vec<u8>> = [&tag, &both, &offpage]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();

    for repair in [false, true] {
        let out = fsck(&m, repair);
        assert_eq!(out.code, Some(4), "{}", out.text);
        assert!(out.repaired.is_empty(), "{}", out.text);
        for p in [&tag, &both, &offpage] {
            assert!(
                out.problems
                    .iter()
                    .any(|f| f.backing == rel(&m, p) && f.kind == "corrupt"),
                "{} not reported as corrupt: {}",
                rel(&m, p),
                out.text
            );
        }
        assert!(
            out.problems.iter().all(|f| f.kind == "corrupt"),
            "{}",
            out.text
        );
    }
    m.mount();
    for name in ["tag", "both", "offpage"] {
        let err = fs::read(m.path(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO), "{name}: {err}");
    }
    m.unmount();
    let after: Vec<Vec<u8>> = [&tag, &both, &offpage]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(before == after, "a backing file was changed");
    assert!(!m.log_text().contains("torn"), "{}", m.log_text());
}

/// SIGKILL of the mount process while files grow by large appends, many
/// times over: every file reads without an error afterwards, holds every
/// byte whose write was acknowledged, and nothing but a prefix of what was
/// being written. Appends come in multiples of 4 KiB, as `cp` and most
/// writers of large data make them: a file then never has a short last
/// block to rewrite in place (format 1's known limit, format §6.5).
#[test]
fn sigkill_during_large_appends_leaves_every_file_readable() {
    const ROUNDS: u32 = 24;
    const CHUNK: usize = 1 << 20;
    let data = Arc::new(pattern(5, 16 * CHUNK));
    let mut m = Mounted::new();
    m.unmount();
    let mut tears = 0;
    for round in 0..ROUNDS {
        let mut fg = Foreground::start(&m.vault, &m.mnt, &m.pass, &m.log);
        let acked = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (acked, data) = (acked.clone(), data.clone());
            let path = fg.mnt.join(format!("round{round}"));
            // Until the kill ends it: the same 16 MiB over and over, so a
            // slow test thread cannot let the writer finish first.
            std::thread::spawn(move || -> std::io::Error {
                let mut f = match File::create(&path) {
                    Ok(f) => f,
                    Err(e) => return e,
                };
                for chunk in data.chunks(CHUNK).cycle() {
                    if let Err(e) = f.write_all(chunk) {
                        return e;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                unreachable!("cycle() never ends")
            })
        };
        // Kill after a few MiB, at a different point inside the next write
        // each round (a write takes about as long as the ones before).
        let start = std::time::Instant::now();
        let before = 2 + round as usize % 5;
        wait_for(60, "appends to get going", || {
            acked.load(Ordering::SeqCst) >= before
        });
        let per_write = start.elapsed() / before as u32;
        std::thread::sleep(per_write * (round % 8) / 8);
        fg.kill();
        writer.join().unwrap();
        detach(&fg.mnt).unwrap();
        drop(fg);
        let acked = acked.load(Ordering::SeqCst);

        // Tears as the crash left them, before the mount sees them.
        tears += m
            .backing_files()
            .iter()
            .filter(|p| {
                let len = fs::metadata(p).unwrap().len();
                len.is_multiple_of(PAGE) && !(len - HEADER).is_multiple_of(SEALED)
            })
            .count();
        m.mount();
        for earlier in 0..=round {
            let name = format!("round{earlier}");
            let got = fs::read(m.path(&name))
                .unwrap_or_else(|e| panic!("round {round}: {name} does not read: {e}"));
            assert!(
                got.chunks(data.len()).all(|c| c[..] == data[..c.len()]),
                "round {round}: {name} is not a prefix of what was written"
            );
            if earlier == round {
                assert!(
                    got.len() >= acked * CHUNK,
                    "round {round}: {} bytes, {acked} MiB acknowledged",
                    got.len()
                );
            }
        }
        m.unmount();
        let checked = fsck(&m, false);
        assert_eq!(checked.code, Some(0), "round {round}: {}", checked.text);
    }
    // Every tear was cut by the mount, with a log line each.
    let cuts = m
        .log_text()
        .lines()
        .filter(|l| l.contains("torn by a crash during a write: cut back"))
        .count();
    assert_eq!(cuts, tears, "{}", m.log_text());
    eprintln!("{ROUNDS} SIGKILLs during appends left {tears} torn last blocks");
}
