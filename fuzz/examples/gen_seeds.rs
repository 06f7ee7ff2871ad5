//! Writes the seed corpora under `fuzz/corpus-seed/<target>/` from real
//! vaults made through the public API. Run once, from anywhere:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Vault ids and keys are random, so every run writes different bytes; the
//! checked-in seeds are one such run. Name seeds use the fixed fuzzing keys
//! of `atrest_fuzz::transform`, so they decrypt inside `fuzz_names`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use atrest_core::{Argon2Params, ContentAlgorithm, SecretBytes, SecretKey};
use atrest_fuzz::{BODY_FIXED, FRAME_HEAD};
use atrest_vault::names::{DIRID_FILE, LONG_LINK_PREFIX};
use atrest_vault::{
    BLOCK_SIZE, Backend, CONFIG_FILE, ContentKey, CreateOptions, EncryptedName, Unlocker, Vault,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("seed directory");
    fs::write(dir.join(name), bytes).expect("seed file");
    println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
}

fn main() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = fuzz_dir.join("corpus-seed");
    let scratch = std::env::temp_dir().join(format!("atrest-gen-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);

    // Configs: three real vaults.
    let fast = Argon2Params::INSECURE_FAST;
    let key_file = Unlocker::KeyFile(SecretKey::from_bytes([1; 32]));
    let mut configs: Vec<(&str, Vec<u8>)> = Vec::new();

    let root = scratch.join("keyfile-recovery-gcm");
    let options = CreateOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        backend: Backend::Fuse,
        argon2: fast,
        recovery_key: true,
    };
    let (_, recovery) = Vault::create(&root, options, &key_file, "ops").expect("create");
    let recovery = recovery.expect("recovery key");
    configs.push((
        "keyfile-recovery-gcm",
        fs::read(root.join(CONFIG_FILE)).expect("config"),
    ));
    let dir_id_file = fs::read(root.join(DIRID_FILE)).expect("dir id");

    let root = scratch.join("passphrase-xchacha");
    let options = CreateOptions {
        algorithm: ContentAlgorithm::XChaCha20Poly1305,
        backend: Backend::Fuse,
        argon2: fast,
        recovery_key: false,
    };
    let pass = Unlocker::Passphrase(SecretBytes::new(b"correct horse".to_vec()));
    Vault::create(&root, options, &pass, "laptop").expect("create");
    configs.push((
        "passphrase-xchacha",
        fs::read(root.join(CONFIG_FILE)).expect("config"),
    ));

    let root = scratch.join("many-slots");
    let options = CreateOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        backend: Backend::Fuse,
        argon2: fast,
        recovery_key: true,
    };
    let (mut vault, _) = Vault::create(&root, options, &key_file, "").expect("create");
    vault
        .add_slot(&pass, "passphrase: Ünïcödé label", fast)
        .expect("add");
    for (i, label) in ["backup", &"x".repeat(64), "to be removed"]
        .into_iter()
        .enumerate()
    {
        let k = Unlocker::KeyFile(SecretKey::from_bytes([10 + i as u8; 32]));
        vault.add_slot(&k, label, fast).expect("add");
    }
    vault.remove_slot(1).expect("remove");
    configs.push((
        "many-slots",
        fs::read(root.join(CONFIG_FILE)).expect("config"),
    ));

    let root = scratch.join("fscrypt");
    let options = CreateOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        backend: Backend::Fscrypt,
        argon2: fast,
        recovery_key: true,
    };
    Vault::create(&root, options, &key_file, "fscrypt").expect("create");
    configs.push(("fscrypt", fs::read(root.join(CONFIG_FILE)).expect("config")));

    // A remote slot and a 2-of-3 threshold slot beside a passphrase.
    let root = scratch.join("remote-threshold");
    let options = CreateOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        backend: Backend::Fuse,
        argon2: fast,
        recovery_key: false,
    };
    let (mut vault, _) = Vault::create(&root, options, &pass, "").expect("create");
    let member = |n: u8| {
        let secret = atrest_remote::HostSecret::generate();
        let (binding, key) = atrest_remote::enroll(&secret.public_key());
        atrest_vault::RemoteMember {
            authority: atrest_vault::AuthorityRef {
                url: format!("https://keys{n}.example:7443"),
                ca_fingerprint: [n; 32],
                host_id: atrest_remote::HostId::new("web-1").expect("host id"),
                audit_public_key: [n; 32],
            },
            binding,
            key,
        }
    };
    vault.add_remote_slot(&member(0), &["https://keys0b.example:7443".to_string()], "keys0").expect("remote");
    let members: Vec<_> = (1..=3).map(member).collect();
    vault
        .add_threshold_slot(2, &members, "quorum")
        .expect("threshold");
    configs.push((
        "remote-threshold",
        fs::read(root.join(CONFIG_FILE)).expect("config"),
    ));

    for (name, bytes) in &configs {
        write(&seeds.join("fuzz_config"), &format!("{name}.conf"), bytes);
        // The keyslot section: count byte and records, without the MAC.
        let section = &bytes[FRAME_HEAD + BODY_FIXED..bytes.len() - atrest_core::MAC_LEN];
        write(
            &seeds.join("fuzz_keyslot"),
            &format!("{name}.slots"),
            section,
        );
    }

    // Headers, dir ids, recovery keys.
    let header_dir = seeds.join("fuzz_header");
    let content = ContentKey::new(
        SecretKey::from_bytes([2; 32]),
        ContentAlgorithm::Aes256Gcm,
        BLOCK_SIZE,
    );
    let file_path = scratch.join("content-file");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file_path)
        .expect("file");
    content.write_header(&file).expect("header");
    write(
        &header_dir,
        "file-header",
        &fs::read(&file_path).expect("header bytes"),
    );
    write(&header_dir, "dirid", &dir_id_file);
    let shown = recovery.display();
    write(&header_dir, "recovery-key", shown.as_bytes());
    write(
        &header_dir,
        "recovery-key-lower-spaced",
        shown.to_lowercase().replace('-', " ").as_bytes(),
    );
    write(&header_dir, "raw-key", &[0x5a; 32]);

    // Names: `selector ‖ dir id ‖ payload` under the fixed fuzzing keys.
    let names_dir = seeds.join("fuzz_names");
    let dir_id = [0x11u8; 16];
    for selector in [0u8, 1] {
        let t = atrest_fuzz::transform(atrest_fuzz::algorithm(selector));
        let alg = if selector == 0 { "gcm" } else { "xchacha" };
        let seed = |payload: &[u8]| [&[selector][..], &dir_id, payload].concat();
        for (label, plain) in [
            ("short", "report.pdf".to_string()),
            ("long", "n".repeat(200)),
        ] {
            let full = match t.encrypt_name(&dir_id, OsStr::new(&plain)) {
                EncryptedName::Short(full) | EncryptedName::Long { full, .. } => full,
            };
            write(
                &names_dir,
                &format!("name-{label}-{alg}"),
                &seed(full.as_bytes()),
            );
        }
        let link = t.encrypt_symlink(OsStr::new("../some/where"));
        write(
            &names_dir,
            &format!("symlink-{alg}"),
            &seed(link.as_encoded_bytes()),
        );
        let xname = t.encrypt_xattr_name(OsStr::new("user.mime"));
        write(
            &names_dir,
            &format!("xattr-name-{alg}"),
            &seed(xname.as_encoded_bytes()),
        );
        let value = t.encrypt_xattr_value(&xname, b"text/plain");
        let name_bytes = xname.as_encoded_bytes();
        let payload = [&[name_bytes.len() as u8][..], name_bytes, &value].concat();
        write(&names_dir, &format!("xattr-value-{alg}"), &seed(&payload));
    }
    let long_link = format!("{LONG_LINK_PREFIX}{}", "A".repeat(43));
    write(
        &names_dir,
        "long-link-target",
        &[&[0u8][..], &dir_id, long_link.as_bytes()].concat(),
    );
    // First 8 payload bytes as a backing symlink length of u64::MAX: makes
    // `symlink_target_len` overflow when run with ATREST_FUZZ_STRICT=1.
    let overflow = [&[0u8][..], &dir_id, &u64::MAX.to_le_bytes()].concat();
    write(&names_dir, "symlink-len-overflow", &overflow);
    for control in [
        DIRID_FILE,
        "atrest.long.abc",
        "atrest.long.abc.name",
        "atrest.conf.bak",
    ] {
        write(
            &names_dir,
            &format!("backing-{control}"),
            control.as_bytes(),
        );
    }

    // Layout: `plain (u64 LE) ‖ cipher (u64 LE) ‖ shape (u64 LE)`.
    let layout_dir = seeds.join("fuzz_layout");
    let words =
        |a: u64, b: u64, c: u64| [a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes()].concat();
    write(&layout_dir, "empty-file", &words(0, 18, 0));
    write(&layout_dir, "one-block", &words(4096, 18 + 4124, 4095));
    write(
        &layout_dir,
        "partial-block",
        &words(5000, 18 + 4124 + 29, 15 | (28 << 32)),
    );
    write(
        &layout_dir,
        "bounds",
        &words((1 << 56) - 1, u64::MAX, u64::MAX),
    );

    fs::remove_dir_all(&scratch).expect("clean up");
}
