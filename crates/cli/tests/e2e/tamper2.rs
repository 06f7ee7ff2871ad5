//! Attacks on the backing directory of an unmounted format 2 vault
//! (docs/plans/format-2.md, stage 3; decision 0011's integrity table),
//! each asserting what the user then sees through the mount: `EIO` on
//! the object with a log line naming it, a refused mount with a message
//! naming what failed, or, for what format 2 does not trust (backing
//! modes and owners, files it never wrote), nothing at all; and, before
//! the mount, what `atrest fsck` says of it (stage 4): exit 4 with a
//! `corrupt` finding naming the object where it is damage, exit 0 where
//! the mount never reads what was changed.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{Format, Fsck, Mounted, copy_dir, fsck, pattern, run};

const EIO: i32 = 5;

fn vault() -> Mounted {
    Mounted::with_format(Format::V2)
}

/// The data file of the plaintext file `rel`, relative to the vault
/// (inode numbers are object ids; docs/format.md §16.9).
fn data_name(m: &Mounted, rel: &str) -> String {
    let id = fs::metadata(m.path(rel)).unwrap().ino();
    format!("objects/{:02x}/{id:016x}", id & 0xff)
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// A vault holding "f" (`pattern(1, len)`), unmounted, and the name of
/// its data file.
fn one_file(len: usize) -> (Mounted, String) {
    let mut m = vault();
    fs::write(m.path("f"), pattern(1, len)).unwrap();
    let name = data_name(&m, "f");
    m.unmount();
    (m, name)
}

/// `rel` reads as EIO, and the mount log names the failure.
fn assert_eio(m: &Mounted, rel: &str, logged: &str) {
    assert_eq!(
        errno_of(fs::read(m.path(rel))),
        Some(EIO),
        "{rel} must read as EIO"
    );
    let log = m.log_text();
    assert!(
        log.contains(logged) && log.contains("returning EIO"),
        "the log names the failure ({logged}): {log}"
    );
}

/// The mount is refused, with a message containing `named`.
fn assert_refused(m: &mut Mounted, named: &str) {
    let out = m.try_mount();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mounted, expected a refusal naming {named}"
    );
    assert!(err.contains(named), "{err}");
}

/// `atrest fsck` of the unmounted vault exits `code` with a finding of
/// `kind` naming `named` (in its backing path or its text), if given.
fn assert_fsck(m: &Mounted, code: i32, kind: &str, named: Option<&str>) -> Fsck {
    let report = fsck(m, false);
    assert_eq!(report.code, Some(code), "fsck: {}", report.text);
    if let Some(named) = named {
        let found = report
            .problems
            .iter()
            .any(|p| p.kind == kind && (p.backing.contains(named) || p.what.contains(named)));
        assert!(found, "fsck must say {kind} {named}: {}", report.text);
    }
    report
}

/// Exit 4, a `corrupt` finding naming `named`.
fn assert_fsck_damage(m: &Mounted, named: &str) -> Fsck {
    assert_fsck(m, 4, "corrupt", Some(named))
}

/// Exit 0, with a `note` naming `named` if given.
fn assert_fsck_clean(m: &Mounted, named: Option<&str>) {
    assert_fsck(m, 0, "note", named);
}

/// The log sequence number of the vault's last checkpoint, as `status`
/// reads it before unlock.
fn checkpoint_sequence(m: &Mounted) -> u64 {
    let out = run(&[&"status", &m.vault, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["metadata"]["sequence"].as_u64().unwrap()
}

/// `fsck --repair` of the unmounted vault exits 0 having repaired a
/// finding naming `named`; then `fsck` finds nothing at all, and the
/// vault's sequence only grew (a repair never looks like a rollback).
fn assert_repaired(m: &Mounted, named: &str) {
    let before = checkpoint_sequence(m);
    let report = fsck(m, true);
    assert_eq!(report.code, Some(0), "fsck --repair: {}", report.text);
    assert!(
        report
            .repaired
            .iter()
            .any(|p| p.backing.contains(named) || p.what.contains(named)),
        "fsck --repair must repair {named}: {}",
        report.text
    );
    let after = fsck(m, false);
    assert!(
        after.code == Some(0) && after.problems.is_empty(),
        "after --repair: {}",
        after.text
    );
    assert!(checkpoint_sequence(m) > before, "the sequence must grow");
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn older_data_file() {
    let mut m = vault();
    fs::write(m.path("f"), pattern(1, 3 * 4096)).unwrap();
    let name = data_name(&m, "f");
    let data = m.vault.join(&name);
    m.unmount();
    let old = fs::read(&data).unwrap();
    m.mount();
    // Overwrites are journaled and land in place at the checkpoint.
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap()
        .write_all_at(&pattern(2, 4096), 4096)
        .unwrap();
    m.unmount();
    assert_ne!(fs::read(&data).unwrap(), old);
    fs::write(&data, &old).unwrap();
    assert_fsck_damage(&m, &name);
    m.mount();
    assert_eio(&m, "f", &name);
}

#[test]
fn zeroed_block() {
    let (mut m, name) = one_file(3 * 4096);
    rewrite(&m.vault.join(&name), |b| b[4096..8192].fill(0));
    assert!(assert_fsck_damage(&m, &name).text.contains("block 1:"));
    m.mount();
    assert_eio(
        &m,
        "f",
        &format!(
            "block 1 failed authentication (object {}",
            fs::metadata(m.path("f")).unwrap().ino()
        ),
    );
    assert_eio(&m, "f", &name);
    // The other blocks still read.
    let f = fs::File::open(m.path("f")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(first, pattern(1, 3 * 4096)[..4096]);
    drop(f);
    // --repair makes the failed block a hole: zeros, the rest as it was.
    m.unmount();
    assert_repaired(&m, &name);
    m.mount();
    let mut expected = pattern(1, 3 * 4096);
    expected[4096..8192].fill(0);
    assert!(fs::read(m.path("f")).unwrap() == expected);
}

#[test]
fn truncated_to_nothing() {
    let (mut m, name) = one_file(10_000);
    fs::OpenOptions::new()
        .write(true)
        .open(m.vault.join(&name))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(assert_fsck_damage(&m, &name).text.contains("block 0:"));
    m.mount();
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 10_000);
    assert_eio(
        &m,
        "f",
        &format!(
            "block 0 of object {}",
            fs::metadata(m.path("f")).unwrap().ino()
        ),
    );
    assert_eio(&m, "f", &name);
}

#[test]
fn deleted_data_file() {
    let (mut m, name) = one_file(5000);
    fs::remove_file(m.vault.join(&name)).unwrap();
    assert_fsck_damage(&m, &name);
    m.mount();
    assert_eio(&m, "f", &name);
    m.unmount();
    assert_repaired(&m, &name);
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), vec![0u8; 5000]);
}

#[test]
fn swapped_data_files() {
    let mut m = vault();
    fs::write(m.path("a"), pattern(1, 8192)).unwrap();
    fs::write(m.path("b"), pattern(2, 8192)).unwrap();
    let (name_a, name_b) = (data_name(&m, "a"), data_name(&m, "b"));
    let (a, b) = (m.vault.join(&name_a), m.vault.join(&name_b));
    m.unmount();
    let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    fs::write(&a, bytes_b).unwrap();
    fs::write(&b, bytes_a).unwrap();
    assert_fsck_damage(&m, &name_a);
    assert_fsck_damage(&m, &name_b);
    m.mount();
    assert_eio(&m, "a", &name_a);
    assert_eio(&m, "b", &name_b);
}

/// A vault holding directory `d` with 20 files and two symlinks with
/// targets too long for their records (blob pages), unmounted.
fn populated() -> Mounted {
    let mut m = vault();
    fs::create_dir(m.path("d")).unwrap();
    for i in 0..20 {
        fs::write(m.path(&format!("d/file-{i}")), i.to_string()).unwrap();
    }
    for name in ["a", "b"] {
        std::os::unix::fs::symlink(target_of(name), m.path(&format!("d/link-{name}"))).unwrap();
    }
    m.unmount();
    m
}

fn target_of(link: &str) -> String {
    format!("/{}", link.repeat(200))
}

/// Reads everything of [`populated`] through the mount: never other
/// contents, and whatever fails is `EIO` with a log line naming a page of
/// atrest.meta. Whether anything failed.
fn read_populated(m: &Mounted, what: &str) -> bool {
    // Entries whose records fail are left out, and logged.
    let mut failed = fs::read_dir(m.path("d"))
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map(|names| names.len() != 22)
        .unwrap_or_else(|e| {
            assert_eq!(e.raw_os_error(), Some(EIO), "{what}: {e}");
            true
        });
    let mut eio = |r: std::io::Error| {
        assert_eq!(r.raw_os_error(), Some(EIO), "{what}: {r}");
        failed = true;
    };
    for i in 0..20 {
        match fs::read(m.path(&format!("d/file-{i}"))) {
            Ok(data) => assert_eq!(data, i.to_string().as_bytes(), "{what}"),
            Err(e) => eio(e),
        }
    }
    for name in ["a", "b"] {
        match fs::read_link(m.path(&format!("d/link-{name}"))) {
            Ok(target) => assert_eq!(target.to_str(), Some(&*target_of(name)), "{what}"),
            Err(e) => eio(e),
        }
    }
    if failed {
        let log = m.log_text();
        assert!(
            log.contains("of atrest.meta") && log.contains("returning EIO"),
            "{what}: a failure, and nothing logged: {log}"
        );
    }
    failed
}

/// Every page of [`populated`]'s atrest.meta past the superblocks, one at
/// a time, with `change` applied (to a fresh copy each time: every mount
/// checkpoints at unmount): a refused mount naming atrest.meta, or
/// [`read_populated`]'s checks. What each detecting page's message said.
fn change_each_page(m: &mut Mounted, change: impl Fn(&mut [u8], usize)) -> Vec<(usize, String)> {
    let meta = m.vault.join("atrest.meta");
    let pages = fs::metadata(&meta).unwrap().len() as usize / 4096;
    assert!(pages > 2, "atrest.meta holds pages past its superblocks");
    let copy = m.dir.path().join("copy");
    copy_dir(&m.vault, &copy);
    let mut detected = Vec::new();
    // Each round starts from the copy as a host that never saw the vault
    // would: this host's witness saw the last round's unmount, and would
    // refuse the copy as a rollback before any page is read.
    let forget = |m: &Mounted| {
        let _ = fs::remove_dir_all(m.state().join("witness"));
    };
    for page in 2..pages {
        copy_dir(&copy, &m.vault);
        forget(m);
        rewrite(&meta, |b| change(b, page));
        let _ = fs::remove_file(&m.log);
        // What fsck says, asserted below once the mount has shown whether
        // the change matters (a page no longer in use is never read).
        let checked = fsck(m, false);
        let out = m.try_mount();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(err.contains("atrest.meta"), "page {page}: {err}");
            assert_eq!(checked.code, Some(4), "page {page}: {}", checked.text);
            assert!(checked.text.contains("atrest.meta"), "{}", checked.text);
            detected.push((page, err));
            continue;
        }
        if read_populated(m, &format!("page {page}")) {
            assert_eq!(checked.code, Some(4), "page {page}: {}", checked.text);
            assert!(checked.text.contains("atrest.meta"), "{}", checked.text);
            detected.push((page, m.log_text()));
        }
        m.unmount();
    }
    copy_dir(&copy, &m.vault);
    forget(m);
    detected
}

fn flip_a_byte(bytes: &mut [u8], page: usize) {
    bytes[page * 4096 + 1000] ^= 0x01;
}

/// Every page changed in turn: never other contents, and the page kind
/// `kind` of atrest.meta is among those detected and named.
fn a_changed_page_of_kind_is_detected(kind: &str) {
    let mut m = populated();
    let detected = change_each_page(&mut m, flip_a_byte);
    assert!(
        detected.iter().any(|(_, said)| said.contains(kind)),
        "no {kind} detected: {detected:?}"
    );
}

/// Directory `d`'s entries.
#[test]
fn changed_directory_page() {
    a_changed_page_of_kind_is_detected("directory leaf page");
}

/// The records of the objects.
#[test]
fn changed_record_page() {
    a_changed_page_of_kind_is_detected("object table leaf page");
}

/// A page of object records changed (found by changing each page in turn
/// until `fsck` names the record of `d/link-a` as failing in an object
/// table leaf page): `fsck --repair` drops the entries naming the records
/// of that page from `d` and frees the page (exit 0, `d/link-a` among the
/// repaired); then `fsck` finds nothing, the sequence grew, and the mount
/// lists the rest of `d`, every file with its contents.
#[test]
fn changed_record_page_repaired() {
    let m = populated();
    let meta = m.vault.join("atrest.meta");
    let pages = fs::metadata(&meta).unwrap().len() as usize / 4096;
    let copy = m.dir.path().join("copy");
    copy_dir(&m.vault, &copy);
    let found = (2..pages).find(|&page| {
        copy_dir(&copy, &m.vault);
        // As in change_each_page: the last round's check was witnessed.
        let _ = fs::remove_dir_all(m.state().join("witness"));
        rewrite(&meta, |b| flip_a_byte(b, page));
        let report = fsck(&m, false);
        report.problems.iter().any(|p| {
            p.plain.as_deref() == Some("/d/link-a") && p.what.contains("object table leaf page")
        })
    });
    let page = found.unwrap_or_else(|| panic!("no page of {pages} holds d/link-a's record"));
    let damaged = fsck(&m, false);
    assert_eq!(damaged.code, Some(4), "page {page}: {}", damaged.text);
    assert_repaired(&m, "object table leaf page");

    let mut m = m;
    m.mount();
    let listed: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !listed.is_empty() && listed.len() < 22 && !listed.contains(&"link-a".to_string()),
        "{listed:?}"
    );
    for name in &listed {
        let i: usize = name.strip_prefix("file-").unwrap().parse().unwrap();
        assert_eq!(
            fs::read(m.path(&format!("d/{name}"))).unwrap(),
            i.to_string().as_bytes()
        );
    }
    assert!(!m.log_text().contains("returning EIO"), "{}", m.log_text());
    m.unmount();
    let after = assert_fsck(&m, 0, "note", None);
    assert!(after.problems.is_empty(), "{}", after.text);
}

/// The two blob pages of the long symlink targets, found by changing each
/// page in turn, swapped: both links fail, neither reads the other's
/// target.
#[test]
fn swapped_symlink_blob_pages() {
    let mut m = populated();
    let blobs: Vec<usize> = change_each_page(&mut m, flip_a_byte)
        .into_iter()
        .filter(|(_, said)| said.contains("blob page"))
        .map(|(page, _)| page)
        .collect();
    assert_eq!(blobs.len(), 2, "one blob page per long target: {blobs:?}");
    let (x, y) = (blobs[0], blobs[1]);
    rewrite(&m.vault.join("atrest.meta"), |b| {
        let first = b[x * 4096..(x + 1) * 4096].to_vec();
        b.copy_within(y * 4096..(y + 1) * 4096, x * 4096);
        b[y * 4096..(y + 1) * 4096].copy_from_slice(&first);
    });
    assert_fsck_damage(&m, "blob page");
    m.mount();
    for name in ["a", "b"] {
        assert_eq!(
            errno_of(fs::read_link(m.path(&format!("d/link-{name}")))),
            Some(EIO),
            "link-{name}"
        );
    }
    assert!(m.log_text().contains("blob page"));
}

/// An xattr page of one file changed on the disk, found by changing each
/// page in turn until `fsck` names it (exit 4, the page and the object):
/// through the mount that file's attributes are `EIO`, logged naming the
/// page; its contents and every other object's attributes are unchanged.
#[test]
fn changed_xattr_page() {
    use rustix::fs::{XattrFlags, getxattr, listxattr, setxattr};
    let mut m = vault();
    fs::write(m.path("f"), b"contents").unwrap();
    fs::write(m.path("g"), b"other").unwrap();
    setxattr(m.path("f"), "user.k", b"value", XattrFlags::empty()).unwrap();
    setxattr(m.path("g"), "user.k", b"kept", XattrFlags::empty()).unwrap();
    let id = fs::metadata(m.path("f")).unwrap().ino();
    m.unmount();
    let meta = m.vault.join("atrest.meta");
    let pages = fs::metadata(&meta).unwrap().len() as usize / 4096;
    let copy = m.dir.path().join("copy");
    copy_dir(&m.vault, &copy);
    let named = |page: usize| format!("xattr page {page} of atrest.meta (object {id})");
    let found = (2..pages).find(|&page| {
        copy_dir(&copy, &m.vault);
        rewrite(&meta, |b| flip_a_byte(b, page));
        let report = fsck(&m, false);
        let hit = report
            .problems
            .iter()
            .any(|p| p.what.contains(&named(page)));
        if hit {
            assert_eq!(report.code, Some(4), "{}", report.text);
            assert!(
                report
                    .problems
                    .iter()
                    .all(|p| p.kind != "corrupt" || p.what.contains(&named(page))),
                "only the xattr page is damage: {}",
                report.text
            );
        }
        hit
    });
    let page = found.unwrap_or_else(|| panic!("no page of {pages} named as f's xattr page"));
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"contents");
    let mut buf = [0u8; 64];
    assert_eq!(
        getxattr(m.path("f"), "user.k", &mut buf[..]).map_err(|e| e.raw_os_error()),
        Err(EIO)
    );
    assert_eq!(
        listxattr(m.path("f"), &mut buf[..]).map_err(|e| e.raw_os_error()),
        Err(EIO)
    );
    let n = getxattr(m.path("g"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    let log = m.log_text();
    assert!(
        log.contains(&format!("xattr page {page} of atrest.meta")) && log.contains("returning EIO"),
        "{log}"
    );
    // Not something --repair fixes: still damage, and said so.
    m.unmount();
    let repaired = fsck(&m, true);
    assert_eq!(repaired.code, Some(4), "{}", repaired.text);
    assert!(
        repaired.text.contains("does not repair"),
        "{}",
        repaired.text
    );
}

/// One block of a data file put back from before it was overwritten (the
/// rest of the file current).
#[test]
fn older_block() {
    let (mut m, name) = one_file(3 * 4096);
    let data = m.vault.join(&name);
    let old = fs::read(&data).unwrap();
    m.mount();
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap()
        .write_all_at(&pattern(2, 3 * 4096), 0)
        .unwrap();
    m.unmount();
    rewrite(&data, |b| b[4096..8192].copy_from_slice(&old[4096..8192]));
    assert!(assert_fsck_damage(&m, &name).text.contains("block 1:"));
    m.mount();
    assert_eio(&m, "f", &name);
    let f = fs::File::open(m.path("f")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(first, pattern(2, 3 * 4096)[..4096], "block 0 is current");
}

/// Zeros over part of a sealed block (format 1's hole rule would have
/// read them as zeros): no block is ever all zeros on the disk, so this
/// is a failed block.
#[test]
fn zero_region_where_map_says_sealed() {
    let (mut m, name) = one_file(2 * 4096);
    rewrite(&m.vault.join(&name), |b| b[100..3000].fill(0));
    assert_fsck_damage(&m, &name);
    m.mount();
    assert_eio(&m, "f", &name);
}

#[test]
fn older_meta_file() {
    let mut m = vault();
    fs::write(m.path("first"), b"1").unwrap();
    m.unmount();
    let meta = m.vault.join("atrest.meta");
    let old = fs::read(&meta).unwrap();
    m.mount();
    fs::write(m.path("second"), b"2").unwrap();
    m.unmount();
    rewrite(&meta, |b| *b = old.clone());
    assert_fsck_damage(&m, "the vault's metadata cannot be opened");
    assert_refused(&mut m, "the vault's metadata cannot be opened");
}

#[test]
fn planted_data_file_ignored() {
    let mut m = vault();
    fs::write(m.path("f"), b"real").unwrap();
    m.unmount();
    // Under ids the vault has not handed out, and one it has not used.
    for id in [0x2au64, 0x1_0000] {
        let path = m.vault.join(format!("objects/{:02x}/{id:016x}", id & 0xff));
        fs::write(path, pattern(9, 8192)).unwrap();
    }
    assert_fsck_clean(&m, Some("objects/2a/000000000000002a"));
    assert_fsck_clean(&m, Some("objects/00/0000000000010000"));
    // A name atrest never writes: no crash leaves it.
    fs::write(m.vault.join("objects/zz"), b"planted").unwrap();
    assert_fsck_damage(&m, "objects/zz");
    m.mount();
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"real");
    // New files are whole, even under an id a planted file sat on.
    for i in 0..50 {
        fs::write(m.path(&format!("n{i}")), pattern(i, 100)).unwrap();
    }
    for i in 0..50 {
        assert_eq!(fs::read(m.path(&format!("n{i}"))).unwrap(), pattern(i, 100));
    }
}

/// Files planted in the backing directory outside `objects/` (its root and
/// `atrest.log/`): never read by the mount, damage for `fsck` (exit 4,
/// each named), left in place by `fsck --repair` (someone's data, maybe);
/// once moved out, `fsck` is clean.
#[test]
fn planted_files_outside_objects() {
    let mut m = vault();
    fs::write(m.path("f"), b"real").unwrap();
    m.unmount();
    let planted = [m.vault.join("notes.txt"), m.vault.join("atrest.log/extra")];
    for path in &planted {
        fs::write(path, b"planted").unwrap();
    }
    let report = assert_fsck_damage(&m, "notes.txt");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "corrupt" && p.backing == "atrest.log/extra"),
        "{}",
        report.text
    );
    let repaired = fsck(&m, true);
    assert_eq!(repaired.code, Some(4), "{}", repaired.text);
    assert!(
        planted.iter().all(|p| p.exists()),
        "--repair removes nothing of them"
    );
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"real");
    m.unmount();
    for path in &planted {
        fs::remove_file(path).unwrap();
    }
    assert_fsck_clean(&m, None);
}

#[test]
fn changed_backing_modes_and_owners_ignored() {
    let mut m = vault();
    fs::write(m.path("f"), b"contents").unwrap();
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let data = m.vault.join(data_name(&m, "f"));
    m.unmount();
    for path in [&data, &m.vault.join("atrest.meta")] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o6777)).unwrap();
        std::os::unix::fs::chown(path, Some(4321), Some(4321)).unwrap();
    }
    assert_fsck_clean(&m, None);
    m.mount();
    let meta = fs::metadata(m.path("f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(fs::read(m.path("f")).unwrap(), b"contents");
}

#[test]
fn copied_data_file() {
    let mut m = vault();
    fs::write(m.path("a"), pattern(1, 8192)).unwrap();
    fs::write(m.path("b"), pattern(2, 8192)).unwrap();
    let (name_a, name_b) = (data_name(&m, "a"), data_name(&m, "b"));
    m.unmount();
    fs::copy(m.vault.join(&name_a), m.vault.join(&name_b)).unwrap();
    assert_fsck_damage(&m, &name_b);
    m.mount();
    assert_eq!(fs::read(m.path("a")).unwrap(), pattern(1, 8192));
    assert_eio(&m, "b", &name_b);
}

#[test]
fn truncated_at_block_boundary() {
    let (mut m, name) = one_file(3 * 4096);
    fs::OpenOptions::new()
        .write(true)
        .open(m.vault.join(&name))
        .unwrap()
        .set_len(2 * 4096)
        .unwrap();
    assert!(assert_fsck_damage(&m, &name).text.contains("block 2:"));
    m.mount();
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 3 * 4096);
    assert_eio(&m, "f", &name);
}

/// Bytes appended to a data file are past every block the map seals: the
/// size is the authenticated one and the contents are unchanged.
#[test]
fn appended_bytes() {
    let (mut m, name) = one_file(5000);
    let mut data = fs::OpenOptions::new()
        .append(true)
        .open(m.vault.join(&name))
        .unwrap();
    std::io::Write::write_all(&mut data, &[0u8; 3 * 4096]).unwrap();
    drop(data);
    assert_fsck_clean(&m, Some(&name));
    assert_repaired(&m, &name);
    assert_eq!(fs::metadata(m.vault.join(&name)).unwrap().len(), 8192);
    m.mount();
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 5000);
    assert_eq!(fs::read(m.path("f")).unwrap(), pattern(1, 5000));
}

#[test]
fn data_file_moved_to_another_subdirectory() {
    let (mut m, name) = one_file(5000);
    let from = m.vault.join(&name);
    let to = m.vault.join("objects/ff").join(from.file_name().unwrap());
    fs::rename(&from, &to).unwrap();
    assert_fsck_damage(&m, &name);
    m.mount();
    assert_eio(&m, "f", &name);
}

#[test]
fn deleted_meta_file() {
    let mut m = vault();
    fs::write(m.path("f"), b"x").unwrap();
    m.unmount();
    fs::remove_file(m.vault.join("atrest.meta")).unwrap();
    assert_fsck_damage(&m, "atrest.meta is missing");
    assert_refused(&mut m, "atrest.meta is missing");
}

#[test]
fn deleted_log_segment() {
    let mut m = vault();
    fs::write(m.path("f"), b"x").unwrap();
    m.unmount();
    for segment in fs::read_dir(m.vault.join("atrest.log")).unwrap() {
        fs::remove_file(segment.unwrap().path()).unwrap();
    }
    assert_fsck_damage(&m, "atrest.log/");
    assert_refused(&mut m, "atrest.log/");
}

/// Device nodes, set-user-id files and symlinks planted in the backing
/// directory are never listed: format 2 lists what its metadata names.
#[test]
fn planted_device_node_and_setuid_file_ignored() {
    let mut m = vault();
    fs::write(m.path("f"), b"real").unwrap();
    m.unmount();
    let objects = m.vault.join("objects/00");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        objects.join("0000000000000100"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let setuid = m.vault.join("objects/01/0000000000000101");
    fs::write(&setuid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", m.vault.join("shadow")).unwrap();
    // The device node is no regular file (damage: no crash leaves one);
    // the set-user-id file is under a data file's name (a note).
    let report = assert_fsck_damage(&m, "objects/00/0000000000000100");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "note" && p.backing == "objects/01/0000000000000101"),
        "{}",
        report.text
    );
    // The symlink in the backing directory's root: no crash leaves one.
    assert!(
        report.problems.iter().any(|p| p.kind == "corrupt"
            && p.backing == "shadow"
            && p.what.contains("not something atrest wrote")),
        "{}",
        report.text
    );
    m.mount();
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(errno_of(fs::metadata(m.path("shadow"))), Some(2));
}

/// The config put back from before a keyslot change (both copies, so it
/// authenticates and neither copy repairs it): the checkpoint written
/// since records the newer config's generation, so the mount is refused.
#[test]
fn config_rolled_back() {
    let mut m = vault();
    fs::write(m.path("f"), b"x").unwrap();
    m.unmount();
    let old: Vec<_> = ["atrest.conf", "atrest.conf.bak"]
        .iter()
        .map(|n| (n, fs::read(m.vault.join(n)).unwrap()))
        .collect();
    let key = m.dir.path().join("key.bin");
    crate::common::ok(&[
        &"keyslot",
        &"add",
        &m.vault,
        &"--kind",
        &"key-file",
        &"--new-key-file",
        &key,
        &"--passphrase-file",
        &m.pass,
    ]);
    m.mount();
    m.unmount();
    for (name, bytes) in &old {
        rewrite(&m.vault.join(name), |b| *b = bytes.clone());
    }
    assert_fsck_damage(&m, "older than the vault's metadata");
    assert_refused(&mut m, "older than the vault's metadata");
}
