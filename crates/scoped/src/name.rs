//! The names that bind a ciphertext to its place: scope, table, column,
//! row. Each is validated once, when it is built, so every envelope below
//! can rely on it.

use std::fmt;

use crate::error::{Result, ScopedError};

/// Longest scope id, table, column or row id, in bytes.
pub const MAX_NAME_LEN: usize = 255;

fn check(what: &'static str, text: &str) -> Result<()> {
    let why = if text.is_empty() {
        "it is empty".to_string()
    } else if text.len() > MAX_NAME_LEN {
        format!("{} bytes, at most {MAX_NAME_LEN}", text.len())
    } else if let Some(c) = text.chars().find(|c| c.is_control()) {
        format!("it contains the control character {c:?}")
    } else {
        return Ok(());
    };
    Err(ScopedError::InvalidName { what, why })
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// 1 to 255 bytes of UTF-8 without control characters.
            pub fn new(text: impl Into<String>) -> Result<Self> {
                let text = text.into();
                check($what, &text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ScopedError;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// Who the data belongs to: a user, a company, a group (`user:42`,
    /// `org:acme`). Each scope has its own keys.
    ScopeId,
    "scope id"
);
name_type!(
    /// A table, collection or bucket name.
    Table,
    "table"
);
name_type!(
    /// A column or field name, or a blind index's name.
    Column,
    "column"
);
name_type!(
    /// The row's stable identifier (a primary key or a UUID known before the
    /// insert). Auto-increment keys assigned by the database after the insert
    /// cannot be bound; use a UUID column for them.
    RowId,
    "row id"
);

/// A scope key's version: 1 for the first key, +1 at every rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(u32);

impl KeyVersion {
    pub const FIRST: KeyVersion = KeyVersion(1);

    /// Versions start at 1; 0 is never valid.
    pub fn new(version: u32) -> Result<Self> {
        if version == 0 {
            return Err(ScopedError::InvalidName {
                what: "key version",
                why: "versions start at 1".into(),
            });
        }
        Ok(Self(version))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The version after this one, or `None` at `u32::MAX`.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Where one field value lives: the AAD of its envelope. A ciphertext
/// moved to another row, column, table or scope no longer opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldContext {
    pub table: Table,
    pub column: Column,
    pub row: RowId,
}

impl FieldContext {
    /// Builds a context from three strings, validating each.
    pub fn new(table: &str, column: &str, row: &str) -> Result<Self> {
        Ok(Self {
            table: Table::new(table)?,
            column: Column::new(column)?,
            row: RowId::new(row)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(ScopeId::new("user:42").is_ok());
        assert!(ScopeId::new("ünïcode@example.org").is_ok());
        assert_eq!(ScopeId::new("").unwrap_err().code(), "invalid_name");
        assert!(ScopeId::new("a\nb").is_err());
        assert!(Table::new("x".repeat(255)).is_ok());
        assert!(Table::new("x".repeat(256)).is_err());
        assert!(KeyVersion::new(0).is_err());
        assert_eq!(
            KeyVersion::new(7).unwrap().next(),
            Some(KeyVersion::new(8).unwrap())
        );
        assert_eq!(KeyVersion::new(u32::MAX).unwrap().next(), None);
    }
}
