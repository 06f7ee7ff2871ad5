//! Known-answer vectors: walks every file under `testdata/vectors/` and
//! checks it against the public API of atrest-vault and atrest-core.
//!
//! A vector is a text file of `name: value` lines (`#` starts a comment
//! line). `kind` picks the check, `expect` the outcome (`success` or a named
//! failure), `comment` says what it is about; the other fields are hex unless
//! said otherwise. `testdata/README.md` lists the kinds and fields. Nothing
//! here names a vector: add a file and it is checked. An unknown kind, an
//! unknown `expect`, a missing field or a field the check never reads fails.
//!
//! The vectors are written by `cargo run -p atrest-vault --example
//! make_vectors` and checked independently by
//! `tests/differential/check_vectors.py`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use atrest_core::{
    Argon2Params, BlockCipher, ContentAlgorithm, NameCipher, SecretBytes, SecretKey, labels,
};
use atrest_vault::names::{BackingName, classify, parse_dir_id};
use atrest_vault::{
    BACKUP_FILE, BLOCK_SIZE, CONFIG_FILE, ContentError, ContentKey, EncryptedName, LockedVault,
    NameTransform, RecoveryKey, RecoveryKeyError, SlotKind, Unlocker, VaultConfig, VaultError,
    parse_header,
};

/// `ATREST_VECTORS_DIR` points the harness elsewhere (to check that a
/// corrupted copy of the vectors fails).
fn vectors_dir() -> PathBuf {
    std::env::var_os("ATREST_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Vector {
    name: String,
    kind: String,
    expect: String,
    fields: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Vector {
    fn parse(name: String, text: &str) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: not `name: value`", i + 1))?;
            let value = value.strip_prefix(' ').unwrap_or(value);
            if fields.insert(key.to_string(), value.to_string()).is_some() {
                return Err(format!("line {}: `{key}` given twice", i + 1));
            }
        }
        let mut take = |k: &str| fields.remove(k).ok_or_else(|| format!("no `{k}` line"));
        let kind = take("kind")?;
        let expect = take("expect")?;
        let comment = take("comment")?;
        if comment.trim().is_empty() {
            return Err("empty comment".into());
        }
        Ok(Self {
            name,
            kind,
            expect,
            fields,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    fn opt(&self, key: &str) -> Option<&str> {
        self.used.borrow_mut().insert(key.to_string());
        self.fields.get(key).map(String::as_str)
    }

    fn text(&self, key: &str) -> Result<&str, String> {
        self.opt(key)
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    fn opt_hex(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(s) = self.opt(key) else {
            return Ok(None);
        };
        if s.len() % 2 != 0 {
            return Err(format!("`{key}`: odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| format!("`{key}`: not hex"))
            })
            .collect::<Result<Vec<u8>, String>>()
            .map(Some)
    }

    fn hex(&self, key: &str) -> Result<Vec<u8>, String> {
        self.opt_hex(key)?
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    fn array<const N: usize>(&self, key: &str) -> Result<[u8; N], String> {
        let v = self.hex(key)?;
        v.try_into()
            .map_err(|v: Vec<u8>| format!("`{key}`: {} bytes, expected {N}", v.len()))
    }

    fn success(&self) -> bool {
        self.expect == "success"
    }

    /// Compares an outcome with `expect`: `Ok` means success, `Err(class)`
    /// a failure of that class.
    fn outcome(&self, got: Result<(), String>) -> Check {
        match got {
            Ok(()) if self.success() => Ok(()),
            Ok(()) => Err(format!("expected {}, but it succeeded", self.expect)),
            Err(class) if class == self.expect => Ok(()),
            Err(class) => Err(format!("expected {}, got {class}", self.expect)),
        }
    }

    fn unused(&self) -> Vec<&str> {
        let used = self.used.borrow();
        self.fields
            .keys()
            .filter(|k| !used.contains(*k))
            .map(String::as_str)
            .collect()
    }
}

fn algorithm(v: &Vector) -> Result<ContentAlgorithm, String> {
    match v.text("algorithm")? {
        "aes-256-gcm" => Ok(ContentAlgorithm::Aes256Gcm),
        "xchacha20-poly1305" => Ok(ContentAlgorithm::XChaCha20Poly1305),
        other => Err(format!("unknown algorithm {other}")),
    }
}

fn key32(bytes: [u8; 32]) -> SecretKey {
    SecretKey::from_bytes(bytes)
}

/// `ContentError` has one variant for every kind of damage, so the class is
/// read from the message (see the report on structured error kinds).
fn content_class(e: &ContentError) -> String {
    match e {
        ContentError::Corrupt(m) if m.contains("failed authentication") => "auth-failure".into(),
        ContentError::Corrupt(m) if m.contains("truncated") || m.contains("wrong size") => {
            if m.contains("block") {
                "truncated".into()
            } else {
                "parse-error".into()
            }
        }
        ContentError::Corrupt(m) if m.contains("unknown") && m.contains("version") => {
            "unknown-version".into()
        }
        ContentError::Corrupt(m) if m.contains("impossible file name") => "invalid-name".into(),
        ContentError::Corrupt(m) if m.contains("impossible mode") => "parse-error".into(),
        ContentError::Corrupt(m)
            if m.contains("not base64url")
                || m.contains("does not match its")
                || m.contains("not text") =>
        {
            "parse-error".into()
        }
        other => format!("unclassified error ({other})"),
    }
}

fn vault_class(e: &VaultError) -> String {
    match e {
        VaultError::WrongKey => "wrong-key".into(),
        VaultError::Tampered => "tampered".into(),
        VaultError::UnknownVersion(_) => "unknown-version".into(),
        VaultError::Corrupt(_) => "parse-error".into(),
        other => format!("unexpected error ({other})"),
    }
}

fn check_content_block(v: &Vector) -> Check {
    let alg = algorithm(v)?;
    let content_key = v.array::<32>("content_key")?;
    let file_id = v.array::<16>("file_id")?;
    let block: u64 = v
        .text("block")?
        .parse()
        .map_err(|_| "`block`: not a u64".to_string())?;
    let sealed = v.hex("sealed")?;
    if let Some(file_key) = v.opt_hex("file_key")? {
        let derived = key32(content_key).derive(&file_id, labels::FILE_KEY);
        ensure!(
            derived.expose()[..] == file_key[..],
            "file key derivation differs"
        );
    }
    let key = ContentKey::new(key32(content_key), alg, BLOCK_SIZE);
    let cipher = key.file_cipher(file_id);
    let mut buf = sealed.clone();
    let got = cipher.open_block(block, &mut buf).map(<[u8]>::to_vec);
    if v.success() {
        let plain = v.hex("plaintext")?;
        let opened = got.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(opened == plain, "plaintext differs");
        ensure!(
            sealed.len() as u64 <= key.layout().sealed_block(),
            "a sealed block longer than block size + overhead"
        );
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| content_class(&e)))
}

fn name_transform(v: &Vector) -> Result<NameTransform, String> {
    let master = key32(v.array::<32>("master_key")?);
    let vault_id = v.array::<16>("vault_id")?;
    // As VaultKeys::derive does it (that function is private).
    let name_key = master.derive_bytes(&vault_id, labels::NAME_KEY, atrest_core::NAME_KEY_LEN);
    if let Some(expected) = v.opt_hex("name_key")? {
        ensure!(
            name_key.expose() == &expected[..],
            "name key derivation differs"
        );
    }
    // Names do not depend on the content algorithm; symlinks and xattr
    // values are sealed with it.
    let alg = match v.opt("algorithm") {
        Some(_) => algorithm(v)?,
        None => ContentAlgorithm::Aes256Gcm,
    };
    Ok(NameTransform::new(
        NameCipher::new(name_key),
        BlockCipher::new(alg, &master.derive(&vault_id, labels::METADATA_KEY)),
    ))
}

fn check_symlink(v: &Vector) -> Check {
    let t = name_transform(v)?;
    let stored = v.text("stored")?;
    let link = v.opt("link");
    // Through a real backing symlink, as the FUSE backend reads it.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let backing = root.join("link");
    let setup = || -> std::io::Result<()> {
        match link {
            Some(link) => {
                let side = NameTransform::long_link_side_file(root, OsStr::new(link))
                    .ok_or_else(|| std::io::Error::other("`link` does not name a side file"))?;
                fs::create_dir_all(side.parent().expect("side file in a directory"))?;
                fs::write(&side, stored)?;
                std::os::unix::fs::symlink(link, &backing)
            }
            None => std::os::unix::fs::symlink(stored, &backing),
        }
    };
    setup().map_err(|e| e.to_string())?;
    let got = t.read_symlink(root, &backing);
    if v.success() {
        let target = v.hex("target")?;
        let read = got.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(read.as_bytes() == &target[..], "target differs");
        let direct = t
            .decrypt_symlink(OsStr::new(stored))
            .map_err(|e| e.to_string())?;
        ensure!(direct.as_bytes() == &target[..], "decrypt_symlink differs");
        ensure!(
            (stored.len() > atrest_vault::names::MAX_BACKING_LINK) == link.is_some(),
            "a stored target of {} bytes {} a side file",
            stored.len(),
            if link.is_some() {
                "should not need"
            } else {
                "needs"
            }
        );
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| content_class(&e)))
}

fn check_xattr(v: &Vector) -> Check {
    let t = name_transform(v)?;
    let stored_name = OsStr::new(v.text("stored_name")?);
    let sealed = v.hex("sealed_value")?;
    let name = match t.decrypt_xattr_name(stored_name) {
        Ok(Some(name)) => name,
        Ok(None) => return v.outcome(Err("not-ours".into())),
        Err(e) => return v.outcome(Err(content_class(&e))),
    };
    let value = t.decrypt_xattr_value(stored_name, &sealed);
    if v.success() {
        ensure!(name.as_bytes() == &v.hex("name")?[..], "name differs");
        ensure!(
            t.encrypt_xattr_name(&name) == stored_name,
            "the name encrypts to another stored name"
        );
        let value = value.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(value == v.hex("value")?, "value differs");
        return Ok(());
    }
    v.outcome(value.map(drop).map_err(|e| content_class(&e)))
}

fn check_root_attr(v: &Vector) -> Check {
    let t = name_transform(v)?;
    let got = t.decrypt_root_attr(&v.hex("record")?);
    if v.success() {
        let got = got.map_err(|e| format!("expected success, got {e}"))?;
        let number = |key: &str, radix: u32| -> Result<u32, String> {
            u32::from_str_radix(v.text(key)?, radix).map_err(|e| format!("{key}: {e}"))
        };
        let want = atrest_vault::root_attr::RootAttr {
            mode: number("mode", 8)?,
            uid: number("uid", 10)?,
            gid: number("gid", 10)?,
        };
        ensure!(got == want, "attributes differ: {got:?}");
        let again = t.encrypt_root_attr(&got);
        ensure!(
            t.decrypt_root_attr(&again).ok() == Some(want),
            "a record written now does not read back"
        );
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| content_class(&e)))
}

/// Reads a long entry through its side file in a scratch directory.
fn decrypt_long(
    t: &NameTransform,
    dir_id: &[u8; 16],
    entry: &str,
    full: &str,
) -> Result<Option<Vec<u8>>, ContentError> {
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join(format!("{entry}.name")), full)?;
    t.decrypt_entry(dir.path(), dir_id, OsStr::new(entry))
        .map(|n| n.map(|n| n.as_bytes().to_vec()))
}

fn check_name(v: &Vector) -> Check {
    let t = name_transform(v)?;
    let dir_id = v.array::<16>("dir_id")?;
    let encrypted = v.text("encrypted")?;
    let entry = v.opt("entry");
    let long = entry.is_some_and(|e| e.starts_with("atrest.long."));
    if v.success() {
        let name = v.hex("name")?;
        let entry = entry.ok_or("missing field `entry`")?;
        let enc = t.encrypt_name(&dir_id, OsStr::from_bytes(&name));
        let (got_entry, got_full) = match &enc {
            EncryptedName::Short(s) => (s.as_str(), s.as_str()),
            EncryptedName::Long { entry, full } => (entry.as_str(), full.as_str()),
        };
        ensure!(got_full == encrypted, "encrypts to {got_full}");
        ensure!(got_entry == entry, "entry is {got_entry}");
        ensure!(entry.len() <= 255, "entry longer than 255 bytes");
        let back = t
            .decrypt_name(&dir_id, encrypted)
            .map_err(|e| format!("decrypt: {e}"))?;
        ensure!(back.as_bytes() == &name[..], "decrypts to another name");
        match classify(OsStr::new(entry)) {
            BackingName::Short(s) if !long && s == entry => {}
            BackingName::Long(s) if long && s == entry => {
                let back = decrypt_long(&t, &dir_id, entry, encrypted)
                    .map_err(|e| format!("long entry: {e}"))?;
                ensure!(
                    back.as_deref() == Some(&name[..]),
                    "long entry decrypts to another name"
                );
            }
            other => return Err(format!("entry classified as {other:?}")),
        }
        return Ok(());
    }
    let got = match entry {
        Some(entry) if long => decrypt_long(&t, &dir_id, entry, encrypted).map(drop),
        Some(_) => return Err("`entry` on a failing vector is only for long names".into()),
        None => t.decrypt_name(&dir_id, encrypted).map(drop),
    };
    v.outcome(got.map_err(|e| content_class(&e)))
}

fn check_header(v: &Vector) -> Check {
    let data = v.hex("data")?;
    let (got, field) = if v.kind == "file-header" {
        (parse_header(&data), "file_id")
    } else {
        (parse_dir_id(&data), "dir_id")
    };
    if v.success() {
        let id = got.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(id == v.array::<16>(field)?, "id differs");
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| content_class(&e)))
}

fn check_recovery_key(v: &Vector) -> Check {
    let got = RecoveryKey::parse(v.text("text")?);
    if v.success() {
        let key = got.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(
            key.secret().expose()[..] == v.hex("key")?[..],
            "key differs"
        );
        let shown = key.display();
        let again =
            RecoveryKey::parse(&shown).map_err(|e| format!("display does not parse: {e}"))?;
        ensure!(
            again.secret().expose() == key.secret().expose(),
            "display does not round-trip"
        );
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| {
        match e {
            RecoveryKeyError::Checksum => "checksum-error",
            RecoveryKeyError::Length(_) => "length-error",
            RecoveryKeyError::Character(_) => "character-error",
        }
        .to_string()
    }))
}

fn check_key_schedule(v: &Vector) -> Check {
    let master = key32(v.array::<32>("master_key")?);
    let vault_id = v.array::<16>("vault_id")?;
    let file_id = v.array::<16>("file_id")?;
    let same = |what: &str, got: &[u8]| -> Check {
        ensure!(got == &v.hex(what)?[..], "{what} differs: {}", hex(got));
        Ok(())
    };
    let content = master.derive(&vault_id, labels::CONTENT_KEY);
    same("content_key", content.expose())?;
    same(
        "file_key",
        content.derive(&file_id, labels::FILE_KEY).expose(),
    )?;
    same(
        "name_key",
        master
            .derive_bytes(&vault_id, labels::NAME_KEY, 64)
            .expose(),
    )?;
    same(
        "metadata_key",
        master.derive(&vault_id, labels::METADATA_KEY).expose(),
    )?;
    same(
        "config_mac_key",
        master.derive(&vault_id, labels::CONFIG_MAC).expose(),
    )?;
    let kek = |ikm: &SecretKey, kind: u8| {
        let mut info = labels::KEYSLOT_WRAP.to_vec();
        info.push(kind);
        ikm.derive(&vault_id, &info)
    };
    let secret = key32(v.array::<32>("slot_secret")?);
    same("kek_recovery_key", kek(&secret, 2).expose())?;
    same("kek_key_file", kek(&secret, 3).expose())?;
    let num = |k: &str| -> Result<u32, String> {
        v.text(k)?.parse().map_err(|_| format!("`{k}`: not a u32"))
    };
    let params = Argon2Params {
        memory_kib: num("argon2_memory_kib")?,
        iterations: num("argon2_iterations")?,
        parallelism: num("argon2_parallelism")?,
    };
    let argon = atrest_core::derive_from_passphrase(
        v.text("passphrase")?.as_bytes(),
        &v.hex("argon2_salt")?,
        params,
    )
    .map_err(|e| e.to_string())?;
    same("argon2_output", argon.expose())?;
    same("kek_passphrase", kek(&argon, 1).expose())?;
    v.outcome(Ok(()))
}

/// `member_keys: 1:HEX,3:HEX`: member index and its exchange key.
fn parse_member_keys(text: &str) -> Result<Vec<(u8, SecretKey)>, String> {
    text.split(',')
        .map(|item| {
            let (index, key) = item
                .split_once(':')
                .ok_or("member_keys: expected INDEX:HEX")?;
            let index = index
                .parse()
                .map_err(|_| format!("member_keys: bad index {index}"))?;
            let bytes = unhex(key).ok_or("member_keys: bad hex")?;
            let key = SecretKey::from_slice(&bytes).ok_or("member_keys: not 32 bytes")?;
            Ok((index, key))
        })
        .collect()
}

/// Opens the shares of the (first) threshold slot with the members' keys
/// and combines them; too few shares is a wrong key, as for any slot.
fn threshold_unlocker(
    locked: &LockedVault,
    keys: &[(u8, SecretKey)],
) -> Result<Unlocker, VaultError> {
    let config = locked.config();
    let (slot_id, slot) = config
        .keyslots
        .iter()
        .find_map(|s| match &s.kind {
            SlotKind::Threshold(t) => Some((s.id, t)),
            _ => None,
        })
        .ok_or(VaultError::WrongKey)?;
    let shares: Vec<_> = keys
        .iter()
        .filter_map(|(i, k)| slot.open_share(&config.vault_id, slot_id, *i, k))
        .collect();
    let combined = atrest_remote::combine(&shares).map_err(|_| VaultError::WrongKey)?;
    Ok(Unlocker::Threshold(combined))
}

fn check_keyslot(v: &Vector) -> Check {
    let config = v.hex("config")?;
    let backup = v.opt_hex("config_bak")?;
    let remote_key = v.opt_hex("remote_key")?;
    let member_keys = v.opt("member_keys").map(parse_member_keys).transpose()?;
    let unlocker = match (
        v.opt("passphrase"),
        v.opt_hex("passphrase_hex")?,
        v.opt("recovery_key"),
        v.opt_hex("key_file")?,
        remote_key,
    ) {
        _ if member_keys.is_some() => None,
        (Some(p), None, None, None, None) => Some(Unlocker::Passphrase(SecretBytes::new(
            p.as_bytes().to_vec(),
        ))),
        (None, Some(p), None, None, None) => Some(Unlocker::Passphrase(SecretBytes::new(p))),
        (None, None, Some(text), None, None) => Some(Unlocker::RecoveryKey(
            RecoveryKey::parse(text)
                .map_err(|e| format!("recovery_key: {e}"))?
                .secret()
                .clone(),
        )),
        (None, None, None, Some(k), None) => Some(Unlocker::KeyFile(
            SecretKey::from_slice(&k).ok_or("key_file: not 32 bytes")?,
        )),
        (None, None, None, None, Some(k)) => Some(Unlocker::Remote(
            SecretKey::from_slice(&k).ok_or("remote_key: not 32 bytes")?,
        )),
        _ => {
            return Err(
                "give exactly one of passphrase, passphrase_hex, recovery_key, \
                 key_file, remote_key, member_keys"
                    .into(),
            );
        }
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    fs::write(root.join(CONFIG_FILE), &config).map_err(|e| e.to_string())?;
    fs::write(root.join(BACKUP_FILE), backup.as_deref().unwrap_or(&config))
        .map_err(|e| e.to_string())?;
    let got = LockedVault::open(root).and_then(|locked| {
        let unlocker = match (unlocker, &member_keys) {
            (Some(u), _) => u,
            (None, Some(keys)) => threshold_unlocker(&locked, keys)?,
            (None, None) => unreachable!("one of them is set"),
        };
        locked.unlock(&unlocker)
    });
    if v.success() {
        let vault = got.map_err(|e| format!("expected success, got {e}"))?;
        ensure!(
            vault.master_key().expose()[..] == v.hex("master_key")?[..],
            "master key differs"
        );
        ensure!(
            vault.config().vault_id[..] == v.hex("vault_id")?[..],
            "vault id differs"
        );
        if let Some(good) = &backup {
            // A damaged or stale primary is rewritten from the copy that
            // verified (with the next generation number): both copies are
            // then identical and carry the backup's keyslots.
            let primary = fs::read(root.join(CONFIG_FILE)).map_err(|e| e.to_string())?;
            let rewritten =
                fs::read(root.join(atrest_vault::BACKUP_FILE)).map_err(|e| e.to_string())?;
            let (p, g) = (
                VaultConfig::decode(&primary).map_err(|e| e.to_string())?,
                VaultConfig::decode(good).map_err(|e| e.to_string())?,
            );
            ensure!(
                primary == rewritten
                    && p.keyslots == g.keyslots
                    && p.generation == g.generation + 1,
                "the damaged primary was not repaired from the backup"
            );
        }
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|e| vault_class(&e)))
}

fn check_aead(v: &Vector) -> Check {
    let alg = algorithm(v)?;
    let key = SecretKey::from_slice(&v.hex("key")?).ok_or("key: not 32 bytes")?;
    let cipher = BlockCipher::new(alg, &key);
    let got = cipher.open(&v.hex("aad")?, &v.hex("sealed")?);
    if v.success() {
        let plain =
            got.map_err(|_| "expected success, got an authentication failure".to_string())?;
        ensure!(plain == v.hex("plaintext")?, "plaintext differs");
        return Ok(());
    }
    v.outcome(got.map(drop).map_err(|_| "auth-failure".to_string()))
}

fn check_aes_siv(v: &Vector) -> Check {
    let key = v.hex("key")?;
    ensure!(key.len() == atrest_core::NAME_KEY_LEN, "key: not 64 bytes");
    let cipher = NameCipher::new(SecretBytes::new(key));
    let ad = v.hex("ad")?;
    let ct = v.hex("ciphertext")?;
    if v.success() {
        let pt = v.hex("plaintext")?;
        ensure!(cipher.encrypt(&[&ad], &pt) == ct, "encryption differs");
        ensure!(
            cipher.decrypt(&[&ad], &ct).as_deref() == Ok(&pt[..]),
            "decryption differs"
        );
        return Ok(());
    }
    v.outcome(
        cipher
            .decrypt(&[&ad], &ct)
            .map(drop)
            .map_err(|_| "auth-failure".to_string()),
    )
}

/// The outcomes each kind may expect; `success` is always allowed.
const KINDS: &[(&str, &[&str])] = &[
    ("content-block", &["auth-failure", "truncated"]),
    ("name", &["auth-failure", "parse-error", "invalid-name"]),
    (
        "keyslot",
        &["wrong-key", "tampered", "unknown-version", "parse-error"],
    ),
    ("file-header", &["unknown-version", "parse-error"]),
    ("dir-id", &["unknown-version", "parse-error"]),
    (
        "recovery-key",
        &["checksum-error", "length-error", "character-error"],
    ),
    ("key-schedule", &[]),
    ("symlink", &["auth-failure", "parse-error"]),
    ("xattr", &["auth-failure", "parse-error", "not-ours"]),
    (
        "root-attr",
        &["auth-failure", "parse-error", "unknown-version"],
    ),
    ("aead", &["auth-failure"]),
    ("aes-siv", &["auth-failure"]),
];

fn check(v: &Vector) -> Check {
    let (_, failures) = KINDS
        .iter()
        .find(|(k, _)| *k == v.kind)
        .ok_or_else(|| format!("unknown kind `{}`", v.kind))?;
    ensure!(
        v.success() || failures.contains(&v.expect.as_str()),
        "`{}` vectors cannot expect `{}`",
        v.kind,
        v.expect
    );
    match v.kind.as_str() {
        "content-block" => check_content_block(v),
        "name" => check_name(v),
        "keyslot" => check_keyslot(v),
        "file-header" | "dir-id" => check_header(v),
        "recovery-key" => check_recovery_key(v),
        "key-schedule" => check_key_schedule(v),
        "symlink" => check_symlink(v),
        "xattr" => check_xattr(v),
        "root-attr" => check_root_attr(v),
        "aead" => check_aead(v),
        "aes-siv" => check_aes_siv(v),
        _ => unreachable!(),
    }?;
    let unused = v.unused();
    ensure!(unused.is_empty(), "fields never read (typo?): {unused:?}");
    Ok(())
}

#[test]
fn known_answer_vectors() {
    let dir = vectors_dir();
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    // kind -> (positive, negative)
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for path in &paths {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let result = fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Vector::parse(name.clone(), &text))
            .and_then(|v| {
                check(&v)?;
                let c = counts.entry(v.kind.clone()).or_default();
                if v.success() {
                    c.0 += 1
                } else {
                    c.1 += 1
                }
                Ok(v.name)
            });
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    for (kind, (pos, neg)) in &counts {
        println!("{kind:>14}: {pos} success, {neg} failure vectors");
    }
    for (kind, _) in KINDS {
        let (pos, neg) = counts.get(*kind).copied().unwrap_or_default();
        if pos == 0 || (neg == 0 && *kind != "key-schedule") {
            failures.push(format!(
                "kind {kind}: needs success and failure vectors, has {pos} and {neg}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
