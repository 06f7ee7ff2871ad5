//! In-process operations per second of atrest-scoped on one core, beside
//! the bare primitives underneath (so the envelope's own cost shows):
//! 64-byte field encrypt+decrypt vs bare AES-256-GCM seal+open of the same
//! bytes; blind index vs bare HMAC-SHA256; stream throughput; the per
//! request cost of unwrapping a scope key (with and without client share).
//!
//! cargo run --release -p atrest-scoped --example scoped_ops [ROUNDS]
//!
//! Prints the median of ROUNDS (default 5) rounds per row. Run on an idle
//! machine (the load average is printed first).

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use atrest_core::{BlockCipher, ContentAlgorithm, HeaderMac, SecretKey};
use atrest_scoped::{
    ClientShare, Column, FieldContext, IndexDefinition, KeyVersion, Keyring, Normalize, RecordsKey,
    ScopeId, ScopeKey, ScopeSecret, StreamContext, StreamWriter, Table,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Operations per second of `f`, run `n` times, median over `rounds`.
fn rate(rounds: usize, n: u64, mut f: impl FnMut(u64)) -> f64 {
    median(
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for i in 0..n {
                    f(i);
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# atrest-scoped in-process, one thread, median of {rounds} rounds; load average at start: {}",
        load.trim()
    );

    let scope = ScopeId::new("user:42")?;
    let secret = ScopeSecret::random();
    let ring = Keyring::new(ScopeKey::new(
        scope.clone(),
        KeyVersion::FIRST,
        &secret,
        None,
    ));
    let ctx = FieldContext::new("users", "email", "3f2a9c71-0d4e-4c8a-9b1e-5a7d2c0f6e11")?;
    let value = [0x61u8; 64];

    let field = rate(rounds, 300_000, |_| {
        let text = ring
            .current()
            .encrypt_field(&ctx, black_box(&value))
            .expect("seal");
        black_box(ring.decrypt_field(&ctx, &text).expect("open"));
    });
    let field_bytes = rate(rounds, 300_000, |_| {
        let bytes = ring
            .current()
            .encrypt_field_bytes(&ctx, black_box(&value))
            .expect("seal");
        black_box(ring.decrypt_field_bytes(&ctx, &bytes).expect("open"));
    });
    let bare_cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &SecretKey::random());
    let aad = [7u8; 80];
    let bare = rate(rounds, 300_000, |_| {
        let sealed = bare_cipher.seal(&aad, black_box(&value));
        black_box(bare_cipher.open(&aad, &sealed).expect("open"));
    });
    println!(
        "field encrypt+decrypt, 64 B, text envelope   {:>12.0} /s   ({:.2} µs)",
        field,
        1e6 / field
    );
    println!(
        "field encrypt+decrypt, 64 B, binary envelope {:>12.0} /s   ({:.2} µs)",
        field_bytes,
        1e6 / field_bytes
    );
    println!(
        "bare AES-256-GCM seal+open, 64 B, 80 B AAD   {:>12.0} /s   envelope/bare time {:.2}x",
        bare,
        bare / field_bytes
    );

    let def = IndexDefinition {
        table: Table::new("users")?,
        name: Column::new("email_idx")?,
        columns: vec![Column::new("email")?],
        bits: 16,
        normalize: vec![Normalize::Trim, Normalize::Lowercase],
    };
    let index = ring.current().blind_index(&def)?;
    let raw = IndexDefinition {
        normalize: vec![],
        ..def.clone()
    };
    let index_raw = ring.current().blind_index(&raw)?;
    let emails: Vec<String> = (0..1024).map(|i| format!("user{i}@example.org")).collect();
    let idx = rate(rounds, 1_000_000, |i| {
        black_box(
            index_raw
                .compute(&[&emails[(i & 1023) as usize]])
                .expect("index"),
        );
    });
    let idx_norm = rate(rounds, 1_000_000, |i| {
        black_box(
            index
                .compute(&[&emails[(i & 1023) as usize]])
                .expect("index"),
        );
    });
    let mac = HeaderMac::new(&SecretKey::random());
    let bare_mac = rate(rounds, 1_000_000, |i| {
        black_box(mac.sign(emails[(i & 1023) as usize].as_bytes()));
    });
    println!(
        "blind index, no normalisation                {:>12.0} /s   ({:.2} µs)",
        idx,
        1e6 / idx
    );
    println!(
        "blind index, trim+lowercase                  {:>12.0} /s   ({:.2} µs)",
        idx_norm,
        1e6 / idx_norm
    );
    println!(
        "bare HMAC-SHA256 of the value                {:>12.0} /s   index/bare time {:.2}x",
        bare_mac,
        bare_mac / idx
    );

    let records = RecordsKey::from_master(&SecretKey::random());
    let plain_wrap = records.wrap_scope(&scope, KeyVersion::FIRST, false, &secret);
    let share_wrap = records.wrap_scope(&scope, KeyVersion::FIRST, true, &secret);
    let share = ClientShare::random();
    let unwrap = rate(rounds, 50_000, |_| {
        let s = records.unwrap_scope(&scope, &plain_wrap).expect("unwrap");
        black_box(ScopeKey::open(&s, None).expect("open"));
    });
    let unwrap_share = rate(rounds, 50_000, |_| {
        let s = records.unwrap_scope(&scope, &share_wrap).expect("unwrap");
        black_box(ScopeKey::open(&s, Some(&share)).expect("open"));
    });
    println!(
        "open a scope (unwrap + derive)               {:>12.0} /s   ({:.2} µs)",
        unwrap,
        1e6 / unwrap
    );
    println!(
        "open a scope with a client share             {:>12.0} /s   ({:.2} µs)",
        unwrap_share,
        1e6 / unwrap_share
    );

    let data = vec![0x5au8; 64 << 20];
    let sctx = StreamContext::new("uploads", "f-1")?;
    let stream = median(
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                let mut w = StreamWriter::new(
                    ring.current(),
                    &sctx,
                    None,
                    Vec::with_capacity(data.len() + (1 << 20)),
                )
                .expect("writer");
                w.write_all(&data).expect("write");
                black_box(w.finish().expect("finish"));
                data.len() as f64 / start.elapsed().as_secs_f64() / 1e9
            })
            .collect(),
    );
    println!("stream encrypt, 64 MiB in 64 KiB chunks      {stream:>12.2} GB/s");
    Ok(())
}
