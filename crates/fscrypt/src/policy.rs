//! Encryption policies: the modes, flags and key identifier the kernel stores
//! in an encrypted directory, as types, and their `fscrypt_policy_v2` bytes.

use std::fmt;

use linux_raw_sys::general as uapi;

use crate::key::KeyIdentifier;

/// An encryption mode: the kernel's `FSCRYPT_MODE_*`.
///
/// Only certain pairs of contents and file-name modes are valid; see
/// [`Policy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// AES-256-XTS for contents: the default, fast where the CPU has AES
    /// instructions.
    Aes256Xts,
    /// AES-256-CBC with ciphertext stealing for file names: the default,
    /// paired with [`Mode::Aes256Xts`].
    Aes256Cts,
    /// AES-256-HCTR2 for file names (Linux 6.0+), a wide-block mode that hides
    /// shared name prefixes; paired with [`Mode::Aes256Xts`].
    Aes256Hctr2,
    /// Adiantum (XChaCha12, AES-256 and NH/Poly1305) for contents and names
    /// together: for CPUs without AES instructions.
    Adiantum,
    /// AES-128-CBC-ESSIV for contents, paired with [`Mode::Aes128Cts`]. Legacy.
    Aes128Cbc,
    /// AES-128-CBC-CTS for names, paired with [`Mode::Aes128Cbc`]. Legacy.
    Aes128Cts,
    /// SM4-XTS for contents, paired with [`Mode::Sm4Cts`].
    Sm4Xts,
    /// SM4-CBC-CTS for names, paired with [`Mode::Sm4Xts`].
    Sm4Cts,
}

impl Mode {
    const ALL: [Mode; 8] = [
        Mode::Aes256Xts,
        Mode::Aes256Cts,
        Mode::Aes256Hctr2,
        Mode::Adiantum,
        Mode::Aes128Cbc,
        Mode::Aes128Cts,
        Mode::Sm4Xts,
        Mode::Sm4Cts,
    ];

    /// The `FSCRYPT_MODE_*` number.
    pub fn number(self) -> u8 {
        let number = match self {
            Mode::Aes256Xts => uapi::FSCRYPT_MODE_AES_256_XTS,
            Mode::Aes256Cts => uapi::FSCRYPT_MODE_AES_256_CTS,
            Mode::Aes256Hctr2 => uapi::FSCRYPT_MODE_AES_256_HCTR2,
            Mode::Adiantum => uapi::FSCRYPT_MODE_ADIANTUM,
            Mode::Aes128Cbc => uapi::FSCRYPT_MODE_AES_128_CBC,
            Mode::Aes128Cts => uapi::FSCRYPT_MODE_AES_128_CTS,
            Mode::Sm4Xts => uapi::FSCRYPT_MODE_SM4_XTS,
            Mode::Sm4Cts => uapi::FSCRYPT_MODE_SM4_CTS,
        };
        // Mode numbers are small by definition (the kernel stores a `__u8`).
        number as u8
    }

    pub fn from_number(number: u8) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.number() == number)
    }

    /// The kernel crypto API algorithm fscrypt allocates for this mode, as
    /// `/proc/crypto` names it.
    pub fn crypto_api_name(self) -> &'static str {
        match self {
            Mode::Aes256Xts => "xts(aes)",
            Mode::Aes256Cts | Mode::Aes128Cts => "cts(cbc(aes))",
            Mode::Aes256Hctr2 => "hctr2(aes)",
            Mode::Adiantum => "adiantum(xchacha12,aes)",
            Mode::Aes128Cbc => "essiv(cbc(aes),sha256)",
            Mode::Sm4Xts => "xts(sm4)",
            Mode::Sm4Cts => "cts(cbc(sm4))",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Aes256Xts => "AES-256-XTS",
            Mode::Aes256Cts => "AES-256-CTS",
            Mode::Aes256Hctr2 => "AES-256-HCTR2",
            Mode::Adiantum => "Adiantum",
            Mode::Aes128Cbc => "AES-128-CBC-ESSIV",
            Mode::Aes128Cts => "AES-128-CTS",
            Mode::Sm4Xts => "SM4-XTS",
            Mode::Sm4Cts => "SM4-CTS",
        })
    }
}

/// How far encrypted file names are padded with NULs (`FSCRYPT_POLICY_FLAGS_PAD_*`).
///
/// Longer padding leaks less about name lengths and costs name length: a
/// name is at most 255 bytes either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    Pad4,
    Pad8,
    Pad16,
    /// The default: lengths are revealed only to a multiple of 32.
    #[default]
    Pad32,
}

impl Padding {
    fn flag(self) -> u8 {
        let flag = match self {
            Padding::Pad4 => uapi::FSCRYPT_POLICY_FLAGS_PAD_4,
            Padding::Pad8 => uapi::FSCRYPT_POLICY_FLAGS_PAD_8,
            Padding::Pad16 => uapi::FSCRYPT_POLICY_FLAGS_PAD_16,
            Padding::Pad32 => uapi::FSCRYPT_POLICY_FLAGS_PAD_32,
        };
        flag as u8
    }

    fn from_flags(flags: u8) -> Padding {
        match u32::from(flags) & uapi::FSCRYPT_POLICY_FLAGS_PAD_MASK {
            uapi::FSCRYPT_POLICY_FLAGS_PAD_4 => Padding::Pad4,
            uapi::FSCRYPT_POLICY_FLAGS_PAD_8 => Padding::Pad8,
            uapi::FSCRYPT_POLICY_FLAGS_PAD_16 => Padding::Pad16,
            _ => Padding::Pad32,
        }
    }
}

/// How the kernel turns the master key into the keys that encrypt each file.
/// The three non-default choices are mutually exclusive flags, hence one enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyDerivation {
    /// The default (no flag): HKDF-SHA512 derives a key per file from the
    /// master key and the file's random nonce.
    #[default]
    PerFile,
    /// `FSCRYPT_POLICY_FLAG_DIRECT_KEY`: every file uses one key derived per
    /// mode, and the file nonce goes into the IV. Only for Adiantum, whose
    /// 32-byte IV has room for it; saves a key setup per file.
    DirectKey,
    /// `FSCRYPT_POLICY_FLAG_IV_INO_LBLK_64`: one key per mode, IVs from the
    /// inode number and block number, for inline-encryption hardware with
    /// few key slots. Needs the file system's `stable_inodes` feature.
    InodeBlock64,
    /// `FSCRYPT_POLICY_FLAG_IV_INO_LBLK_32`: as above with 32-bit IVs, for
    /// eMMC inline encryption. Needs `stable_inodes`.
    InodeBlock32,
}

impl KeyDerivation {
    fn flag(self) -> u8 {
        let flag = match self {
            KeyDerivation::PerFile => 0,
            KeyDerivation::DirectKey => uapi::FSCRYPT_POLICY_FLAG_DIRECT_KEY,
            KeyDerivation::InodeBlock64 => uapi::FSCRYPT_POLICY_FLAG_IV_INO_LBLK_64,
            KeyDerivation::InodeBlock32 => uapi::FSCRYPT_POLICY_FLAG_IV_INO_LBLK_32,
        };
        flag as u8
    }
}

/// A v2 encryption policy: what the kernel stores in an encrypted directory
/// and every file under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    pub contents: Mode,
    pub filenames: Mode,
    pub padding: Padding,
    pub derivation: KeyDerivation,
    /// log2 of the contents data unit size; 0 means the file system block
    /// size, the only choice before Linux 6.7.
    pub log2_data_unit_size: u8,
    /// The master key, as [`crate::add_key`] returned its identifier.
    pub identifier: KeyIdentifier,
}

impl Policy {
    /// The policy version this crate reads and writes (`FSCRYPT_POLICY_V2`).
    pub const VERSION: u8 = uapi::FSCRYPT_POLICY_V2 as u8;

    /// AES-256-XTS contents, AES-256-CTS names, 32-byte name padding, per-file
    /// keys: the kernel documentation's recommendation where AES is fast.
    pub fn new(identifier: KeyIdentifier) -> Policy {
        Policy {
            contents: Mode::Aes256Xts,
            filenames: Mode::Aes256Cts,
            padding: Padding::Pad32,
            derivation: KeyDerivation::PerFile,
            log2_data_unit_size: 0,
            identifier,
        }
    }

    /// Adiantum for contents and names, for CPUs without AES instructions.
    /// Needs a kernel built with `CONFIG_CRYPTO_ADIANTUM`.
    pub fn adiantum(identifier: KeyIdentifier) -> Policy {
        Policy {
            contents: Mode::Adiantum,
            filenames: Mode::Adiantum,
            ..Policy::new(identifier)
        }
    }

    /// The `flags` byte: padding in the low two bits, then at most one of
    /// the key derivation flags.
    pub fn flags(&self) -> u8 {
        self.padding.flag() | self.derivation.flag()
    }

    /// Checks what the kernel would refuse with a bare `EINVAL`, so the error
    /// can say why. Whether this kernel and file system support the modes is
    /// only known when the kernel is asked.
    pub fn check(&self) -> Result<(), &'static str> {
        use Mode::*;
        let pair_ok = matches!(
            (self.contents, self.filenames),
            (Aes256Xts, Aes256Cts)
                | (Aes256Xts, Aes256Hctr2)
                | (Adiantum, Adiantum)
                | (Aes128Cbc, Aes128Cts)
                | (Sm4Xts, Sm4Cts)
        );
        if !pair_ok {
            return Err(
                "the kernel accepts these pairs of contents and file-name modes only: \
                        AES-256-XTS with AES-256-CTS or AES-256-HCTR2, Adiantum with Adiantum, \
                        AES-128-CBC-ESSIV with AES-128-CTS, SM4-XTS with SM4-CTS",
            );
        }
        if self.derivation == KeyDerivation::DirectKey && self.contents != Adiantum {
            return Err("direct-key policies need Adiantum for both contents and names");
        }
        if self.log2_data_unit_size != 0 && !(9..=16).contains(&self.log2_data_unit_size) {
            return Err("the data unit size must be the block size (0) or 2^9 to 2^16 bytes");
        }
        Ok(())
    }

    pub(crate) fn to_raw(self) -> uapi::fscrypt_policy_v2 {
        uapi::fscrypt_policy_v2 {
            version: Policy::VERSION,
            contents_encryption_mode: self.contents.number(),
            filenames_encryption_mode: self.filenames.number(),
            flags: self.flags(),
            log2_data_unit_size: self.log2_data_unit_size,
            __reserved: [0; 3],
            master_key_identifier: *self.identifier.as_bytes(),
        }
    }

    /// Reads the kernel's struct; the error names the field it cannot model.
    pub(crate) fn from_raw(raw: &uapi::fscrypt_policy_v2) -> Result<Policy, String> {
        let mode = |number: u8| {
            Mode::from_number(number).ok_or_else(|| format!("unknown encryption mode {number}"))
        };
        let contents = mode(raw.contents_encryption_mode)?;
        let filenames = mode(raw.filenames_encryption_mode)?;
        let flags = u32::from(raw.flags);
        let derivation = match flags & !uapi::FSCRYPT_POLICY_FLAGS_PAD_MASK {
            0 => KeyDerivation::PerFile,
            uapi::FSCRYPT_POLICY_FLAG_DIRECT_KEY => KeyDerivation::DirectKey,
            uapi::FSCRYPT_POLICY_FLAG_IV_INO_LBLK_64 => KeyDerivation::InodeBlock64,
            uapi::FSCRYPT_POLICY_FLAG_IV_INO_LBLK_32 => KeyDerivation::InodeBlock32,
            other => return Err(format!("unknown policy flags {other:#x}")),
        };
        Ok(Policy {
            contents,
            filenames,
            padding: Padding::from_flags(raw.flags),
            derivation,
            log2_data_unit_size: raw.log2_data_unit_size,
            identifier: KeyIdentifier::from_bytes(raw.master_key_identifier),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identifier() -> KeyIdentifier {
        KeyIdentifier::from_bytes(*b"0123456789abcdef")
    }

    #[test]
    fn mode_numbers_round_trip_and_match_the_header() {
        for mode in Mode::ALL {
            assert_eq!(Mode::from_number(mode.number()), Some(mode));
        }
        assert_eq!(Mode::Aes256Xts.number(), 1);
        assert_eq!(Mode::Aes256Cts.number(), 4);
        assert_eq!(Mode::Adiantum.number(), 9);
        assert_eq!(Mode::Aes256Hctr2.number(), 10);
        assert_eq!(Mode::from_number(0), None);
        assert_eq!(Mode::from_number(2), None);
    }

    #[test]
    fn default_policy_is_xts_cts_pad32() {
        let raw = Policy::new(identifier()).to_raw();
        assert_eq!(raw.version, 2);
        assert_eq!(
            (raw.contents_encryption_mode, raw.filenames_encryption_mode),
            (1, 4)
        );
        assert_eq!(raw.flags, 0x03);
        assert_eq!(&raw.master_key_identifier, b"0123456789abcdef");
    }

    #[test]
    fn every_flag_combination_round_trips() {
        let paddings = [Padding::Pad4, Padding::Pad8, Padding::Pad16, Padding::Pad32];
        let derivations = [
            KeyDerivation::PerFile,
            KeyDerivation::DirectKey,
            KeyDerivation::InodeBlock64,
            KeyDerivation::InodeBlock32,
        ];
        for padding in paddings {
            for derivation in derivations {
                let policy = Policy {
                    padding,
                    derivation,
                    ..Policy::adiantum(identifier())
                };
                assert_eq!(Policy::from_raw(&policy.to_raw()), Ok(policy));
            }
        }
        assert_eq!(
            Policy {
                derivation: KeyDerivation::DirectKey,
                ..Policy::adiantum(identifier())
            }
            .flags(),
            0x07
        );
    }

    #[test]
    fn unknown_modes_and_flags_are_named() {
        let mut raw = Policy::new(identifier()).to_raw();
        raw.flags = 0x0c; // DIRECT_KEY | IV_INO_LBLK_64: mutually exclusive
        assert!(Policy::from_raw(&raw).unwrap_err().contains("flags 0xc"));
        raw.flags = 0;
        raw.contents_encryption_mode = 200;
        assert!(Policy::from_raw(&raw).unwrap_err().contains("mode 200"));
    }

    #[test]
    fn check_refuses_what_the_kernel_would() {
        assert!(Policy::new(identifier()).check().is_ok());
        assert!(Policy::adiantum(identifier()).check().is_ok());
        let mixed = Policy {
            filenames: Mode::Adiantum,
            ..Policy::new(identifier())
        };
        assert!(mixed.check().is_err());
        let direct_xts = Policy {
            derivation: KeyDerivation::DirectKey,
            ..Policy::new(identifier())
        };
        assert!(direct_xts.check().is_err());
        let direct_adiantum = Policy {
            derivation: KeyDerivation::DirectKey,
            ..Policy::adiantum(identifier())
        };
        assert!(direct_adiantum.check().is_ok());
        let tiny_units = Policy {
            log2_data_unit_size: 8,
            ..Policy::new(identifier())
        };
        assert!(tiny_units.check().is_err());
    }
}
