//! What the authority keeps for scoped encryption (issue 12): the
//! applications that may call it (a token hash and a policy each), and the
//! scopes (their wrapped keys by version, minimum version, window, shred
//! state). Wrapped keys are sealed under their bucket's key, and bucket
//! keys under the records epoch key, which is not in the database
//! (`records.key` in the data directory, decision 0020); a copy of the
//! database alone opens no scope, and a copy from before a scope's shred
//! does not open that scope with the live key file either.

use super::buckets::StoredBucket;

/// An application, as stored. `policy` is the authority's own JSON
/// (which scopes and fields it may use); the store does not read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredApp {
    pub name: String,
    /// SHA-256 of the app's token: a copy of the database holds no usable
    /// token.
    pub token_hash: [u8; 32],
    pub policy: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A scope, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredScope {
    pub id: String,
    pub needs_client_share: bool,
    /// Versions below it are refused.
    pub minimum_version: u32,
    /// Its keys are destroyed; the id stays taken.
    pub shredded: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// `(version, wrapped key)`, oldest first; empty once shredded.
    pub keys: Vec<(u32, Vec<u8>)>,
    pub window: Option<StoredWindow>,
    /// The bucket whose key wraps `keys`, read with them by
    /// [`Storage::scope`](super::Storage::scope) (`None` once shredded,
    /// and in [`Storage::scopes`](super::Storage::scopes)' list). A new
    /// scope is inserted only if the bucket's key is still this one.
    pub bucket: Option<StoredBucket>,
}

/// A scope key row: `(version, wrapped)`.
pub(crate) type KeyRow = (i64, Vec<u8>);

/// A scope key row read with its bucket: `(version, wrapped, bucket,
/// wrapped bucket key)`.
pub(crate) type ScopeKeyWithBucket = (i64, Vec<u8>, Option<i64>, Option<Vec<u8>>);

/// A scope's keys and the bucket they are wrapped under, from rows read in
/// one statement.
pub(crate) fn keys_and_bucket(
    id: &str,
    rows: Vec<ScopeKeyWithBucket>,
) -> Result<(Vec<KeyRow>, Option<StoredBucket>), super::StorageError> {
    let mut bucket = None;
    let mut keys = Vec::with_capacity(rows.len());
    for (version, wrapped, number, bucket_key) in rows {
        let (Some(number), Some(bucket_key)) = (number, bucket_key) else {
            return Err(super::StorageError::Corrupt(format!(
                "scope {id}: its keys have no bucket key"
            )));
        };
        let number = u8::try_from(number)
            .map_err(|_| super::StorageError::Corrupt(format!("scope {id}: bucket {number}")))?;
        bucket = Some(StoredBucket {
            number,
            wrapped: bucket_key,
        });
        keys.push((version, wrapped));
    }
    Ok((keys, bucket))
}

/// A scope's daily decryption window, as stored: minutes after midnight
/// UTC, and the fields (`table.column`) it opens, as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWindow {
    pub start: u16,
    pub end: u16,
    pub fields: String,
}

/// A scope row as both backends read it (its keys come apart).
pub(crate) struct ScopeRow {
    pub id: String,
    pub needs_share: bool,
    pub minimum: i64,
    pub shredded: bool,
    pub created_at: i64,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub window_fields: Option<String>,
}

impl ScopeRow {
    pub fn scope(
        self,
        keys: Vec<(i64, Vec<u8>)>,
        bucket: Option<StoredBucket>,
    ) -> Result<StoredScope, super::StorageError> {
        let corrupt =
            |what: &str| super::StorageError::Corrupt(format!("scope {}: {what}", self.id));
        let window = match (self.window_start, self.window_end, self.window_fields) {
            (Some(start), Some(end), Some(fields)) => Some(StoredWindow {
                start: u16::try_from(start).map_err(|_| corrupt("window start"))?,
                end: u16::try_from(end).map_err(|_| corrupt("window end"))?,
                fields,
            }),
            (None, None, None) => None,
            _ => return Err(corrupt("half a window")),
        };
        Ok(StoredScope {
            minimum_version: u32::try_from(self.minimum).map_err(|_| corrupt("minimum"))?,
            keys: keys
                .into_iter()
                .map(|(v, w)| Ok((u32::try_from(v).map_err(|_| corrupt("key version"))?, w)))
                .collect::<Result<_, super::StorageError>>()?,
            needs_client_share: self.needs_share,
            shredded: self.shredded,
            created_at: super::to_u64(self.created_at),
            window,
            bucket,
            id: self.id,
        })
    }
}

pub(crate) fn app_from(
    name: String,
    token_hash: Vec<u8>,
    policy: String,
    created_at: i64,
) -> Result<StoredApp, super::StorageError> {
    Ok(StoredApp {
        token_hash: token_hash
            .try_into()
            .map_err(|_| super::StorageError::Corrupt(format!("app {name}: token hash length")))?,
        name,
        policy,
        created_at: super::to_u64(created_at),
    })
}
