use std::sync::Arc;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::record::Timestamp;
use atrest_meta::{ConfigBinding, MemBacking, MetaKeys, Store};

pub const CONFIG: ConfigBinding = ConfigBinding {
    generation: 1,
    hash: [0xc0; 32],
};

pub fn keys(algorithm: ContentAlgorithm) -> MetaKeys {
    MetaKeys::derive(&SecretKey::from_bytes([0x42; 32]), [0x17; 16], algorithm)
}

pub fn at(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

/// A new store on a fresh in-memory backing.
pub fn new_store(algorithm: ContentAlgorithm) -> (Store, Arc<MemBacking>) {
    let backing = Arc::new(MemBacking::new());
    let store = Store::format(
        keys(algorithm),
        backing.clone(),
        CONFIG,
        (0o755, 0, 0),
        at(1),
    )
    .unwrap();
    (store, backing)
}

pub fn reopen(backing: &Arc<MemBacking>, algorithm: ContentAlgorithm) -> Store {
    Store::open(keys(algorithm), backing.clone(), CONFIG).unwrap()
}
