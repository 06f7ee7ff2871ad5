//! fscrypt against the real kernel: each test makes its own ext4 image,
//! loop-mounts it and unmounts it when done (also when it fails). Needs root
//! and e2fsprogs; without them the tests fail rather than skip.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use atrest_core::SecretBytes;
use atrest_fscrypt::{
    Error, KeyIdentifier, KeyStatus, Mode, Policy, RemoveStatus, add_key, driver_for, get_policy,
    key_status, remove_key, set_policy,
};

const CANARY_NAME: &str = "canary-name-4d1f8a2c.txt";
const CANARY_CONTENT: &[u8] = b"CANARY-CONTENT-b83e61f0";
const IMAGE_BYTES: u64 = 32 << 20;

/// A loop-mounted ext4 image in a temporary directory.
struct Scratch {
    mounted: bool,
    image: PathBuf,
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh ext4 file system, with the `encrypt` feature if `encrypt`.
    fn new(encrypt: bool) -> Scratch {
        require_environment();
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let image = dir.path().join("ext4.img");
        let mount_point = dir.path().join("mnt");
        fs::create_dir(&mount_point).expect("create the mount point");
        fs::File::create(&image)
            .and_then(|file| file.set_len(IMAGE_BYTES))
            .expect("create the image file");
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-b", "4096"]);
        if encrypt {
            mkfs.args(["-O", "encrypt"]);
        }
        run(mkfs.arg(&image));
        let mut scratch = Scratch {
            mounted: false,
            image,
            mount_point,
            _dir: dir,
        };
        scratch.mount();
        scratch
    }

    fn mount(&mut self) {
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&self.image)
            .arg(&self.mount_point));
        self.mounted = true;
    }

    fn unmount(&mut self) {
        run(Command::new("umount").arg(&self.mount_point));
        self.mounted = false;
    }

    fn root(&self) -> &Path {
        &self.mount_point
    }

    /// A new directory on the file system.
    fn dir(&self, name: &str) -> PathBuf {
        let path = self.mount_point.join(name);
        fs::create_dir(&path).expect("create a directory");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy as a last resort, so a test that failed with a file open
            // still leaves no mount behind.
            let unmounted = Command::new("umount").arg(&self.mount_point).status();
            if !unmounted.is_ok_and(|status| status.success()) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .status();
            }
        }
    }
}

fn require_environment() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the fscrypt tests mount file systems and must run as root (try `sudo -E cargo test -p atrest-fscrypt`)"
    );
    let mkfs = Command::new("mkfs.ext4").arg("-V").output();
    assert!(
        mkfs.is_ok_and(|output| output.status.success()),
        "the fscrypt tests need mkfs.ext4: install e2fsprogs"
    );
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn random_key() -> SecretBytes {
    SecretBytes::new(atrest_core::random_array::<64>().to_vec())
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list the directory")
        .map(|entry| {
            entry
                .expect("read an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn errno(result: io::Result<impl Sized>) -> Option<i32> {
    result.err().and_then(|error| error.raw_os_error())
}

const ENOKEY: i32 = rustix::io::Errno::NOKEY.raw_os_error();
const ENOENT: i32 = rustix::io::Errno::NOENT.raw_os_error();

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Fills an encrypted directory: a canary file and a subdirectory with one.
fn populate(dir: &Path) {
    fs::write(dir.join(CANARY_NAME), CANARY_CONTENT.repeat(200)).expect("write the canary");
    fs::create_dir(dir.join("sub")).expect("create a subdirectory");
    fs::write(dir.join("sub").join("inner.txt"), b"inner").expect("write a nested file");
}

fn assert_unlocked(dir: &Path) {
    assert_eq!(names(dir), [CANARY_NAME, "sub"]);
    assert_eq!(
        fs::read(dir.join(CANARY_NAME)).expect("read the canary"),
        CANARY_CONTENT.repeat(200)
    );
    assert_eq!(
        fs::read(dir.join("sub/inner.txt")).expect("read the nested file"),
        b"inner"
    );
}

/// Locked: two entries with encoded names, and no file opens.
fn assert_locked(dir: &Path) {
    let locked_names = names(dir);
    assert_eq!(locked_names.len(), 2, "{locked_names:?}");
    assert!(
        !locked_names
            .iter()
            .any(|name| name == CANARY_NAME || name == "sub"),
        "{locked_names:?}"
    );
    let file = locked_names
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .expect("the canary file is still listed");
    assert_eq!(
        errno(fs::read(&file)),
        Some(ENOKEY),
        "reading a locked file"
    );
    assert_eq!(errno(fs::read(dir.join(CANARY_NAME))), Some(ENOENT));
    assert_eq!(
        errno(fs::write(dir.join("new.txt"), b"x")),
        Some(ENOKEY),
        "creating in a locked dir"
    );
}

#[test]
fn lock_unlock_and_wrong_key() {
    let mut scratch = Scratch::new(true);
    let dir = scratch.dir("vault");
    let plain = scratch.dir("plain");
    fs::write(plain.join("control.txt"), CANARY_CONTENT).expect("write the unencrypted control");

    assert_eq!(get_policy(&dir).expect("get_policy on a plain dir"), None);
    let key = random_key();
    let identifier = add_key(scratch.root(), &key).expect("add the key");
    assert_eq!(
        add_key(&dir, &key).expect("add the key again"),
        identifier,
        "adding twice is idempotent"
    );
    let policy = Policy::new(identifier);
    set_policy(&dir, &policy).expect("set the policy");
    set_policy(&dir, &policy).expect("setting the same policy again succeeds");
    populate(&dir);

    assert_eq!(get_policy(&dir).expect("get_policy"), Some(policy));
    assert_eq!(
        get_policy(&dir.join("sub")).expect("get_policy below"),
        Some(policy),
        "inherited"
    );
    assert_eq!(
        key_status(scratch.root(), identifier).expect("key status"),
        KeyStatus::Present {
            user_count: 1,
            added_by_self: true
        }
    );
    assert_unlocked(&dir);
    let xts = driver_for(Mode::Aes256Xts).expect("xts(aes) is listed once used");
    assert!(xts.is_instantiated(), "{xts:?}");
    eprintln!("xts(aes) driver here: {xts:?}");

    // Lock. No file is open, so the removal is complete at once.
    let status = remove_key(scratch.root(), identifier, false).expect("remove the key");
    assert_eq!(status, RemoveStatus::default());
    assert_eq!(
        key_status(scratch.root(), identifier).expect("key status"),
        KeyStatus::Absent
    );
    assert_locked(&dir);
    assert_eq!(
        get_policy(&dir).expect("the policy is readable while locked"),
        Some(policy)
    );

    // Nothing of the plaintext reaches the disk; the control proves the scan works.
    scratch.unmount();
    let image = fs::read(&scratch.image).expect("read the image");
    assert!(
        contains(&image, CANARY_CONTENT),
        "the unencrypted control is in the image"
    );
    assert!(
        !contains(&image, CANARY_NAME.as_bytes()),
        "a plaintext name leaked into the image"
    );
    // The encrypted file holds the canary twice in a row; the control once.
    assert!(
        !contains(&image, &CANARY_CONTENT.repeat(2)),
        "plaintext contents leaked into the image"
    );
    scratch.mount();

    // Unlock again: everything is back.
    assert_locked(&dir);
    assert_eq!(
        add_key(scratch.root(), &key).expect("add the key after remount"),
        identifier
    );
    assert_unlocked(&dir);
    remove_key(scratch.root(), identifier, false).expect("remove the key");

    // A wrong key has another identifier, so it unlocks nothing.
    let wrong = add_key(scratch.root(), &random_key()).expect("add a wrong key");
    assert_ne!(wrong, identifier);
    assert_eq!(
        key_status(scratch.root(), identifier).expect("key status"),
        KeyStatus::Absent
    );
    assert!(matches!(
        key_status(scratch.root(), wrong),
        Ok(KeyStatus::Present { .. })
    ));
    assert_locked(&dir);
}

#[test]
fn removal_with_an_open_file_reports_files_busy() {
    let scratch = Scratch::new(true);
    let dir = scratch.dir("vault");
    let identifier = add_key(scratch.root(), &random_key()).expect("add the key");
    set_policy(&dir, &Policy::new(identifier)).expect("set the policy");
    populate(&dir);

    let mut open = fs::File::open(dir.join(CANARY_NAME)).expect("open the canary");
    let status = remove_key(scratch.root(), identifier, false).expect("remove the key");
    assert_eq!(
        status,
        RemoveStatus {
            files_busy: true,
            other_users: false
        }
    );
    assert_eq!(
        key_status(scratch.root(), identifier).expect("status"),
        KeyStatus::IncompletelyRemoved
    );
    // The open file still reads. Nothing new can be created, and the
    // subdirectory, not in use, was evicted: its names are ciphertext now.
    let mut content = Vec::new();
    open.read_to_end(&mut content)
        .expect("read the file opened before removal");
    assert_eq!(content, CANARY_CONTENT.repeat(200));
    assert_eq!(errno(fs::write(dir.join("new.txt"), b"x")), Some(ENOKEY));
    assert_eq!(errno(fs::read(dir.join("sub/inner.txt"))), Some(ENOENT));

    drop(open);
    let status = remove_key(scratch.root(), identifier, false).expect("finish the removal");
    assert_eq!(status, RemoveStatus::default());
    assert_eq!(
        key_status(scratch.root(), identifier).expect("status"),
        KeyStatus::Absent
    );
    assert_locked(&dir);
}

#[test]
fn removal_for_all_users() {
    let scratch = Scratch::new(true);
    let dir = scratch.dir("vault");
    let key = random_key();
    let identifier = add_key(scratch.root(), &key).expect("add the key");
    set_policy(&dir, &Policy::new(identifier)).expect("set the policy");
    populate(&dir);
    // The ioctl needs an open descriptor, and one on the encrypted directory
    // itself keeps that directory in use: lock through a path outside it.
    let status = remove_key(&dir, identifier, true).expect("remove for all users");
    assert_eq!(
        status,
        RemoveStatus {
            files_busy: true,
            other_users: false
        }
    );
    let status = remove_key(scratch.root(), identifier, true).expect("remove again, from the root");
    assert_eq!(status, RemoveStatus::default());
    assert_eq!(
        key_status(scratch.root(), identifier).expect("status"),
        KeyStatus::Absent
    );
    assert_locked(&dir);
    assert!(matches!(
        remove_key(scratch.root(), identifier, false),
        Err(Error::KeyNotFound { identifier: reported, .. }) if reported == identifier
    ));
}

#[test]
fn policy_errors() {
    let scratch = Scratch::new(true);
    let identifier = add_key(scratch.root(), &random_key()).expect("add the key");

    let full = scratch.dir("full");
    fs::write(full.join("existing.txt"), b"x").expect("write a file");
    let error = set_policy(&full, &Policy::new(identifier)).expect_err("a non-empty dir");
    assert!(matches!(error, Error::NotEmpty { .. }), "{error:?}");
    assert!(error.to_string().contains("not empty"), "{error}");

    let encrypted = scratch.dir("encrypted");
    set_policy(&encrypted, &Policy::new(identifier)).expect("set the policy");
    let other = add_key(scratch.root(), &random_key()).expect("add another key");
    let error = set_policy(&encrypted, &Policy::new(other)).expect_err("another key");
    assert!(matches!(error, Error::PolicyConflict { .. }), "{error:?}");
    let hctr2 = Policy {
        filenames: Mode::Aes256Hctr2,
        ..Policy::new(identifier)
    };
    let error = set_policy(&encrypted, &hctr2).expect_err("other modes");
    assert!(matches!(error, Error::PolicyConflict { .. }), "{error:?}");

    let file = scratch.root().join("file.txt");
    fs::write(&file, b"x").expect("write a file");
    let error = set_policy(&file, &Policy::new(identifier)).expect_err("a file");
    assert!(matches!(error, Error::NotADirectory { .. }), "{error:?}");

    let mixed = Policy {
        filenames: Mode::Adiantum,
        ..Policy::new(identifier)
    };
    let error = set_policy(&scratch.dir("mixed"), &mixed).expect_err("an invalid mode pair");
    assert!(matches!(error, Error::InvalidPolicy { .. }), "{error:?}");
}

#[test]
fn key_errors() {
    let scratch = Scratch::new(true);
    let short = SecretBytes::new(vec![1; 32]);
    assert!(matches!(
        add_key(scratch.root(), &short),
        Err(Error::KeyLength { len: 32 })
    ));
    let unknown = KeyIdentifier::from_bytes([0x5a; 16]);
    assert_eq!(
        key_status(scratch.root(), unknown).expect("status"),
        KeyStatus::Absent
    );
    let error = remove_key(scratch.root(), unknown, false).expect_err("an absent key");
    assert!(matches!(error, Error::KeyNotFound { .. }), "{error:?}");
    // Root (CAP_FOWNER) may set a policy whose key is not added yet.
    let dir = scratch.dir("vault");
    set_policy(&dir, &Policy::new(unknown)).expect("root sets a policy for an absent key");
    assert_eq!(errno(fs::write(dir.join("a.txt"), b"x")), Some(ENOKEY));
    let missing = scratch.root().join("missing");
    assert!(matches!(
        add_key(&missing, &random_key()),
        Err(Error::Open { .. })
    ));
}

#[test]
fn file_system_without_encrypt_feature_names_tune2fs() {
    let scratch = Scratch::new(false);
    let dir = scratch.dir("vault");
    let identifier = KeyIdentifier::from_bytes([1; 16]);
    let error = set_policy(&dir, &Policy::new(identifier)).expect_err("no encrypt feature");
    assert!(
        matches!(error, Error::EncryptionNotEnabled { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    eprintln!("{message}");
    assert!(message.contains("tune2fs -O encrypt"), "{message}");
    // A loop device is named by the image behind it.
    assert!(
        message.contains(&scratch.image.display().to_string()),
        "{message}"
    );
    assert!(matches!(
        get_policy(&dir),
        Err(Error::EncryptionNotEnabled { .. })
    ));
    assert!(matches!(
        add_key(scratch.root(), &random_key()),
        Err(Error::EncryptionNotEnabled { .. })
    ));
}

/// Adiantum works where the kernel has it; elsewhere file creation fails with
/// `ENOPKG` and `driver_for` says so beforehand.
#[test]
fn adiantum_policy() {
    let scratch = Scratch::new(true);
    let dir = scratch.dir("vault");
    let identifier = add_key(scratch.root(), &random_key()).expect("add the key");
    let policy = Policy::adiantum(identifier);
    let available = driver_for(Mode::Adiantum).is_some();
    set_policy(&dir, &policy).expect("the kernel accepts an Adiantum policy");
    assert_eq!(get_policy(&dir).expect("get_policy"), Some(policy));
    match fs::write(dir.join("a.txt"), CANARY_CONTENT) {
        Ok(()) => {
            assert_eq!(
                fs::read(dir.join("a.txt")).expect("read back"),
                CANARY_CONTENT
            );
            assert!(driver_for(Mode::Adiantum).is_some(), "listed once used");
        }
        Err(error) => {
            assert_eq!(
                error.raw_os_error(),
                Some(rustix::io::Errno::NOPKG.raw_os_error()),
                "{error}"
            );
            assert!(
                !available,
                "driver_for listed Adiantum but the kernel cannot use it"
            );
            eprintln!("this kernel has no Adiantum: {error}");
        }
    }
}
