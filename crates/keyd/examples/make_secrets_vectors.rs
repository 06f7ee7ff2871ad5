//! Writes the known-answer vectors of host secrets and scope bucket keys
//! at rest (decisions 0018, 0020) into
//! `testdata/keyd/` (or the directory given as the first argument),
//! replacing the files it writes. Keys and ids come from fixed labels
//! (SHA-256), so ratchet vectors are identical on every run; wrapped
//! secrets carry a random nonce and change. `testdata/keyd/README.md`
//! describes the kinds.

#![allow(clippy::unwrap_used, reason = "a generator: a panic is the report")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use atrest_core::{SecretKey, labels};
use atrest_keyd::secrets_key::{EpochKey, Purpose, RECORDS, SECRETS};
use atrest_remote::{HostId, KeyId};

fn fixed(label: &str) -> [u8; 32] {
    atrest_core::sha256(format!("atrest keyd vectors {label}").as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn write(dir: &Path, name: &str, lines: &[(&str, String)]) {
    let text: String = lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    std::fs::write(dir.join(name), text).unwrap();
}

fn ratchet(dir: &Path, name: &str, purpose: &'static Purpose, epoch: u32) {
    let key = EpochKey::of(purpose, epoch, SecretKey::from_bytes(fixed(name)));
    let (kind, label) = if purpose == &RECORDS {
        ("records-ratchet", labels::KEYD_RECORDS_WRAP)
    } else {
        ("secrets-ratchet", labels::KEYD_SECRETS_WRAP)
    };
    let wrap_key = SecretKey::from_bytes(*key.expose()).derive(&epoch.to_be_bytes(), label);
    write(
        dir,
        name,
        &[
            ("kind", kind.into()),
            ("expect", "success".into()),
            ("comment", format!("one shred's step from epoch {epoch}")),
            ("epoch", epoch.to_string()),
            ("key", hex(key.expose())),
            ("wrap_key", hex(wrap_key.expose())),
            ("check", hex(&key.check())),
            ("next_key", hex(key.next().unwrap().expose())),
        ],
    );
}

struct Secret<'a> {
    name: &'a str,
    expect: &'a str,
    comment: &'a str,
    /// The key the checker opens with.
    key: &'a EpochKey,
    host: &'a str,
    wrapped: Vec<u8>,
    /// Only on success.
    secret: Option<[u8; 32]>,
}

fn host_secret(dir: &Path, key_id: &KeyId, s: Secret<'_>) {
    let mut lines = vec![
        ("kind", "host-secret".to_owned()),
        ("expect", s.expect.into()),
        ("comment", s.comment.into()),
        ("epoch", s.key.epoch().to_string()),
        ("key", hex(s.key.expose())),
        ("host_id", s.host.into()),
        ("key_id", hex(&key_id.0)),
        ("wrapped", hex(&s.wrapped)),
    ];
    if let Some(secret) = s.secret {
        lines.push(("secret", hex(&secret)));
    }
    write(dir, s.name, &lines);
}

/// The records key (decision 0020): its ratchet, the `K_0` of a bare
/// 32-byte `records.key` of before, and wrapped bucket keys.
fn records(dir: &Path) {
    ratchet(dir, "records-ratchet-from-0", &RECORDS, 0);
    ratchet(dir, "records-ratchet-from-7", &RECORDS, 7);
    let master = SecretKey::from_bytes(fixed("records master"));
    let k0 = EpochKey::from_legacy(&RECORDS, &master).unwrap();
    write(
        dir,
        "records-origin",
        &[
            ("kind", "records-origin".into()),
            ("expect", "success".into()),
            (
                "comment",
                "K_0 of a bare records.key from before 0020".into(),
            ),
            ("epoch", "0".into()),
            ("key", hex(k0.expose())),
            ("master", hex(master.expose())),
        ],
    );
    let k1 = k0.next().unwrap();
    let bucket_key = fixed("bucket key");
    let at0 = k0.wrap_bucket(200, &bucket_key);
    let at1 = k1.wrap_bucket(200, &bucket_key);
    let mut relabelled = at0.clone();
    relabelled[1..5].copy_from_slice(&1u32.to_be_bytes());
    let cases = [
        (
            "bucket-key-epoch-0",
            "success",
            "bucket 200's key at epoch 0",
            &k0,
            200,
            at0.clone(),
            true,
        ),
        (
            "bucket-key-epoch-1",
            "success",
            "the same key after a shred of another bucket",
            &k1,
            200,
            at1.clone(),
            true,
        ),
        (
            "bucket-key-other-bucket",
            "auth-failure",
            "bucket 200's wrap read as bucket 201's",
            &k1,
            201,
            at1,
            false,
        ),
        (
            "bucket-key-restored-backup",
            "epoch-mismatch",
            "a backup from before a shred, read with the key of now",
            &k1,
            200,
            at0,
            false,
        ),
        (
            "bucket-key-relabelled-epoch",
            "auth-failure",
            "the old backup's wrap relabelled with the current epoch",
            &k1,
            200,
            relabelled,
            false,
        ),
    ];
    for (name, expect, comment, key, bucket, wrapped, success) in cases {
        let mut lines = vec![
            ("kind", "bucket-key".to_owned()),
            ("expect", expect.into()),
            ("comment", comment.into()),
            ("epoch", key.epoch().to_string()),
            ("key", hex(key.expose())),
            ("bucket", bucket.to_string()),
            ("wrapped", hex(&wrapped)),
        ];
        if success {
            lines.push(("bucket_key", hex(&bucket_key)));
        }
        write(dir, name, &lines);
    }
}

fn main() {
    let dir = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keyd"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    ratchet(&dir, "ratchet-from-0", &SECRETS, 0);
    ratchet(&dir, "ratchet-from-41", &SECRETS, 41);
    records(&dir);

    let k0 = EpochKey::new(0, SecretKey::from_bytes(fixed("k0")));
    let k1 = k0.next().unwrap();
    let host = HostId::new("web-1").unwrap();
    let key_id = KeyId(fixed("key id")[..16].try_into().unwrap());
    let secret = fixed("host secret");
    let at0 = k0.wrap(&host, &key_id, &secret);
    let at1 = k1.wrap(&host, &key_id, &secret);
    let mut relabelled = at0.clone();
    relabelled[1..5].copy_from_slice(&1u32.to_be_bytes());
    let mut tampered = at1.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let mut version = at1.clone();
    version[0] = 2;
    let cases = [
        (
            "host-secret-epoch-0",
            "success",
            "a host secret wrapped at epoch 0",
            &k0,
            "web-1",
            at0.clone(),
            Some(secret),
        ),
        (
            "host-secret-epoch-1",
            "success",
            "the same secret after one shred",
            &k1,
            "web-1",
            at1.clone(),
            Some(secret),
        ),
        (
            "host-secret-other-host",
            "auth-failure",
            "web-1's wrap read as web-2's",
            &k1,
            "web-2",
            at1.clone(),
            None,
        ),
        (
            "host-secret-restored-backup",
            "epoch-mismatch",
            "a backup from before the shred, read with the key of now",
            &k1,
            "web-1",
            at0,
            None,
        ),
        (
            "host-secret-relabelled-epoch",
            "auth-failure",
            "the old backup's wrap relabelled with the current epoch",
            &k1,
            "web-1",
            relabelled,
            None,
        ),
        (
            "host-secret-tampered-tag",
            "auth-failure",
            "last byte of the tag flipped",
            &k1,
            "web-1",
            tampered,
            None,
        ),
        (
            "host-secret-unknown-version",
            "unknown-version",
            "version byte 2",
            &k1,
            "web-1",
            version,
            None,
        ),
        (
            "host-secret-truncated",
            "length",
            "one byte short",
            &k1,
            "web-1",
            at1[..at1.len() - 1].to_vec(),
            None,
        ),
    ];
    for (name, expect, comment, key, host, wrapped, secret) in cases {
        host_secret(
            &dir,
            &key_id,
            Secret {
                name,
                expect,
                comment,
                key,
                host,
                wrapped,
                secret,
            },
        );
    }
}
