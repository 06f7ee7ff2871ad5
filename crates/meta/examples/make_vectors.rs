//! Writes the format 2 vectors (replacing those files):
//! `testdata/vectors-v2/log-*.{bin,json}`, each `.bin` one segment file,
//! its `.json` the key, the replay start and what replay must find; and
//! `meta-*.{bin,json}`, each `.bin` the `atrest.meta` of a small store
//! after its first checkpoints, its `.json` the superblock's fields and
//! every used page's kind, owner, level, count and items. Checked by
//! `cargo test -p atrest-meta --test log_vectors` (both kinds) and, from
//! the byte tables of docs/format.md §16.4, §16.5 and §16.12 alone, by
//! `tests/differential/check_vectors_v2.py`. Nonces are random, so the
//! files change on every run: regenerate only when the format changes.
//!
//!     cargo run -p atrest-meta --example make_vectors

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::log::{
    Body, EntryChange, LogWriter, MemSegments, SEGMENT_HEADER_LEN, Start, chain_genesis, replay,
};
use atrest_meta::page::{self, Expect, PAGE_SIZE, PageKind, PageRef};
use atrest_meta::record::{ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::superblock::Superblock;
use atrest_meta::{ConfigBinding, MemBacking, MetaKeys, NewObject, Store, XattrMode};

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
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with("log-") || name.starts_with("meta-") {
            std::fs::remove_file(old.path()).expect("remove old vector");
        }
    }
    for (algorithm, tag) in [
        (ContentAlgorithm::Aes256Gcm, "gcm"),
        (ContentAlgorithm::XChaCha20Poly1305, "xchacha"),
    ] {
        let keys = MetaKeys::derive(&SecretKey::from_bytes(MASTER), VAULT, algorithm);
        meta_vector(&dir, algorithm, tag, &keys);
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
            "records 3 and 4 swapped before the SYNC record 8: an unexpected sequence number in the acknowledged part, an authentication failure",
            algorithm,
            &swapped,
            &keys,
        );
        let mut torn_group = full.clone();
        torn_group[offsets[9]..offsets[10]].fill(0);
        write_vector(
            &dir,
            &format!("log-{tag}-torn-group"),
            "record 10 zeroed (its pages lost in a crash), later records intact, no SYNC record after it: a torn tail, replay keeps records 1-9",
            algorithm,
            &torn_group,
            &keys,
        );
        let mut dropped = full[..offsets[6]].to_vec();
        dropped.extend_from_slice(&full[offsets[7]..]);
        write_vector(
            &dir,
            &format!("log-{tag}-dropped-before-sync"),
            "record 7 dropped, so the SYNC record 8 stands where it was: record 7 was acknowledged, an authentication failure at its offset",
            algorithm,
            &dropped,
            &keys,
        );
    }
}

fn object(kind: ObjectKind, target: &[u8]) -> NewObject {
    NewObject {
        kind,
        mode: 0o640,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        target: target.to_vec(),
    }
}

fn alg_name(algorithm: ContentAlgorithm) -> &'static str {
    match algorithm {
        ContentAlgorithm::Aes256Gcm => "aes-256-gcm",
        ContentAlgorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
    }
}

/// `meta-{tag}-tree`: a store with a directory of entries, a long symlink
/// (blob pages), xattrs (an inline value and one in a blob page) and
/// enough objects for an object table index, after two checkpoints.
fn meta_vector(dir: &Path, algorithm: ContentAlgorithm, tag: &str, keys: &MetaKeys) {
    let backing = Arc::new(MemBacking::new());
    let now = Timestamp {
        secs: 1_765_000_000,
        nanos: 0,
    };
    let config = ConfigBinding {
        generation: 3,
        hash: [0x3c; 32],
    };
    let keys_again = MetaKeys::derive(&SecretKey::from_bytes(MASTER), VAULT, algorithm);
    let mut store =
        Store::format(keys_again, backing.clone(), config, (0o755, 0, 0), now).expect("format");
    let docs = store
        .create(ROOT_ID, b"docs", object(ObjectKind::Directory, b""), now)
        .expect("mkdir")
        .id;
    for i in 0..20 {
        let name = format!("report-{i:02}.txt");
        store
            .create(docs, name.as_bytes(), object(ObjectKind::Regular, b""), now)
            .expect("create");
    }
    let link = store
        .create(
            ROOT_ID,
            b"link",
            object(ObjectKind::Symlink, &[b'L'; 300]),
            now,
        )
        .expect("symlink")
        .id;
    // Extended attributes (§16.10): an xattr page of the link with an
    // inline value, one of the directory whose value is in a blob page.
    store
        .set_xattr(link, b"user.mime", b"text/plain", XattrMode::Any, now)
        .expect("setxattr");
    store
        .set_xattr(docs, b"user.checksum", &[0x5a; 1500], XattrMode::Any, now)
        .expect("setxattr");
    store.checkpoint(now).expect("checkpoint");
    store.unlink(docs, b"report-03.txt", now).expect("unlink");
    store.checkpoint(now).expect("checkpoint");
    let meta = backing
        .snapshot()
        .remove("atrest.meta")
        .expect("atrest.meta");
    let page_at = |p: usize| -> [u8; PAGE_SIZE] {
        meta[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]
            .try_into()
            .expect("a page")
    };
    let sb = store.superblock().clone();
    let index = Superblock::page_of(sb.generation.checkpoint);
    assert_eq!(
        Superblock::open(keys, index, &page_at(index as usize)).expect("superblock"),
        sb
    );
    let owners = [0, ROOT_ID, docs, link];
    let mut pages = String::new();
    for p in 2..meta.len() / PAGE_SIZE {
        let sealed = page_at(p);
        let reference = PageRef::to_sealed(p as u64, &sealed);
        let opened = PageKind::ALL.iter().find_map(|&kind| {
            owners.iter().find_map(|&owner| {
                page::open(
                    keys,
                    &reference,
                    &sealed,
                    Expect {
                        kind,
                        owner,
                        level: None,
                    },
                )
                .ok()
            })
        });
        // Pages an older checkpoint left free still open, and are listed
        // too; the superblock's references say which are the tree's.
        let Some(open) = opened else { continue };
        let _ = writeln!(
            pages,
            "    {{\"page\": {p}, \"hash\": \"{}\", \"kind\": {}, \"level\": {}, \"count\": {}, \"owner\": {}, \"items\": \"{}\"}},",
            hex(reference.hash()),
            open.header.kind.id(),
            open.header.level,
            open.header.count,
            open.header.owner,
            hex(&open.items)
        );
    }
    let pages = pages.trim_end_matches(",\n").to_owned() + "\n";
    let reference = |r: &PageRef| {
        format!(
            "{{\"page\": {}, \"hash\": \"{}\"}}",
            r.page().unwrap_or(0),
            hex(r.hash())
        )
    };
    let json = format!(
        "{{\n  \"kind\": \"meta-file\",\n  \"comment\": \"atrest.meta after checkpoint 3 of a small store: the superblock's fields, and every page that opens (the tree's and older checkpoints' free ones) with its header and items; a changed byte in the superblock's MAC'd range must fail\",\n  \"algorithm\": \"{}\",\n  \"master_key\": \"{}\",\n  \"vault_id\": \"{}\",\n  \"superblock\": {{\"page\": {index}, \"state\": {}, \"checkpoint\": {}, \"sequence\": {}, \"chain\": \"{}\", \"replay_segment\": {}, \"replay_offset\": {}, \"config_generation\": {}, \"config_hash\": \"{}\", \"object_table\": {}, \"object_table_depth\": {}, \"bitmap\": {}, \"bitmap_depth\": {}, \"page_count\": {}, \"next_object_id\": {}, \"recent\": {}, \"acknowledged\": {}}},\n  \"pages\": [\n{pages}  ]\n}}\n",
        alg_name(algorithm),
        hex(&MASTER),
        hex(&VAULT),
        sb.state as u8,
        sb.generation.checkpoint,
        sb.generation.sequence,
        hex(&sb.generation.chain),
        sb.replay_segment,
        sb.replay_offset,
        sb.config_generation,
        hex(&sb.config_hash),
        reference(&sb.object_table.reference),
        sb.object_table.depth,
        reference(&sb.bitmap.reference),
        sb.bitmap.depth,
        sb.page_count,
        sb.next_object_id,
        sb.recent.len(),
        sb.acknowledged.len(),
    );
    let name = format!("meta-{tag}-tree");
    std::fs::write(dir.join(format!("{name}.bin")), &meta).expect("write .bin");
    std::fs::write(dir.join(format!("{name}.json")), json).expect("write .json");
}
