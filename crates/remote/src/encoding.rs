//! Byte encodings shared by the wire types (from atrest-core): unpadded
//! base64url in JSON, and the length-prefixed canonical form that
//! signatures and MACs cover.

pub use atrest_core::{Canonical, base64url_array, from_base64url, to_base64url};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_is_length_prefixed() {
        let mut a = Canonical::new(b"tag", 1);
        a.field(b"ab").field(b"c");
        let mut b = Canonical::new(b"tag", 1);
        b.field(b"a").field(b"bc");
        assert_ne!(a.into_bytes(), b.into_bytes());
        let mut c = Canonical::new(b"t", 1);
        c.field(b"");
        assert_eq!(c.into_bytes(), [0, 0, 0, 1, b't', 1, 0, 0, 0, 0]);
    }
}
