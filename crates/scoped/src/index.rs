//! Blind indexes: equality search on encrypted fields without decrypting
//! them (docs/format.md §17.4).
//!
//! An index value is HMAC-SHA256, under a key derived from the scope key
//! and the index's whole definition, over the normalised values, truncated
//! to the chosen number of bits. What it leaks: rows whose values are equal
//! after normalisation share an index value, and so does a fraction
//! 2^-bits of unequal ones (the false positives that blur the counts);
//! frequency analysis over equal values is therefore possible for anyone
//! who reads the table. Keep `bits` low enough that each value shares its
//! index with several others (CipherSweet's planner suggests 8–15 bits for
//! 50,000 rows), and remember that the application still compares the
//! decrypted value after a lookup.

use atrest_core::{Canonical, HeaderMac, SecretKey, labels};

use crate::error::{Result, ScopedError};
use crate::keys::ScopeKey;
use crate::name::{Column, Table};

/// Normalisation steps, applied in the order given, to every value before
/// it is indexed. Unicode normalisation (NFC/NFKC) is not offered: pass
/// values in one normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Remove leading and trailing Unicode white space.
    Trim,
    /// Unicode default lowercase (locale independent).
    Lowercase,
    /// Replace every run of white space by one space, and trim.
    CollapseWhitespace,
    /// Remove all white space.
    RemoveWhitespace,
    /// Keep only the ASCII digits (phone numbers, customer numbers).
    DigitsOnly,
}

impl Normalize {
    /// The byte that names the step in the index key's derivation.
    pub fn id(self) -> u8 {
        match self {
            Self::Trim => 1,
            Self::Lowercase => 2,
            Self::CollapseWhitespace => 3,
            Self::RemoveWhitespace => 4,
            Self::DigitsOnly => 5,
        }
    }

    /// Names as an API or CLI would spell them.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "trim" => Self::Trim,
            "lowercase" => Self::Lowercase,
            "collapse-whitespace" => Self::CollapseWhitespace,
            "remove-whitespace" => Self::RemoveWhitespace,
            "digits-only" => Self::DigitsOnly,
            other => {
                return Err(ScopedError::InvalidIndex(format!(
                    "unknown normalisation {other:?} (trim, lowercase, collapse-whitespace, remove-whitespace, digits-only)"
                )));
            }
        })
    }

    fn apply(self, value: &str) -> String {
        match self {
            Self::Trim => value.trim().to_string(),
            Self::Lowercase => value.to_lowercase(),
            Self::CollapseWhitespace => value.split_whitespace().collect::<Vec<_>>().join(" "),
            Self::RemoveWhitespace => value.chars().filter(|c| !c.is_whitespace()).collect(),
            Self::DigitsOnly => value.chars().filter(char::is_ascii_digit).collect(),
        }
    }
}

/// What an index covers. Every part enters the index key, so two indexes
/// that differ in any part give unrelated values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDefinition {
    pub table: Table,
    /// The index's own name (`email_idx`).
    pub name: Column,
    /// The columns whose values it covers, in order: one for a plain index,
    /// several for a compound one.
    pub columns: Vec<Column>,
    /// Bits kept, 1 to 256.
    pub bits: u16,
    pub normalize: Vec<Normalize>,
}

/// Most columns one compound index covers.
pub const MAX_INDEX_COLUMNS: usize = 16;

impl IndexDefinition {
    fn check(&self) -> Result<()> {
        if !(1..=256).contains(&self.bits) {
            return Err(ScopedError::InvalidIndex(format!(
                "{} bits; choose 1 to 256",
                self.bits
            )));
        }
        if self.columns.is_empty() || self.columns.len() > MAX_INDEX_COLUMNS {
            return Err(ScopedError::InvalidIndex(format!(
                "{} columns; an index covers 1 to {MAX_INDEX_COLUMNS}",
                self.columns.len()
            )));
        }
        // Each step at most once (five steps at most): a request repeating
        // one step thousands of times over a large value would hold a core
        // for seconds.
        for (i, step) in self.normalize.iter().enumerate() {
            if self.normalize[..i].contains(step) {
                return Err(ScopedError::InvalidIndex(format!(
                    "normalisation {step:?} given twice; give each step at most once"
                )));
            }
        }
        Ok(())
    }

    fn key_salt(&self, key: &ScopeKey) -> Vec<u8> {
        let steps: Vec<u8> = self.normalize.iter().map(|n| n.id()).collect();
        let mut salt = Canonical::new(labels::domain::BLIND_INDEX_DEFINITION, 1);
        salt.field(key.scope().as_bytes())
            .field(&key.version().get().to_be_bytes())
            .field(self.table.as_bytes())
            .field(self.name.as_bytes())
            .field(&self.bits.to_be_bytes())
            .field(&steps);
        for column in &self.columns {
            salt.field(column.as_bytes());
        }
        salt.into_bytes()
    }
}

/// A keyed index, ready to compute values.
pub struct BlindIndex {
    definition: IndexDefinition,
    mac: HeaderMac,
}

/// One truncated index value: `bits` bits, most significant first, unused
/// low bits of the last byte zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexValue {
    bytes: Vec<u8>,
    bits: u16,
}

impl IndexValue {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bits(&self) -> u16 {
        self.bits
    }

    /// Lowercase hex of the bytes (`ceil(bits / 8)` bytes).
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The value as an integer (right-aligned), for indexes of at most 64
    /// bits stored in an integer column.
    pub fn to_u64(&self) -> Option<u64> {
        if self.bits > 64 {
            return None;
        }
        let mut acc = 0u64;
        for b in &self.bytes {
            acc = (acc << 8) | u64::from(*b);
        }
        let unused = self.bytes.len() as u32 * 8 - u32::from(self.bits);
        Some(acc >> unused)
    }
}

impl ScopeKey {
    /// Keys an index of this scope's key version. Rotating the scope key
    /// changes every index value, so a rotation recomputes the indexes of
    /// the rows it rewraps.
    pub fn blind_index(&self, definition: &IndexDefinition) -> Result<BlindIndex> {
        definition.check()?;
        let key: SecretKey = self.derive(&definition.key_salt(self), labels::BLIND_INDEX_KEY);
        Ok(BlindIndex {
            definition: definition.clone(),
            mac: HeaderMac::new(&key),
        })
    }
}

impl BlindIndex {
    pub fn definition(&self) -> &IndexDefinition {
        &self.definition
    }

    /// The index value of one row: one value per column, in the
    /// definition's order.
    pub fn compute(&self, values: &[&str]) -> Result<IndexValue> {
        if values.len() != self.definition.columns.len() {
            return Err(ScopedError::InvalidIndex(format!(
                "{} values for an index over {} columns",
                values.len(),
                self.definition.columns.len()
            )));
        }
        let mut input = Canonical::new(labels::domain::BLIND_INDEX, 1);
        for value in values {
            let mut v = std::borrow::Cow::Borrowed(*value);
            for step in &self.definition.normalize {
                v = std::borrow::Cow::Owned(step.apply(&v));
            }
            if v.len() > crate::field::MAX_FIELD_LEN {
                return Err(ScopedError::TooLarge {
                    what: "indexed value",
                    len: v.len(),
                    max: crate::field::MAX_FIELD_LEN,
                });
            }
            input.field(v.as_bytes());
        }
        let tag = self.mac.sign(&input.into_bytes());
        Ok(truncate(&tag, self.definition.bits))
    }
}

fn truncate(tag: &[u8; 32], bits: u16) -> IndexValue {
    let len = usize::from(bits).div_ceil(8);
    let mut bytes = tag[..len].to_vec();
    let spare = len * 8 - usize::from(bits);
    if spare > 0 {
        bytes[len - 1] &= 0xffu8 << spare;
    }
    IndexValue { bytes, bits }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ScopeSecret;
    use crate::name::{KeyVersion, ScopeId};

    fn key(secret: &ScopeSecret, scope: &str) -> ScopeKey {
        ScopeKey::new(
            ScopeId::new(scope).unwrap(),
            KeyVersion::FIRST,
            secret,
            None,
        )
    }

    fn def(bits: u16, normalize: Vec<Normalize>) -> IndexDefinition {
        IndexDefinition {
            table: Table::new("users").unwrap(),
            name: Column::new("email_idx").unwrap(),
            columns: vec![Column::new("email").unwrap()],
            bits,
            normalize,
        }
    }

    #[test]
    fn a_step_given_twice_is_refused_and_every_step_once_is_accepted() {
        let k = key(&ScopeSecret::random(), "app:users");
        let err = k
            .blind_index(&def(
                32,
                vec![Normalize::Trim, Normalize::Lowercase, Normalize::Trim],
            ))
            .err()
            .unwrap();
        assert_eq!(err.code(), "invalid_index");
        assert!(err.to_string().contains("twice"), "{err}");
        let all = vec![
            Normalize::Trim,
            Normalize::Lowercase,
            Normalize::CollapseWhitespace,
            Normalize::RemoveWhitespace,
            Normalize::DigitsOnly,
        ];
        assert!(k.blind_index(&def(32, all)).is_ok());
    }

    #[test]
    fn equal_after_normalisation_gives_equal_values() {
        let k = key(&ScopeSecret::random(), "app:users");
        let idx = k
            .blind_index(&def(32, vec![Normalize::Trim, Normalize::Lowercase]))
            .unwrap();
        let a = idx.compute(&["Alice@Example.org "]).unwrap();
        let b = idx.compute(&["alice@example.org"]).unwrap();
        let c = idx.compute(&["bob@example.org"]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_hex().len(), 8);
        assert_eq!(
            u64::from(u32::from_be_bytes(a.as_bytes().try_into().unwrap())),
            a.to_u64().unwrap()
        );
    }

    #[test]
    fn truncation_keeps_the_top_bits() {
        let tag = [0xffu8; 32];
        let v = truncate(&tag, 12);
        assert_eq!(v.as_bytes(), &[0xff, 0xf0]);
        assert_eq!(v.to_u64(), Some(0xfff));
        assert_eq!(truncate(&tag, 256).as_bytes().len(), 32);
        assert_eq!(truncate(&tag, 256).to_u64(), None);
    }

    #[test]
    fn any_change_of_definition_or_key_changes_the_value() {
        let secret = ScopeSecret::random();
        let base = def(64, vec![Normalize::Lowercase]);
        let v = |k: &ScopeKey, d: &IndexDefinition| {
            k.blind_index(d).unwrap().compute(&["x@y.z"]).unwrap()
        };
        let k = key(&secret, "app:users");
        let reference = v(&k, &base);
        let mut other = base.clone();
        other.name = Column::new("other_idx").unwrap();
        assert_ne!(v(&k, &other), reference);
        let mut other = base.clone();
        other.table = Table::new("admins").unwrap();
        assert_ne!(v(&k, &other), reference);
        let mut other = base.clone();
        other.normalize = vec![Normalize::Trim];
        assert_ne!(v(&k, &other), reference);
        assert_ne!(v(&key(&secret, "app:other"), &base), reference);
        assert_ne!(
            v(&key(&ScopeSecret::random(), "app:users"), &base),
            reference
        );
    }

    #[test]
    fn compound_indexes_are_unambiguous() {
        let k = key(&ScopeSecret::random(), "org:acme");
        let mut d = def(128, vec![]);
        d.columns = vec![Column::new("first").unwrap(), Column::new("last").unwrap()];
        let idx = k.blind_index(&d).unwrap();
        assert_ne!(
            idx.compute(&["ab", "c"]).unwrap(),
            idx.compute(&["a", "bc"]).unwrap()
        );
        assert_eq!(idx.compute(&["a"]).unwrap_err().code(), "invalid_index");
    }

    #[test]
    fn bad_definitions_are_refused() {
        let k = key(&ScopeSecret::random(), "org:acme");
        assert_eq!(
            k.blind_index(&def(0, vec![])).err().unwrap().code(),
            "invalid_index"
        );
        assert_eq!(
            k.blind_index(&def(257, vec![])).err().unwrap().code(),
            "invalid_index"
        );
        let mut d = def(8, vec![]);
        d.columns.clear();
        assert!(k.blind_index(&d).is_err());
        assert!(Normalize::from_name("nfkc").is_err());
        assert_eq!(
            Normalize::from_name("digits-only").unwrap(),
            Normalize::DigitsOnly
        );
    }

    #[test]
    fn normalisations_do_what_they_say() {
        assert_eq!(Normalize::Trim.apply("  a b \t"), "a b");
        assert_eq!(Normalize::Lowercase.apply("ÀB"), "àb");
        assert_eq!(Normalize::CollapseWhitespace.apply(" a \n b  "), "a b");
        assert_eq!(Normalize::RemoveWhitespace.apply(" a \n b  "), "ab");
        assert_eq!(Normalize::DigitsOnly.apply("+49 (30) 123-45"), "493012345");
    }
}
