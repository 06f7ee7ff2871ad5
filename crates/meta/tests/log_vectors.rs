//! Walks testdata/vectors-v2/log-*.json (written by
//! `cargo run -p atrest-meta --example make_vectors`) and replays each
//! segment file through the public log API.

use std::path::PathBuf;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::log::{MemSegments, Start, replay};
use atrest_meta::{Location, MetaError, MetaKeys};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("a number")
}

#[test]
fn log_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/vectors-v2") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("log-") && name.ends_with(".json")) {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["kind"], "log-segment", "{name}");
        let algorithm = match v["algorithm"].as_str().unwrap() {
            "aes-256-gcm" => ContentAlgorithm::Aes256Gcm,
            "xchacha20-poly1305" => ContentAlgorithm::XChaCha20Poly1305,
            other => panic!("{name}: algorithm {other}"),
        };
        let master: [u8; 32] = unhex(v["master_key"].as_str().unwrap()).try_into().unwrap();
        let vault: [u8; 16] = unhex(v["vault_id"].as_str().unwrap()).try_into().unwrap();
        let keys = MetaKeys::derive(&SecretKey::from_bytes(master), vault, algorithm);
        let mut store = MemSegments::default();
        store.segments.insert(
            u(&v["segment"]),
            std::fs::read(path.with_extension("bin")).unwrap(),
        );
        let start = Start {
            segment: u(&v["segment"]),
            offset: u(&v["start"]["offset"]),
            next_seq: u(&v["start"]["next_seq"]),
            chain: unhex(v["start"]["chain"].as_str().unwrap())
                .try_into()
                .unwrap(),
        };
        let result = replay(&keys, &store, start);
        match v["expect"].as_str().unwrap() {
            "success" => {
                let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                let want = v["records"].as_array().unwrap();
                assert_eq!(r.records.len(), want.len(), "{name}");
                for (got, want) in r.records.iter().zip(want) {
                    assert_eq!(got.seq, u(&want["seq"]), "{name}");
                    assert_eq!(got.body.kind() as u64, u(&want["kind"]), "{name}");
                    assert_eq!(got.offset, u(&want["offset"]), "{name}");
                    assert_eq!(got.time, u(&want["time"]), "{name}");
                    assert_eq!(
                        hexs(&got.body.encode(got.time)),
                        want["body"].as_str().unwrap(),
                        "{name}"
                    );
                    assert_eq!(got.payload.len() as u64, u(&want["payload_len"]), "{name}");
                }
                assert_eq!(r.end.offset, u(&v["end"]["offset"]), "{name}");
                assert_eq!(r.end.next_seq, u(&v["end"]["next_seq"]), "{name}");
                assert_eq!(
                    hexs(&r.end.chain),
                    v["end"]["chain"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(
                    r.end.torn.is_some(),
                    v["end"]["torn"].as_bool().unwrap(),
                    "{name}"
                );
            }
            "auth-failure" => match result {
                Err(MetaError::Auth(Location::LogRecord { offset, .. })) => {
                    assert_eq!(offset, u(&v["error_offset"]), "{name}")
                }
                other => panic!("{name}: {other:?}"),
            },
            "corrupt" => match result {
                Err(MetaError::Corrupt {
                    location: Location::LogRecord { offset, .. },
                    ..
                }) => assert_eq!(offset, u(&v["error_offset"]), "{name}"),
                other => panic!("{name}: {other:?}"),
            },
            other => panic!("{name}: expect {other}"),
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} log vectors in {}",
        dir.display()
    );
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
