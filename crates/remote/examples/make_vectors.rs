//! Writes the known-answer vectors of the key authority protocol into
//! `testdata/remote/` (or the directory given as the first argument),
//! replacing every vector there. Every input is derived from fixed labels,
//! so the output is identical on every run: a vector that changes without a
//! deliberate protocol change is a bug. `testdata/remote/README.md`
//! describes the kinds and fields; `tests/remote/vectors.rs` checks them.
//!
//! Run: `cargo run -p atrest-remote --example make_vectors`

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use atrest_remote::{
    BlindedResponse, BootId, HostId, HostIdentity, HostSecret, RequestNonce, SignedUnlockRequest,
    UnlockRequest, enroll_with_rng,
};
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::{RistrettoPoint, Scalar};

#[path = "../tests/remote/replay_rng.rs"]
mod replay_rng;
use replay_rng::ReplayRng;

/// RFC 9496 Appendix A.1: `i·G` for i = 0..15.
const RFC9496_MULTIPLES: [&str; 16] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
    "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
    "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
    "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
    "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
    "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
    "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
    "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
    "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
    "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
    "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
    "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
    "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
];

/// RFC 9496 Appendix A.2: encodings every decoder must refuse, by group.
const RFC9496_INVALID: [(&str, &[&str]); 5] = [
    (
        "non-canonical field encoding",
        &[
            "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ],
    ),
    (
        "negative field element",
        &[
            "0100000000000000000000000000000000000000000000000000000000000000",
            "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
            "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
            "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
            "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
            "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
            "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
        ],
    ),
    (
        "non-square x^2",
        &[
            "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
            "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
            "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
            "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
            "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
            "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
            "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
            "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
        ],
    ),
    (
        "negative x*y",
        &[
            "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
            "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
            "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
            "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
            "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
            "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
            "5c37cc491da847cfeb9281d407efc41e15144c876e0170b499a96a22ed31e01e",
            "445425117cb8c90edcbc7c1cc0e74f747f2c1efa5630a967c64f287792a48a4b",
        ],
    ),
    (
        "s = -1, which gives y = 0",
        &["ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"],
    ),
];

/// The Ed25519 group order L, little-endian: adding it to a signature's `S`
/// gives the same value mod L in a non-canonical form.
const ED25519_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Unix time of every request vector, and the authority's clock in them.
const TIMESTAMP: u64 = 1_800_000_000;
const MAX_SKEW: u64 = 300;

struct Out {
    dir: PathBuf,
    names: BTreeSet<String>,
}

impl Out {
    fn write(
        &mut self,
        name: &str,
        kind: &str,
        expect: &str,
        comment: &str,
        fields: &[(&str, String)],
    ) {
        assert!(
            self.names.insert(name.to_string()),
            "duplicate vector {name}"
        );
        let mut text = format!("kind: {kind}\nexpect: {expect}\ncomment: {comment}\n");
        for (key, value) in fields {
            text.push_str(&format!("{key}: {value}\n"));
        }
        fs::write(self.dir.join(name), text).expect("write vector");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> [u8; N] {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect();
    bytes.try_into().expect("length")
}

/// `n` fixed bytes named by `label`: SHA-256 in counter mode.
fn fixed(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 0u32;
    while out.len() < n {
        let mut input = format!("atrest remote vectors: {label}").into_bytes();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&atrest_core::sha256(&input));
        counter += 1;
    }
    out.truncate(n);
    out
}

fn scalar_of(random: &[u8]) -> Scalar {
    let wide: [u8; 64] = random.try_into().expect("64 bytes");
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/remote"));
    fs::create_dir_all(&dir).expect("create output dir");
    for entry in fs::read_dir(&dir).expect("list output dir") {
        let path = entry.expect("dir entry").path();
        if path.is_file() && path.extension().is_none() {
            fs::remove_file(&path).expect("remove old vector");
        }
    }
    let mut out = Out {
        dir: dir.clone(),
        names: BTreeSet::new(),
    };
    points(&mut out);
    exchanges(&mut out);
    requests(&mut out);
    reports(&mut out);
    println!("wrote {} vectors to {}", out.names.len(), dir.display());
}

fn points(out: &mut Out) {
    for (i, point) in RFC9496_MULTIPLES.iter().enumerate() {
        let (expect, comment) = if i == 0 {
            (
                "invalid-point",
                "RFC 9496 A.1: 0·G, the identity, is a valid encoding but never a valid exchange point",
            )
        } else {
            ("success", "RFC 9496 A.1: a small multiple of the generator")
        };
        out.write(
            &format!("point-rfc9496-multiple-{i:02}"),
            "ristretto-point",
            expect,
            comment,
            &[("point", point.to_string()), ("multiple", i.to_string())],
        );
    }
    let mut n = 0;
    for (group, encodings) in RFC9496_INVALID {
        for point in encodings {
            n += 1;
            out.write(
                &format!("point-rfc9496-invalid-{n:02}"),
                "ristretto-point",
                "invalid-point",
                &format!("RFC 9496 A.2: {group}"),
                &[("point", point.to_string())],
            );
        }
    }
}

/// The fields of one exchange, computed through the public API.
struct Exchange {
    fields: Vec<(&'static str, String)>,
    blinding: Scalar,
    authority_key: RistrettoPoint,
    blinded: RistrettoPoint,
    response: BlindedResponse,
}

fn exchange(label: &str) -> Exchange {
    let secret_random = fixed(&format!("{label} host secret"), 64);
    let enroll_random = fixed(&format!("{label} enroll"), 64);
    let blind_random = fixed(&format!("{label} blind"), 64);
    let secret = HostSecret::generate_with_rng(&mut ReplayRng::new(&secret_random));
    let public = secret.public_key();
    let (binding, wrap_key) = enroll_with_rng(&public, &mut ReplayRng::new(&enroll_random));
    let c = scalar_of(&enroll_random);
    let shared = RistrettoPoint::mul_base(&(c * scalar_of(&secret_random)));
    let (blinded, _state) = binding.blind_with_rng(&mut ReplayRng::new(&blind_random));
    let host = HostIdentity::from_seed(&[0x42; 32]);
    let signed = host.sign(request_with(blinded, binding.key_id()));
    let verified = atrest_remote::verify(&signed, &host.public_key(), TIMESTAMP, MAX_SKEW)
        .expect("own request verifies");
    let response = secret.respond(&verified).expect("right key");
    let point = |bytes: [u8; 32]| {
        CompressedRistretto(bytes)
            .decompress()
            .expect("valid point")
    };
    Exchange {
        fields: vec![
            ("host_secret", hex(&secret.expose_bytes()[..])),
            ("authority_key", hex(&public.to_bytes())),
            ("key_id", hex(&binding.key_id().0)),
            ("enroll_random", hex(&enroll_random)),
            ("binding_point", hex(&binding.point.to_bytes())),
            ("shared_point", hex(&shared.compress().to_bytes())),
            ("wrap_key", hex(wrap_key.expose())),
            ("blind_random", hex(&blind_random)),
            ("blinded", hex(&blinded.to_bytes())),
            ("response", hex(&response.to_bytes())),
        ],
        blinding: scalar_of(&blind_random),
        authority_key: point(public.to_bytes()),
        blinded: point(blinded.to_bytes()),
        response,
    }
}

fn exchanges(out: &mut Out) {
    for i in 1..=3 {
        let e = exchange(&format!("exchange {i}"));
        out.write(
            &format!("exchange-{i}"),
            "exchange",
            "success",
            "enrollment and one unlock; the unblinded key equals the enrollment key",
            &e.fields,
        );
    }

    // A response under another secret (a wrong or impostor authority):
    // unblinding succeeds but gives a different key, which the keyslot's
    // AEAD refuses.
    let mut e = exchange("exchange wrong secret");
    let other = scalar_of(&fixed("exchange wrong secret: other", 64));
    let wrong = (e.blinded * other).compress().to_bytes();
    set(&mut e.fields, "response", hex(&wrong));
    assert_ne!(wrong, e.response.to_bytes());
    out.write(
        "exchange-wrong-secret",
        "exchange",
        "wrong-key",
        "the response was made with another s: the unblinded key differs from the enrollment key",
        &e.fields,
    );

    // Y = e·S makes K the identity: refused rather than hashed.
    let mut e = exchange("exchange degenerate");
    let degenerate = (e.authority_key * e.blinding).compress().to_bytes();
    set(&mut e.fields, "response", hex(&degenerate));
    out.write(
        "exchange-degenerate-response",
        "exchange",
        "degenerate-response",
        "Y = e·S, so K = Y - e·S is the identity: unblinding refuses it",
        &e.fields,
    );
}

fn set(fields: &mut [(&'static str, String)], key: &str, value: String) {
    for field in fields.iter_mut() {
        if field.0 == key {
            field.1 = value;
            return;
        }
    }
    panic!("no field {key}");
}

fn request_with(
    blinded: atrest_remote::BlindedRequest,
    key_id: atrest_remote::KeyId,
) -> UnlockRequest {
    UnlockRequest {
        host_id: HostId::new("web-1.example.com").expect("valid"),
        vault_id: fixed("vault id", 16).try_into().expect("16 bytes"),
        keyslot: 3,
        key_id,
        blinded,
        nonce: RequestNonce(fixed("nonce", 16).try_into().expect("16 bytes")),
        timestamp: TIMESTAMP,
        boot_id: BootId::new("3f1c2b7e-5a4d-4e8f-9b6a-1c2d3e4f5a6b").expect("valid"),
        generation: None,
    }
}

fn requests(out: &mut Out) {
    let seed: [u8; 32] = fixed("host identity", 32).try_into().expect("32 bytes");
    let host = HostIdentity::from_seed(&seed);
    let secret = HostSecret::generate_with_rng(&mut ReplayRng::new(&fixed("request s", 64)));
    let (binding, _) = enroll_with_rng(
        &secret.public_key(),
        &mut ReplayRng::new(&fixed("request enroll", 64)),
    );
    let (blinded, _) = binding.blind_with_rng(&mut ReplayRng::new(&fixed("request blind", 64)));
    let request = request_with(blinded, binding.key_id());
    let signed = host.sign(request.clone());
    let json = |s: &SignedUnlockRequest| serde_json::to_string(s).expect("serializes");
    let common = |s: &SignedUnlockRequest, now: u64| {
        vec![
            ("identity_seed", hex(&seed)),
            ("public_key", hex(&host.public_key().to_bytes())),
            ("signed_bytes", hex(&s.request.signed_bytes())),
            ("signed_request", json(s)),
            ("now", now.to_string()),
            ("max_skew", MAX_SKEW.to_string()),
        ]
    };
    let mut write = |name: &str, expect: &str, comment: &str, fields: Vec<(&str, String)>| {
        out.write(name, "unlock-request", expect, comment, &fields);
    };

    write(
        "request-valid",
        "success",
        "a signed request at the authority's own time",
        common(&signed, TIMESTAMP),
    );
    write(
        "request-valid-at-skew-limit",
        "success",
        "made exactly max_skew seconds before the authority's time: still accepted",
        common(&signed, TIMESTAMP + MAX_SKEW),
    );
    write(
        "request-stale",
        "stale-request",
        "made max_skew + 1 seconds before the authority's time",
        common(&signed, TIMESTAMP + MAX_SKEW + 1),
    );
    write(
        "request-from-the-future",
        "future-request",
        "claims a time max_skew + 1 seconds after the authority's",
        common(&signed, TIMESTAMP - MAX_SKEW - 1),
    );

    let mut flipped = signed.clone();
    flipped.signature.0[10] ^= 0x01;
    write(
        "request-flipped-signature-bit",
        "bad-signature",
        "one bit of R flipped",
        common(&flipped, TIMESTAMP),
    );

    let mut changed = signed.clone();
    changed.request.boot_id = BootId::new("00000000-0000-4000-8000-000000000000").expect("valid");
    write(
        "request-changed-boot-id",
        "bad-signature",
        "the boot id was changed after signing (an unannounced reboot posing as announced)",
        common(&changed, TIMESTAMP),
    );

    let mut moved = signed.clone();
    moved.request.keyslot = 4;
    write(
        "request-changed-keyslot",
        "bad-signature",
        "the keyslot number was changed after signing",
        common(&moved, TIMESTAMP),
    );

    let impostor = HostIdentity::from_seed(&[0x99; 32]).sign(request.clone());
    write(
        "request-signed-by-another-host",
        "bad-signature",
        "signed by another host's key: verified against this host's public key",
        common(&impostor, TIMESTAMP),
    );

    // Version 2 (format.md §16.17.2): a format 2 vault's claim.
    let generation = |k: u64, fill: u8| atrest_remote::Generation {
        checkpoint: k,
        seq: 100 * k,
        chain: [fill; 32],
    };
    let claimed = host.sign(UnlockRequest {
        generation: Some(atrest_remote::GenerationClaim {
            checkpoint: 815,
            seq: 81_512,
            chain: [0x5c; 32],
            config_generation: 7,
            lineage: atrest_remote::Lineage::new(vec![
                generation(815, 0x51),
                generation(814, 0x52),
                generation(700, 0x53),
            ])
            .expect("three generations"),
        }),
        ..request.clone()
    });
    write(
        "request-v2-claim-valid",
        "success",
        "version 2: the claim of a format 2 vault at checkpoint 815, three generations of lineage",
        common(&claimed, TIMESTAMP),
    );
    let mut edited = claimed.clone();
    if let Some(claim) = edited.request.generation.as_mut() {
        claim.seq += 1;
    }
    write(
        "request-v2-claim-edited",
        "bad-signature",
        "the claim's sequence number raised after signing",
        common(&edited, TIMESTAMP),
    );
    let mut cut = claimed.clone();
    if let Some(claim) = cut.request.generation.as_mut() {
        claim.lineage =
            atrest_remote::Lineage::new(vec![generation(815, 0x51)]).expect("one generation");
    }
    write(
        "request-v2-lineage-cut",
        "bad-signature",
        "the claim's lineage cut to its first generation after signing",
        common(&cut, TIMESTAMP),
    );
    let mut dropped = claimed.clone();
    dropped.request.generation = None;
    write(
        "request-v2-claim-dropped",
        "bad-signature",
        "the claim removed after signing: the version 1 bytes were not what was signed",
        common(&dropped, TIMESTAMP),
    );

    // S + L: the same signature mod L in a second encoding. Strict
    // verification refuses it, so a captured request cannot be re-encoded
    // into one with a "new" signature.
    let mut malleated = signed.clone();
    let mut carry = 0u16;
    for (byte, add) in malleated.signature.0[32..].iter_mut().zip(ED25519_ORDER_LE) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    write(
        "request-malleated-signature",
        "bad-signature",
        "the signature's S replaced by S + L (non-canonical)",
        common(&malleated, TIMESTAMP),
    );

    // Wire forms that must not parse.
    let good = json(&signed);
    let b64 = atrest_remote::to_base64url;
    let parse_errors = [
        (
            "request-json-unknown-field",
            "an extra field in the request object",
            good.replacen("\"keyslot\":3", "\"keyslot\":3,\"admin\":true", 1),
        ),
        (
            "request-json-padded-nonce",
            "the nonce in padded base64url",
            good.replacen(
                &format!("\"{}\"", b64(&request.nonce.0)),
                &format!("\"{}==\"", b64(&request.nonce.0)),
                1,
            ),
        ),
        (
            "request-json-identity-point",
            "X is the identity point",
            good.replacen(&b64(&request.blinded.to_bytes()), &b64(&[0; 32]), 1),
        ),
        (
            "request-json-non-canonical-point",
            "X is a non-canonical field encoding (RFC 9496 A.2)",
            good.replacen(
                &b64(&request.blinded.to_bytes()),
                &b64(&unhex::<32>(RFC9496_INVALID[0].1[1])),
                1,
            ),
        ),
        (
            "request-json-bad-host-id",
            "a host id with a space",
            good.replacen("web-1.example.com", "web 1", 1),
        ),
        (
            "request-json-short-signature",
            "a 63-byte signature",
            good.replacen(
                &b64(&signed.signature.0),
                &b64(&signed.signature.0[..63]),
                1,
            ),
        ),
        (
            "request-json-negative-timestamp",
            "a negative timestamp",
            good.replacen(&format!("{TIMESTAMP}"), "-1", 1),
        ),
    ];
    for (name, comment, text) in parse_errors {
        assert_ne!(text, good, "{name}: the replacement did not apply");
        write(name, "parse-error", comment, vec![("signed_request", text)]);
    }
}

/// `generation-report`: a format 2 vault's newest generation, signed by the
/// host (docs/format.md §16.17.1).
fn reports(out: &mut Out) {
    use atrest_remote::{
        Generation, GenerationReport, Lineage, ReportReason, ReportedState, SignedGenerationReport,
    };
    let seed: [u8; 32] = fixed("host identity", 32).try_into().expect("32 bytes");
    let host = HostIdentity::from_seed(&seed);
    let generation = |k: u64, label: &str| Generation {
        checkpoint: k,
        seq: 1_204_000 + k,
        chain: fixed(label, 32).try_into().expect("32 bytes"),
    };
    let head = generation(815, "chain 815");
    let report = GenerationReport {
        host_id: HostId::new("web-1.example.com").expect("valid"),
        vault_id: fixed("vault id", 16).try_into().expect("16 bytes"),
        checkpoint: head.checkpoint,
        seq: head.seq,
        chain: head.chain,
        config_generation: 7,
        reason: ReportReason::Periodic,
        state: ReportedState::Open,
        lineage: Lineage::new(vec![
            head,
            generation(814, "chain 814"),
            generation(812, "chain 812"),
        ])
        .expect("3 generations"),
        boot_id: BootId::new("3f1c2b7e-5a4d-4e8f-9b6a-1c2d3e4f5a6b").expect("valid"),
        nonce: RequestNonce(fixed("report nonce", 16).try_into().expect("16 bytes")),
        timestamp: TIMESTAMP,
    };
    let signed = host.sign_report(report.clone());
    let json = |s: &SignedGenerationReport| serde_json::to_string(s).expect("serializes");
    let common = |s: &SignedGenerationReport| {
        vec![
            ("identity_seed", hex(&seed)),
            ("public_key", hex(&host.public_key().to_bytes())),
            ("signed_bytes", hex(&s.report.signed_bytes())),
            ("signed_report", json(s)),
            ("now", TIMESTAMP.to_string()),
            ("max_skew", MAX_SKEW.to_string()),
        ]
    };
    let mut write = |name: &str, expect: &str, comment: &str, fields: Vec<(&str, String)>| {
        out.write(name, "generation-report", expect, comment, &fields);
    };
    write(
        "report-valid",
        "success",
        "a periodic report of checkpoint 815 with a lineage of three generations",
        common(&signed),
    );
    let mut edited = signed.clone();
    edited.report.seq += 1;
    write(
        "report-edited-sequence",
        "bad-signature",
        "the sequence number raised after signing",
        common(&edited),
    );
    let mut cut = signed.clone();
    cut.report.lineage = Lineage::new(vec![head]).expect("one generation");
    write(
        "report-lineage-cut",
        "bad-signature",
        "the lineage cut to its first generation after signing",
        common(&cut),
    );
    let good = json(&signed);
    let text = good.replace(
        &serde_json::to_string(&signed.report.lineage).expect("serializes"),
        "[]",
    );
    assert_ne!(text, good, "the replacement did not apply");
    write(
        "report-empty-lineage",
        "parse-error",
        "a lineage of no generation",
        vec![("signed_report", text)],
    );
}
