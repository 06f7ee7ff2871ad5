//! Walks testdata/vectors-v2/log-*.json and meta-*.json (written by
//! `cargo run -p atrest-meta --example make_vectors`): replays each
//! segment file through the public log API, and opens each metadata
//! file's superblock and pages through the public page API.

use std::path::PathBuf;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::log::{MemSegments, Start, replay};
use atrest_meta::page::{self, Expect, PAGE_SIZE, PageKind, PageRef};
use atrest_meta::superblock::Superblock;
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

fn algorithm_of(v: &Value) -> ContentAlgorithm {
    match v["algorithm"].as_str().expect("an algorithm name") {
        "aes-256-gcm" => ContentAlgorithm::Aes256Gcm,
        "xchacha20-poly1305" => ContentAlgorithm::XChaCha20Poly1305,
        other => panic!("algorithm {other}"),
    }
}

#[test]
fn meta_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/vectors-v2") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("meta-") && name.ends_with(".json")) {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["kind"], "meta-file", "{name}");
        let master: [u8; 32] = unhex(v["master_key"].as_str().unwrap()).try_into().unwrap();
        let vault: [u8; 16] = unhex(v["vault_id"].as_str().unwrap()).try_into().unwrap();
        let keys = MetaKeys::derive(&SecretKey::from_bytes(master), vault, algorithm_of(&v));
        let meta = std::fs::read(path.with_extension("bin")).unwrap();
        let page_at = |p: u64| -> [u8; PAGE_SIZE] {
            let p = p as usize;
            meta[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].try_into().unwrap()
        };
        let want = &v["superblock"];
        let index = u(&want["page"]);
        let sb = Superblock::open(&keys, index, &page_at(index)).unwrap();
        assert_eq!(sb.state as u64, u(&want["state"]), "{name}");
        assert_eq!(sb.generation.checkpoint, u(&want["checkpoint"]), "{name}");
        assert_eq!(sb.generation.sequence, u(&want["sequence"]), "{name}");
        assert_eq!(hexs(&sb.generation.chain), want["chain"].as_str().unwrap());
        assert_eq!(sb.replay_segment, u(&want["replay_segment"]), "{name}");
        assert_eq!(sb.replay_offset, u(&want["replay_offset"]), "{name}");
        assert_eq!(sb.config_generation, u(&want["config_generation"]));
        assert_eq!(hexs(&sb.config_hash), want["config_hash"].as_str().unwrap());
        assert_eq!(
            sb.object_table.reference.page(),
            Some(u(&want["object_table"]["page"]))
        );
        assert_eq!(
            hexs(sb.object_table.reference.hash()),
            want["object_table"]["hash"].as_str().unwrap()
        );
        assert_eq!(
            u64::from(sb.object_table.depth),
            u(&want["object_table_depth"])
        );
        assert_eq!(sb.bitmap.reference.page(), Some(u(&want["bitmap"]["page"])));
        assert_eq!(u64::from(sb.bitmap.depth), u(&want["bitmap_depth"]));
        assert_eq!(sb.page_count, u(&want["page_count"]));
        assert_eq!(sb.next_object_id, u(&want["next_object_id"]));
        assert_eq!(sb.recent.len() as u64, u(&want["recent"]));
        // Every byte of the MAC'd range matters.
        let used = 284 + 48 * (sb.recent.len() + 1 + sb.acknowledged.len()) + 32;
        for i in (0..used).step_by(7) {
            let mut bad = page_at(index);
            bad[i] ^= 0x02;
            assert!(
                Superblock::open(&keys, index, &bad).is_err(),
                "{name}: byte {i}"
            );
        }
        let pages = v["pages"].as_array().unwrap();
        assert!(pages.len() >= 4, "{name}: {} pages", pages.len());
        for p in pages {
            let number = u(&p["page"]);
            let sealed = page_at(number);
            let reference = PageRef::to_sealed(number, &sealed);
            assert_eq!(hexs(reference.hash()), p["hash"].as_str().unwrap());
            let kind = PageKind::from_id(u(&p["kind"]) as u8).unwrap();
            let expect = Expect {
                kind,
                owner: u(&p["owner"]),
                level: Some(u(&p["level"]) as u8),
            };
            let open = page::open(&keys, &reference, &sealed, expect)
                .unwrap_or_else(|e| panic!("{name}: page {number}: {e}"));
            assert_eq!(u64::from(open.header.count), u(&p["count"]));
            assert_eq!(hexs(&open.items), p["items"].as_str().unwrap());
            // The same bytes as another page, or of another owner: never.
            let moved = PageRef::to_sealed(number + 1, &sealed);
            assert!(page::open(&keys, &moved, &sealed, expect).is_err());
            let other = Expect {
                owner: expect.owner + 1,
                ..expect
            };
            assert!(page::open(&keys, &reference, &sealed, other).is_err());
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "only {checked} meta vectors in {}",
        dir.display()
    );
}

/// testdata/vectors-v2/map-*: the store opens the vector's `atrest.meta`
/// and log segment, and every file has the size, map form and entries
/// the vector lists (every other block a hole), read through
/// `Store::map_entry`; the data file bytes are the content layer's to
/// check (atrest-vault and the Python checker).
#[test]
fn map_vectors() {
    use atrest_meta::record::{Content, MapEntry};
    use atrest_meta::{ConfigBinding, MemBacking, NoContents, Store};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/vectors-v2") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("map-") && name.ends_with(".json")) {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["kind"], "block-map", "{name}");
        let algorithm = algorithm_of(&v);
        let master: [u8; 32] = unhex(v["master_key"].as_str().unwrap()).try_into().unwrap();
        let vault: [u8; 16] = unhex(v["vault_id"].as_str().unwrap()).try_into().unwrap();
        let keys = MetaKeys::derive(&SecretKey::from_bytes(master), vault, algorithm);
        let backing = std::sync::Arc::new(MemBacking::new());
        let mut files = std::collections::BTreeMap::new();
        files.insert(
            "atrest.meta".to_owned(),
            std::fs::read(path.with_extension("bin")).unwrap(),
        );
        files.insert(
            atrest_meta::log::segment_name(u(&v["segment"])),
            std::fs::read(path.with_extension("seg")).unwrap(),
        );
        backing.restore(files);
        let config = ConfigBinding {
            generation: u(&v["config"]["generation"]),
            hash: unhex(v["config"]["hash"].as_str().unwrap())
                .try_into()
                .unwrap(),
        };
        let mut store = Store::open(keys, backing, config, &NoContents)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for file in v["files"].as_array().unwrap() {
            let id = u(&file["id"]);
            let record = store.record(id).unwrap();
            assert_eq!(record.head.size, u(&file["size"]), "{name}");
            assert_eq!(
                hexs(&record.head.file_id),
                file["file_id"].as_str().unwrap()
            );
            let inline = file["inline"].as_bool().unwrap();
            match &record.content {
                Content::InlineMap(_) => assert!(inline, "{name}: file {id} inline"),
                Content::Tree(root) => {
                    assert!(!inline, "{name}: file {id} a tree");
                    assert_eq!(u64::from(root.depth), u(&file["depth"]), "{name}");
                    assert_eq!(root.reference.page(), Some(u(&file["root"]["page"])));
                    assert_eq!(
                        hexs(root.reference.hash()),
                        file["root"]["hash"].as_str().unwrap()
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
            let sealed: std::collections::BTreeMap<u64, String> = file["sealed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (u(&s["block"]), s["entry"].as_str().unwrap().to_owned()))
                .collect();
            let blocks = record.head.size.div_ceil(4096);
            for n in 0..blocks {
                let got = store.map_entry(id, n).unwrap();
                match sealed.get(&n) {
                    None => assert_eq!(got, MapEntry::Hole, "{name}: file {id} block {n}"),
                    Some(want) => {
                        let mut bytes = Vec::new();
                        got.encode(algorithm, &mut bytes);
                        assert_eq!(&hexs(&bytes), want, "{name}: file {id} block {n}");
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} map vectors in {}",
        dir.display()
    );
}

/// testdata/vectors-v2/witness-* (written by `cargo run -p atrest-meta
/// --example make_witness_vectors`): the local witness file (§16.17.5)
/// reads back as its fields, and every other one is refused for its
/// reason.
#[test]
fn witness_vectors() {
    use atrest_meta::witness::{LocalWitness, WitnessError};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/vectors-v2") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("witness-") && name.ends_with(".json")) {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["kind"], "local-witness", "{name}");
        let master: [u8; 32] = unhex(v["master_key"].as_str().unwrap()).try_into().unwrap();
        let vault_id: [u8; 16] = unhex(v["vault_id"].as_str().unwrap()).try_into().unwrap();
        let keys = MetaKeys::derive(
            &SecretKey::from_bytes(master),
            vault_id,
            ContentAlgorithm::Aes256Gcm,
        );
        let file = unhex(v["file"].as_str().unwrap());
        let read = LocalWitness::decode(&file, &keys);
        match v["expect"].as_str().unwrap() {
            "ok" => {
                let w = read.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(w.vault_id, vault_id, "{name}");
                assert_eq!(w.generation.checkpoint, u(&v["checkpoint"]), "{name}");
                assert_eq!(w.generation.sequence, u(&v["sequence"]), "{name}");
                assert_eq!(hexs(&w.generation.chain), v["chain"], "{name}");
                assert_eq!(w.config_generation, u(&v["config_generation"]), "{name}");
                assert_eq!(w.time_ms, u(&v["time_ms"]), "{name}");
                assert_eq!(&w.encode(&keys)[..], &file[..], "{name}: encodes back");
            }
            "mac" => assert_eq!(read, Err(WitnessError::Mac), "{name}"),
            "other-vault" => assert_eq!(read, Err(WitnessError::OtherVault), "{name}"),
            "version" => assert!(matches!(read, Err(WitnessError::Version(_))), "{name}"),
            other => panic!("{name}: expect {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 5, "witness vectors in {}", dir.display());
}
