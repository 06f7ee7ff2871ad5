//! Writes the known-answer vectors under `testdata/vectors/`, which
//! `crates/vault/tests/vectors.rs` and `tests/differential/check_vectors.py`
//! check.
//!
//! ```text
//! cargo run -p atrest-vault --example make_vectors [-- OUTPUT_DIR]
//! ```
//!
//! Every file in the output directory is replaced. Keys, ids and names are
//! fixed (derived from labels), so the name, header, recovery-key and
//! key-schedule vectors come out the same on every run; sealed blocks and
//! configs carry random nonces, salts and vault ids, so those differ. The
//! committed files are the vectors: regenerate only when the format changes
//! on purpose, and say so in the commit.
//!
//! The `aead` and `aes-siv` vectors are external known answers (Wycheproof),
//! copied here so they are written with the others.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use atrest_core::{Argon2Params, ContentAlgorithm, SecretBytes, SecretKey, labels};
use atrest_vault::{
    AuthorityRef, BLOCK_SIZE, CONFIG_FILE, ContentKey, CreateOptions, EncryptedName, FileCipher,
    NameTransform, RecoveryKey, RemoteMember, Unlocker, Vault,
};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fixed pseudo-random bytes named by `label` (SHA-256 chained as needed).
fn fixed<const N: usize>(label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut block = 0u32;
    let mut done = 0;
    while done < N {
        let d = atrest_core::sha256(format!("atrest test vector {block} {label}").as_bytes());
        let n = (N - done).min(32);
        out[done..done + n].copy_from_slice(&d[..n]);
        done += n;
        block += 1;
    }
    out
}

fn alg_name(alg: ContentAlgorithm) -> &'static str {
    match alg {
        ContentAlgorithm::Aes256Gcm => "aes-256-gcm",
        ContentAlgorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
    }
}

struct Out {
    dir: PathBuf,
    names: BTreeSet<String>,
}

impl Out {
    fn write(
        &mut self,
        name: &str,
        kind: &str,
        expect: &str,
        comment: &str,
        fields: &[(&str, String)],
    ) {
        assert!(
            self.names.insert(name.to_string()),
            "duplicate vector name {name}"
        );
        assert!(!comment.contains('\n'));
        let mut text = format!("kind: {kind}\nexpect: {expect}\ncomment: {comment}\n");
        for (k, v) in fields {
            assert!(
                !v.contains('\n') && !v.starts_with(' ') && !v.ends_with(' '),
                "{name}: {k}"
            );
            text.push_str(&format!("{k}: {v}\n"));
        }
        fs::write(self.dir.join(name), text).expect("write vector");
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors"));
    fs::create_dir_all(&dir).expect("create output dir");
    for entry in fs::read_dir(&dir).expect("list output dir") {
        let path = entry.expect("dir entry").path();
        if path.is_file() {
            fs::remove_file(&path).expect("remove old vector");
        }
    }
    let mut out = Out {
        dir: dir.clone(),
        names: BTreeSet::new(),
    };
    content_blocks(&mut out);
    names(&mut out);
    metadata(&mut out);
    headers(&mut out);
    recovery_keys(&mut out);
    key_schedule(&mut out);
    keyslots(&mut out);
    external(&mut out);
    println!("wrote {} vectors to {}", out.names.len(), dir.display());
}

// ---------------------------------------------------------------- content

fn seal(fc: &FileCipher, n: u64, plain: &[u8], overhead: usize) -> Vec<u8> {
    let mut sealed = vec![0u8; plain.len() + overhead];
    fc.seal_block(n, plain, &mut sealed);
    sealed
}

fn content_blocks(out: &mut Out) {
    for alg in [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ] {
        let a = alg_name(alg);
        let short = match alg {
            ContentAlgorithm::Aes256Gcm => "gcm",
            ContentAlgorithm::XChaCha20Poly1305 => "xchacha",
        };
        let ov = alg.overhead();
        let content_key = fixed::<32>(&format!("{a} content key"));
        let file_id = fixed::<16>(&format!("{a} file id"));
        let other_id = fixed::<16>(&format!("{a} other file id"));
        let key = ContentKey::new(SecretKey::from_bytes(content_key), alg, BLOCK_SIZE);
        let fc = key.file_cipher(file_id);
        let other_fc = key.file_cipher(other_id);
        let file_key = SecretKey::from_bytes(content_key).derive(&file_id, labels::FILE_KEY);

        let base = |block: u64, id: &[u8; 16]| -> Vec<(&str, String)> {
            vec![
                ("algorithm", a.to_string()),
                ("content_key", hex(&content_key)),
                ("file_id", hex(id)),
                ("block", block.to_string()),
            ]
        };
        let ok = |out: &mut Out,
                  name: &str,
                  comment: &str,
                  block: u64,
                  sealed: &[u8],
                  plain: &[u8],
                  with_key: bool| {
            let mut f = base(block, &file_id);
            if with_key {
                f.push(("file_key", hex(file_key.expose())));
            }
            f.push(("sealed", hex(sealed)));
            f.push(("plaintext", hex(plain)));
            out.write(
                &format!("content-block-{short}-{name}"),
                "content-block",
                "success",
                comment,
                &f,
            );
        };
        let bad = |out: &mut Out,
                   name: &str,
                   expect: &str,
                   comment: &str,
                   block: u64,
                   id: &[u8; 16],
                   sealed: &[u8]| {
            let mut f = base(block, id);
            f.push(("sealed", hex(sealed)));
            out.write(
                &format!("content-block-{short}-{name}"),
                "content-block",
                expect,
                comment,
                &f,
            );
        };

        let full: Vec<u8> = (0..BLOCK_SIZE as usize)
            .map(|i| (i * 31 + i / 256) as u8)
            .collect();
        let sealed_full = seal(&fc, 0, &full, ov);
        ok(
            out,
            "full-block",
            &format!("{} full 4096-byte block 0", alg.name()),
            0,
            &sealed_full,
            &full,
            true,
        );

        let tail = b"the last, partial block of a file: 37 bytes and more text to 100 bytes in all..............".to_vec();
        let tail = tail[..tail.len().min(100)].to_vec();
        let sealed_tail = seal(&fc, 3, &tail, ov);
        ok(
            out,
            "partial-last-block",
            "a short last block (block 3) seals only its own bytes",
            3,
            &sealed_tail,
            &tail,
            true,
        );

        let one = seal(&fc, 0, b"x", ov);
        ok(out, "one-byte", "a file of one byte", 0, &one, b"x", false);

        let high = (1u64 << 40) + 5;
        let sealed_high = seal(&fc, high, b"far out", ov);
        ok(
            out,
            "high-block-number",
            "block 2^40+5: the block number is a big-endian u64 in the AAD",
            high,
            &sealed_high,
            b"far out",
            false,
        );

        ok(
            out,
            "hole-full",
            "an all-zero sealed block is a hole and reads as 4096 zeros, whatever the key",
            0,
            &vec![0u8; BLOCK_SIZE as usize + ov],
            &vec![0u8; BLOCK_SIZE as usize],
            false,
        );
        ok(
            out,
            "hole-partial",
            "an all-zero short last block is a hole of (length - overhead) zeros",
            7,
            &vec![0u8; 100 + ov],
            &[0u8; 100],
            false,
        );

        // Negatives.
        let mut flipped = sealed_full.clone();
        *flipped.last_mut().expect("non-empty") ^= 0x01;
        bad(
            out,
            "flipped-tag-bit",
            "auth-failure",
            "lowest bit of the last tag byte flipped",
            0,
            &file_id,
            &flipped,
        );
        let mut flipped = sealed_tail.clone();
        flipped[ov - 16 + 10] ^= 0x80;
        bad(
            out,
            "flipped-ciphertext-bit",
            "auth-failure",
            "one ciphertext bit flipped",
            3,
            &file_id,
            &flipped,
        );
        let mut flipped = sealed_tail.clone();
        flipped[0] ^= 0x02;
        bad(
            out,
            "flipped-nonce-bit",
            "auth-failure",
            "one nonce bit flipped",
            3,
            &file_id,
            &flipped,
        );
        bad(
            out,
            "truncated-by-one",
            "auth-failure",
            "the last byte cut off: still longer than the overhead, so it fails authentication",
            3,
            &file_id,
            &sealed_tail[..sealed_tail.len() - 1],
        );
        bad(
            out,
            "truncated-to-overhead",
            "truncated",
            "cut to exactly nonce + tag length: no block is empty, so this is refused before decryption",
            3,
            &file_id,
            &sealed_tail[..ov],
        );
        bad(
            out,
            "truncated-to-nonce",
            "truncated",
            "only the nonce is left",
            3,
            &file_id,
            &sealed_tail[..alg.nonce_len()],
        );
        bad(out, "empty", "truncated", "zero bytes", 0, &file_id, &[]);
        bad(
            out,
            "hole-of-overhead-length",
            "truncated",
            "all zero but only nonce + tag long: too short to be even a hole",
            0,
            &file_id,
            &vec![0u8; ov],
        );
        let swapped = seal(&fc, 1, &full, ov);
        bad(
            out,
            "swapped-block",
            "auth-failure",
            "block 1 of this file presented as block 0",
            0,
            &file_id,
            &swapped,
        );
        let foreign = seal(&other_fc, 0, &full, ov);
        bad(
            out,
            "other-file",
            "auth-failure",
            "block 0 of another file (another id, so another key and AAD) presented as block 0 of this file",
            0,
            &file_id,
            &foreign,
        );
        let mut almost_hole = vec![0u8; BLOCK_SIZE as usize + ov];
        almost_hole[BLOCK_SIZE as usize / 2] = 1;
        bad(
            out,
            "almost-hole",
            "auth-failure",
            "all zero but one byte: not a hole, and not a valid block",
            0,
            &file_id,
            &almost_hole,
        );
        let wrong_key = ContentKey::new(
            SecretKey::from_bytes(fixed::<32>(&format!("{a} wrong content key"))),
            alg,
            BLOCK_SIZE,
        )
        .file_cipher(file_id);
        let sealed_wrong = seal(&wrong_key, 0, &full, ov);
        bad(
            out,
            "other-vault",
            "auth-failure",
            "same file id and block number, sealed under another vault's content key",
            0,
            &file_id,
            &sealed_wrong,
        );
    }

    // A block of one algorithm read as the other.
    let content_key = fixed::<32>("aes-256-gcm content key");
    let file_id = fixed::<16>("aes-256-gcm file id");
    let x = ContentKey::new(
        SecretKey::from_bytes(content_key),
        ContentAlgorithm::XChaCha20Poly1305,
        BLOCK_SIZE,
    )
    .file_cipher(file_id);
    let sealed = seal(
        &x,
        0,
        b"sealed with XChaCha20-Poly1305 under the same key",
        ContentAlgorithm::XChaCha20Poly1305.overhead(),
    );
    out.write(
        "content-block-gcm-xchacha-block",
        "content-block",
        "auth-failure",
        "an XChaCha20-Poly1305 block (same content key, file id and block) read by an AES-256-GCM vault",
        &[
            ("algorithm", "aes-256-gcm".into()),
            ("content_key", hex(&content_key)),
            ("file_id", hex(&file_id)),
            ("block", "0".into()),
            ("sealed", hex(&sealed)),
        ],
    );
}

// ------------------------------------------------------------------ names

struct NameKeys {
    master: [u8; 32],
    vault_id: [u8; 16],
    name_key: SecretBytes,
    transform: NameTransform,
}

fn name_keys(label: &str) -> NameKeys {
    name_keys_for(label, ContentAlgorithm::Aes256Gcm)
}

fn name_keys_for(label: &str, alg: ContentAlgorithm) -> NameKeys {
    let master = fixed::<32>(&format!("{label} master key"));
    let vault_id = fixed::<16>(&format!("{label} vault id"));
    let m = SecretKey::from_bytes(master);
    let name_key = m.derive_bytes(&vault_id, labels::NAME_KEY, atrest_core::NAME_KEY_LEN);
    let transform = NameTransform::new(
        atrest_core::NameCipher::new(name_key.clone()),
        atrest_core::BlockCipher::new(alg, &m.derive(&vault_id, labels::METADATA_KEY)),
    );
    NameKeys {
        master,
        vault_id,
        name_key,
        transform,
    }
}

fn full_name(e: &EncryptedName) -> String {
    match e {
        EncryptedName::Short(s) => s.clone(),
        EncryptedName::Long { full, .. } => full.clone(),
    }
}

fn names(out: &mut Out) {
    let k = name_keys("names");
    let other_vault = name_keys("names other vault");
    let dir = fixed::<16>("names dir id");
    let other_dir = fixed::<16>("names other dir id");
    let base = |k: &NameKeys, dir: &[u8; 16]| -> Vec<(&str, String)> {
        vec![
            ("master_key", hex(&k.master)),
            ("vault_id", hex(&k.vault_id)),
            ("name_key", hex(k.name_key.expose())),
            ("dir_id", hex(dir)),
        ]
    };
    let ok = |out: &mut Out, id: &str, comment: &str, dir: &[u8; 16], name: &[u8]| {
        let enc = k.transform.encrypt_name(dir, OsStr::from_bytes(name));
        let mut f = base(&k, dir);
        f.push(("name", hex(name)));
        f.push(("encrypted", full_name(&enc)));
        f.push(("entry", enc.entry().to_string()));
        out.write(&format!("name-{id}"), "name", "success", comment, &f);
        enc
    };
    let report = ok(out, "short", "a plain ASCII name", &dir, b"report.pdf");
    ok(
        out,
        "same-name-other-dir",
        "the same name in another directory encrypts differently",
        &other_dir,
        b"report.pdf",
    );
    ok(
        out,
        "utf8",
        "UTF-8 name (NFC), encrypted as its bytes",
        &dir,
        "Übersicht — 2024 ✓.txt".as_bytes(),
    );
    ok(
        out,
        "not-utf8",
        "names are bytes: Latin-1 'café' is not UTF-8 and still round-trips",
        &dir,
        b"caf\xe9",
    );
    ok(out, "one-byte", "a one-byte name", &dir, b"a");
    ok(
        out,
        "dots-inside",
        "dots and spaces inside a name",
        &dir,
        b"..hidden. file .",
    );
    let n175 = vec![b'n'; 175];
    let e = ok(
        out,
        "175-bytes",
        "175 bytes: the longest name whose encrypted form (255 characters) is stored directly",
        &dir,
        &n175,
    );
    assert!(matches!(e, EncryptedName::Short(ref s) if s.len() == 255));
    let n176 = vec![b'n'; 176];
    let e = ok(
        out,
        "176-bytes",
        "176 bytes: encrypted form is 256 characters, so the entry is atrest.long.<base64url(SHA-256(encrypted))> with the full form in <entry>.name",
        &dir,
        &n176,
    );
    assert!(matches!(e, EncryptedName::Long { .. }));
    let n255: Vec<u8> = (0..255)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect();
    let long = ok(
        out,
        "255-bytes",
        "a 255-byte name (the longest a file system takes) as a long entry",
        &dir,
        &n255,
    );

    // Negatives.
    let bad = |out: &mut Out,
               id: &str,
               expect: &str,
               comment: &str,
               k: &NameKeys,
               dir: &[u8; 16],
               encrypted: &str,
               entry: Option<&str>| {
        let mut f = base(k, dir);
        f.push(("encrypted", encrypted.to_string()));
        if let Some(entry) = entry {
            f.push(("entry", entry.to_string()));
        }
        out.write(&format!("name-{id}"), "name", expect, comment, &f);
    };
    let report_enc = full_name(&report);
    bad(
        out,
        "wrong-dir-id",
        "auth-failure",
        "'report.pdf' from directory dir_id presented in another directory",
        &k,
        &other_dir,
        &report_enc,
        None,
    );
    bad(
        out,
        "other-vault",
        "auth-failure",
        "'report.pdf' encrypted by this vault, read with another vault's name key",
        &other_vault,
        &dir,
        &report_enc,
        None,
    );
    let mut flipped = report_enc.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    bad(
        out,
        "flipped-first-char",
        "auth-failure",
        "first character changed (a bit of the SIV)",
        &k,
        &dir,
        &String::from_utf8(flipped).expect("ascii"),
        None,
    );
    let mut flipped = report_enc.clone().into_bytes();
    let mid = flipped.len() - 3;
    flipped[mid] = if flipped[mid] == b'x' { b'y' } else { b'x' };
    bad(
        out,
        "flipped-char-in-ciphertext",
        "auth-failure",
        "a character of the ciphertext part changed",
        &k,
        &dir,
        &String::from_utf8(flipped).expect("ascii"),
        None,
    );
    bad(
        out,
        "truncated",
        "auth-failure",
        "cut to 20 characters (15 bytes): shorter than the SIV",
        &k,
        &dir,
        &report_enc[..20],
        None,
    );
    bad(
        out,
        "empty",
        "auth-failure",
        "the empty string",
        &k,
        &dir,
        "",
        None,
    );

    // Non-canonical base64: the last character carries unused low bits
    // that must be zero. 16 + 10 bytes = 26 bytes: 26 mod 3 = 2, so the last
    // of 35 characters has 2 unused bits.
    assert_eq!(report_enc.len(), 35);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *report_enc.as_bytes().last().expect("non-empty");
    let v = alphabet.iter().position(|&c| c == last).expect("base64url");
    assert_eq!(v & 3, 0);
    let mut noncanon = report_enc.clone().into_bytes();
    *noncanon.last_mut().expect("non-empty") = alphabet[v | 1];
    bad(
        out,
        "non-canonical-base64",
        "parse-error",
        "the unused low bits of the last character set: a second spelling of 'report.pdf' that must be refused",
        &k,
        &dir,
        &String::from_utf8(noncanon).expect("ascii"),
        None,
    );
    bad(
        out,
        "padded-base64",
        "parse-error",
        "base64url with '=' padding is not an encrypted name",
        &k,
        &dir,
        &format!("{report_enc}="),
        None,
    );
    bad(
        out,
        "standard-base64-alphabet",
        "parse-error",
        "'+' and '/' (the standard alphabet) are not base64url",
        &k,
        &dir,
        &format!("+/{}", &report_enc[2..]),
        None,
    );

    for (id, name, comment) in [
        (
            "decrypts-to-dot",
            &b"."[..],
            "a valid ciphertext of '.' is refused as a name",
        ),
        (
            "decrypts-to-dotdot",
            b"..",
            "a valid ciphertext of '..' is refused as a name",
        ),
        (
            "decrypts-to-slash",
            b"a/b",
            "a valid ciphertext of a name with '/' is refused",
        ),
        (
            "decrypts-to-nul",
            b"a\0b",
            "a valid ciphertext of a name with NUL is refused",
        ),
        (
            "decrypts-to-empty",
            b"",
            "a valid ciphertext of the empty name is refused",
        ),
    ] {
        let enc = k.transform.encrypt_name(&dir, OsStr::from_bytes(name));
        let mut f = base(&k, &dir);
        f.push(("encrypted", full_name(&enc)));
        out.write(&format!("name-{id}"), "name", "invalid-name", comment, &f);
    }

    let (long_entry, long_full) = match &long {
        EncryptedName::Long { entry, full } => (entry.clone(), full.clone()),
        EncryptedName::Short(_) => unreachable!(),
    };
    bad(
        out,
        "long-wrong-dir-id",
        "auth-failure",
        "a long entry and its side file moved to another directory",
        &k,
        &other_dir,
        &long_full,
        Some(&long_entry),
    );
    let n176_enc = full_name(&k.transform.encrypt_name(&dir, OsStr::from_bytes(&n176)));
    bad(
        out,
        "long-side-file-mismatch",
        "parse-error",
        "the side file of the 255-byte name's entry holds the 176-byte name's encryption: the entry's hash does not match",
        &k,
        &dir,
        &n176_enc,
        Some(&long_entry),
    );
}

// ------------------------------------------------- symlinks and xattrs

fn metadata(out: &mut Out) {
    for alg in [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ] {
        let a = alg_name(alg);
        let short = if alg == ContentAlgorithm::Aes256Gcm {
            "gcm"
        } else {
            "xchacha"
        };
        let k = name_keys_for("metadata", alg);
        let other = name_keys_for("metadata other vault", alg);
        let base = |k: &NameKeys| -> Vec<(&str, String)> {
            vec![
                ("algorithm", a.to_string()),
                ("master_key", hex(&k.master)),
                ("vault_id", hex(&k.vault_id)),
            ]
        };

        // Symlink targets: sealed with the metadata key, AAD "atrest symlink v1", base64url.
        let target = b"../shared/Quarterly report (final).pdf";
        let stored = k.transform.encrypt_symlink(OsStr::from_bytes(target));
        let stored = stored.to_str().expect("base64url").to_string();
        let mut f = base(&k);
        f.push(("stored", stored.clone()));
        f.push(("target", hex(target)));
        out.write(
            &format!("symlink-{short}"),
            "symlink",
            "success",
            &format!(
                "a symlink target sealed with the metadata key ({})",
                alg.name()
            ),
            &f,
        );
        let bad =
            |out: &mut Out, id: &str, expect: &str, comment: &str, k: &NameKeys, stored: &str| {
                let mut f = base(k);
                f.push(("stored", stored.to_string()));
                out.write(
                    &format!("symlink-{short}-{id}"),
                    "symlink",
                    expect,
                    comment,
                    &f,
                );
            };
        let mut flipped = stored.clone().into_bytes();
        let i = flipped.len() / 2;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        bad(
            out,
            "flipped-char",
            "auth-failure",
            "one character of the stored target changed",
            &k,
            &String::from_utf8(flipped).expect("ascii"),
        );
        bad(
            out,
            "other-vault",
            "auth-failure",
            "the stored target read with another vault's metadata key",
            &other,
            &stored,
        );
        bad(
            out,
            "not-base64",
            "parse-error",
            "a plain-text target left in the backing store",
            &k,
            "../plain/target",
        );

        // The longest target whose stored form fits a symlink (4,095 bytes),
        // and one byte more: stored in atrest.links/<hash>, the backing
        // symlink pointing to atrest.symlink.v1.<hash>.
        let longest = 4095 * 3 / 4 - alg.overhead();
        let fits: Vec<u8> = (0..longest).map(|i| b"abcdefghij/"[i % 11]).collect();
        let stored_fits = k.transform.encrypt_symlink(OsStr::from_bytes(&fits));
        assert_eq!(stored_fits.len(), 4095);
        let mut f = base(&k);
        f.push(("stored", stored_fits.to_str().expect("ascii").to_string()));
        f.push(("target", hex(&fits)));
        out.write(&format!("symlink-{short}-longest-direct"), "symlink", "success",
            &format!("a {longest}-byte target: its stored form is 4,095 characters, the most a backing symlink holds"), &f);
        let long: Vec<u8> = (0..longest + 1).map(|i| b"abcdefghij/"[i % 11]).collect();
        let root = std::env::temp_dir().join(format!(
            "atrest-make-vectors-links-{}-{short}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("scratch dir");
        k.transform
            .create_symlink(&root, OsStr::from_bytes(&long), &root.join("l"))
            .expect("create long symlink");
        let link = fs::read_link(root.join("l"))
            .expect("read link")
            .into_os_string();
        let side = NameTransform::long_link_side_file(&root, &link).expect("a long link");
        let stored_long = fs::read_to_string(&side).expect("side file");
        let link = link.to_str().expect("ascii").to_string();
        let _ = fs::remove_dir_all(&root);
        let mut f = base(&k);
        f.push(("link", link.clone()));
        f.push(("stored", stored_long.clone()));
        f.push(("target", hex(&long)));
        out.write(&format!("symlink-{short}-long"), "symlink", "success",
            &format!("a {}-byte target: the backing symlink says atrest.symlink.v1.<B64(SHA-256(stored))>, atrest.links/<same> in the vault root holds the stored form", longest + 1), &f);
        let mut f = base(&k);
        f.push(("link", link));
        f.push(("stored", stored.clone()));
        out.write(&format!("symlink-{short}-long-side-file-mismatch"), "symlink", "parse-error",
            "a long link whose side file holds another target's stored form: the hash does not match", &f);

        // Xattrs: names like file names (AD "atrest xattr name v1", no dir
        // id) under "user.atrest."; values sealed with the metadata key and
        // AAD "atrest xattr value v1" ‖ stored name.
        let name = b"user.mime_type";
        let value = b"text/plain; charset=utf-8";
        let stored_name = k.transform.encrypt_xattr_name(OsStr::from_bytes(name));
        let sealed = k.transform.encrypt_xattr_value(&stored_name, value);
        let stored_name = stored_name.to_str().expect("ascii").to_string();
        let mut f = base(&k);
        f.push(("name", hex(name)));
        f.push(("stored_name", stored_name.clone()));
        f.push(("sealed_value", hex(&sealed)));
        f.push(("value", hex(value)));
        out.write(
            &format!("xattr-{short}"),
            "xattr",
            "success",
            "an xattr: deterministic name, sealed value bound to the stored name",
            &f,
        );
        let other_name = k.transform.encrypt_xattr_name(OsStr::new("user.other"));
        let other_name = other_name.to_str().expect("ascii").to_string();
        let bad = |out: &mut Out,
                   id: &str,
                   expect: &str,
                   comment: &str,
                   k: &NameKeys,
                   stored_name: &str,
                   sealed: &[u8]| {
            let mut f = base(k);
            f.push(("stored_name", stored_name.to_string()));
            f.push(("sealed_value", hex(sealed)));
            out.write(&format!("xattr-{short}-{id}"), "xattr", expect, comment, &f);
        };
        bad(
            out,
            "value-moved",
            "auth-failure",
            "the value of user.mime_type stored under the name of user.other",
            &k,
            &other_name,
            &sealed,
        );
        let mut flipped = sealed.clone();
        flipped[alg.nonce_len() + 2] ^= 0x10;
        bad(
            out,
            "flipped-value-bit",
            "auth-failure",
            "one bit of the sealed value flipped",
            &k,
            &stored_name,
            &flipped,
        );
        let mut flipped = stored_name.clone().into_bytes();
        let i = "user.atrest.".len() + 1;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        bad(
            out,
            "flipped-name-char",
            "auth-failure",
            "one character of the stored name changed",
            &k,
            &String::from_utf8(flipped).expect("ascii"),
            &sealed,
        );
        bad(
            out,
            "other-vault",
            "auth-failure",
            "name and value read with another vault's keys",
            &other,
            &stored_name,
            &sealed,
        );
        bad(
            out,
            "foreign-name",
            "not-ours",
            "an xattr without the user.atrest. prefix is not atrest's and is left alone",
            &k,
            "user.mime_type",
            &sealed,
        );

        // The mount root's mode and owner (atrest.root): version u16 BE in
        // the clear, then Seal_{K_meta}("atrest root attributes v1" ‖
        // version, mode ‖ uid ‖ gid), each u32 BE.
        let (mode, uid, gid) = if alg == ContentAlgorithm::Aes256Gcm {
            (0o755, 0, 0)
        } else {
            (0o2775, 1000, 70)
        };
        let attr = atrest_vault::root_attr::RootAttr { mode, uid, gid };
        let stored = k.transform.encrypt_root_attr(&attr);
        let root =
            |out: &mut Out, id: &str, expect: &str, comment: &str, k: &NameKeys, stored: &[u8]| {
                let mut f = base(k);
                f.push(("record", hex(stored)));
                if expect == "success" {
                    f.push(("mode", format!("{mode:o}")));
                    f.push(("uid", uid.to_string()));
                    f.push(("gid", gid.to_string()));
                }
                let name = if id.is_empty() {
                    format!("root-attr-{short}")
                } else {
                    format!("root-attr-{short}-{id}")
                };
                out.write(&name, "root-attr", expect, comment, &f);
            };
        root(
            out,
            "",
            "success",
            "the mount root's mode (octal text), uid and gid (decimal text)",
            &k,
            &stored,
        );
        let mut flipped = stored.clone();
        flipped[2 + alg.nonce_len() + 1] ^= 0x01;
        root(
            out,
            "flipped-body-bit",
            "auth-failure",
            "one bit of the sealed body flipped",
            &k,
            &flipped,
        );
        root(
            out,
            "other-vault",
            "auth-failure",
            "read with another vault's metadata key",
            &other,
            &stored,
        );
        let mut version = stored.clone();
        version[1] = 2;
        root(
            out,
            "version-2",
            "unknown-version",
            "a version this build does not know",
            &k,
            &version,
        );
        root(
            out,
            "truncated",
            "auth-failure",
            "the last byte of the tag cut off",
            &k,
            &stored[..stored.len() - 1],
        );
        root(
            out,
            "only-version",
            "auth-failure",
            "the version and nothing sealed",
            &k,
            &stored[..2],
        );
        root(out, "empty", "parse-error", "no bytes at all", &k, &[]);
        // A body that authenticates but holds an impossible mode.
        let meta = atrest_core::BlockCipher::new(
            alg,
            &SecretKey::from_bytes(k.master).derive(&k.vault_id, labels::METADATA_KEY),
        );
        let mut body = (0o10755u32).to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        let mut aad = labels::domain::ROOT_ATTR.to_vec();
        aad.extend_from_slice(&[0, 1]);
        let mut bad_mode = vec![0, 1];
        bad_mode.extend_from_slice(&meta.seal(&aad, &body));
        root(
            out,
            "file-type-in-mode",
            "parse-error",
            "an authentic record whose mode holds more than permission bits (0o10755)",
            &k,
            &bad_mode,
        );
        let mut short_body = vec![0, 1];
        short_body.extend_from_slice(&meta.seal(&aad, &body[..8]));
        root(
            out,
            "short-body",
            "parse-error",
            "an authentic record with an 8-byte body (no gid)",
            &k,
            &short_body,
        );
    }
}

// --------------------------------------------------------------- headers

fn headers(out: &mut Out) {
    let id = fixed::<16>("file header id");
    let mut good = vec![0x00, 0x01];
    good.extend_from_slice(&id);
    for (kind, what) in [("file-header", "file header"), ("dir-id", "atrest.dirid")] {
        let field = if kind == "file-header" {
            "file_id"
        } else {
            "dir_id"
        };
        out.write(
            &format!("{kind}-valid"),
            kind,
            "success",
            &format!("{what}: version 1 (big-endian u16), then the 16-byte id"),
            &[("data", hex(&good)), (field, hex(&id))],
        );
        let mut v2 = good.clone();
        v2[1] = 2;
        out.write(
            &format!("{kind}-version-2"),
            kind,
            "unknown-version",
            &format!("{what} of version 2"),
            &[("data", hex(&v2))],
        );
        let mut v0 = good.clone();
        v0[1] = 0;
        out.write(
            &format!("{kind}-version-0"),
            kind,
            "unknown-version",
            &format!("{what} of version 0"),
            &[("data", hex(&v0))],
        );
        let mut le = good.clone();
        le.swap(0, 1);
        out.write(
            &format!("{kind}-version-little-endian"),
            kind,
            "unknown-version",
            &format!("{what} with the version little-endian (256)"),
            &[("data", hex(&le))],
        );
        out.write(
            &format!("{kind}-truncated"),
            kind,
            "parse-error",
            &format!("{what} one byte short"),
            &[("data", hex(&good[..17]))],
        );
        out.write(
            &format!("{kind}-only-version"),
            kind,
            "parse-error",
            &format!("{what}: the version alone"),
            &[("data", hex(&good[..2]))],
        );
        out.write(
            &format!("{kind}-empty"),
            kind,
            "parse-error",
            &format!("{what}: zero bytes"),
            &[("data", String::new())],
        );
        let mut long = good.clone();
        long.push(0);
        out.write(
            &format!("{kind}-trailing-byte"),
            kind,
            "parse-error",
            &format!("{what} one byte too long"),
            &[("data", hex(&long))],
        );
    }
}

// ---------------------------------------------------------- recovery keys

fn recovery_keys(out: &mut Out) {
    // A key whose text has both a '1' and a '0', for the look-alike vector.
    let (secret, text) = (0..)
        .map(|i| {
            let secret = fixed::<32>(&format!("recovery key {i}"));
            (
                secret,
                RecoveryKey::from_secret(SecretKey::from_bytes(secret)).display(),
            )
        })
        .find(|(_, t)| t.contains('1') && t.contains('0'))
        .expect("some key has both");
    let ok = |out: &mut Out, id: &str, comment: &str, t: &str| {
        out.write(
            &format!("recovery-key-{id}"),
            "recovery-key",
            "success",
            comment,
            &[("text", t.to_string()), ("key", hex(&secret))],
        );
    };
    ok(
        out,
        "display",
        "the form shown to people: 11 groups of 5 Crockford base32 characters; 256 key bits, 16 checksum bits (SHA-256 of 'atrest recovery key checksum v1' ‖ key), 3 zero padding bits",
        &text,
    );
    ok(
        out,
        "lowercase-spaces",
        "any case; spaces instead of dashes",
        &text.to_lowercase().replace('-', " "),
    );
    ok(
        out,
        "no-separators",
        "no separators at all",
        &text.replace('-', ""),
    );
    let lookalike = text
        .replacen('1', "l", 1)
        .replacen('0', "O", 1)
        .replacen('1', "I", 1);
    assert_ne!(lookalike, text);
    ok(out, "lookalikes", "I and L read as 1, O as 0", &lookalike);

    let bad = |out: &mut Out, id: &str, expect: &str, comment: &str, t: &str| {
        out.write(
            &format!("recovery-key-{id}"),
            "recovery-key",
            expect,
            comment,
            &[("text", t.to_string())],
        );
    };
    let chars: Vec<char> = text.chars().collect();
    let alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut typo = chars.clone();
    typo[7] = alphabet
        .chars()
        .find(|&c| c != chars[7])
        .expect("another character");
    bad(
        out,
        "typo",
        "checksum-error",
        "one character changed",
        &typo.iter().collect::<String>(),
    );
    let mut swap = chars.clone();
    let i = (0..chars.len() - 1)
        .find(|&i| chars[i] != '-' && chars[i + 1] != '-' && chars[i] != chars[i + 1])
        .expect("two different");
    swap.swap(i, i + 1);
    bad(
        out,
        "transposed",
        "checksum-error",
        "two neighbouring characters swapped",
        &swap.iter().collect::<String>(),
    );
    let mut pad = chars.clone();
    let last = pad.len() - 1;
    let v = alphabet.find(pad[last]).expect("alphabet");
    assert_eq!(v & 7, 0, "padding bits are zero");
    pad[last] = alphabet.as_bytes()[v | 1] as char;
    bad(
        out,
        "padding-bits",
        "checksum-error",
        "a padding bit of the last character set: key and checksum unchanged, but a second spelling must be refused",
        &pad.iter().collect::<String>(),
    );
    bad(
        out,
        "short",
        "length-error",
        "one character missing",
        &text[..text.len() - 1],
    );
    bad(
        out,
        "long",
        "length-error",
        "one character too many",
        &format!("{text}0"),
    );
    bad(
        out,
        "bad-character",
        "character-error",
        "U is not in the alphabet",
        &format!("U{}", &text[1..]),
    );
    bad(
        out,
        "punctuation",
        "character-error",
        "'.' is not a separator",
        &text.replace('-', "."),
    );
}

// ------------------------------------------------------------ key schedule

fn key_schedule(out: &mut Out) {
    let master = fixed::<32>("schedule master key");
    let vault_id = fixed::<16>("schedule vault id");
    let file_id = fixed::<16>("schedule file id");
    let secret = fixed::<32>("schedule slot secret");
    let salt = fixed::<16>("schedule argon2 salt");
    let m = SecretKey::from_bytes(master);
    let content = m.derive(&vault_id, labels::CONTENT_KEY);
    let params = Argon2Params::INSECURE_FAST;
    let argon = atrest_core::derive_from_passphrase(b"correct horse battery staple", &salt, params)
        .expect("argon2");
    let kek = |ikm: &SecretKey, kind: u8| {
        let mut info = labels::KEYSLOT_WRAP.to_vec();
        info.push(kind);
        hex(ikm.derive(&vault_id, &info).expose())
    };
    let s = SecretKey::from_bytes(secret);
    out.write(
        "key-schedule",
        "key-schedule",
        "success",
        "every HKDF-SHA256 subkey: salt is the vault id (the file id for file keys); info is the label, plus the kind byte for keyslot wrap keys",
        &[
            ("master_key", hex(&master)),
            ("vault_id", hex(&vault_id)),
            ("file_id", hex(&file_id)),
            ("content_key", hex(content.expose())),
            ("file_key", hex(content.derive(&file_id, labels::FILE_KEY).expose())),
            ("name_key", hex(m.derive_bytes(&vault_id, labels::NAME_KEY, 64).expose())),
            ("metadata_key", hex(m.derive(&vault_id, labels::METADATA_KEY).expose())),
            ("config_mac_key", hex(m.derive(&vault_id, labels::CONFIG_MAC).expose())),
            ("slot_secret", hex(&secret)),
            ("kek_recovery_key", kek(&s, 2)),
            ("kek_key_file", kek(&s, 3)),
            ("passphrase", "correct horse battery staple".into()),
            ("argon2_salt", hex(&salt)),
            ("argon2_memory_kib", params.memory_kib.to_string()),
            ("argon2_iterations", params.iterations.to_string()),
            ("argon2_parallelism", params.parallelism.to_string()),
            ("argon2_output", hex(argon.expose())),
            ("kek_passphrase", kek(&argon, 1)),
        ],
    );
}

// --------------------------------------------------------------- keyslots

fn pw(s: &str) -> Unlocker {
    Unlocker::Passphrase(SecretBytes::new(s.as_bytes().to_vec()))
}

/// Byte ranges of one keyslot inside an encoded config.
struct SlotSpan {
    start: usize,
    params: usize,
    label: usize,
    wrapped: usize,
    end: usize,
}

const BODY: usize = 14;
const SLOTS: usize = BODY + 16 + 8 + 8 + 1 + 4 + 1 + 2 + 1;

fn slot_spans(cfg: &[u8]) -> Vec<SlotSpan> {
    let count = cfg[SLOTS - 1] as usize;
    let mut pos = SLOTS;
    let mut spans = Vec::new();
    for _ in 0..count {
        let start = pos;
        let params_len = u16::from_be_bytes([cfg[pos + 2], cfg[pos + 3]]) as usize;
        let params = pos + 4;
        let label = params + params_len;
        let label_len = cfg[label] as usize;
        let wrapped_len_at = label + 1 + label_len;
        let wrapped_len =
            u16::from_be_bytes([cfg[wrapped_len_at], cfg[wrapped_len_at + 1]]) as usize;
        let wrapped = wrapped_len_at + 2;
        pos = wrapped + wrapped_len;
        spans.push(SlotSpan {
            start,
            params,
            label,
            wrapped,
            end: pos,
        });
    }
    assert_eq!(pos + 32, cfg.len(), "slots end where the MAC starts");
    spans
}

fn set_body_len(cfg: &mut [u8]) {
    let len = (cfg.len() - BODY - 32) as u32;
    cfg[10..14].copy_from_slice(&len.to_be_bytes());
}

fn keyslots(out: &mut Out) {
    let tmp = std::env::temp_dir().join(format!("atrest-make-vectors-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let fast = CreateOptions {
        argon2: Argon2Params::INSECURE_FAST,
        ..Default::default()
    };

    // Vault A: passphrase (slot 0), recovery key (slot 1), key file (slot 2).
    let pass_a = "correct horse battery staple";
    let (mut a, rec_a) =
        Vault::create(&tmp.join("a"), fast, &pw(pass_a), "admin").expect("create a");
    let key_file = fixed::<32>("keyslot key file");
    a.add_slot(
        &Unlocker::KeyFile(SecretKey::from_bytes(key_file)),
        "boot",
        Argon2Params::INSECURE_FAST,
    )
    .expect("add slot");
    let rec_a = rec_a.expect("recovery key");
    let master_a = hex(a.master_key().expose());
    let vault_id_a = hex(&a.config().vault_id);
    let cfg_a = fs::read(tmp.join("a").join(CONFIG_FILE)).expect("read config");
    let spans = slot_spans(&cfg_a);
    assert_eq!(spans.len(), 3);

    // Vault B: the attacker's, passphrase and recovery key.
    let pass_b = "attacker's own passphrase";
    let (_b, rec_b) = Vault::create(&tmp.join("b"), fast, &pw(pass_b), "").expect("create b");
    let cfg_b = fs::read(tmp.join("b").join(CONFIG_FILE)).expect("read config");

    // Vault X: XChaCha20-Poly1305, a non-ASCII passphrase, no recovery key.
    let pass_x = "pässwörd 🔑"; // NFC
    let opts_x = CreateOptions {
        algorithm: ContentAlgorithm::XChaCha20Poly1305,
        argon2: Argon2Params::INSECURE_FAST,
        recovery_key: false,
        ..Default::default()
    };
    let (x, _) = Vault::create(&tmp.join("x"), opts_x, &pw(pass_x), "laptop").expect("create x");
    let cfg_x = fs::read(tmp.join("x").join(CONFIG_FILE)).expect("read config");

    enum U<'a> {
        Pass(&'a str),
        PassHex(&'a [u8]),
        Recovery(String),
        KeyFile([u8; 32]),
        Remote([u8; 32]),
        Members(Vec<(u8, [u8; 32])>),
    }
    let write = |out: &mut Out,
                 id: &str,
                 expect: &str,
                 comment: &str,
                 cfg: &[u8],
                 bak: Option<&[u8]>,
                 u: U,
                 success: Option<(&str, &str)>| {
        let mut f: Vec<(&str, String)> = vec![("config", hex(cfg))];
        if let Some(bak) = bak {
            f.push(("config_bak", hex(bak)));
        }
        match u {
            U::Pass(p) => f.push(("passphrase", p.to_string())),
            U::PassHex(p) => f.push(("passphrase_hex", hex(p))),
            U::Recovery(t) => f.push(("recovery_key", t)),
            U::KeyFile(k) => f.push(("key_file", hex(&k))),
            U::Remote(k) => f.push(("remote_key", hex(&k))),
            U::Members(keys) => f.push((
                "member_keys",
                keys.iter()
                    .map(|(i, k)| format!("{i}:{}", hex(k)))
                    .collect::<Vec<_>>()
                    .join(","),
            )),
        }
        if let Some((vault_id, master)) = success {
            f.push(("vault_id", vault_id.to_string()));
            f.push(("master_key", master.to_string()));
        }
        out.write(&format!("keyslot-{id}"), "keyslot", expect, comment, &f);
    };
    let ok_a = Some((vault_id_a.as_str(), master_a.as_str()));

    write(
        out,
        "passphrase",
        "success",
        "vault A (AES-256-GCM): passphrase slot 0, Argon2id 8 MiB / 1 pass / 1 lane as stored in the slot",
        &cfg_a,
        None,
        U::Pass(pass_a),
        ok_a,
    );
    write(
        out,
        "recovery-key",
        "success",
        "vault A: recovery-key slot 1, key given as its display text",
        &cfg_a,
        None,
        U::Recovery(rec_a.display()),
        ok_a,
    );
    write(
        out,
        "recovery-key-lowercase",
        "success",
        "vault A: recovery key typed in lower case with spaces",
        &cfg_a,
        None,
        U::Recovery(rec_a.display().to_lowercase().replace('-', " ")),
        ok_a,
    );
    write(
        out,
        "key-file",
        "success",
        "vault A: key-file slot 2, 32-byte key file",
        &cfg_a,
        None,
        U::KeyFile(key_file),
        ok_a,
    );
    let vid_x = hex(&x.config().vault_id);
    let master_x = hex(x.master_key().expose());
    write(
        out,
        "xchacha-vault-utf8-passphrase",
        "success",
        "vault X (XChaCha20-Poly1305): passphrase 'pässwörd 🔑' in NFC, used as its UTF-8 bytes",
        &cfg_x,
        None,
        U::Pass(pass_x),
        Some((&vid_x, &master_x)),
    );

    // Wrong secrets.
    write(
        out,
        "wrong-passphrase",
        "wrong-key",
        "vault A, a wrong passphrase",
        &cfg_a,
        None,
        U::Pass("correct horse battery stapler"),
        None,
    );
    write(
        out,
        "passphrase-trailing-newline",
        "wrong-key",
        "vault A, the right passphrase plus '\\n' at the end: passphrases are not trimmed here (callers strip the newline of a line they read)",
        &cfg_a,
        None,
        U::PassHex(format!("{pass_a}\n").as_bytes()),
        None,
    );
    let nfd = "pa\u{0308}sswo\u{0308}rd 🔑";
    assert_ne!(nfd, pass_x);
    write(
        out,
        "xchacha-vault-nfd-passphrase",
        "wrong-key",
        "vault X, the same passphrase in NFD: passphrases are bytes, not normalized",
        &cfg_x,
        None,
        U::Pass(nfd),
        None,
    );
    write(
        out,
        "wrong-key-file",
        "wrong-key",
        "vault A, another key file",
        &cfg_a,
        None,
        U::KeyFile(fixed::<32>("keyslot wrong key file")),
        None,
    );
    write(
        out,
        "other-vaults-recovery-key",
        "wrong-key",
        "vault A, vault B's recovery key",
        &cfg_a,
        None,
        U::Recovery(rec_b.expect("recovery key").display()),
        None,
    );
    write(
        out,
        "recovery-key-as-key-file",
        "wrong-key",
        "vault A, its own recovery key's 32 bytes offered as a key file: the slot kind is part of the wrap key's HKDF info",
        &cfg_a,
        None,
        U::KeyFile(*rec_a.secret().expose()),
        None,
    );

    let both = |out: &mut Out, id: &str, expect: &str, comment: &str, cfg: &[u8], u: U| {
        write(out, id, expect, comment, cfg, None, u, None);
    };

    // Tampering.
    let mut c = cfg_a.clone();
    c[spans[0].wrapped + 40] ^= 0x04;
    both(
        out,
        "flipped-bit-own-wrapped-key",
        "wrong-key",
        "vault A, a bit of slot 0's wrapped key flipped, opened with slot 0's passphrase: the unwrap fails, which looks like a wrong passphrase",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[spans[2].wrapped + 20] ^= 0x01;
    both(
        out,
        "flipped-bit-other-wrapped-key",
        "tampered",
        "vault A, a bit of slot 2's wrapped key flipped, opened with slot 0's passphrase: slot 0 unwraps, the config MAC fails",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[BODY + 16 + 7] ^= 0x01;
    both(
        out,
        "changed-created-time",
        "tampered",
        "vault A, creation time changed by one second",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[BODY + 16 + 8 + 8] = 2;
    both(
        out,
        "changed-algorithm",
        "tampered",
        "vault A, content algorithm byte changed from AES-256-GCM (1) to XChaCha20-Poly1305 (2)",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[spans[0].label + 1] ^= 0x20;
    both(
        out,
        "changed-label",
        "tampered",
        "vault A, slot 0's label 'admin' changed to 'Admin'",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    let n = c.len();
    c[n - 1] ^= 0x80;
    both(
        out,
        "flipped-mac-bit",
        "tampered",
        "vault A, last bit of the config MAC flipped",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[spans[0].params + 7] = 2;
    both(
        out,
        "raised-argon2-passes",
        "wrong-key",
        "vault A, slot 0's Argon2 passes changed 1 -> 2: the parameters are in the wrap AAD (and change the KEK)",
        &c,
        U::Pass(pass_a),
    );

    // Splice vault B's passphrase slot into vault A as slot 9.
    let spans_b = slot_spans(&cfg_b);
    let mut slot = cfg_b[spans_b[0].start..spans_b[0].end].to_vec();
    slot[0] = 9;
    let mut c = cfg_a[..cfg_a.len() - 32].to_vec();
    c.extend_from_slice(&slot);
    c.extend_from_slice(&cfg_a[cfg_a.len() - 32..]);
    c[SLOTS - 1] += 1;
    set_body_len(&mut c);
    both(
        out,
        "spliced-slot-owner",
        "tampered",
        "vault A with vault B's passphrase slot spliced in as slot 9 (MAC unchanged), opened with A's passphrase: the MAC shows the splice",
        &c,
        U::Pass(pass_a),
    );
    both(
        out,
        "spliced-slot-attacker",
        "wrong-key",
        "the same spliced config opened with B's passphrase: the slot's AAD names vault B's id, so it does not unwrap",
        &c,
        U::Pass(pass_b),
    );

    // Parse errors and versions.
    // Version 2 is format 2 (its own tests); 3 is a newer atrest's.
    let mut v3 = cfg_a.clone();
    v3[9] = 3;
    both(
        out,
        "version-3",
        "unknown-version",
        "vault A with format version 3 (unknown to this atrest) in both copies",
        &v3,
        U::Pass(pass_a),
    );
    write(
        out,
        "version-3-primary-only",
        "unknown-version",
        "atrest.conf says version 3 (an interrupted upgrade by a newer atrest), atrest.conf.bak is a valid version 1 copy: refused, never repaired back to the old format",
        &v3,
        Some(&cfg_a),
        U::Pass(pass_a),
        None,
    );
    let mut c = cfg_a.clone();
    c[BODY + 16 + 7] ^= 0x01;
    write(
        out,
        "damaged-primary",
        "success",
        "atrest.conf fails its MAC (creation time changed), atrest.conf.bak is good: unlock uses the backup and rewrites the primary",
        &c,
        Some(&cfg_a),
        U::Pass(pass_a),
        ok_a,
    );
    write(
        out,
        "garbage-primary",
        "success",
        "atrest.conf is 64 bytes of garbage, atrest.conf.bak is good",
        &fixed::<64>("garbage config"),
        Some(&cfg_a),
        U::Pass(pass_a),
        ok_a,
    );
    both(
        out,
        "truncated-mac",
        "parse-error",
        "vault A, last byte cut off",
        &cfg_a[..cfg_a.len() - 1],
        U::Pass(pass_a),
    );
    both(
        out,
        "truncated-half",
        "parse-error",
        "vault A, cut in the middle of slot 1",
        &cfg_a[..spans[1].start + 5],
        U::Pass(pass_a),
    );
    both(
        out,
        "empty",
        "parse-error",
        "an empty config",
        &[],
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c.push(0);
    both(
        out,
        "trailing-byte",
        "parse-error",
        "vault A, one byte after the MAC",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[0] = b'X';
    both(
        out,
        "bad-magic",
        "parse-error",
        "vault A, magic 'XTRESTVC'",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[BODY + 16 + 8 + 8 + 1 + 4 + 1 + 1] = 1;
    both(
        out,
        "unknown-flags",
        "parse-error",
        "vault A, feature flags 0x0001 (none are defined in version 1)",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[spans[0].params..spans[0].params + 4].copy_from_slice(&1024u32.to_be_bytes());
    both(
        out,
        "argon2-below-minimum",
        "parse-error",
        "vault A, slot 0's Argon2 memory lowered to 1 MiB: below the 8 MiB floor, refused when parsing",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[spans[2].start + 1] = 4;
    both(
        out,
        "reserved-slot-kind",
        "parse-error",
        "vault A, slot 2 (a key file, no parameters) relabelled kind 4 (remote): its empty parameters do not parse",
        &c,
        U::KeyFile(key_file),
    );
    let mut c = cfg_a.clone();
    c[spans[1].start] = 0;
    both(
        out,
        "duplicate-slot-id",
        "parse-error",
        "vault A, slot 1 renumbered 0: two slots with id 0",
        &c,
        U::Pass(pass_a),
    );
    let mut c = cfg_a.clone();
    c[BODY + 16 + 8 + 8 + 1 + 2] = 0x20;
    both(
        out,
        "block-size-8192",
        "parse-error",
        "vault A, block size 8192: only 4096 exists",
        &c,
        U::Pass(pass_a),
    );

    // Vault R: passphrase (slot 0), a remote slot (1) and a 2-of-3
    // threshold slot (2). The exchange keys K are what the authorities'
    // answers unblind to (testdata/remote/ checks that step).
    let opts_r = CreateOptions {
        recovery_key: false,
        ..fast
    };
    let (mut r, _) =
        Vault::create(&tmp.join("r"), opts_r, &pw("remote"), "admin").expect("create r");
    let member = |n: u8| -> RemoteMember {
        let secret = atrest_remote::HostSecret::generate();
        let (binding, key) = atrest_remote::enroll(&secret.public_key());
        RemoteMember {
            authority: AuthorityRef {
                url: format!("https://keys{n}.example:7443"),
                ca_fingerprint: fixed::<32>(&format!("authority {n} ca")),
                host_id: atrest_remote::HostId::new("web-1").expect("host id"),
                audit_public_key: fixed::<32>(&format!("authority {n} audit key")),
            },
            binding,
            key,
        }
    };
    let remote = member(0);
    r.add_remote_slot(&remote, &[], "keys0")
        .expect("remote slot");
    let members: Vec<RemoteMember> = (1..=3).map(member).collect();
    // Vault RR: passphrase (slot 0) and a remote slot (1) whose authority
    // has two replicas (remote parameters version 2).
    let (mut rr, _) = Vault::create(
        &tmp.join("rr"),
        CreateOptions {
            recovery_key: false,
            ..fast
        },
        &pw("replicas"),
        "admin",
    )
    .expect("create rr");
    let replicated = member(9);
    let replica_urls = [
        "https://keys9b.example:7443".to_string(),
        "https://keys9c.example".to_string(),
    ];
    rr.add_remote_slot(&replicated, &replica_urls, "keys9")
        .expect("remote slot with replicas");
    let cfg_rr = fs::read(tmp.join("rr").join(CONFIG_FILE)).expect("read config");
    let spans_rr = slot_spans(&cfg_rr);
    let ok_rr_ids = (hex(&rr.config().vault_id), hex(rr.master_key().expose()));
    let ok_rr = Some((ok_rr_ids.0.as_str(), ok_rr_ids.1.as_str()));
    write(
        out,
        "remote-replicas",
        "success",
        "vault RR: remote slot 1, parameters version 2 (authority https://keys9.example:7443 and replicas https://keys9b.example:7443, https://keys9c.example), opened with its exchange key K",
        &cfg_rr,
        None,
        U::Remote(*replicated.key.expose()),
        ok_rr,
    );
    // The replica list is in the AAD like every parameter byte.
    let replica_at = spans_rr[1].params + 1 + (66 + replicated.authority.url.len() + 5) + 1 + 1 + 8;
    let mut c = cfg_rr.clone();
    c[replica_at] = b'x'; // https://keys9b -> https://xeys9b
    both(
        out,
        "remote-replicas-changed-url",
        "wrong-key",
        "vault RR: one character of the remote slot's first replica URL changed: in the AAD, so the unwrap fails",
        &c,
        U::Remote(*replicated.key.expose()),
    );
    r.add_threshold_slot(2, &members, "quorum")
        .expect("threshold slot");
    let cfg_r = fs::read(tmp.join("r").join(CONFIG_FILE)).expect("read config");
    let spans_r = slot_spans(&cfg_r);
    assert_eq!(spans_r.len(), 3);
    let ok_r_ids = (hex(&r.config().vault_id), hex(r.master_key().expose()));
    let ok_r = Some((ok_r_ids.0.as_str(), ok_r_ids.1.as_str()));
    let k0 = *remote.key.expose();
    let k = |i: usize| *members[i - 1].key.expose();
    write(
        out,
        "remote",
        "success",
        "vault R: remote slot 1 (authority https://keys0.example:7443), opened with the exchange key K its authority's answer unblinds to",
        &cfg_r,
        None,
        U::Remote(k0),
        ok_r,
    );
    both(
        out,
        "remote-wrong-key",
        "wrong-key",
        "vault R: remote slot opened with another exchange key",
        &cfg_r,
        U::Remote(fixed::<32>("wrong exchange key")),
    );
    both(
        out,
        "remote-key-as-key-file",
        "wrong-key",
        "vault R: the remote slot's K given as a key file: the kind byte in the KEK label and AAD differs",
        &cfg_r,
        U::KeyFile(k0),
    );
    let url_at = spans_r[1].params + 2;
    let mut c = cfg_r.clone();
    c[url_at + 8] = b'x'; // https://keys0 -> https://xeys0
    both(
        out,
        "remote-changed-url",
        "wrong-key",
        "vault R: one character of the remote slot's authority URL changed: the parameters are in the AAD, so the unwrap fails",
        &c,
        U::Remote(k0),
    );
    let audit_at = spans_r[1].params + 2 + 28 + 32 + 1 + 5;
    let mut c = cfg_r.clone();
    c[audit_at] ^= 0x01;
    both(
        out,
        "remote-changed-audit-key",
        "wrong-key",
        "vault R: a bit of the remote slot's audit public key flipped: in the AAD, so the unwrap fails",
        &c,
        U::Remote(k0),
    );
    let mut c = cfg_r.clone();
    c[spans_r[1].label - 32..spans_r[1].label].fill(0);
    both(
        out,
        "remote-invalid-binding",
        "parse-error",
        "vault R: the remote slot's point C zeroed: the identity is not a valid binding point",
        &c,
        U::Remote(k0),
    );
    let mut c = cfg_r.clone();
    c[spans_r[1].params] = 3;
    both(
        out,
        "remote-params-version-3",
        "parse-error",
        "vault R: remote parameters with version byte 3",
        &c,
        U::Remote(k0),
    );
    write(
        out,
        "threshold-members-1-3",
        "success",
        "vault R: 2-of-3 threshold slot 2, opened with members 1 and 3: their shares unseal and combine to the slot secret",
        &cfg_r,
        None,
        U::Members(vec![(1, k(1)), (3, k(3))]),
        ok_r,
    );
    write(
        out,
        "threshold-all-members",
        "success",
        "vault R: threshold slot 2 with all three members' keys",
        &cfg_r,
        None,
        U::Members(vec![(1, k(1)), (2, k(2)), (3, k(3))]),
        ok_r,
    );
    both(
        out,
        "threshold-one-member",
        "wrong-key",
        "vault R: threshold slot 2 with only member 2: one share of a 2-of-3 split",
        &cfg_r,
        U::Members(vec![(2, k(2))]),
    );
    both(
        out,
        "threshold-swapped-member-keys",
        "wrong-key",
        "vault R: members 1 and 2's keys given for each other: the share keys are derived with the member index",
        &cfg_r,
        U::Members(vec![(1, k(2)), (2, k(1))]),
    );
    let mut c = cfg_r.clone();
    c[spans_r[2].label - 1] ^= 0x01;
    both(
        out,
        "threshold-flipped-sealed-share",
        "wrong-key",
        "vault R: last bit of member 3's sealed share flipped, all three keys given: members 1 and 2 combine, but the parameters are in the AAD",
        &c,
        U::Members(vec![(1, k(1)), (2, k(2)), (3, k(3))]),
    );
    let mut c = cfg_r.clone();
    c[spans_r[2].params + 1] = 4;
    both(
        out,
        "threshold-k-above-n",
        "parse-error",
        "vault R: threshold k changed to 4 with 3 members",
        &c,
        U::Members(vec![(1, k(1)), (2, k(2)), (3, k(3))]),
    );
    let _ = fs::remove_dir_all(&tmp);
}

// ------------------------------------------------------ external answers

fn external(out: &mut Out) {
    // Wycheproof aes_gcm_test.json (AES-256-GCM, 96-bit IV) and
    // xchacha20_poly1305_test.json; sealed = iv ‖ ct ‖ tag, as BlockCipher
    // stores it.
    let aead = |out: &mut Out,
                id: &str,
                expect: &str,
                comment: &str,
                alg: &str,
                key: &str,
                iv: &str,
                aad: &str,
                msg: &str,
                ct: &str,
                tag: &str| {
        let mut f = vec![
            ("algorithm", alg.to_string()),
            ("key", key.to_string()),
            ("aad", aad.to_string()),
            ("sealed", format!("{iv}{ct}{tag}")),
        ];
        if expect == "success" {
            f.push(("plaintext", msg.to_string()));
        }
        out.write(&format!("aead-{id}"), "aead", expect, comment, &f);
    };
    aead(
        out,
        "gcm-wycheproof-83",
        "success",
        "Wycheproof aes_gcm_test.json tcId 83",
        "aes-256-gcm",
        "cdccfe3f46d782ef47df4e72f0c02d9c7f774def970d23486f11a57f54247f17",
        "376187894605a8d45e30de51",
        "956846a209e087ed",
        "e28e0e9f9d22463ac0e42639b530f42102fded75",
        "feca44952447015b5df1f456df8ca4bb4eee2ce2",
        "082e91924deeb77880e1b1c84f9b8d30",
    );
    aead(
        out,
        "gcm-wycheproof-93",
        "success",
        "Wycheproof aes_gcm_test.json tcId 93 (special case: all-zero tag)",
        "aes-256-gcm",
        "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f",
        "ffffffffffffffffffffffff",
        "",
        "c6152244cea1978d3e0bc274cf8c0b3b",
        "7cb6fc7c6abc009efe9551a99f36a421",
        "00000000000000000000000000000000",
    );
    aead(
        out,
        "gcm-wycheproof-94",
        "auth-failure",
        "Wycheproof aes_gcm_test.json tcId 94: flipped bit 0 in tag",
        "aes-256-gcm",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "505152535455565758595a5b",
        "",
        "",
        "b2061457c0759fc1749f174ee1ccadfa",
        "9de8fef6d8ab1bf1bf887232eab590dd",
    );
    aead(
        out,
        "gcm-wycheproof-117",
        "auth-failure",
        "Wycheproof aes_gcm_test.json tcId 117: tag changed to all zero",
        "aes-256-gcm",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "505152535455565758595a5b",
        "",
        "",
        "b2061457c0759fc1749f174ee1ccadfa",
        "00000000000000000000000000000000",
    );
    let xmsg = "4c616469657320616e642047656e746c656d656e206f662074686520636c617373206f66202739393a204966204920636f756c64206f6666657220796f75206f6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73637265656e20776f756c642062652069742e";
    let xct = "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e";
    aead(
        out,
        "xchacha-wycheproof-1",
        "success",
        "Wycheproof xchacha20_poly1305_test.json tcId 1 (draft-arciszewski-xchacha-02 A.3.1)",
        "xchacha20-poly1305",
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "404142434445464748494a4b4c4d4e4f5051525354555657",
        "50515253c0c1c2c3c4c5c6c7",
        xmsg,
        xct,
        "c0875924c1c7987947deafd8780acf49",
    );
    aead(
        out,
        "xchacha-wycheproof-9",
        "success",
        "Wycheproof xchacha20_poly1305_test.json tcId 9",
        "xchacha20-poly1305",
        "b720aea3df85fb3fb00583eddbebc5c545bcdcb7f6f2a94c1087950e16d68278",
        "1436f36466fce5db337a73ec18e269e6e985d91035128183",
        "9d53316bd2aa3e3d",
        "4799c4",
        "d41c02",
        "8faa889d7f189cd9473e19200ef03920",
    );
    aead(
        out,
        "xchacha-wycheproof-1-flipped-tag",
        "auth-failure",
        "Wycheproof xchacha20_poly1305_test.json tcId 1 with the first tag bit flipped (derived here)",
        "xchacha20-poly1305",
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "404142434445464748494a4b4c4d4e4f5051525354555657",
        "50515253c0c1c2c3c4c5c6c7",
        "",
        xct,
        "c1875924c1c7987947deafd8780acf49",
    );
    aead(
        out,
        "xchacha-wycheproof-1-wrong-aad",
        "auth-failure",
        "Wycheproof xchacha20_poly1305_test.json tcId 1 with the last AAD byte changed (derived here)",
        "xchacha20-poly1305",
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "404142434445464748494a4b4c4d4e4f5051525354555657",
        "50515253c0c1c2c3c4c5c6c8",
        "",
        xct,
        "c0875924c1c7987947deafd8780acf49",
    );

    // Wycheproof aes_siv_cmac_test.json, 512-bit keys (AES-256-SIV as the
    // name cipher uses it); `ad` is one S2V component.
    let siv = |out: &mut Out,
               id: &str,
               expect: &str,
               comment: &str,
               key: &str,
               ad: &str,
               msg: &str,
               ct: &str| {
        let mut f = vec![
            ("key", key.to_string()),
            ("ad", ad.to_string()),
            ("ciphertext", ct.to_string()),
        ];
        if expect == "success" {
            f.push(("plaintext", msg.to_string()));
        }
        out.write(&format!("aes-siv-{id}"), "aes-siv", expect, comment, &f);
    };
    let seq = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
    siv(
        out,
        "wycheproof-305",
        "success",
        "Wycheproof aes_siv_cmac_test.json tcId 305 (one-byte message)",
        "e2c5662bb18fbb411d0304e4241db073fe60a4704fee290073513038a22b4cd542580b2b4edbc37e3de01c0cb61abcad46986cdc491ce9e5ae5af223ff58b953",
        "fab912dec29a34aabfaef176",
        "0d",
        "1c6969ecb15741a9959b7a8492250e391a",
    );
    siv(
        out,
        "wycheproof-320",
        "success",
        "Wycheproof aes_siv_cmac_test.json tcId 320 (17-byte message)",
        "139383f3f82dc78e0b380027f9e5fcd2ed23716404be5c554452e4dc73d237026594491820c6b8297185cc1fa84f49a5c7d7cd05c5de090ff1c3397bc2740437",
        "d39da73ffc03ad0a9213ffc7",
        "48604944a80fadf50d55b87727934458c8",
        "a9cf73951cb39823777f35c96c845169476e2ec2317cb6b8dd8b6172fdceabff9d",
    );
    siv(
        out,
        "wycheproof-324",
        "success",
        "Wycheproof aes_siv_cmac_test.json tcId 324 (80-byte message)",
        "72a76714e0171e8213de624f00e273bc900050e69d25c454cc42b61e8b3fbc92d4942e1ae14421e164046c1479a7b9c9f4b50b382cb62dfeaa210b98dec7d937",
        "6a8aaf2c84003e0e6f409658",
        "92d8f4dc7d41e8b180d66e8994022db79249cdc76fd7f3ea12d9925b51925250cd75a15fcfd78ea85c57fe6196f8d7545086f99ea796a0ea69170db9944200435d9d3d551943892400ce787f703c1105",
        "69f720f36b0da86ec8cc0f46d62835dcb35ac23f5b891152d861c4e0f0018f19d272ee8b12d83300bfd46aeec0124d5d23b3cb849c1cab1fdf64b70947ebf79f5442e209076dfa9a3f36ab0a6d3cf4a75ddfcdc21837743b20885db4c803ac27",
    );
    siv(
        out,
        "wycheproof-325",
        "success",
        "Wycheproof aes_siv_cmac_test.json tcId 325 (edge-case SIV of all zeros; AD is one empty component)",
        seq,
        "",
        "8dbfee9580e7e2bc66100a674497f4e1",
        "000000000000000000000000000000007ef8aa7e4dd49d9cfa09e9cb574fd90d",
    );
    siv(
        out,
        "wycheproof-330",
        "success",
        "Wycheproof aes_siv_cmac_test.json tcId 330 (edge-case SIV: counter wrap)",
        seq,
        "000102030405060708090a0b0c0d0e0f",
        "cd53e1763fbb8663afe74dc1bd443e52",
        "ffffffffffffffffffffffff7fffffff82b74728b73fc76c14b6bdb999625008",
    );
    siv(
        out,
        "wycheproof-336",
        "auth-failure",
        "Wycheproof aes_siv_cmac_test.json tcId 336: flipped bit 0 in tag",
        seq,
        "",
        "",
        "202e4a8f8b4c66788f3af230fb1c3ada5ead70c7f066d4df",
    );
}
