//! Writes the known-answer vectors of the `atrest` LUKS2 token into
//! testdata/luks/ (format.md §19), replacing what is there. Bindings,
//! secrets and ids are random: regenerate only when the format changes.
//!
//!     cargo run -p atrest-luks --example make_luks_vectors

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;

use atrest_core::SecretKey;
use atrest_luks::{Authorities, Binding};
use atrest_remote::{HostId, HostSecret, enroll};
use atrest_vault::{AuthorityRef, RemoteMember, RemoteSlot, ThresholdSlot};
use serde_json::Value;

const UUID: &str = "0b2f1c3e-5d4a-4e8b-9c7d-6f5e4d3c2b1a";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn authority(n: u8) -> AuthorityRef {
    AuthorityRef {
        url: format!("https://keys{n}.example:7443"),
        ca_fingerprint: [n; 32],
        host_id: HostId::new(format!("db-{n}")).unwrap(),
        audit_public_key: [n ^ 0xa5; 32],
    }
}

fn member(n: u8) -> RemoteMember {
    let (binding, key) = enroll(&HostSecret::generate().public_key());
    RemoteMember {
        authority: authority(n),
        binding,
        key,
    }
}

fn write(dir: &Path, name: &str, fields: &[(&str, String)]) {
    let mut text = String::new();
    for (k, v) in fields {
        let _ = writeln!(text, "{k}: {v}");
    }
    std::fs::write(dir.join(name), text).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/luks");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "README.md") {
            std::fs::remove_file(path).unwrap();
        }
    }

    // A remote binding (one authority with a replica), keyslot 3.
    let m = member(1);
    let remote = RemoteSlot {
        authority: m.authority.clone(),
        replicas: vec!["https://keys1b.example:7443".into()],
        binding: m.binding,
    };
    let mut binding = Binding::new(
        2,
        3,
        atrest_core::random_array(),
        Authorities::Remote(Box::new(remote)),
    );
    let token = binding.to_json(UUID, &m.key);
    let success = |name: &str, comment: &str, token: &Value, secret: &SecretKey, b: &Binding| {
        write(
            &dir,
            name,
            &[
                ("kind", "luks-token".into()),
                ("expect", "success".into()),
                ("comment", comment.into()),
                ("token_id", b.token_id.to_string()),
                ("uuid", UUID.into()),
                ("secret", hex(secret.expose())),
                ("token", token.to_string()),
                ("passphrase", hex(b.passphrase(secret).as_slice())),
            ],
        );
    };
    success(
        "token-remote",
        "a remote binding with a replica, keyslot 3, token 2",
        &token,
        &m.key,
        &binding,
    );

    // A 2-of-3 threshold binding, keyslot 1: the secret is the combined one.
    let members = [member(1), member(2), member(3)];
    let id = atrest_core::random_array();
    let (slot, secret) = ThresholdSlot::create(&id, 1, 2, &members).unwrap();
    let mut threshold = Binding::new(0, 1, id, Authorities::Threshold(slot));
    let t_token = threshold.to_json(UUID, &secret);
    success(
        "token-threshold",
        "a 2-of-3 threshold binding, keyslot 1, token 0",
        &t_token,
        &secret,
        &threshold,
    );

    let failure = |name: &str, comment: &str, expect: &str, token: &Value| {
        write(
            &dir,
            name,
            &[
                ("kind", "luks-token".into()),
                ("expect", expect.into()),
                ("comment", comment.into()),
                ("token_id", "2".into()),
                ("uuid", UUID.into()),
                ("secret", hex(m.key.expose())),
                ("token", token.to_string()),
            ],
        );
    };
    // The same token on another volume: its MAC binds the UUID.
    write(
        &dir,
        "token-other-volume",
        &[
            ("kind", "luks-token".into()),
            ("expect", "tampered".into()),
            (
                "comment",
                "the remote token on a volume with another UUID".into(),
            ),
            ("token_id", "2".into()),
            ("uuid", "0b2f1c3e-5d4a-4e8b-9c7d-6f5e4d3c2b1b".into()),
            ("secret", hex(m.key.expose())),
            ("token", token.to_string()),
        ],
    );
    let mut moved = token.clone();
    moved["keyslots"] = serde_json::json!(["0"]);
    failure(
        "token-other-keyslot",
        "the remote token pointed at keyslot 0",
        "tampered",
        &moved,
    );
    let mut wrong_secret = token.clone();
    wrong_secret["binding_id"] = atrest_core::to_base64url(&[7u8; 16]).into();
    failure(
        "token-other-binding-id",
        "the binding id replaced",
        "tampered",
        &wrong_secret,
    );
    let mut newer = token.clone();
    newer["atrest_version"] = 2.into();
    failure(
        "token-version-2",
        "a version this build does not know",
        "parse-error",
        &newer,
    );
    let mut both = token.clone();
    both["threshold"] = t_token["threshold"].clone();
    failure(
        "token-both-kinds",
        "remote and threshold both present",
        "parse-error",
        &both,
    );
    let mut two_slots = token.clone();
    two_slots["keyslots"] = serde_json::json!(["3", "4"]);
    failure(
        "token-two-keyslots",
        "a token naming two keyslots",
        "parse-error",
        &two_slots,
    );
    let mut padded = token.clone();
    padded["binding_id"] = format!("{}==", token["binding_id"].as_str().unwrap()).into();
    failure(
        "token-padded-base64",
        "base64url with padding",
        "parse-error",
        &padded,
    );
    let mut leading_zero = token.clone();
    leading_zero["keyslots"] = serde_json::json!(["03"]);
    failure(
        "token-keyslot-leading-zero",
        "keyslot \"03\"",
        "parse-error",
        &leading_zero,
    );
    println!("wrote {}", dir.display());
}
