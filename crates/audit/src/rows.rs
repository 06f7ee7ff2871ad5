//! Decoding the audit tables' rows, the same for every sqlx backend
//! (SQLite and PostgreSQL store identical columns: integers as i64, hashes
//! and signatures as bytes, text as text).

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryHash};
use crate::merkle::MerkleHash;
use crate::store::StoreError;
use crate::tree_head::TreeHead;

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(crate) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(value: i64, seq: u64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        seq,
        reason: format!("negative {what}"),
    })
}

/// One column of `row`, a backend error if it is missing or of another type.
fn get<'r, R, T>(row: &'r R, column: &'r str) -> Result<T, StoreError>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    &'r str: ColumnIndex<R>,
{
    row.try_get(column).map_err(backend)
}

/// A row of the audit tables, of any sqlx backend.
pub(crate) trait AuditRow: Row + Sized
where
    for<'r> &'r str: ColumnIndex<Self>,
    for<'r> i64: Decode<'r, Self::Database> + Type<Self::Database>,
    for<'r> Vec<u8>: Decode<'r, Self::Database> + Type<Self::Database>,
    for<'r> String: Decode<'r, Self::Database> + Type<Self::Database>,
    for<'r> Option<String>: Decode<'r, Self::Database> + Type<Self::Database>,
{
    fn hash(&self, column: &str, seq: u64) -> Result<EntryHash, StoreError> {
        let bytes: Vec<u8> = get(self, column)?;
        bytes
            .try_into()
            .map(EntryHash)
            .map_err(|_| StoreError::Corrupt {
                seq,
                reason: format!("{column} is not 32 bytes"),
            })
    }

    fn entry(&self) -> Result<Entry, StoreError> {
        let seq = from_sql(get(self, "seq")?, 0, "seq")?;
        let kind: String = get(self, "kind")?;
        Ok(Entry {
            seq,
            timestamp_ms: from_sql(get(self, "timestamp_ms")?, seq, "time")?,
            kind: kind.parse().map_err(|e| StoreError::Corrupt {
                seq,
                reason: format!("{e}"),
            })?,
            actor: get(self, "actor")?,
            subject: get(self, "subject")?,
            details: get(self, "details")?,
            prev_hash: self.hash("prev_hash", seq)?,
            hash: self.hash("hash", seq)?,
        })
    }

    fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let size = from_sql(get(self, "tree_size")?, 0, "tree size")?;
        let signature: Vec<u8> = get(self, "signature")?;
        Ok(TreeHead {
            tree_size: size,
            root_hash: MerkleHash(self.hash("root_hash", size)?.0),
            timestamp_ms: from_sql(get(self, "timestamp_ms")?, size, "time")?,
            signature: signature.try_into().map_err(|_| StoreError::Corrupt {
                seq: size,
                reason: "tree head signature is not 64 bytes".into(),
            })?,
        })
    }

    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let seq = from_sql(get(self, "seq")?, 0, "seq")?;
        let signature: Vec<u8> = get(self, "signature")?;
        Ok(Checkpoint {
            seq,
            head_hash: self.hash("head_hash", seq)?,
            timestamp_ms: from_sql(get(self, "timestamp_ms")?, seq, "time")?,
            signature: signature.try_into().map_err(|_| StoreError::Corrupt {
                seq,
                reason: "checkpoint signature is not 64 bytes".into(),
            })?,
        })
    }
}

impl<R: Row> AuditRow for R
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
}
