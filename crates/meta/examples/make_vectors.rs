//! Writes the format 2 log vectors, `testdata/vectors-v2/log-*.{bin,json}`
//! (replacing those files): each `.bin` is one segment file, its `.json`
//! the key, the replay start and what replay must find. Checked by
//! `cargo test -p atrest-meta --test log_vectors` and, from the byte
//! tables of docs/format.md §16.12 alone, by
//! `tests/differential/check_vectors_v2.py`. Nonces are random, so the
//! files change on every run: regenerate only when the format changes.
//!
//!     cargo run -p atrest-meta --example make_vectors

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::MetaKeys;
use atrest_meta::log::{
    Body, EntryChange, LogWriter, MemSegments, SEGMENT_HEADER_LEN, Start, chain_genesis, replay,
};

const MASTER: [u8; 32] = [0x4d; 32];
const VAULT: [u8; 16] = [
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
];

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn every_kind(e: usize) -> Vec<(Body, Vec<u8>)> {
    let head = |n: u8| [n; 112];
    vec![
        (
            Body::Mount {
                reason: 1,
                host_id: b"host-a".to_vec(),
                boot_id: b"0b7c9e1a".to_vec(),
            },
            vec![],
        ),
        (
            Body::Meta {
                op: 1,
                heads: vec![head(1), head(2)],
                entries: vec![EntryChange {
                    action: 1,
                    dir: 1,
                    object: 2,
                    kind: 1,
                    name: b"file.txt".to_vec(),
                }],
                extra: vec![],
            },
            vec![],
        ),
        (
            Body::Meta {
                op: 10,
                heads: vec![head(3)],
                entries: vec![],
                extra: [&[4u8][..], b"user", &5u32.to_be_bytes(), b"value"].concat(),
            },
            vec![],
        ),
        (
            Body::Write {
                head: head(4),
                first_block: 0,
                mode: 1,
                settled_size: 4096,
                entries: vec![vec![0xa1; e]],
            },
            vec![],
        ),
        (
            Body::Write {
                head: head(5),
                first_block: 2,
                mode: 2,
                settled_size: 12288,
                entries: vec![vec![0xa2; e]],
            },
            (0..4096u32).map(|i| (i * 7) as u8).collect(),
        ),
        (
            Body::Truncate {
                head: head(6),
                old_size: 12288,
                tail: 0,
                tail_entry: None,
            },
            vec![],
        ),
        (
            Body::Truncate {
                head: head(7),
                old_size: 9000,
                tail: 2,
                tail_entry: Some(vec![0xa3; e]),
            },
            vec![0x5c; 4096],
        ),
        (
            Body::Sync {
                object: 2,
                through: 7,
            },
            vec![],
        ),
        (
            Body::Recovery {
                replayed: 1,
                reverted: 2,
                cut_back: 3,
                trimmed: 4,
                removed: 5,
            },
            vec![],
        ),
        (
            Body::Config {
                generation: 2,
                hash: [0xcf; 32],
            },
            vec![],
        ),
        (
            Body::Witnessed {
                k: 1,
                s: 9,
                h: [0x99; 32],
                witness: 2,
                audit_key: [0; 32],
            },
            vec![],
        ),
        (
            Body::Migrate {
                action: 1,
                path_hash: [0x3d; 32],
                object: 3,
                inode: 77,
            },
            vec![],
        ),
        (
            Body::Repair {
                action: 4,
                object: 3,
                detail: 1,
            },
            vec![],
        ),
        (Body::Checkpoint { k: 2 }, vec![]),
        (
            Body::RollbackAccepted {
                k: 5,
                s: 40,
                h: [0x40; 32],
                disk_s: 14,
                audit_seq: 0,
            },
            vec![],
        ),
    ]
}

fn start() -> Start {
    Start {
        segment: 0,
        offset: SEGMENT_HEADER_LEN as u64,
        next_seq: 1,
        chain: chain_genesis(&VAULT),
    }
}

fn write_vector(
    dir: &Path,
    name: &str,
    comment: &str,
    algorithm: ContentAlgorithm,
    bytes: &[u8],
    keys: &MetaKeys,
) {
    let mut store = MemSegments::default();
    store.segments.insert(0, bytes.to_vec());
    let mut json = String::new();
    let alg = match algorithm {
        ContentAlgorithm::Aes256Gcm => "aes-256-gcm",
        ContentAlgorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
    };
    let _ = write!(
        json,
        "{{\n  \"kind\": \"log-segment\",\n  \"comment\": \"{comment}\",\n  \"algorithm\": \"{alg}\",\n  \"master_key\": \"{}\",\n  \"vault_id\": \"{}\",\n  \"segment\": 0,\n  \"start\": {{\"offset\": {}, \"next_seq\": 1, \"chain\": \"{}\"}},\n",
        hex(&MASTER),
        hex(&VAULT),
        SEGMENT_HEADER_LEN,
        hex(&chain_genesis(&VAULT))
    );
    match replay(keys, &store, start()) {
        Ok(r) => {
            json.push_str("  \"expect\": \"success\",\n  \"records\": [\n");
            let n = r.records.len();
            for (i, rec) in r.records.iter().enumerate() {
                let _ = writeln!(
                    json,
                    "    {{\"seq\": {}, \"kind\": {}, \"offset\": {}, \"time\": {}, \"body\": \"{}\", \"payload_len\": {}}}{}",
                    rec.seq,
                    rec.body.kind() as u8,
                    rec.offset,
                    rec.time,
                    hex(&rec.body.encode(rec.time)),
                    rec.payload.len(),
                    if i + 1 < n { "," } else { "" }
                );
            }
            let _ = write!(
                json,
                "  ],\n  \"end\": {{\"offset\": {}, \"next_seq\": {}, \"chain\": \"{}\", \"torn\": {}}}\n}}\n",
                r.end.offset,
                r.end.next_seq,
                hex(&r.end.chain),
                r.end.torn.is_some()
            );
        }
        Err(e) => {
            let (what, offset) = match &e {
                atrest_meta::MetaError::Auth(atrest_meta::Location::LogRecord {
                    offset, ..
                }) => ("auth-failure", *offset),
                atrest_meta::MetaError::Corrupt {
                    location: atrest_meta::Location::LogRecord { offset, .. },
                    ..
                } => ("corrupt", *offset),
                other => panic!("unexpected vector error: {other}"),
            };
            let _ = write!(
                json,
                "  \"expect\": \"{what}\",\n  \"error_offset\": {offset}\n}}\n"
            );
        }
    }
    std::fs::write(dir.join(format!("{name}.bin")), bytes).expect("write .bin");
    std::fs::write(dir.join(format!("{name}.json")), json).expect("write .json");
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    std::fs::create_dir_all(&dir).expect("create testdata/vectors-v2");
    for old in std::fs::read_dir(&dir).expect("read dir").flatten() {
        if old.file_name().to_string_lossy().starts_with("log-") {
            std::fs::remove_file(old.path()).expect("remove old vector");
        }
    }
    for (algorithm, tag) in [
        (ContentAlgorithm::Aes256Gcm, "gcm"),
        (ContentAlgorithm::XChaCha20Poly1305, "xchacha"),
    ] {
        let keys = MetaKeys::derive(&SecretKey::from_bytes(MASTER), VAULT, algorithm);
        let e = atrest_meta::record::MapEntry::len(algorithm);
        let mut store = MemSegments::default();
        let mut w =
            LogWriter::create(&keys, &mut store, 0, 1, chain_genesis(&VAULT)).expect("create");
        let mut offsets = Vec::new();
        for (i, (body, payload)) in every_kind(e).iter().enumerate() {
            let time = 1_765_000_000_000_000_000 + i as u64;
            let at = if matches!(body, Body::RollbackAccepted { .. }) {
                w.append_at(&keys, &mut store, w.next_seq() + 26, time, body, payload)
            } else {
                w.append(&keys, &mut store, time, body, payload)
            }
            .expect("append");
            offsets.push(at.1 as usize);
        }
        w.commit(&mut store).expect("commit");
        let full = store.segments[&0].clone();
        write_vector(
            &dir,
            &format!("log-{tag}-every-kind"),
            "one record of every kind, a jump of the sequence at ROLLBACK_ACCEPTED",
            algorithm,
            &full,
            &keys,
        );
        let cut = offsets[5] + 30;
        write_vector(
            &dir,
            &format!("log-{tag}-torn-tail"),
            "cut inside record 6: replay keeps records 1-5 and ends at record 6",
            algorithm,
            &full[..cut],
            &keys,
        );
        let mut flipped = full.clone();
        flipped[offsets[3] + 24 + 20] ^= 0x01;
        write_vector(
            &dir,
            &format!("log-{tag}-flipped-body"),
            "one bit of record 4's sealed body changed, records follow: an authentication failure at record 4",
            algorithm,
            &flipped,
            &keys,
        );
        let mut swapped = full[..offsets[2]].to_vec();
        swapped.extend_from_slice(&full[offsets[3]..offsets[4]]);
        swapped.extend_from_slice(&full[offsets[2]..offsets[3]]);
        swapped.extend_from_slice(&full[offsets[4]..]);
        write_vector(
            &dir,
            &format!("log-{tag}-swapped"),
            "records 3 and 4 swapped: an unexpected sequence number followed by records",
            algorithm,
            &swapped,
            &keys,
        );
    }
}
