//! Known-answer vectors: walks every file under `testdata/remote/` (except
//! `README.md`) and checks it against the public API. The format is the
//! vault vectors' (`name: value` lines; `kind`, `expect`, `comment`
//! required; other fields hex unless `testdata/remote/README.md` says
//! otherwise). Nothing here names a vector: add a file and it is checked.
//! An unknown kind or `expect`, a missing field, or a field the check never
//! reads fails.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use atrest_core::{SecretKey, labels};
use atrest_remote::{
    BlindedRequest, BlindedResponse, ExchangeError, ExchangePublicKey, HostIdentity, HostPublicKey,
    HostSecret, SignedUnlockRequest, enroll_with_rng,
};
use curve25519_dalek::{RistrettoPoint, Scalar};

use crate::replay_rng::ReplayRng;
use crate::support::request_for;

/// `ATREST_REMOTE_VECTORS_DIR` points the harness elsewhere (to check that
/// a corrupted copy of the vectors fails).
fn vectors_dir() -> PathBuf {
    std::env::var_os("ATREST_REMOTE_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/remote"))
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
    kind: String,
    expect: String,
    fields: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Vector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| format!("line {}: not `name: value`", i + 1))?;
            if fields.insert(key.to_string(), value.to_string()).is_some() {
                return Err(format!("line {}: `{key}` given twice", i + 1));
            }
        }
        let mut take = |k: &str| fields.remove(k).ok_or_else(|| format!("no `{k}` line"));
        let kind = take("kind")?;
        let expect = take("expect")?;
        if take("comment")?.trim().is_empty() {
            return Err("empty comment".into());
        }
        Ok(Self {
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

    fn number(&self, key: &str) -> Result<u64, String> {
        self.text(key)?
            .parse()
            .map_err(|_| format!("`{key}`: not a decimal number"))
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>, String> {
        let s = self.text(key)?;
        ensure!(s.len() % 2 == 0, "`{key}`: odd number of hex digits");
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| format!("`{key}`: not hex"))
            })
            .collect()
    }

    fn array<const N: usize>(&self, key: &str) -> Result<[u8; N], String> {
        self.bytes(key)?
            .try_into()
            .map_err(|v: Vec<u8>| format!("`{key}`: {} bytes, expected {N}", v.len()))
    }

    /// Compares an outcome with `expect`: `Ok` is success, `Err(class)` a
    /// failure of that class.
    fn outcome(&self, got: Result<(), String>) -> Check {
        match got {
            Ok(()) if self.expect == "success" => Ok(()),
            Ok(()) => Err(format!("expected {}, but it succeeded", self.expect)),
            Err(class) if class == self.expect => Ok(()),
            Err(class) => Err(format!("expected {}, got {class}", self.expect)),
        }
    }

    fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.fields
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }
}

fn check_point(v: &Vector) -> Check {
    let bytes = v.array::<32>("point")?;
    if let Some(multiple) = v.opt("multiple") {
        let multiple: u64 = multiple.parse().map_err(|_| "`multiple`: not a number")?;
        let expected = RistrettoPoint::mul_base(&Scalar::from(multiple)).compress();
        ensure!(expected.to_bytes() == bytes, "point is not {multiple}·G");
    }
    let results = [
        BlindedRequest::from_bytes(bytes).map(drop),
        BlindedResponse::from_bytes(bytes).map(drop),
        ExchangePublicKey::from_bytes(bytes).map(drop),
    ];
    ensure!(
        results.windows(2).all(|w| w[0] == w[1]),
        "the point types disagree: {results:?}"
    );
    v.outcome(match results[0] {
        Ok(()) => Ok(()),
        Err(ExchangeError::InvalidPoint) => Err("invalid-point".into()),
        Err(e) => Err(format!("unexpected error {e:?}")),
    })
}

fn check_exchange(v: &Vector) -> Check {
    let secret = HostSecret::from_bytes(&v.array("host_secret")?)
        .map_err(|e| format!("host_secret: {e}"))?;
    let public = secret.public_key();
    ensure!(
        public.to_bytes() == v.array("authority_key")?,
        "S = s·G differs"
    );
    ensure!(public.key_id().0 == v.array("key_id")?, "key id differs");

    let mut rng = ReplayRng::new(&v.bytes("enroll_random")?);
    let (binding, wrap_key) = enroll_with_rng(&public, &mut rng);
    ensure!(rng.is_exhausted(), "enrollment drew other than 64 bytes");
    ensure!(
        binding.point.to_bytes() == v.array("binding_point")?,
        "C = c·G differs"
    );
    let expected_key = v.array::<32>("wrap_key")?;
    ensure!(
        *wrap_key.expose() == expected_key,
        "enrollment wrap key differs"
    );

    // The key schedule, checked apart from the exchange: the wrap key is
    // HKDF-SHA256 of K's encoding, salted with C ‖ S.
    let mut salt = binding.point.to_bytes().to_vec();
    salt.extend_from_slice(&public.to_bytes());
    let derived =
        SecretKey::from_bytes(v.array("shared_point")?).derive(&salt, labels::REMOTE_WRAP);
    ensure!(
        *derived.expose() == expected_key,
        "HKDF(K) differs from wrap_key"
    );

    let mut rng = ReplayRng::new(&v.bytes("blind_random")?);
    let (blinded, state) = binding.blind_with_rng(&mut rng);
    ensure!(rng.is_exhausted(), "blinding drew other than 64 bytes");
    ensure!(
        blinded.to_bytes() == v.array("blinded")?,
        "X = C + e·G differs"
    );

    let response =
        BlindedResponse::from_bytes(v.array("response")?).map_err(|e| format!("response: {e}"))?;
    if v.expect == "success" {
        let host = HostIdentity::from_seed(&[0x42; 32]);
        let signed = host.sign(request_for(blinded, binding.key_id(), 1_800_000_000));
        let verified = atrest_remote::verify(&signed, &host.public_key(), 1_800_000_000, 300)
            .map_err(|e| format!("verify: {e}"))?;
        let answer = secret
            .respond(&verified)
            .map_err(|e| format!("respond: {e}"))?;
        ensure!(answer == response, "Y = s·X differs");
    }
    v.outcome(match state.unblind(&response) {
        Ok(key) if *key.expose() == expected_key => Ok(()),
        Ok(_) => Err("wrong-key".into()),
        Err(ExchangeError::DegenerateResponse) => Err("degenerate-response".into()),
        Err(e) => Err(format!("unexpected error {e:?}")),
    })
}

/// What a signed message's vector must show (`unlock-request`,
/// `generation-report`): the wire form in `field` parses (or, for
/// `parse-error`, does not) and re-serializes byte for byte, its canonical
/// encoding is `signed_bytes`, the seed's key is `public_key`, a success
/// signs again to the same bytes (Ed25519 is deterministic), and `verify`
/// gives the expected outcome.
fn check_signed<S>(
    v: &Vector,
    field: &str,
    signed_bytes: impl Fn(&S) -> Vec<u8>,
    sign_again: impl Fn(&HostIdentity, &S) -> S,
    verify: impl Fn(&S, &HostPublicKey, u64, u64) -> Result<(), atrest_remote::RequestError>,
) -> Check
where
    S: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let text = v.text(field)?;
    let parsed = serde_json::from_str::<S>(text);
    if v.expect == "parse-error" {
        return v.outcome(parsed.map(drop).map_err(|_| "parse-error".into()));
    }
    let signed = parsed.map_err(|e| format!("{field} does not parse: {e}"))?;
    ensure!(
        serde_json::to_string(&signed).map_err(|e| e.to_string())? == text,
        "the wire form does not round-trip byte for byte"
    );
    ensure!(
        signed_bytes(&signed) == v.bytes("signed_bytes")?,
        "canonical encoding differs"
    );
    let identity = HostIdentity::from_seed(&v.array("identity_seed")?);
    let public = HostPublicKey::from_bytes(&v.array("public_key")?)
        .map_err(|e| format!("public_key: {e}"))?;
    ensure!(
        identity.public_key() == public,
        "public key differs from seed's"
    );
    if v.expect == "success" {
        ensure!(
            sign_again(&identity, &signed) == signed,
            "signature differs from a fresh one"
        );
    }
    let got = verify(&signed, &public, v.number("now")?, v.number("max_skew")?);
    v.outcome(got.map_err(|e| e.code().replace('_', "-")))
}

fn check_request(v: &Vector) -> Check {
    check_signed(
        v,
        "signed_request",
        |s: &SignedUnlockRequest| s.request.signed_bytes(),
        |identity, s| identity.sign(s.request.clone()),
        |s, key, now, skew| atrest_remote::verify(s, key, now, skew).map(drop),
    )
}

fn check_report(v: &Vector) -> Check {
    check_signed(
        v,
        "signed_report",
        |s: &atrest_remote::SignedGenerationReport| s.report.signed_bytes(),
        |identity, s| identity.sign_report(s.report.clone()),
        |s, key, now, skew| atrest_remote::verify_report(s, key, now, skew).map(drop),
    )
}

fn check(v: &Vector) -> Check {
    match v.kind.as_str() {
        "ristretto-point" => check_point(v),
        "exchange" => check_exchange(v),
        "unlock-request" => check_request(v),
        "generation-report" => check_report(v),
        other => Err(format!("unknown kind {other}")),
    }
}

#[test]
fn every_vector_checks() {
    let dir = vectors_dir();
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    names.sort();
    assert!(
        names.len() >= 50,
        "only {} vectors in {}",
        names.len(),
        dir.display()
    );
    let mut failures = Vec::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for path in &names {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Vector::parse(&text))
            .and_then(|v| {
                *kinds.entry(format!("{} {}", v.kind, v.expect)).or_default() += 1;
                check(&v)?;
                let unused = v.unused();
                ensure!(unused.is_empty(), "fields never read: {unused:?}");
                Ok(())
            });
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Each kind has its success case and each failure class is present.
    for needed in [
        "ristretto-point success",
        "ristretto-point invalid-point",
        "exchange success",
        "exchange wrong-key",
        "exchange degenerate-response",
        "unlock-request success",
        "unlock-request bad-signature",
        "unlock-request stale-request",
        "unlock-request future-request",
        "unlock-request parse-error",
        "generation-report success",
        "generation-report bad-signature",
        "generation-report parse-error",
    ] {
        assert!(
            kinds.contains_key(needed),
            "no `{needed}` vector: {kinds:?}"
        );
    }
}
