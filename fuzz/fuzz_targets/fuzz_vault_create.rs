//! Round trip through the public API: `Vault::create` and `add_slot` with
//! arbitrary labels and key-file / recovery-key secrets, then the config
//! file on disk must decode to the same config (and satisfy the
//! `fuzz_config` invariants), both copies must agree, and every secret
//! must unlock the same master key while a wrong one does not.
//!
//! Passphrase slots are left out: Argon2id costs milliseconds even at the
//! test parameters. `fuzz_config_roundtrip` covers their encoding.
//!
//! Vaults are made under /dev/shm when it exists (the config writes fsync),
//! in one directory per fuzzing process (`atrest-fuzz-<pid>`), made anew for
//! each input and removed after it; a failing input leaves its vault there
//! for a look, and the next run removes directories of dead processes.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use atrest_core::{Argon2Params, ContentAlgorithm, SecretKey};
use atrest_fuzz::{MAX_LABEL, MAX_SLOTS};
use atrest_vault::names::DIRID_FILE;
use atrest_vault::{
    BACKUP_FILE, Backend, CONFIG_FILE, CreateOptions, LockedVault, RecoveryKey, Unlocker, Vault,
    VaultConfig, VaultError,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct SlotIn {
    recovery: bool,
    key: [u8; 32],
    label: String,
}

#[derive(Debug, Arbitrary)]
struct Input {
    xchacha: bool,
    fscrypt: bool,
    recovery_key: bool,
    first: SlotIn,
    more: Vec<SlotIn>,
}

/// At most this many `add_slot` calls per input (each writes two files).
const MAX_ADDS: usize = 6;

fn unlocker(recovery: bool, key: [u8; 32]) -> Unlocker {
    let key = SecretKey::from_bytes(key);
    if recovery {
        Unlocker::RecoveryKey(key)
    } else {
        Unlocker::KeyFile(key)
    }
}

const PREFIX: &str = "atrest-fuzz-";

fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        // Directories of fuzzing processes that are gone (libFuzzer exits
        // without running destructors, and a crash keeps its vault).
        if let Ok(entries) = fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fuzz work directory");
        dir
    })
}

fuzz_target!(|input: Input| {
    let root = workdir().join("v");
    let _ = fs::remove_dir_all(&root);
    let algorithm = if input.xchacha {
        ContentAlgorithm::XChaCha20Poly1305
    } else {
        ContentAlgorithm::Aes256Gcm
    };
    // An fscrypt vault's config directory is an ordinary directory too
    // (the kernel part is not touched by create or add_slot).
    let backend = if input.fscrypt {
        Backend::Fscrypt
    } else {
        Backend::Fuse
    };
    let options = CreateOptions {
        algorithm,
        backend,
        argon2: Argon2Params::INSECURE_FAST,
        recovery_key: input.recovery_key,
        format: atrest_vault::VERSION,
    };
    let first = unlocker(input.first.recovery, input.first.key);
    let created = Vault::create(&root, options, &first, &input.first.label);
    if input.first.label.len() > MAX_LABEL {
        assert!(
            matches!(created, Err(VaultError::Invalid(_))),
            "label too long: {:?}",
            created.as_ref().err()
        );
        return;
    }
    let (mut vault, recovery) = created.unwrap_or_else(|e| panic!("create failed: {e}"));
    assert_eq!(recovery.is_some(), input.recovery_key);
    assert_eq!(vault.config().generation, 1, "a new vault is written once");
    assert_eq!(vault.config().backend, backend);
    // Only a FUSE vault's root is a backing directory with a directory id.
    assert_eq!(root.join(DIRID_FILE).exists(), backend == Backend::Fuse);

    let mut secrets: Vec<(bool, [u8; 32])> = vec![(input.first.recovery, input.first.key)];
    if let Some(rk) = &recovery {
        secrets.push((true, *rk.secret().expose()));
        let back = RecoveryKey::parse(&rk.display()).expect("own recovery key");
        assert_eq!(back.secret().expose(), rk.secret().expose());
    }

    // The config bytes before the last successful add_slot.
    let mut previous: Option<Vec<u8>> = None;
    for slot in input.more.into_iter().take(MAX_ADDS) {
        let before = vault.config().clone();
        let before_bytes = fs::read(root.join(CONFIG_FILE)).expect("config file");
        let expected_id = (0..=u8::MAX).find(|id| before.keyslots.iter().all(|s| s.id != *id));
        let result = vault.add_slot(
            &unlocker(slot.recovery, slot.key),
            &slot.label,
            Argon2Params::INSECURE_FAST,
        );
        if slot.label.len() > MAX_LABEL {
            assert!(matches!(result, Err(VaultError::Invalid(_))), "{result:?}");
            assert_eq!(vault.config(), &before);
        } else if before.keyslots.len() >= MAX_SLOTS {
            assert!(
                matches!(result, Err(VaultError::TooManySlots(_))),
                "{result:?}"
            );
        } else {
            let id = result.unwrap_or_else(|e| panic!("add_slot failed: {e}"));
            assert_eq!(Some(id), expected_id);
            assert_eq!(vault.config().generation, before.generation + 1);
            previous = Some(before_bytes);
            let last = vault.config().keyslots.last().expect("a slot");
            assert_eq!((last.id, last.label.as_str()), (id, slot.label.as_str()));
            secrets.push((slot.recovery, slot.key));
        }
    }

    let bytes = fs::read(root.join(CONFIG_FILE)).expect("config file");
    assert_eq!(
        fs::read(root.join(BACKUP_FILE)).expect("backup file"),
        bytes
    );
    let decoded = VaultConfig::decode(&bytes).unwrap_or_else(|e| panic!("own config refused: {e}"));
    assert_eq!(&decoded, vault.config());
    atrest_fuzz::check_config(&decoded, &bytes);

    let locked = LockedVault::open(&root).expect("open");
    assert_eq!(locked.config(), vault.config());
    assert!(
        locked.config_problems().is_empty(),
        "{:?}",
        locked.config_problems()
    );

    let master = *vault.master_key().expose();
    for &(recovery, key) in &secrets {
        let opened = LockedVault::open(&root)
            .and_then(|l| l.unlock(&unlocker(recovery, key)))
            .unwrap_or_else(|e| panic!("own secret refused: {e}"));
        assert_eq!(opened.master_key().expose(), &master);
    }
    let (recovery, mut wrong) = secrets[0];
    wrong[31] ^= 1;
    if !secrets.contains(&(recovery, wrong)) {
        let result = LockedVault::open(&root).and_then(|l| l.unlock(&unlocker(recovery, wrong)));
        assert!(matches!(result, Err(VaultError::WrongKey)), "{result:?}");
    }

    // A crash between the two copy writes of the last change leaves the
    // backup one generation behind: every secret still opens the newer
    // config (the last-added one included), and both copies are rewritten
    // from it (a write, so one generation later).
    if let Some(old) = previous {
        let backup = root.join(BACKUP_FILE);
        fs::remove_file(&backup).expect("remove backup");
        fs::write(&backup, &old).expect("write stale backup");
        let newest = vault.config();
        for &(recovery, key) in &secrets {
            let opened = LockedVault::open(&root)
                .and_then(|l| l.unlock(&unlocker(recovery, key)))
                .unwrap_or_else(|e| panic!("secret refused with a stale backup: {e}"));
            let got = opened.config();
            assert_eq!(got.keyslots, newest.keyslots, "a stale backup won");
            assert_eq!(
                (got.vault_id, got.created_unix),
                (newest.vault_id, newest.created_unix)
            );
            assert_eq!(got.generation, newest.generation + 1, "repair is one write");
        }
        let primary = fs::read(root.join(CONFIG_FILE)).expect("config file");
        assert_eq!(
            fs::read(&backup).expect("backup file"),
            primary,
            "stale backup not repaired"
        );
        let repaired = VaultConfig::decode(&primary).expect("repaired config");
        assert_eq!(repaired.keyslots, newest.keyslots);
    }
    drop(vault);
    let _ = fs::remove_dir_all(&root);
});
