//! `atrest demo`: a temporary vault, mounted, written, shown from both
//! sides, unmounted, checked, and removed. Uses embedded defaults only.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use atrest_core::SecretBytes;
use atrest_fuse::MountConfig;
use atrest_vault::{CreateOptions, LockedVault, Unlocker, Vault};

use super::demo_data::{CANARY, contains};
use crate::hygiene;

const PASSPHRASE: &str = "correct horse battery staple";

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta = fs::symlink_metadata(&path)?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        out.push(format!(
            "{:>8}  {rel}{}",
            meta.len(),
            if meta.is_dir() { "/" } else { "" }
        ));
        if meta.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

fn show(title: &str, root: &Path) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    walk(root, root, &mut lines)?;
    println!("\n{title}");
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}

fn unmount(path: &Path) -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty())
            .with_context(|| format!("unmounting {}", path.display()))
    } else {
        let ok = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(path)
            .status()?
            .success();
        if !ok {
            bail!("fusermount3 -u {} failed", path.display());
        }
        Ok(())
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    hygiene::harden()?;
    let tmp = tempfile::Builder::new().prefix("atrest-demo-").tempdir()?;
    let backing = tmp.path().join("data.enc");
    let mnt = tmp.path().join("data");
    fs::create_dir(&mnt)?;

    println!("== atrest demo: an encrypted vault on a temporary directory ==");
    let pass = Unlocker::Passphrase(SecretBytes::new(PASSPHRASE.as_bytes().to_vec()));
    let (vault, recovery) = Vault::create(&backing, CreateOptions::default(), &pass, "demo")?;
    println!(
        "1. atrest init {}  (passphrase slot, Argon2id 64 MiB x3, plus a recovery key)",
        backing.display()
    );
    if let Some(key) = recovery {
        println!("   recovery key: {}", key.display());
    }

    let (tx, rx) = mpsc::channel();
    let mountpoint = mnt.clone();
    let server = std::thread::spawn(move || {
        atrest_fuse::mount(vault, &mountpoint, &MountConfig::default(), |_| {
            let _ = tx.send(());
        })
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let err = server
            .join()
            .map_err(|_| anyhow::anyhow!("mount thread panicked"))?;
        bail!(
            "could not mount ({err:?}); FUSE needs /dev/fuse and, as a normal user, fusermount3 (apt install fuse3)"
        );
    }
    println!("2. atrest mount {} {}", backing.display(), mnt.display());

    super::demo_data::write(&mnt)?;
    println!("3. wrote files through the mount, as any application would");

    show("   What applications see (plaintext view):", &mnt)?;
    show("   What is on the disk (backing directory):", &backing)?;
    let first = fs::read(mnt.join("hello.txt"))?;
    println!(
        "\n   read back through the mount: {}",
        String::from_utf8_lossy(&first).trim()
    );
    let leaked = contains(&backing, CANARY.as_bytes())?;
    println!(
        "   canary string found in the backing directory: {}",
        if leaked { "YES (bug!)" } else { "no" }
    );

    unmount(&mnt)?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("mount thread panicked"))??;
    println!(
        "4. atrest unmount {}  (keys zeroized; the mount point is empty again: {} entries)",
        mnt.display(),
        fs::read_dir(&mnt)?.count()
    );

    let vault = LockedVault::open(&backing)?.unlock(&pass)?;
    let report = atrest_vault::fsck::fsck(&vault, Vec::new());
    println!(
        "5. atrest fsck: {} files, {} bytes authenticated, {} problems",
        report.files,
        report.bytes,
        report.problems.len()
    );
    let wrong = LockedVault::open(&backing)?
        .unlock(&Unlocker::Passphrase(SecretBytes::new(b"guess".to_vec())));
    println!(
        "6. a wrong passphrase: {}",
        wrong.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let vault = LockedVault::open(&backing)?.unlock(&pass)?;
    let mountpoint = mnt.clone();
    let authority_ok = super::demo_authority::run(tmp.path(), &backing, vault, move |vault| {
        read_through_mount(vault, &mountpoint)
    })?;
    drop(tmp);
    println!("16. removed the temporary vault and authority. Done.");
    if leaked || !report.is_clean() || !authority_ok {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Mounts `vault` at `mnt`, reads the first line of `hello.txt`, unmounts.
fn read_through_mount(vault: Vault, mnt: &Path) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    let mountpoint = mnt.to_owned();
    let server = std::thread::spawn(move || {
        atrest_fuse::mount(vault, &mountpoint, &MountConfig::default(), |_| {
            let _ = tx.send(());
        })
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let err = server
            .join()
            .map_err(|_| anyhow::anyhow!("mount thread panicked"))?;
        bail!("could not mount ({err:?})");
    }
    let text = fs::read_to_string(mnt.join("hello.txt"));
    unmount(mnt)?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("mount thread panicked"))??;
    Ok(text?.lines().next().unwrap_or_default().to_owned())
}
