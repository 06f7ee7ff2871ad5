//! Scope keys at rest, the part both backends share (decision 0020): a
//! scope's keys are wrapped under its bucket's key (one of
//! [`BUCKETS`], the bucket picked at random when the scope is made), and
//! the bucket keys under the records epoch key `K_e` of `records.key`
//! ([`crate::secrets_key::RECORDS`]). A scope's shred replaces its
//! bucket's key (the bucket's other scopes are wrapped again under the new
//! one) and advances the epoch (the bucket keys are wrapped again under
//! `K_{e+1}`), in one transaction: a copy of the database from before
//! holds the shredded scope only under the old bucket key, and that only
//! under `K_e`, which exists nowhere once the key file has moved on.
//!
//! The backends run the SQL; the keys are handled here only.

use atrest_core::SecretKey;
use atrest_scoped::{RecordsKey, ScopeId, Wrapped};
use zeroize::Zeroizing;

use super::StorageError;
use crate::secrets_key::{EpochKey, SecretsKeyring};

/// How many bucket keys there are: a shred rewrites about `scopes / 256`
/// scope keys and the 256 bucket keys, whatever the number of scopes.
pub const BUCKETS: usize = 256;

/// A bucket's key as the database holds it, read with a scope's keys (in
/// the same statement, so the two agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBucket {
    pub number: u8,
    /// `K_e`'s wrap of the bucket key (docs/format.md §20, 65 bytes).
    pub wrapped: Vec<u8>,
}

/// The bucket of a new scope: uniform, and not the caller's to choose, so
/// no one can pile scopes into one bucket to make its shreds dear.
pub fn random_bucket() -> u8 {
    atrest_core::random_array::<1>()[0]
}

/// A bucket key as scopes use it.
pub(crate) fn records_key(raw: &[u8; 32]) -> RecordsKey {
    RecordsKey::new(SecretKey::from_bytes(*raw))
}

/// A row of `scope_keys` with its scope's id: `(scope id, version,
/// wrapped)`.
pub(crate) type ScopeKeyRow = (String, i64, Vec<u8>);

/// `(bucket, wrapped bucket key)` as stored.
pub(crate) type BucketRow = (i64, Vec<u8>);

fn bucket_number(bucket: i64) -> Result<u8, StorageError> {
    u8::try_from(bucket).map_err(|_| StorageError::Corrupt(format!("scope bucket {bucket}")))
}

fn rewrap(
    from: &RecordsKey,
    to: &RecordsKey,
    (scope, version, wrapped): ScopeKeyRow,
) -> Result<Option<ScopeKeyRow>, StorageError> {
    let id = ScopeId::new(&scope)
        .map_err(|e| StorageError::Corrupt(format!("scope id {scope:?}: {e}")))?;
    let parsed = Wrapped::from_bytes(&wrapped)
        .map_err(|e| StorageError::Corrupt(format!("scope {scope} version {version}: {e}")))?;
    match from.rewrap_scope(to, &id, &parsed) {
        Ok(moved) => Ok(Some((scope, version, moved.as_bytes().to_vec()))),
        Err(_) => Ok(None),
    }
}

/// What a database with no records epoch yet gets, in the transaction of
/// its open: 256 new bucket keys wrapped under `K_0`, each scope a random
/// bucket, and every scope key (wrapped under the records key of before,
/// the bare `records.key` the keyring still holds) wrapped again under its
/// bucket's key.
pub(crate) struct Migration {
    pub key: std::sync::Arc<EpochKey>,
    /// `(bucket, wrapped bucket key)`.
    pub buckets: Vec<(i64, Vec<u8>)>,
    /// `(scope id, bucket)`, every scope.
    pub scope_buckets: Vec<(String, i64)>,
    pub scope_keys: Vec<ScopeKeyRow>,
}

/// Builds the [`Migration`] of a database whose scopes are `scopes` and
/// whose scope keys are `keys`.
pub(crate) fn migrate(
    records: &SecretsKeyring,
    scopes: Vec<String>,
    keys: Vec<ScopeKeyRow>,
) -> Result<Migration, StorageError> {
    let key = records.for_new_epoch()?;
    let raw: Vec<Zeroizing<[u8; 32]>> = (0..BUCKETS)
        .map(|_| Zeroizing::new(atrest_core::random_array::<32>()))
        .collect();
    let buckets = raw
        .iter()
        .enumerate()
        .map(|(number, bucket)| {
            let number = u8::try_from(number).expect("256 buckets");
            (i64::from(number), key.wrap_bucket(number, bucket))
        })
        .collect();
    let scope_buckets: std::collections::HashMap<String, u8> = scopes
        .into_iter()
        .map(|scope| (scope, random_bucket()))
        .collect();
    let scope_keys = if keys.is_empty() {
        Vec::new()
    } else {
        // Scopes from before: they open only under the bare records key.
        let legacy = records
            .legacy_key()
            .map(|master| RecordsKey::from_master(&master))
            .ok_or_else(|| records.wrong_key(0))?;
        keys.into_iter()
            .map(|row| {
                let bucket = *scope_buckets.get(&row.0).ok_or_else(|| {
                    StorageError::Corrupt(format!("scope key of no scope {}", row.0))
                })?;
                rewrap(&legacy, &records_key(&raw[usize::from(bucket)]), row)?
                    .ok_or_else(|| records.wrong_key(0).into())
            })
            .collect::<Result<Vec<_>, StorageError>>()?
    };
    Ok(Migration {
        key,
        buckets,
        scope_buckets: scope_buckets
            .into_iter()
            .map(|(scope, bucket)| (scope, i64::from(bucket)))
            .collect(),
        scope_keys,
    })
}

/// A shred's step, in its transaction, after the shredded scope's keys are
/// deleted: `bucket`'s key replaced by a new one, under which its other
/// scopes' keys (`siblings`) are wrapped again, and every bucket key
/// (`buckets`, all 256) wrapped under `K_{e+1}`.
pub(crate) struct ShredStep {
    pub next: EpochKey,
    pub buckets: Vec<BucketRow>,
    pub scope_keys: Vec<ScopeKeyRow>,
}

pub(crate) fn shred_step(
    key: &EpochKey,
    bucket: i64,
    buckets: Vec<BucketRow>,
    siblings: Vec<ScopeKeyRow>,
) -> Result<ShredStep, StorageError> {
    let shredded = bucket_number(bucket)?;
    if buckets.len() != BUCKETS {
        return Err(StorageError::Corrupt(format!(
            "{} scope buckets, not {BUCKETS}",
            buckets.len()
        )));
    }
    let next = key.next()?;
    let fresh = Zeroizing::new(atrest_core::random_array::<32>());
    let mut old = None;
    let mut rewrapped = Vec::with_capacity(BUCKETS);
    for (number, wrapped) in buckets {
        let n = bucket_number(number)?;
        let raw = key
            .unwrap_bucket(n, &wrapped)
            .map_err(|e| StorageError::Corrupt(format!("scope bucket {n}: {e}")))?;
        if n == shredded {
            rewrapped.push((number, next.wrap_bucket(n, &fresh)));
            old = Some(raw);
        } else {
            rewrapped.push((number, next.wrap_bucket(n, &raw)));
        }
    }
    let old = old.ok_or_else(|| StorageError::Corrupt(format!("no scope bucket {shredded}")))?;
    let (from, to) = (records_key(&old), records_key(&fresh));
    let scope_keys = siblings
        .into_iter()
        .map(|row| {
            let what = format!("scope {} version {}", row.0, row.1);
            rewrap(&from, &to, row)?.ok_or_else(|| {
                StorageError::Corrupt(format!("{what} does not open under its bucket's key"))
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(ShredStep {
        next,
        buckets: rewrapped,
        scope_keys,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use atrest_scoped::KeyVersion;

    use super::*;
    use crate::secrets_key::RECORDS;

    fn scope_row(key: &RecordsKey, scope: &str, version: u32) -> ScopeKeyRow {
        let (wrapped, _) = key.create_scope(&ScopeId::new(scope).unwrap(), false);
        let wrapped = if version == 1 {
            wrapped
        } else {
            key.wrap_scope(
                &ScopeId::new(scope).unwrap(),
                KeyVersion::new(version).unwrap(),
                false,
                &atrest_scoped::ScopeSecret::random(),
            )
        };
        (
            scope.into(),
            i64::from(version),
            wrapped.as_bytes().to_vec(),
        )
    }

    #[test]
    fn a_migration_moves_every_scope_key_under_its_bucket_and_refuses_a_wrong_master() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.key");
        let master = SecretKey::random();
        std::fs::write(&path, master.expose()).unwrap();
        let ring = SecretsKeyring::open_as(&RECORDS, &path).unwrap();
        let legacy = RecordsKey::from_master(&master);
        let keys = vec![scope_row(&legacy, "a", 1), scope_row(&legacy, "b", 2)];
        let done = migrate(&ring, vec!["a".into(), "b".into(), "gone".into()], keys).unwrap();
        assert_eq!(done.key.epoch(), 0);
        assert_eq!(done.buckets.len(), BUCKETS);
        assert_eq!(done.scope_buckets.len(), 3);
        for (scope, version, wrapped) in &done.scope_keys {
            let bucket = done
                .scope_buckets
                .iter()
                .find(|(s, _)| s == scope)
                .unwrap()
                .1;
            let raw = done
                .key
                .unwrap_bucket(
                    u8::try_from(bucket).unwrap(),
                    &done.buckets[bucket as usize].1,
                )
                .unwrap();
            let opened = records_key(&raw)
                .unwrap_scope(
                    &ScopeId::new(scope).unwrap(),
                    &Wrapped::from_bytes(wrapped).unwrap(),
                )
                .unwrap();
            assert_eq!(i64::from(opened.version().get()), *version);
        }
        // Scope keys under another master: refused, nothing to write.
        let other = RecordsKey::from_master(&SecretKey::random());
        let error = migrate(&ring, vec!["c".into()], vec![scope_row(&other, "c", 1)])
            .err()
            .unwrap();
        assert!(error.to_string().contains("copy records.key"), "{error}");
    }

    #[test]
    fn a_shred_step_replaces_one_bucket_key_and_moves_every_bucket_to_the_next_epoch() {
        let key = EpochKey::generate_for(&RECORDS);
        let raw: Vec<[u8; 32]> = (0..BUCKETS).map(|_| atrest_core::random_array()).collect();
        let buckets: Vec<BucketRow> = raw
            .iter()
            .enumerate()
            .map(|(n, r)| (n as i64, key.wrap_bucket(n as u8, r)))
            .collect();
        let sibling = scope_row(&records_key(&raw[9]), "s", 1);
        let step = shred_step(&key, 9, buckets.clone(), vec![sibling.clone()]).unwrap();
        assert_eq!(step.next.epoch(), 1);
        assert_eq!(step.buckets.len(), BUCKETS);
        for (n, wrapped) in &step.buckets {
            let opened = step.next.unwrap_bucket(*n as u8, wrapped).unwrap();
            // Every bucket keeps its key but the shredded one's.
            assert_eq!(*opened == raw[*n as usize], *n != 9, "bucket {n}");
        }
        let new9 = step.next.unwrap_bucket(9, &step.buckets[9].1).unwrap();
        let moved = Wrapped::from_bytes(&step.scope_keys[0].2).unwrap();
        let id = ScopeId::new("s").unwrap();
        assert!(records_key(&new9).unwrap_scope(&id, &moved).is_ok());
        assert!(records_key(&raw[9]).unwrap_scope(&id, &moved).is_err());
        // A bucket missing, or a sibling that does not open: refused.
        assert!(shred_step(&key, 9, buckets[1..].to_vec(), vec![]).is_err());
        let stranger = scope_row(&records_key(&raw[8]), "t", 1);
        assert!(shred_step(&key, 9, buckets, vec![stranger]).is_err());
    }
}
