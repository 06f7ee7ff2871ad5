//! Throughput of the content cipher on 4 KiB blocks, one core: the figure
//! that bounds FUSE streaming. Target: at least 8 GB/s (aws-lc AES-256-GCM
//! measured 10-13 GB/s on this kind of machine).

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn blocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("content-block-4KiB");
    group.throughput(Throughput::Bytes(4096));
    for alg in [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ] {
        let cipher = BlockCipher::new(alg, &SecretKey::random());
        let plain = vec![0x42u8; 4096];
        let mut sealed = vec![0u8; 4096 + alg.overhead()];
        let aad = [7u8; 24];
        group.bench_function(format!("seal {}", alg.name()), |b| {
            b.iter(|| cipher.seal_to(&aad, std::hint::black_box(&plain), &mut sealed))
        });
        cipher.seal_to(&aad, &plain, &mut sealed);
        let mut buf = sealed.clone();
        group.bench_function(format!("open {}", alg.name()), |b| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                cipher
                    .open_in_place(&aad, std::hint::black_box(&mut buf))
                    .map(|p| p.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, blocks);
criterion_main!(benches);
