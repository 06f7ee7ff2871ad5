//! Sealed 4 KiB metadata pages and the references that reach them
//! (docs/format.md §16.4).
//!
//! A page is sealed with the page key under an AAD naming its page number,
//! kind and owner, and reached only through a [`PageRef`] holding the
//! SHA-256 of its sealed bytes. So a page that was changed, moved, swapped
//! with another, or put back from an older copy fails at the reference,
//! before any of its bytes are trusted.

use atrest_core::{labels::domain, sha256};

use crate::bytes::{Put, Reader, is_zero};
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;

/// Bytes per page; the superblock records it.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of a [`PageRef`].
pub const REF_LEN: usize = 40;
/// Bytes of a page body's header.
pub const HEADER_LEN: usize = 16;
/// Page numbers 0 and 1 are the superblocks.
pub const FIRST_SEALED_PAGE: u64 = 2;

/// What a page holds; the byte in its header and in its AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageKind {
    ObjectLeaf = 1,
    ObjectIndex = 2,
    DirLeaf = 3,
    DirIndex = 4,
    MapLeaf = 5,
    MapIndex = 6,
    Xattr = 7,
    Blob = 8,
    BitmapLeaf = 9,
    BitmapIndex = 10,
    Pending = 11,
}

impl PageKind {
    pub const ALL: [PageKind; 11] = [
        Self::ObjectLeaf,
        Self::ObjectIndex,
        Self::DirLeaf,
        Self::DirIndex,
        Self::MapLeaf,
        Self::MapIndex,
        Self::Xattr,
        Self::Blob,
        Self::BitmapLeaf,
        Self::BitmapIndex,
        Self::Pending,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ObjectLeaf => "object table leaf",
            Self::ObjectIndex => "object table index",
            Self::DirLeaf => "directory leaf",
            Self::DirIndex => "directory index",
            Self::MapLeaf => "block map leaf",
            Self::MapIndex => "block map index",
            Self::Xattr => "xattr",
            Self::Blob => "blob",
            Self::BitmapLeaf => "bitmap leaf",
            Self::BitmapIndex => "bitmap index",
            Self::Pending => "pending work",
        }
    }

    /// Index kinds hold references to pages one level down.
    pub fn is_index(self) -> bool {
        matches!(
            self,
            Self::ObjectIndex | Self::DirIndex | Self::MapIndex | Self::BitmapIndex
        )
    }
}

/// A reference to a sealed page: its number and the SHA-256 of its 4,096
/// sealed bytes. The null reference (all zero) is an empty subtree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageRef {
    page: u64,
    hash: [u8; 32],
}

impl std::fmt::Debug for PageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_null() {
            return f.write_str("PageRef(null)");
        }
        write!(f, "PageRef({}:", self.page)?;
        for b in &self.hash[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl PageRef {
    pub const NULL: PageRef = PageRef {
        page: 0,
        hash: [0; 32],
    };

    /// The reference to `sealed`, written at page `page`.
    pub fn to_sealed(page: u64, sealed: &[u8; PAGE_SIZE]) -> Self {
        debug_assert!(page >= FIRST_SEALED_PAGE);
        Self {
            page,
            hash: sha256(sealed),
        }
    }

    pub fn is_null(&self) -> bool {
        self.page == 0
    }

    /// The page number; `None` for the null reference.
    pub fn page(&self) -> Option<u64> {
        (!self.is_null()).then_some(self.page)
    }

    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    pub fn encode(&self) -> [u8; REF_LEN] {
        let mut out = [0u8; REF_LEN];
        out[..8].copy_from_slice(&self.page.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    /// Decodes a reference: page 0 only with a zero hash (null), never
    /// page 1 (the superblocks are not referenced).
    pub fn decode(bytes: &[u8; REF_LEN]) -> Option<Self> {
        let page = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let hash: [u8; 32] = bytes[8..].try_into().expect("32 bytes");
        match page {
            0 if is_zero(&hash) => Some(Self::NULL),
            0 | 1 => None,
            _ => Some(Self { page, hash }),
        }
    }

    pub(crate) fn read(reader: &mut Reader<'_>) -> Option<Self> {
        Self::decode(&reader.array()?)
    }
}

/// The 16-byte header of a page body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub kind: PageKind,
    /// 0 for a leaf; an index page's children are one level lower.
    pub level: u8,
    pub count: u16,
    /// The object the page belongs to; 0 for object table, bitmap and
    /// pending pages.
    pub owner: u64,
}

impl PageHeader {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u8(self.kind.id())
            .put_u8(self.level)
            .put_u16(self.count)
            .put_zeros(4)
            .put_u64(self.owner);
    }
}

/// Bytes of a page body (plaintext): 4,096 less the AEAD's nonce and tag.
pub fn body_len(keys: &MetaKeys) -> usize {
    PAGE_SIZE - keys.algorithm().overhead()
}

/// Bytes for items after the header.
pub fn item_space(keys: &MetaKeys) -> usize {
    item_space_for(keys.algorithm())
}

/// [`item_space`] of `algorithm`'s pages: 4,052 (GCM) or 4,040 bytes.
pub fn item_space_for(algorithm: atrest_core::ContentAlgorithm) -> usize {
    PAGE_SIZE - algorithm.overhead() - HEADER_LEN
}

fn aad(keys: &MetaKeys, page: u64, kind: PageKind, owner: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(52);
    aad.put(domain::META_PAGE)
        .put(keys.vault_id())
        .put_u64(page)
        .put_u8(kind.id())
        .put_u64(owner);
    aad
}

/// Seals a page to be written at page number `page`. `items` must fit the
/// body after the header; the rest of the body is zero.
pub fn seal(keys: &MetaKeys, page: u64, header: &PageHeader, items: &[u8]) -> Box<[u8; PAGE_SIZE]> {
    assert!(page >= FIRST_SEALED_PAGE, "pages 0 and 1 are superblocks");
    assert!(items.len() <= item_space(keys), "page items overflow");
    let mut body = Vec::with_capacity(body_len(keys));
    header.encode_into(&mut body);
    body.put(items);
    body.resize(body_len(keys), 0);
    let mut out = Box::new([0u8; PAGE_SIZE]);
    keys.page().seal_to(
        &aad(keys, page, header.kind, header.owner),
        &body,
        &mut out[..],
    );
    out
}

/// What the structure that refers to a page expects of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub kind: PageKind,
    pub owner: u64,
    /// `None` where the referring structure does not know it (a root,
    /// whose level the depth field gives, is checked by the caller).
    pub level: Option<u8>,
}

/// An opened page: its header and the item bytes after it (the whole rest
/// of the body; the parser of the kind checks that what follows its last
/// item is zero with [`OpenPage::check_zero_after`]).
#[derive(Debug, Clone)]
pub struct OpenPage {
    pub page: u64,
    pub header: PageHeader,
    pub items: Vec<u8>,
}

impl OpenPage {
    pub fn location(&self) -> Location {
        Location::Page {
            page: self.page,
            kind: self.header.kind,
            owner: self.header.owner,
        }
    }

    /// Every item byte from `used` on must be zero.
    pub fn check_zero_after(&self, used: usize) -> Result<(), MetaError> {
        match self.items.get(used..) {
            Some(rest) if is_zero(rest) => Ok(()),
            _ => Err(MetaError::corrupt(
                self.location(),
                "bytes after the last item are not zero",
            )),
        }
    }

    /// A structure error in this page.
    pub fn corrupt(&self, reason: impl Into<String>) -> MetaError {
        MetaError::corrupt(self.location(), reason)
    }
}

/// Opens the sealed bytes read through `reference`: the hash, then the
/// AEAD (page number, kind and owner in the AAD), then the header against
/// what the referrer expects. Any mismatch is an authentication failure of
/// that page.
pub fn open(
    keys: &MetaKeys,
    reference: &PageRef,
    sealed: &[u8; PAGE_SIZE],
    expect: Expect,
) -> Result<OpenPage, MetaError> {
    let page = reference.page().expect("a null reference is not read");
    let location = Location::Page {
        page,
        kind: expect.kind,
        owner: expect.owner,
    };
    if !atrest_core::constant_time_eq(&sha256(sealed), reference.hash()) {
        return Err(MetaError::Auth(location));
    }
    let mut buf = sealed.to_vec();
    let body = keys
        .page()
        .open_in_place(&aad(keys, page, expect.kind, expect.owner), &mut buf)
        .map_err(|_| MetaError::Auth(location.clone()))?;
    let mut r = Reader::new(body);
    let (kind, level, count, zero, owner) = (
        r.u8().and_then(PageKind::from_id),
        r.u8(),
        r.u16(),
        r.array::<4>(),
        r.u64(),
    );
    let (Some(kind), Some(level), Some(count), Some(zero), Some(owner)) =
        (kind, level, count, zero, owner)
    else {
        return Err(MetaError::corrupt(location, "bad page header"));
    };
    // The AAD bound kind and owner already: a mismatch here is a page
    // sealed by a bug, not by an attacker.
    if kind != expect.kind || owner != expect.owner || !is_zero(&zero) {
        return Err(MetaError::corrupt(
            location,
            "page header disagrees with its seal",
        ));
    }
    if expect.level.is_some_and(|l| l != level) || (level > 0) != kind.is_index() {
        return Err(MetaError::corrupt(
            location,
            format!("page at level {level} where another level was expected"),
        ));
    }
    let items = r.remaining().to_vec();
    Ok(OpenPage {
        page,
        header: PageHeader {
            kind,
            level,
            count,
            owner,
        },
        items,
    })
}

#[cfg(test)]
mod tests {
    use atrest_core::{ContentAlgorithm, SecretKey};

    use super::*;

    fn keys(algorithm: ContentAlgorithm) -> MetaKeys {
        MetaKeys::derive(&SecretKey::from_bytes([7; 32]), [9; 16], algorithm)
    }

    const ALL: [ContentAlgorithm; 2] = [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ];

    fn header(kind: PageKind, owner: u64) -> PageHeader {
        PageHeader {
            kind,
            level: u8::from(kind.is_index()),
            count: 1,
            owner,
        }
    }

    fn expect(kind: PageKind, owner: u64) -> Expect {
        Expect {
            kind,
            owner,
            level: None,
        }
    }

    #[test]
    fn pages_round_trip_for_every_kind_and_algorithm() {
        for algorithm in ALL {
            let keys = keys(algorithm);
            for kind in PageKind::ALL {
                let items = vec![0xab; item_space(&keys)];
                let sealed = seal(&keys, 5, &header(kind, 42), &items);
                let reference = PageRef::to_sealed(5, &sealed);
                let open = open(&keys, &reference, &sealed, expect(kind, 42)).unwrap();
                assert_eq!(open.items, items);
                assert_eq!(open.header, header(kind, 42));
            }
        }
    }

    #[test]
    fn a_changed_moved_or_repurposed_page_fails() {
        let keys = keys(ContentAlgorithm::Aes256Gcm);
        let sealed = seal(&keys, 5, &header(PageKind::DirLeaf, 42), b"entries");
        let reference = PageRef::to_sealed(5, &sealed);
        let fails = |reference: &PageRef, sealed: &[u8; PAGE_SIZE], expect: Expect| {
            let err = open(&keys, reference, sealed, expect).unwrap_err();
            assert!(err.is_auth(), "{err}");
        };
        // One bit anywhere.
        for i in [0, 100, PAGE_SIZE - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            fails(&reference, &bad, expect(PageKind::DirLeaf, 42));
        }
        // Another directory's page, or another kind.
        fails(&reference, &sealed, expect(PageKind::DirLeaf, 43));
        fails(&reference, &sealed, expect(PageKind::MapLeaf, 42));
        // The same bytes at another page number, with a reference that
        // matches them (an attacker can compute SHA-256, not seal).
        let moved = PageRef::to_sealed(6, &sealed);
        fails(&moved, &sealed, expect(PageKind::DirLeaf, 42));
        // An older page under the newer reference.
        let older = seal(&keys, 5, &header(PageKind::DirLeaf, 42), b"older");
        fails(&reference, &older, expect(PageKind::DirLeaf, 42));
    }

    #[test]
    fn references_encode_and_refuse_superblock_pages() {
        let sealed = [3u8; PAGE_SIZE];
        let r = PageRef::to_sealed(77, &sealed);
        assert_eq!(PageRef::decode(&r.encode()), Some(r));
        assert_eq!(PageRef::decode(&[0; REF_LEN]), Some(PageRef::NULL));
        let mut zero_page_with_hash = [0u8; REF_LEN];
        zero_page_with_hash[39] = 1;
        assert_eq!(PageRef::decode(&zero_page_with_hash), None);
        let mut page_one = [0u8; REF_LEN];
        page_one[7] = 1;
        assert_eq!(PageRef::decode(&page_one), None);
    }

    #[test]
    fn a_level_that_disagrees_with_the_kind_is_refused() {
        let keys = keys(ContentAlgorithm::Aes256Gcm);
        let bad = PageHeader {
            level: 1,
            ..header(PageKind::DirLeaf, 1)
        };
        let sealed = seal(&keys, 9, &bad, b"");
        let reference = PageRef::to_sealed(9, &sealed);
        assert!(open(&keys, &reference, &sealed, expect(PageKind::DirLeaf, 1)).is_err());
    }
}
