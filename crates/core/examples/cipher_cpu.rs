//! Content-cipher throughput per core measured in *thread CPU time*, as
//! `openssl speed` counts user time, so a busy shared machine still gives a
//! meaningful figure (criterion's wall-clock numbers drop with the load).
//!
//! `cargo run --release -p atrest-core --example cipher_cpu`

use std::hint::black_box;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey};

fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Bytes per CPU second of `op` on 4 KiB blocks: doubling batches until a
/// batch takes at least 1 s of CPU; median of 3 such runs.
fn measure(mut op: impl FnMut()) -> f64 {
    let mut results = Vec::new();
    for _ in 0..3 {
        let mut n: u64 = 1000;
        loop {
            let start = thread_cpu_seconds();
            for _ in 0..n {
                op();
            }
            let spent = thread_cpu_seconds() - start;
            if spent >= 1.0 {
                results.push(n as f64 * 4096.0 / spent);
                break;
            }
            n *= 2;
        }
    }
    results.sort_by(f64::total_cmp);
    results[1]
}

fn main() {
    for alg in [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ] {
        let cipher = BlockCipher::new(alg, &SecretKey::random());
        let plain = vec![0x42u8; 4096];
        let aad = [7u8; 24];
        let mut sealed = vec![0u8; 4096 + alg.overhead()];
        let seal = measure(|| cipher.seal_to(&aad, black_box(&plain), &mut sealed));
        cipher.seal_to(&aad, &plain, &mut sealed);
        let mut buf = sealed.clone();
        let open = measure(|| {
            buf.copy_from_slice(&sealed);
            black_box(cipher.open_in_place(&aad, &mut buf).map(|p| p.len()).ok());
        });
        println!(
            "{:<20} 4 KiB blocks, one core (CPU time): seal {:.2} GB/s, open {:.2} GB/s",
            alg.name(),
            seal / 1e9,
            open / 1e9
        );
    }
}
