//! A flipped bit, a truncated block, swapped blocks or a swapped name read
//! as EIO (with a log line naming the file), never as wrong plaintext; fsck
//! finds each one.

use std::fs;
use std::os::unix::fs::FileExt;

use crate::common::{Mounted, ok, pattern, run};

fn eio(result: std::io::Result<Vec<u8>>) -> bool {
    matches!(result, Err(e) if e.raw_os_error() == Some(libc_eio()))
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn tampering_reads_as_eio_and_fsck_finds_it() {
    let mut m = Mounted::new();
    // Distinct sizes so each backing file can be told apart.
    let a = pattern(1, 3 * 4096);
    let b = pattern(2, 2 * 4096 + 5);
    let c = pattern(3, 100);
    fs::write(m.path("flip"), &a).unwrap();
    fs::write(m.path("swap"), &b).unwrap();
    fs::write(m.path("trunc"), &c).unwrap();
    fs::write(m.path("renamed-a"), b"A").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/renamed-b"), b"BB").unwrap();
    m.unmount();

    // 1. A flipped bit in the middle block.
    let flip = m.backing_file_of_len(18 + 3 * 4124);
    let mut byte = [0u8; 1];
    let pos = 18 + 4124 + 2000;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&flip)
        .unwrap();
    f.read_exact_at(&mut byte, pos).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], pos).unwrap();
    // 2. Two blocks swapped.
    let swap = m.backing_file_of_len(18 + 2 * 4124 + 5 + 28);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&swap)
        .unwrap();
    let mut b0 = vec![0u8; 4124];
    let mut b1 = vec![0u8; 4124];
    f.read_exact_at(&mut b0, 18).unwrap();
    f.read_exact_at(&mut b1, 18 + 4124).unwrap();
    f.write_all_at(&b1, 18).unwrap();
    f.write_all_at(&b0, 18 + 4124).unwrap();
    // 3. A truncated last block.
    let trunc = m.backing_file_of_len(18 + 100 + 28);
    fs::OpenOptions::new()
        .write(true)
        .open(&trunc)
        .unwrap()
        .set_len(18 + 60)
        .unwrap();
    // 4. Names swapped between two directories (the name is bound to its
    //    directory id, so it no longer decrypts and is not listed).
    let top_a = m
        .backing_files()
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() == 18 + 1 + 28)
        .unwrap();
    let sub_b = m
        .backing_files()
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() == 18 + 2 + 28)
        .unwrap();
    let (a_name, b_name) = (
        top_a.file_name().unwrap().to_owned(),
        sub_b.file_name().unwrap().to_owned(),
    );
    fs::rename(&top_a, sub_b.parent().unwrap().join(&a_name)).unwrap();
    fs::rename(&sub_b, top_a.parent().unwrap().join(&b_name)).unwrap();

    let out = run(&[&"fsck", &m.vault, &"--passphrase-file", &m.pass, &"--json"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "fsck exit code: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    let text = serde_json::to_string(problems).unwrap();
    for p in [&flip, &swap, &trunc] {
        let rel = p.strip_prefix(&m.vault).unwrap().to_str().unwrap();
        assert!(text.contains(rel), "fsck missed {rel}: {text}");
    }
    assert!(
        text.contains(a_name.to_str().unwrap()) && text.contains(b_name.to_str().unwrap()),
        "{text}"
    );
    assert!(
        text.contains("\"/flip\"") || text.contains("/flip"),
        "plaintext path named: {text}"
    );

    m.mount();
    assert_eq!(
        &fs::read(m.path("flip"))
            .map(|_| ())
            .err()
            .map(|e| e.raw_os_error()),
        &Some(Some(5))
    );
    // The blocks that were not touched still read.
    let f = fs::File::open(m.path("flip")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(first, a[..4096]);
    drop(f);
    assert!(eio(fs::read(m.path("swap"))));
    assert!(eio(fs::read(m.path("trunc"))));
    assert!(!m.path("renamed-a").exists() && !m.path("dir/renamed-b").exists());
    let log = m.log_text();
    let flip_rel = flip
        .strip_prefix(&m.vault)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        log.contains(&flip_rel) && log.contains("EIO"),
        "log does not name the file: {log}"
    );

    // The config: one flipped copy is survived (and repaired).
    m.unmount();
    let conf = m.vault.join("atrest.conf");
    let mut bytes = fs::read(&conf).unwrap();
    bytes[40] ^= 1;
    fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::write(&conf, &bytes).unwrap();
    let status = ok(&[&"status", &m.vault]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("warning"));
    m.mount();
    assert_eq!(
        fs::read(m.path("trunc"))
            .map(|_| ())
            .err()
            .map(|e| e.raw_os_error()),
        Some(Some(5))
    );
}
