//! The per-inode cipher cache, and the defence against file-id poisoning.
//!
//! A backing file's header holds its random file id, from which its key is
//! derived. Whoever can write the backing directory offline could copy one
//! file's header onto another, header-only file; if we then wrote blocks
//! under that id, two files would share a key and nonce space. So a file
//! that holds no block yet always gets a fresh header (and id) before its
//! first block is written ([`Ciphers::for_write`]).
//!
//! The cipher is kept per inode, not per handle: that first write replaces
//! the key for every handle and hard link of the file at once, so all of
//! them must see the new one. [`Ciphers::opened`] and [`Ciphers::released`]
//! count the open handles; the entry goes with the last one.
//!
//! ```ignore
//! let ciphers = Ciphers::default();
//! ciphers.opened(ino, key.read_header(&file)?);
//! let cipher = ciphers.for_write(key, ino, &file)?; // under the inode's write lock
//! ciphers.released(ino);
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use atrest_vault::{ContentError, ContentKey, FileCipher};
use parking_lot::Mutex;

/// What all open handles of one inode share.
#[derive(Default)]
struct InodeState {
    handles: usize,
    cipher: Option<Arc<FileCipher>>,
}

#[derive(Default)]
pub struct Ciphers {
    inodes: Mutex<HashMap<u64, InodeState>>,
}

impl Ciphers {
    /// Records a new open handle of `ino` and what its header says.
    pub fn opened(&self, ino: u64, cipher: Option<FileCipher>) {
        let mut inodes = self.inodes.lock();
        let state = inodes.entry(ino).or_default();
        state.handles += 1;
        if state.cipher.is_none() {
            state.cipher = cipher.map(Arc::new);
        }
    }

    pub fn released(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        if let Some(state) = inodes.get_mut(&ino) {
            state.handles = state.handles.saturating_sub(1);
            if state.handles == 0 {
                inodes.remove(&ino);
            }
        }
    }

    /// The cipher to read `ino` with: `None` for a file without a header
    /// (empty). Callers hold the inode's lock.
    pub fn for_read(
        &self,
        key: &ContentKey,
        ino: u64,
        file: &File,
    ) -> Result<Option<Arc<FileCipher>>, ContentError> {
        if let Some(c) = self.inodes.lock().get(&ino).and_then(|s| s.cipher.clone()) {
            return Ok(Some(c));
        }
        let Some(c) = key.read_header(file)? else {
            return Ok(None);
        };
        let c = Arc::new(c);
        if let Some(state) = self.inodes.lock().get_mut(&ino) {
            state.cipher = Some(c.clone());
        }
        Ok(Some(c))
    }

    /// The cipher to write `ino` with. A file that holds no block yet gets
    /// a fresh header and file id first, so a header copied from another
    /// file never makes two files share a key. Callers hold the inode's
    /// write lock.
    pub fn for_write(
        &self,
        key: &ContentKey,
        ino: u64,
        file: &File,
    ) -> Result<Arc<FileCipher>, ContentError> {
        if file.metadata()?.len() > atrest_vault::layout::HEADER_LEN
            && let Some(c) = self.for_read(key, ino, file)?
        {
            return Ok(c);
        }
        let c = Arc::new(key.write_header(file)?);
        if let Some(state) = self.inodes.lock().get_mut(&ino) {
            state.cipher = Some(c.clone());
        }
        Ok(c)
    }

    #[cfg(test)]
    fn tracked(&self, ino: u64) -> bool {
        self.inodes.lock().contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::{ContentAlgorithm, SecretKey};
    use atrest_vault::ContentFile;
    use std::os::unix::fs::FileExt;

    fn key() -> ContentKey {
        ContentKey::new(SecretKey::random(), ContentAlgorithm::Aes256Gcm, 4096)
    }

    fn file(dir: &tempfile::TempDir, name: &str) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join(name))
            .unwrap()
    }

    fn write(file: &File, cipher: &FileCipher, data: &[u8]) {
        ContentFile { file, cipher }.write_at(0, data).unwrap();
    }

    #[test]
    fn a_copied_header_gets_a_fresh_id_before_the_first_block() {
        let (dir, key, ciphers) = (tempfile::tempdir().unwrap(), key(), Ciphers::default());
        let victim = file(&dir, "victim");
        let c = key.write_header(&victim).unwrap();
        write(&victim, &c, b"secret");
        // The attacker copies the victim's header onto a header-only file.
        let mut header = [0u8; atrest_vault::layout::HEADER_LEN as usize];
        victim.read_exact_at(&mut header, 0).unwrap();
        let poisoned = file(&dir, "poisoned");
        poisoned.write_all_at(&header, 0).unwrap();
        ciphers.opened(2, key.read_header(&poisoned).unwrap());
        assert_eq!(
            ciphers
                .for_read(&key, 2, &poisoned)
                .unwrap()
                .unwrap()
                .file_id(),
            c.file_id(),
            "reading trusts the header"
        );
        let w = ciphers.for_write(&key, 2, &poisoned).unwrap();
        assert_ne!(
            w.file_id(),
            c.file_id(),
            "writing must not reuse the copied id"
        );
        assert_eq!(
            key.read_header(&poisoned).unwrap().unwrap().file_id(),
            w.file_id()
        );
        // Every handle of the inode now sees the new id.
        assert_eq!(
            ciphers
                .for_read(&key, 2, &poisoned)
                .unwrap()
                .unwrap()
                .file_id(),
            w.file_id()
        );
    }

    #[test]
    fn a_file_with_blocks_keeps_its_cipher_for_every_handle() {
        let (dir, key, ciphers) = (tempfile::tempdir().unwrap(), key(), Ciphers::default());
        let f = file(&dir, "f");
        let c = key.write_header(&f).unwrap();
        write(&f, &c, b"data");
        ciphers.opened(7, key.read_header(&f).unwrap());
        ciphers.opened(7, key.read_header(&f).unwrap());
        let first = ciphers.for_write(&key, 7, &f).unwrap();
        let second = ciphers.for_read(&key, 7, &f).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one cipher per inode");
        assert_eq!(first.file_id(), c.file_id());
        ciphers.released(7);
        assert!(ciphers.tracked(7), "one handle is still open");
        ciphers.released(7);
        assert!(!ciphers.tracked(7), "the last release forgets the inode");
        ciphers.released(7); // a stray release is harmless
    }

    #[test]
    fn an_empty_file_has_no_cipher_until_written() {
        let (dir, key, ciphers) = (tempfile::tempdir().unwrap(), key(), Ciphers::default());
        let f = file(&dir, "empty");
        ciphers.opened(3, key.read_header(&f).unwrap());
        assert!(ciphers.for_read(&key, 3, &f).unwrap().is_none());
        let w = ciphers.for_write(&key, 3, &f).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            atrest_vault::layout::HEADER_LEN
        );
        assert!(Arc::ptr_eq(
            &w,
            &ciphers.for_read(&key, 3, &f).unwrap().unwrap()
        ));
    }

    #[test]
    fn an_untracked_inode_reads_its_header_each_time() {
        let (dir, key, ciphers) = (tempfile::tempdir().unwrap(), key(), Ciphers::default());
        let f = file(&dir, "f");
        let c = key.write_header(&f).unwrap();
        write(&f, &c, b"x");
        let a = ciphers.for_read(&key, 9, &f).unwrap().unwrap();
        let b = ciphers.for_read(&key, 9, &f).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.file_id(), b.file_id());
        assert!(!ciphers.tracked(9));
    }
}
