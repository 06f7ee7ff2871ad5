//! The `cryptsetup` program, driven with every secret on its standard
//! input (`--key-file=-`), never in argv or a file. Debian's cryptsetup is
//! the one implementation of LUKS2 every operator already trusts and
//! audits; calling it keeps atrest's build free of libcryptsetup and
//! bindgen (docs/decisions/0017-luks-through-cryptsetup.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::LuksError;

/// The program, overridable for tests and unusual installs.
pub const CRYPTSETUP_ENV: &str = "ATREST_CRYPTSETUP";

/// PBKDF of the keyslots atrest adds. Their passphrase is 256 random bits
/// the authority releases, so a slow KDF buys nothing and would only slow
/// every boot: PBKDF2 at cryptsetup's minimum, as for any high-entropy key.
const FAST_PBKDF: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// One LUKS2 device or image file.
#[derive(Debug, Clone)]
pub struct Device {
    path: PathBuf,
}

/// What the header says, from `luksDump --dump-json-metadata`.
#[derive(Debug, Clone)]
pub struct Header {
    pub uuid: String,
    /// Keyslot numbers in use.
    pub keyslots: Vec<u32>,
    /// Token id and its JSON object, in id order.
    pub tokens: Vec<(u32, Value)>,
    /// How many keyslots the header has room for.
    pub max_keyslots: u32,
}

#[derive(Deserialize)]
struct Metadata {
    keyslots: serde_json::Map<String, Value>,
    tokens: serde_json::Map<String, Value>,
}

impl Device {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn program() -> String {
        std::env::var(CRYPTSETUP_ENV).unwrap_or_else(|_| "cryptsetup".into())
    }

    /// Runs cryptsetup with `args`, `stdin` as its standard input; the
    /// standard output on success, its message on failure.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Result<Output, LuksError> {
        let mut child = Command::new(Self::program())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LuksError::NoCryptsetup(e.to_string()))?;
        // Secrets are at most a few dozen bytes: they fit the pipe, and
        // closing it ends cryptsetup's read.
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin)
                .map_err(|e| LuksError::Cryptsetup(format!("writing to cryptsetup: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| LuksError::Cryptsetup(e.to_string()))?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }

    fn run_ok(&self, what: &str, args: &[&str], stdin: &[u8]) -> Result<String, LuksError> {
        let out = self.run(args, stdin)?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(LuksError::Cryptsetup(format!(
                "{what} on {} failed: {}",
                self.path.display(),
                out.message()
            )))
        }
    }

    fn path_arg(&self) -> Result<&str, LuksError> {
        self.path
            .to_str()
            .ok_or_else(|| LuksError::Invalid(format!("{}: not UTF-8", self.path.display())))
    }

    /// Whether the device holds a LUKS2 header.
    pub fn is_luks2(&self) -> Result<bool, LuksError> {
        if !self.path.exists() {
            return Err(LuksError::Invalid(format!(
                "{}: no such device or file",
                self.path.display()
            )));
        }
        let out = self.run(&["isLuks", "--type", "luks2", self.path_arg()?], b"")?;
        Ok(out.code == Some(0))
    }

    /// The header's metadata; an error naming the device if it is not LUKS2.
    pub fn header(&self) -> Result<Header, LuksError> {
        if !self.is_luks2()? {
            return Err(LuksError::NotLuks(self.path.clone()));
        }
        let path = self.path_arg()?;
        let json = self.run_ok(
            "reading the header",
            &["luksDump", "--dump-json-metadata", path],
            b"",
        )?;
        let meta: Metadata = serde_json::from_str(&json)
            .map_err(|e| LuksError::Cryptsetup(format!("luksDump's JSON: {e}")))?;
        let uuid = self
            .run_ok("reading the UUID", &["luksUUID", path], b"")?
            .trim()
            .to_owned();
        let mut keyslots: Vec<u32> = meta
            .keyslots
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect();
        keyslots.sort_unstable();
        let mut tokens: Vec<(u32, Value)> = meta
            .tokens
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        tokens.sort_by_key(|(id, _)| *id);
        Ok(Header {
            uuid,
            keyslots,
            tokens,
            // LUKS2's limit (LUKS2_KEYSLOTS_MAX).
            max_keyslots: 32,
        })
    }

    /// Adds keyslot `slot` with passphrase `new`, authorised by the
    /// passphrase or key file at `existing` (read by cryptsetup itself, as
    /// `--key-file`: its exact bytes).
    pub fn add_key(&self, existing: &Path, slot: u32, new: &[u8]) -> Result<(), LuksError> {
        let existing = existing
            .to_str()
            .ok_or_else(|| LuksError::Invalid(format!("{}: not UTF-8", existing.display())))?;
        let slot = slot.to_string();
        let mut args = vec!["luksAddKey", "--batch-mode"];
        args.extend(FAST_PBKDF);
        args.extend([
            "--key-file",
            existing,
            "--new-key-slot",
            &slot,
            self.path_arg()?,
            "-",
        ]);
        let out = self.run(&args, new)?;
        match out.code {
            Some(0) => Ok(()),
            // cryptsetup(8): 2 = no permission (bad passphrase).
            Some(2) => Err(LuksError::WrongExistingKey(self.path.clone())),
            _ => Err(LuksError::Cryptsetup(format!(
                "adding a keyslot to {} failed: {}",
                self.path.display(),
                out.message()
            ))),
        }
    }

    /// Formats the device as LUKS2 with `key` as the passphrase of keyslot
    /// `slot` (cryptsetup's default cipher, aes-xts-plain64 with a 512-bit
    /// key, and 4 KiB sectors where the device allows).
    pub fn format(&self, slot: u32, key: &[u8]) -> Result<(), LuksError> {
        let slot = slot.to_string();
        let mut args = vec!["luksFormat", "--type", "luks2", "--batch-mode"];
        args.extend(FAST_PBKDF);
        args.extend(["--key-file=-", "--key-slot", &slot, self.path_arg()?]);
        self.run_ok("formatting", &args, key).map(drop)
    }

    /// What is on the device, as `blkid -p` sees it: `None` when it carries
    /// no signature (a blank instance store), else the type found
    /// (`crypto_LUKS`, `ext4`, a partition table, ...).
    pub fn signature(&self) -> Result<Option<String>, LuksError> {
        let out = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&self.path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                LuksError::Cryptsetup(format!("cannot run blkid ({e}): install util-linux"))
            })?;
        match out.status.code() {
            // blkid(8): 2 = nothing identified.
            Some(2) => Ok(None),
            Some(0) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let kind = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("TYPE=")
                            .or_else(|| l.strip_prefix("PTTYPE="))
                    })
                    .unwrap_or("an unknown signature");
                Ok(Some(kind.to_owned()))
            }
            _ => Err(LuksError::Cryptsetup(format!(
                "blkid cannot probe {}: {}",
                self.path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    /// Whether `key` opens keyslot `slot` (`open --test-passphrase`: no
    /// device-mapper needed).
    pub fn test_key(&self, slot: u32, key: &[u8]) -> Result<bool, LuksError> {
        let slot = slot.to_string();
        let out = self.run(
            &[
                "open",
                "--test-passphrase",
                "--key-file=-",
                "--key-slot",
                &slot,
                self.path_arg()?,
            ],
            key,
        )?;
        match out.code {
            Some(0) => Ok(true),
            Some(2) => Ok(false),
            _ => Err(LuksError::Cryptsetup(format!(
                "checking a key of {}: {}",
                self.path.display(),
                out.message()
            ))),
        }
    }

    /// Opens the mapping `/dev/mapper/NAME` with `key` in keyslot `slot`.
    pub fn open(&self, name: &str, slot: u32, key: &[u8]) -> Result<(), LuksError> {
        if !device_mapper_available() {
            return Err(LuksError::NoDeviceMapper);
        }
        let slot = slot.to_string();
        self.run_ok(
            "opening the mapping",
            &[
                "open",
                "--type",
                "luks2",
                "--key-file=-",
                "--key-slot",
                &slot,
                self.path_arg()?,
                name,
            ],
            key,
        )
        .map(drop)
    }

    /// Imports a token as token `id`.
    pub fn import_token(&self, id: u32, token: &Value) -> Result<(), LuksError> {
        let id = id.to_string();
        let json = serde_json::to_vec(token).map_err(|e| LuksError::Invalid(e.to_string()))?;
        self.run_ok(
            "storing the atrest token",
            &[
                "token",
                "import",
                "--json-file",
                "-",
                "--token-id",
                &id,
                self.path_arg()?,
            ],
            &json,
        )
        .map(drop)
    }

    pub fn remove_token(&self, id: u32) -> Result<(), LuksError> {
        let id = id.to_string();
        self.run_ok(
            "removing a token",
            &["token", "remove", "--token-id", &id, self.path_arg()?],
            b"",
        )
        .map(drop)
    }

    /// Destroys keyslot `slot` (its key material is overwritten).
    pub fn kill_slot(&self, slot: u32) -> Result<(), LuksError> {
        let slot = slot.to_string();
        self.run_ok(
            "destroying a keyslot",
            &["luksKillSlot", "--batch-mode", self.path_arg()?, &slot],
            b"",
        )
        .map(drop)
    }

    /// Wipes every keyslot (`cryptsetup erase`): nothing opens the volume
    /// any more, whatever passphrase or token anyone kept.
    pub fn erase(&self) -> Result<(), LuksError> {
        self.run_ok(
            "erasing the keyslots",
            &["erase", "--batch-mode", self.path_arg()?],
            b"",
        )
        .map(drop)
    }
}

/// Closes `/dev/mapper/NAME`.
pub fn close(name: &str) -> Result<(), LuksError> {
    if !device_mapper_available() {
        return Err(LuksError::NoDeviceMapper);
    }
    Device::new("/dev/null")
        .run_ok("closing the mapping", &["close", name], b"")
        .map(drop)
}

/// Whether the kernel has device-mapper (dm_mod), which opening needs.
pub fn device_mapper_available() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|misc| {
            misc.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false)
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn message(&self) -> String {
        if self.stderr.is_empty() {
            format!("cryptsetup exited with {:?}", self.code)
        } else {
            self.stderr.clone()
        }
    }
}
