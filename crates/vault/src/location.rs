//! Where a vault's config lives. A FUSE vault keeps it in the vault
//! directory (whose other contents are ciphertext). An fscrypt vault's
//! directory is encrypted by the kernel, so its config cannot be inside it
//! (it must be readable while locked); it lives beside it in `.NAME.atrest/`.

use std::path::{Path, PathBuf};

use crate::{Backend, CONFIG_FILE, VaultError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The directory the user names: ciphertext (FUSE) or the kernel
    /// encrypted directory (fscrypt).
    pub data: PathBuf,
    /// The directory holding `atrest.conf` and its backup.
    pub config_dir: PathBuf,
    pub backend: Backend,
}

/// `.NAME.atrest` beside `data`.
pub fn fscrypt_config_dir(data: &Path) -> Result<PathBuf, VaultError> {
    let name = data
        .file_name()
        .ok_or_else(|| VaultError::Invalid(format!("{} has no directory name", data.display())))?;
    let parent = data.parent().unwrap_or(Path::new("/"));
    let mut config = std::ffi::OsString::from(".");
    config.push(name);
    config.push(".atrest");
    Ok(parent.join(config))
}

/// Finds the vault named by `path` (absolute or relative).
pub fn locate(path: &Path) -> Result<Location, VaultError> {
    let data = std::path::absolute(path).map_err(VaultError::io(path))?;
    if data.join(CONFIG_FILE).exists() || data.join(crate::BACKUP_FILE).exists() {
        return Ok(Location {
            config_dir: data.clone(),
            data,
            backend: Backend::Fuse,
        });
    }
    let config_dir = fscrypt_config_dir(&data)?;
    if config_dir.join(CONFIG_FILE).exists() || config_dir.join(crate::BACKUP_FILE).exists() {
        return Ok(Location {
            data,
            config_dir,
            backend: Backend::Fscrypt,
        });
    }
    if !data.exists() {
        return Err(VaultError::Io {
            path: data,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Err(VaultError::NotAVault(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fscrypt_config_sits_beside_the_directory() {
        assert_eq!(
            fscrypt_config_dir(Path::new("/srv/data")).unwrap(),
            Path::new("/srv/.data.atrest")
        );
        assert!(fscrypt_config_dir(Path::new("/")).is_err());
    }
}
