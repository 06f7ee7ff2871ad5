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
