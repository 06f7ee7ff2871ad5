//! Which kernel crypto driver would encrypt a mode, read from `/proc/crypto`,
//! so `atrest status` can warn when it is a slow generic one.

use crate::policy::Mode;

/// The kernel crypto driver behind a mode, as `/proc/crypto` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The algorithm fscrypt asks the crypto API for, e.g. `xts(aes)`.
    pub algorithm: &'static str,
    /// The `/proc/crypto` entry this is based on: `algorithm` itself once the
    /// kernel has built it (on first use), before that the cipher it will be
    /// built from (e.g. `ecb(aes)` or `aes` for `xts(aes)`).
    pub name: String,
    /// The implementation, e.g. `xts(ecb(aes-fixed-time))` (generic C) or
    /// `xts-aes-vaes-avx512` (accelerated).
    pub driver: String,
    /// The crypto API picks the highest; generic C code registers at 100–101,
    /// SIMD implementations at 200 and above.
    pub priority: u32,
    /// False for generic C implementations, which are several times slower
    /// than AES-NI/VAES or ARMv8 CE code.
    pub accelerated: bool,
}

impl DriverInfo {
    /// Whether the kernel has already built `algorithm` (an fscrypt file using
    /// it was opened since boot), rather than this being inferred.
    pub fn is_instantiated(&self) -> bool {
        self.name == self.algorithm
    }
}

/// The driver the kernel uses, or would use, for `mode`.
///
/// `None` when `/proc/crypto` has neither the algorithm nor a cipher it is
/// built from: the kernel probably lacks it (Adiantum is listed only once
/// built, as the kernel may not have the template at all), and files under a
/// policy with this mode will fail to open with `ENOPKG`. Also `None` if
/// `/proc/crypto` cannot be read.
pub fn driver_for(mode: Mode) -> Option<DriverInfo> {
    let proc_crypto = std::fs::read_to_string("/proc/crypto").ok()?;
    driver_in(&proc_crypto, mode)
}

/// Entries to look for, best first: the algorithm, then what the kernel's
/// templates build it from.
fn candidates(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Aes256Xts => &["xts(aes)", "ecb(aes)", "aes"],
        Mode::Aes256Cts | Mode::Aes128Cts => &["cts(cbc(aes))", "cbc(aes)", "aes"],
        Mode::Aes256Hctr2 => &["hctr2(aes)", "xctr(aes)", "aes"],
        Mode::Aes128Cbc => &["essiv(cbc(aes),sha256)", "cbc(aes)", "aes"],
        Mode::Sm4Xts => &["xts(sm4)", "ecb(sm4)", "sm4"],
        Mode::Sm4Cts => &["cts(cbc(sm4))", "cbc(sm4)", "sm4"],
        Mode::Adiantum => &["adiantum(xchacha12,aes)"],
    }
}

/// Substrings of the driver names of portable C implementations.
const GENERIC_MARKERS: [&str; 2] = ["generic", "fixed-time"];

fn driver_in(proc_crypto: &str, mode: Mode) -> Option<DriverInfo> {
    let entries: Vec<Entry<'_>> = parse(proc_crypto).collect();
    candidates(mode).iter().find_map(|&name| {
        let best = entries
            .iter()
            .filter(|entry| entry.name == name && !entry.internal && entry.selftest != "failed")
            .max_by_key(|entry| entry.priority)?;
        Some(DriverInfo {
            algorithm: mode.crypto_api_name(),
            name: name.to_string(),
            driver: best.driver.to_string(),
            priority: best.priority,
            accelerated: best.priority >= 200
                && !GENERIC_MARKERS
                    .iter()
                    .any(|marker| best.driver.contains(marker)),
        })
    })
}

#[derive(Debug, Default)]
struct Entry<'a> {
    name: &'a str,
    driver: &'a str,
    priority: u32,
    selftest: &'a str,
    internal: bool,
}

/// `/proc/crypto`: blocks of `key : value` lines separated by blank lines.
fn parse(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.split("\n\n").filter_map(|block| {
        let mut entry = Entry::default();
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "name" => entry.name = value,
                "driver" => entry.driver = value,
                "priority" => entry.priority = value.parse().unwrap_or(0),
                "selftest" => entry.selftest = value,
                "internal" => entry.internal = value == "yes",
                _ => {}
            }
        }
        (!entry.name.is_empty()).then_some(entry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from this project's VM (Linux 6.18, no AES-NI driver built in)
    /// after fscrypt first used AES-256-XTS; its `cts(cbc(aes))` entry is left
    /// out to stand for an algorithm not built yet.
    const GENERIC: &str = "\
name         : xts(aes)
driver       : xts(ecb(aes-fixed-time))
module       : kernel
priority     : 101
refcnt       : 1
selftest     : passed
internal     : no
type         : skcipher

name         : cbc(aes)
driver       : cbc(ecb(aes-fixed-time))
module       : kernel
priority     : 101
selftest     : passed
internal     : no
type         : lskcipher

name         : aes
driver       : aes-fixed-time
module       : kernel
priority     : 101
selftest     : passed
internal     : no
type         : cipher

name         : aes
driver       : aes-generic
module       : kernel
priority     : 100
selftest     : passed
internal     : no
type         : cipher
";

    /// An x86 machine with the AES-NI/VAES module loaded.
    const ACCELERATED: &str = "\
name         : __xts(aes)
driver       : __xts-aes-vaes-avx512
module       : aesni_intel
priority     : 800
selftest     : passed
internal     : yes
type         : skcipher

name         : xts(aes)
driver       : xts-aes-vaes-avx512
module       : aesni_intel
priority     : 800
selftest     : passed
internal     : no
type         : skcipher

name         : xts(aes)
driver       : xts-aes-aesni
module       : aesni_intel
priority     : 401
selftest     : passed
internal     : no
type         : skcipher

name         : cts(cbc(aes))
driver       : cts(cbc-aes-aesni)
module       : kernel
priority     : 400
selftest     : passed
internal     : no
type         : skcipher
";

    #[test]
    fn generic_xts_is_not_accelerated() {
        let info = driver_in(GENERIC, Mode::Aes256Xts).unwrap();
        assert_eq!(info.driver, "xts(ecb(aes-fixed-time))");
        assert_eq!(info.priority, 101);
        assert!(!info.accelerated);
        assert!(info.is_instantiated());
    }

    #[test]
    fn an_algorithm_not_built_yet_is_inferred_from_its_cipher() {
        let info = driver_in(GENERIC, Mode::Aes256Cts).unwrap();
        assert_eq!(
            (info.algorithm, info.name.as_str()),
            ("cts(cbc(aes))", "cbc(aes)")
        );
        assert!(!info.is_instantiated());
        assert!(!info.accelerated);
        let info = driver_in(GENERIC, Mode::Aes256Hctr2).unwrap();
        assert_eq!(
            (info.name.as_str(), info.driver.as_str()),
            ("aes", "aes-fixed-time")
        );
    }

    #[test]
    fn the_highest_priority_public_driver_wins() {
        let info = driver_in(ACCELERATED, Mode::Aes256Xts).unwrap();
        assert_eq!(info.driver, "xts-aes-vaes-avx512");
        assert!(info.accelerated);
        assert!(driver_in(ACCELERATED, Mode::Aes256Cts).unwrap().accelerated);
    }

    #[test]
    fn missing_algorithms_are_none() {
        assert_eq!(driver_in(GENERIC, Mode::Adiantum), None);
        assert_eq!(driver_in(GENERIC, Mode::Sm4Xts), None);
        assert_eq!(driver_in("", Mode::Aes256Xts), None);
    }
}
