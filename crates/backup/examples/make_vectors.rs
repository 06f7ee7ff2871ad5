//! Writes testdata/backup-v2/: a small repository of format 2 made with a
//! fixed master key from a fixed source tree, with a key-file keyslot and
//! a vault keyslot of fixed secrets, and vectors.json naming the keys and
//! what the snapshot holds (paths, kinds, modes, mtimes, SHA-256 of
//! contents, symlink targets). Checked by `cargo test -p atrest-backup
//! --test vectors` and by tests/differential/check_backup.py, without atrest
//! code. Nonces, salts and the repository id are random, so a new run
//! writes another (equally valid) repository: regenerate only for a new
//! format version, and keep the old one (testdata/backup-v1/, format 1,
//! was written by the format 1 build of this program).
//!
//! cargo run -p atrest-backup --example make_vectors -- testdata/backup-v2
//!
//! Slot 2 is a remote slot (kind 4) bound to a made-up authority, its
//! exchange key in vectors.json. It was added to the existing vectors
//! (repositories of format 2 made before could not hold one) with
//! `make_vectors --add-remote-slot testdata/backup-v2`, which opens the
//! repository with the master key and changes nothing else.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use atrest_backup::{ChunkSizes, LocalBackend, Repository, SnapshotMeta};
use atrest_core::SecretKey;
use atrest_vault::Unlocker;
use serde_json::json;

const MASTER: [u8; 32] = [0x42; 32];
const KEY_FILE: [u8; 32] = [0x17; 32];
const VAULT_ID: [u8; 16] = [0x24; 16];
const VAULT_BACKUP_KEY: [u8; 32] = [0x33; 32];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Adds slot 2, a remote slot, to the repository under `out` and names its
/// exchange key in `out/vectors.json`.
fn add_remote_slot(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut repo = Repository::open(
        LocalBackend::new(out.join("repo")),
        &SecretKey::from_bytes(MASTER),
    )?;
    let host = atrest_remote::HostSecret::generate();
    let (binding, key) = atrest_remote::enroll(&host.public_key());
    let member = atrest_vault::RemoteMember {
        authority: atrest_vault::AuthorityRef {
            url: "https://keys.example:7443".into(),
            ca_fingerprint: [0x5a; 32],
            host_id: atrest_remote::HostId::new("backup-vectors")?,
            audit_public_key: [0xa5; 32],
        },
        binding,
        key,
    };
    let id = repo.add_remote_slot(&member, &[], "authority")?;
    let path = out.join("vectors.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    v["remote_slot"] = id.into();
    v["remote_exchange_key"] = hex(member.key.expose()).into();
    fs::write(&path, serde_json::to_string_pretty(&v)?)?;
    println!("added remote keyslot {id} to {}", out.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, out] = &args[..]
        && flag == "--add-remote-slot"
    {
        return add_remote_slot(Path::new(out));
    }
    let out = args.first().ok_or("usage: make_vectors OUT_DIR")?;
    let out = &std::path::absolute(Path::new(&out))?;
    if out.exists() {
        return Err(format!("{} exists; remove it first", out.display()).into());
    }
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("docs/empty"))?;
    let mut x = 7u64;
    let noise: Vec<u8> = (0..40_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(src.join("noise.bin"), &noise)?;
    fs::write(
        src.join("docs/readme.txt"),
        "a small text file\n".repeat(50),
    )?;
    fs::write(src.join("docs/copy.bin"), &noise)?;
    fs::write(src.join("empty"), b"")?;
    std::os::unix::fs::symlink("docs/readme.txt", src.join("link"))?;
    fs::set_permissions(src.join("noise.bin"), fs::Permissions::from_mode(0o600))?;
    let mut files = Vec::new();
    for rel in [
        "noise.bin",
        "docs/readme.txt",
        "docs/copy.bin",
        "empty",
        "link",
        "docs/empty",
        "docs",
    ] {
        let p = src.join(rel);
        let t = rustix::fs::Timespec {
            tv_sec: 1_767_225_600,
            tv_nsec: 250_000_000,
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &p,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    for rel in [
        "noise.bin",
        "docs/readme.txt",
        "docs/copy.bin",
        "empty",
        "link",
        "docs/empty",
        "docs",
    ] {
        let p = src.join(rel);
        let md = fs::symlink_metadata(&p)?;
        let (kind, content, target) = if md.file_type().is_symlink() {
            (
                "symlink",
                None,
                Some(fs::read_link(&p)?.display().to_string()),
            )
        } else if md.is_dir() {
            ("dir", None, None)
        } else {
            (
                "file",
                Some(hex(&atrest_core::sha256(&fs::read(&p)?))),
                None,
            )
        };
        files.push(json!({
            "path": rel, "kind": kind, "mode": md.mode() & 0o7777, "mtime_sec": md.mtime(),
            "mtime_nsec": md.mtime_nsec(), "sha256": content, "target": target,
        }));
    }
    let sizes = ChunkSizes {
        min: 1024,
        avg: 4096,
        max: 16384,
    };
    let repo_dir = std::path::absolute(out.join("repo"))?;
    let mut repo = Repository::init(
        LocalBackend::new(&repo_dir),
        &SecretKey::from_bytes(MASTER),
        sizes,
    )?;
    let fast = atrest_core::Argon2Params::INSECURE_FAST;
    repo.add_slot(
        &Unlocker::KeyFile(SecretKey::from_bytes(KEY_FILE)),
        "vectors",
        fast,
    )?;
    repo.add_slot(
        &Unlocker::Vault {
            vault_id: VAULT_ID,
            key: SecretKey::from_bytes(VAULT_BACKUP_KEY),
        },
        "vault",
        fast,
    )?;
    let meta = SnapshotMeta {
        time_ms: 1_767_225_600_000,
        hostname: "vectors".into(),
        tags: vec!["v2".into()],
    };
    // Stored under the relative name "src", so the vectors do not depend on
    // where they were made.
    std::env::set_current_dir(tmp.path())?;
    let (id, _) = repo.backup(&[Path::new("src").to_path_buf()], &meta)?;
    fs::write(
        out.join("vectors.json"),
        serde_json::to_string_pretty(&json!({
            "format": "atrest backup repository", "version": 2,
            "master_key": hex(&MASTER), "key_file": hex(&KEY_FILE), "key_file_slot": 0,
            "bound_vault": hex(&VAULT_ID), "vault_backup_key": hex(&VAULT_BACKUP_KEY),
            "vault_slot": 1,
            "chunk": { "min": sizes.min, "avg": sizes.avg, "max": sizes.max },
            "snapshot": id, "root": "src", "entries": files,
        }))?,
    )?;
    add_remote_slot(out)?;
    println!("wrote {}", out.display());
    Ok(())
}
