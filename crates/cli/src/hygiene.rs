//! Process hygiene for every command that holds a key: no core dumps, not
//! dumpable (no ptrace by the same user, /proc/PID/mem closed).

use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};

pub fn harden() -> anyhow::Result<()> {
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot disable core dumps: {e}"))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| anyhow::anyhow!("cannot mark the process non-dumpable: {e}"))?;
    Ok(())
}

/// Keeps the mount process's memory (and so its keys) out of swap. Only as
/// root: a normal user's RLIMIT_MEMLOCK is small, and with MCL_FUTURE any
/// allocation past it would fail.
pub fn lock_memory() {
    use rustix::mm::{MlockAllFlags, mlockall};
    if !rustix::process::geteuid().is_root() {
        tracing::info!("not root: key memory is not locked against swapping (use encrypted swap)");
        return;
    }
    if let Err(e) =
        mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
    {
        tracing::warn!("cannot lock memory against swapping: {e}");
    }
}
