//! Names, symlink targets and xattrs. Input: `selector (1) ‖ dir id (16) ‖
//! payload`; the selector's low bit picks the metadata AEAD (AES-256-GCM or
//! XChaCha20-Poly1305); the keys are fixed (see `atrest_fuzz::transform`).
//!
//! - `classify` on arbitrary OsStr agrees with its documented rules.
//! - `decrypt_name`, `decrypt_symlink`, `decrypt_xattr_name`,
//!   `decrypt_xattr_value`, `decrypt_root_attr` on the payload return Ok or
//!   Err, never panic;
//!   whatever decrypts re-encrypts to the same stored form (names) or
//!   round-trips (symlinks, xattrs), and a decrypted name is a valid name.
//! - `long_link_side_file` recognizes exactly the long-link form, and no
//!   stored symlink target is ever mistaken for one; `symlink_target_len`
//!   never panics and gives the plaintext length of a stored target.
//! - Round trip: `encrypt_name` then `decrypt_name` gives back any valid
//!   name, the backing entry classifies as Short or Long (never Control or
//!   Foreign) and fits in 255 bytes, and another directory id refuses it.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use atrest_fuzz::{is_valid_name, make_valid_name, os};
use atrest_vault::EncryptedName;
use atrest_vault::names::{
    BackingName, LONG_LINK_DIR, LONG_LINK_MARKER_LEN, LONG_LINK_PREFIX, LONG_PREFIX, LONG_SUFFIX,
    MAX_BACKING_NAME, NameTransform, XATTR_PREFIX, classify,
};
use atrest_vault::root_attr::RootAttr;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_classify(name: &OsStr) {
    let text = name.to_str();
    match classify(name) {
        BackingName::Short(s) => {
            assert_eq!(s.as_bytes(), name.as_bytes());
            assert!(!s.is_empty() && is_b64url(s), "{s:?} classified Short");
        }
        BackingName::Long(s) => {
            assert_eq!(s.as_bytes(), name.as_bytes());
            let hash = s
                .strip_prefix(LONG_PREFIX)
                .expect("Long without the prefix");
            assert!(!hash.ends_with(LONG_SUFFIX), "{s:?} classified Long");
        }
        BackingName::Control => {
            assert!(
                text.is_some_and(|t| t.contains('.')),
                "{name:?} classified Control"
            );
        }
        BackingName::Foreign => match text {
            None => {}
            Some(t) => assert!(
                !t.contains('.') && (t.is_empty() || !is_b64url(t)),
                "{t:?} classified Foreign"
            ),
        },
    }
}

/// `long_link_side_file` takes exactly `atrest.longlink.` and 43
/// base64url characters, and names a file directly in `atrest.links/`.
fn check_long_link(stored: &OsStr) {
    let root = Path::new("/vault");
    let hash = stored
        .to_str()
        .and_then(|s| s.strip_prefix(LONG_LINK_PREFIX));
    let expected = hash.filter(|h| h.len() == 43 && is_b64url(h));
    match NameTransform::long_link_side_file(root, stored) {
        Some(path) => {
            let hash = expected.unwrap_or_else(|| panic!("{stored:?} taken as a long link"));
            assert_eq!(path, root.join(LONG_LINK_DIR).join(hash));
            assert_eq!(path.parent(), Some(root.join(LONG_LINK_DIR).as_path()));
        }
        None => assert!(expected.is_none(), "{stored:?} not taken as a long link"),
    }
}

/// Largest stored symlink length given to `symlink_target_len`: all of
/// them (an overflow above `u64::MAX / 3` was found here and fixed).
fn symlink_len_bound() -> u64 {
    u64::MAX
}

/// Paths that do not exist: `symlink_target_len` only touches the file
/// system for the long-link marker length, which the callers skip.
const NO_ROOT: &str = "/nonexistent-atrest-fuzz-root";

fn check_decrypts(t: &NameTransform, dir_id: &[u8; 16], payload: &[u8]) {
    let stored = os(payload);
    if let Ok(s) = std::str::from_utf8(payload)
        && let Ok(name) = t.decrypt_name(dir_id, s)
    {
        assert!(
            is_valid_name(name.as_bytes()) || name.len() > 255,
            "decrypted to invalid name {name:?}"
        );
        let again = match t.encrypt_name(dir_id, &name) {
            EncryptedName::Short(full) | EncryptedName::Long { full, .. } => full,
        };
        assert_eq!(again, s, "two encodings of one name");
    }
    if let Ok(target) = t.decrypt_symlink(stored) {
        let resealed = t.encrypt_symlink(&target);
        assert_eq!(t.decrypt_symlink(&resealed).expect("own symlink"), target);
    }
    match t.decrypt_xattr_name(stored) {
        Ok(None) => assert!(stored.to_str().is_none_or(|s| !s.starts_with(XATTR_PREFIX))),
        Ok(Some(name)) => assert_eq!(
            t.encrypt_xattr_name(&name),
            stored,
            "two encodings of one xattr name"
        ),
        Err(_) => assert!(stored.to_str().is_some_and(|s| s.starts_with(XATTR_PREFIX))),
    }
    if let Ok(attr) = t.decrypt_root_attr(payload) {
        assert!(attr.mode <= 0o7777, "a root mode beyond permission bits");
        let again = t.encrypt_root_attr(&attr);
        assert_eq!(t.decrypt_root_attr(&again).expect("own record"), attr);
    }
    // Any backing symlink length (the first 8 payload bytes, LE).
    if let Some(word) = payload.get(..8) {
        let len = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if len != LONG_LINK_MARKER_LEN && len <= symlink_len_bound() {
            let root = Path::new(NO_ROOT);
            let _ = t.symlink_target_len(root, &root.join("link"), len);
        }
    }
    // `name length (1) ‖ stored xattr name ‖ sealed value`.
    if let Some((&n, rest)) = payload.split_first() {
        let (name, sealed) = rest.split_at(usize::from(n).min(rest.len()));
        if let Ok(value) = t.decrypt_xattr_value(os(name), sealed) {
            let resealed = t.encrypt_xattr_value(os(name), &value);
            assert_eq!(
                t.decrypt_xattr_value(os(name), &resealed)
                    .expect("own value"),
                value
            );
        }
    }
}

fn check_round_trips(t: &NameTransform, dir_id: &[u8; 16], payload: &[u8]) {
    if let Some(words) = payload.get(..12) {
        let word = |i: usize| u32::from_le_bytes(words[i * 4..i * 4 + 4].try_into().expect("4"));
        let attr = RootAttr {
            mode: word(0) & 0o7777,
            uid: word(1),
            gid: word(2),
        };
        let stored = t.encrypt_root_attr(&attr);
        assert_eq!(t.decrypt_root_attr(&stored).expect("own record"), attr);
        let mut flipped = stored.clone();
        flipped[usize::from(words[0]) % stored.len()] ^= 1 << (words[1] % 8);
        assert!(
            t.decrypt_root_attr(&flipped).is_err(),
            "a flipped bit went unnoticed"
        );
    }
    if let Some(name) = make_valid_name(payload) {
        let name = os(&name);
        let enc = t.encrypt_name(dir_id, name);
        let entry = enc.entry();
        assert!(
            entry.len() <= MAX_BACKING_NAME,
            "backing entry of {} bytes",
            entry.len()
        );
        check_classify(OsStr::new(entry));
        let full = match &enc {
            EncryptedName::Short(full) => {
                assert_eq!(classify(OsStr::new(entry)), BackingName::Short(full));
                assert!(enc.side_file().is_none());
                full
            }
            EncryptedName::Long { entry, full } => {
                assert!(full.len() > MAX_BACKING_NAME);
                assert_eq!(classify(OsStr::new(entry)), BackingName::Long(entry));
                assert_eq!(
                    entry[LONG_PREFIX.len()..],
                    B64.encode(atrest_core::sha256(full.as_bytes()))
                );
                let side = enc.side_file().expect("long names have a side file");
                assert_eq!(classify(OsStr::new(&side)), BackingName::Control);
                full
            }
        };
        assert_eq!(t.decrypt_name(dir_id, full).expect("own name"), name);
        let mut other = *dir_id;
        other[0] ^= 1;
        assert!(
            t.decrypt_name(&other, full).is_err(),
            "name decrypted under another directory id"
        );
    }

    let stored = t.encrypt_symlink(os(payload));
    assert_eq!(
        t.decrypt_symlink(&stored).expect("own symlink"),
        os(payload)
    );
    // A stored target never looks like a pointer to a long-link side file,
    // neither by content nor by length, and its length gives the target's.
    assert!(NameTransform::long_link_side_file(Path::new("/vault"), &stored).is_none());
    assert_ne!(stored.len() as u64, LONG_LINK_MARKER_LEN);
    let root = Path::new(NO_ROOT);
    let len = t
        .symlink_target_len(root, &root.join("link"), stored.len() as u64)
        .expect("length of own symlink");
    assert_eq!(
        len,
        payload.len() as u64,
        "symlink length from its stored length"
    );

    let xname = t.encrypt_xattr_name(os(payload));
    assert!(xname.to_str().is_some_and(|s| s.starts_with(XATTR_PREFIX)));
    assert_eq!(
        t.decrypt_xattr_name(&xname)
            .expect("own xattr name")
            .as_deref(),
        Some(os(payload))
    );
    let sealed = t.encrypt_xattr_value(&xname, payload);
    assert_eq!(
        t.decrypt_xattr_value(&xname, &sealed)
            .expect("own xattr value"),
        payload
    );
    // The value is bound to its name.
    let other = t.encrypt_xattr_name(OsStr::new("user.fuzz.other"));
    if other != xname {
        assert!(t.decrypt_xattr_value(&other, &sealed).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    check_classify(os(data));
    if data.len() < 17 {
        return;
    }
    static TRANSFORMS: OnceLock<[NameTransform; 2]> = OnceLock::new();
    let transforms = TRANSFORMS.get_or_init(|| {
        [0, 1].map(|selector| atrest_fuzz::transform(atrest_fuzz::algorithm(selector)))
    });
    let t = &transforms[usize::from(data[0] & 1)];
    let dir_id: [u8; 16] = data[1..17].try_into().expect("16 bytes");
    let payload = &data[17..];
    check_classify(os(payload));
    check_long_link(os(payload));
    check_decrypts(t, &dir_id, payload);
    check_round_trips(t, &dir_id, payload);
});
