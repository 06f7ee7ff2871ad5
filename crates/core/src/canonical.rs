/// The canonical byte string that a signature, MAC or hash covers: a domain
/// tag, a version byte, then each field with a 4-byte big-endian length.
/// Length prefixes make the encoding injective, so two different structures
/// never sign or hash the same bytes. Shared by the unlock protocol and the
/// audit log, so `docs/format.md` describes it once.
pub struct Canonical(Vec<u8>);

impl Canonical {
    pub fn new(domain: &[u8], version: u8) -> Self {
        let mut out = Canonical(Vec::with_capacity(256));
        out.field(domain);
        out.0.push(version);
        out
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // Every caller's fields are bounded (at most 64 KiB of audit
        // details), far below 4 GiB, so the length always fits.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Canonical;

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = Canonical::new(b"d", 1);
        a.field(b"ab").field(b"c");
        let mut b = Canonical::new(b"d", 1);
        b.field(b"a").field(b"bc");
        assert_ne!(a.into_bytes(), b.into_bytes());
        let mut c = Canonical::new(b"d", 1);
        c.field(b"x");
        assert_eq!(c.into_bytes(), [0, 0, 0, 1, b'd', 1, 0, 0, 0, 1, b'x']);
    }
}
