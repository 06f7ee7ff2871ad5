//! Writes the format 2 content vectors (replacing those files):
//! `testdata/vectors-v2/block-*.json`, one sealed block each (§16.9: the
//! key schedule `K_content2` → `K_file2`, the AAD, the map entry and the
//! 4,096 ciphertext bytes, or a block that must fail), and
//! `map-*.{json,bin,seg}`, each `.bin` the `atrest.meta` of a small store
//! after a checkpoint and `.seg` its log segment, the `.json` the files,
//! their map form (inline or a tree of some depth), every sealed entry and
//! the data file bytes of that block. Checked by `cargo test -p
//! atrest-meta --test log_vectors` (maps, through `Store`), by
//! atrest-vault's `content2` tests (blocks, through `FileCipher2`) and,
//! from docs/format.md alone, by `tests/differential/check_vectors_v2.py`.
//! Nonces and file ids are random: regenerate only when the format
//! changes.
//!
//!     cargo run -p atrest-meta --example make_content_vectors
//!
//! The sealing here is written from §16.9 with atrest-core's primitives,
//! apart from atrest-vault's `FileCipher2`, which the vectors then check.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey, labels};
use atrest_meta::log::segment_name;
use atrest_meta::record::{Content, MapEntry, ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::{ConfigBinding, MemBacking, MetaKeys, NewObject, SealedBlock, Store};

const MASTER: [u8; 32] = [0x6b; 32];
const VAULT: [u8; 16] = [
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];
const CONFIG: ConfigBinding = ConfigBinding {
    generation: 4,
    hash: [0x4c; 32],
};
const NOW: Timestamp = Timestamp {
    secs: 1_765_000_000,
    nanos: 0,
};

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn alg_name(algorithm: ContentAlgorithm) -> &'static str {
    match algorithm {
        ContentAlgorithm::Aes256Gcm => "aes-256-gcm",
        ContentAlgorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
    }
}

fn content_key() -> SecretKey {
    SecretKey::from_bytes(MASTER).derive(&VAULT, labels::CONTENT_KEY_V2)
}

fn file_key(file_id: &[u8; 16]) -> SecretKey {
    content_key().derive(file_id, labels::FILE_KEY_V2)
}

fn aad(file_id: &[u8; 16], n: u64) -> Vec<u8> {
    [&file_id[..], &n.to_be_bytes()].concat()
}

/// §16.9: `Seal_{K_file2}(file_id ‖ u64be n, block)` split into the map
/// entry's nonce and tag and the data file's ciphertext.
fn seal(algorithm: ContentAlgorithm, file_id: &[u8; 16], n: u64, plain: &[u8]) -> SealedBlock {
    let cipher = BlockCipher::new(algorithm, &file_key(file_id));
    let sealed = cipher.seal(&aad(file_id, n), plain);
    let nonce = algorithm.nonce_len();
    let mut nonce_tag = [0u8; 40];
    nonce_tag[..nonce].copy_from_slice(&sealed[..nonce]);
    nonce_tag[nonce..algorithm.overhead()].copy_from_slice(&sealed[nonce + 4096..]);
    SealedBlock {
        nonce_tag,
        ciphertext: sealed[nonce..nonce + 4096].to_vec(),
    }
}

fn entry_hex(algorithm: ContentAlgorithm, entry: MapEntry) -> String {
    let mut out = Vec::new();
    entry.encode(algorithm, &mut out);
    hex(&out)
}

#[allow(clippy::too_many_arguments)]
fn block_vector(
    dir: &Path,
    name: &str,
    comment: &str,
    algorithm: ContentAlgorithm,
    file_id: &[u8; 16],
    n: u64,
    plain: &[u8],
    sealed: &SealedBlock,
    expect: &str,
) {
    let json = format!(
        "{{\n  \"kind\": \"block\",\n  \"comment\": \"{comment}\",\n  \"algorithm\": \"{}\",\n  \"master_key\": \"{}\",\n  \"vault_id\": \"{}\",\n  \"content_key\": \"{}\",\n  \"file_id\": \"{}\",\n  \"file_key\": \"{}\",\n  \"block\": {n},\n  \"aad\": \"{}\",\n  \"entry\": \"{}\",\n  \"ciphertext\": \"{}\",\n  \"expect\": \"{expect}\",\n  \"plaintext\": \"{}\"\n}}\n",
        alg_name(algorithm),
        hex(&MASTER),
        hex(&VAULT),
        hex(content_key().expose()),
        hex(file_id),
        hex(file_key(file_id).expose()),
        hex(&aad(file_id, n)),
        entry_hex(algorithm, sealed.entry()),
        hex(&sealed.ciphertext),
        if expect == "success" {
            hex(plain)
        } else {
            String::new()
        },
    );
    std::fs::write(dir.join(format!("{name}.json")), json).expect("write .json");
}

fn regular() -> NewObject {
    NewObject {
        kind: ObjectKind::Regular,
        mode: 0o600,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        target: Vec::new(),
    }
}

/// A store holding `files` (name, size, blocks written), checkpointed.
fn map_vector(
    dir: &Path,
    name: &str,
    comment: &str,
    algorithm: ContentAlgorithm,
    files: &[(&str, u64, &[u64])],
) {
    let backing = Arc::new(MemBacking::new());
    let keys = MetaKeys::derive(&SecretKey::from_bytes(MASTER), VAULT, algorithm);
    let mut store =
        Store::format(keys, backing.clone(), CONFIG, (0o755, 0, 0), NOW).expect("format");
    let mut listed = String::new();
    let mut ids = Vec::new();
    for (file, size, blocks) in files {
        let head = store
            .create(ROOT_ID, file.as_bytes(), regular(), NOW)
            .expect("create");
        for &n in *blocks {
            let plain: Vec<u8> = (0..4096u64).map(|i| (i * 31 + n * 7) as u8).collect();
            let sealed = seal(algorithm, &head.file_id, n, &plain);
            store
                .write_blocks(head.id, n, &[sealed], *size, NOW)
                .expect("write");
        }
        ids.push((head.id, head.file_id, *size, *blocks));
    }
    store.checkpoint(NOW).expect("checkpoint");
    let snapshot = backing.snapshot();
    for (i, (id, file_id, size, blocks)) in ids.iter().enumerate() {
        let record = store.record(*id).expect("record");
        assert_eq!(record.head.size, *size);
        let (form, root) = match record.content {
            Content::InlineMap(_) => ("\"inline\": true".to_owned(), String::new()),
            Content::Tree(root) => (
                format!("\"inline\": false, \"depth\": {}", root.depth),
                format!(
                    ", \"root\": {{\"page\": {}, \"hash\": \"{}\"}}",
                    root.reference.page().unwrap_or(0),
                    hex(root.reference.hash())
                ),
            ),
            _ => unreachable!("a regular file"),
        };
        let no_data = Vec::new();
        let data = snapshot
            .get(&atrest_meta::data_file_name(*id))
            .unwrap_or(&no_data);
        let mut sealed = String::new();
        for (j, &n) in blocks.iter().enumerate() {
            let entry = store.map_entry(*id, n).expect("entry");
            let at = n as usize * 4096;
            let _ = write!(
                sealed,
                "{}\n        {{\"block\": {n}, \"entry\": \"{}\", \"ciphertext\": \"{}\"}}",
                if j > 0 { "," } else { "" },
                entry_hex(algorithm, entry),
                hex(&data[at..at + 4096])
            );
        }
        let _ = write!(
            listed,
            "{}\n    {{\"id\": {id}, \"file_id\": \"{}\", \"size\": {size}, {form}{root}, \"sealed\": [{sealed}\n    ]}}",
            if i > 0 { "," } else { "" },
            hex(file_id),
        );
    }
    let sb = store.superblock().clone();
    let json = format!(
        "{{\n  \"kind\": \"block-map\",\n  \"comment\": \"{comment}\",\n  \"algorithm\": \"{}\",\n  \"master_key\": \"{}\",\n  \"vault_id\": \"{}\",\n  \"config\": {{\"generation\": {}, \"hash\": \"{}\"}},\n  \"superblock_page\": {},\n  \"segment\": {},\n  \"files\": [{listed}\n  ]\n}}\n",
        alg_name(algorithm),
        hex(&MASTER),
        hex(&VAULT),
        CONFIG.generation,
        hex(&CONFIG.hash),
        sb.generation.checkpoint % 2,
        sb.replay_segment,
    );
    std::fs::write(dir.join(format!("{name}.bin")), &snapshot["atrest.meta"]).expect("write .bin");
    std::fs::write(
        dir.join(format!("{name}.seg")),
        &snapshot[&segment_name(sb.replay_segment)],
    )
    .expect("write .seg");
    std::fs::write(dir.join(format!("{name}.json")), json).expect("write .json");
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    std::fs::create_dir_all(&dir).expect("create testdata/vectors-v2");
    for old in std::fs::read_dir(&dir).expect("read dir").flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with("block-") || name.starts_with("map-") {
            std::fs::remove_file(old.path()).expect("remove old vector");
        }
    }
    for (algorithm, tag) in [
        (ContentAlgorithm::Aes256Gcm, "gcm"),
        (ContentAlgorithm::XChaCha20Poly1305, "xchacha"),
    ] {
        let file_id: [u8; 16] = *b"file id: 16 byte";
        let mut last = b"the last block of a 5,000-byte file, zero-padded to 4,096 bytes".to_vec();
        last.resize(4096, 0);
        let sealed = seal(algorithm, &file_id, 1, &last);
        block_vector(
            &dir,
            &format!("block-{tag}-last"),
            "block 1 of a 5,000-byte file: 904 bytes of plaintext sealed as a full block, zero-padded",
            algorithm,
            &file_id,
            1,
            &last,
            &sealed,
            "success",
        );
        block_vector(
            &dir,
            &format!("block-{tag}-moved"),
            "the sealed block of block-*-last opened as block 2: the AAD binds the block number",
            algorithm,
            &file_id,
            2,
            &last,
            &sealed,
            "auth-failure",
        );
        let mut zeroed = sealed.clone();
        zeroed.ciphertext.fill(0);
        block_vector(
            &dir,
            &format!("block-{tag}-zeroed"),
            "a zero region of the data file where the map says sealed: no unauthenticated zero block",
            algorithm,
            &file_id,
            1,
            &last,
            &zeroed,
            "auth-failure",
        );
        let far: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let n = (1u64 << 40) + 3;
        let sealed = seal(algorithm, &file_id, n, &far);
        block_vector(
            &dir,
            &format!("block-{tag}-far"),
            "block 2^40 + 3: the block number is a u64be in the AAD",
            algorithm,
            &file_id,
            n,
            &far,
            &sealed,
            "success",
        );
        map_vector(
            &dir,
            &format!("map-{tag}-inline"),
            "inline maps in the object record: an empty file, a 5,100-byte file whose block 0 is a hole, a full two-block file",
            algorithm,
            &[
                ("empty", 0, &[]),
                ("holey", 5100, &[1]),
                ("two", 8192, &[0, 1]),
            ],
        );
        map_vector(
            &dir,
            &format!("map-{tag}-tree"),
            "block maps in trees: one index over leaves with a null leaf between (holes), and a depth-2 map of a sparse file",
            algorithm,
            &[
                ("index", 401 * 4096, &[0, 1, 130, 400]),
                ("deep", 13_001 * 4096 - 7, &[2, 13_000]),
            ],
        );
    }
}
