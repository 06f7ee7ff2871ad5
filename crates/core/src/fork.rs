//! The fork generation: a counter that every `fork(2)` child sees one
//! higher than its parent did, so that per-thread state a child must
//! never reuse (the nonce pool of [`crate::fill_nonce`]) is told apart
//! with one atomic load instead of a `getpid` system call per use.
//! Decision 0019 (docs/decisions/0019-nonce-fork-check.md) says why.
//!
//! A handler registered with `pthread_atfork` runs in every child glibc's
//! (or musl's) `fork` makes, in the forking thread, before `fork` returns
//! there; it bumps the counter. Children made otherwise run no handler:
//! `vfork` and `posix_spawn` children only `exec` (no atrest code runs in
//! them), and a raw `clone` system call without `CLONE_VM` is not made
//! anywhere in atrest or its dependencies.
//!
//! This module and `atrest-fscrypt`'s `sys.rs` are the workspace's only
//! `unsafe` code (allowed on its `mod` line in `lib.rs`).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTERED: Once = Once::new();

/// Runs in the child of every `fork`: async-signal-safe (one atomic add).
extern "C" fn forked() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The fork generation of this process: 0 in a process that was not
/// forked since the first call, one more in each fork child. The first
/// call registers the handler; a process forked before it has no state
/// to tell apart yet.
pub(crate) fn generation() -> u64 {
    REGISTERED.call_once(|| {
        // SAFETY: `forked` is a plain `extern "C" fn()` that lives as long
        // as the program (it is in this binary, never unloaded) and does
        // only what the child of a multithreaded fork may do: an atomic
        // add, no lock, no allocation. Registering takes no pointer to
        // Rust data.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forked)) };
        // ENOMEM is the only failure: without the handler no seal may run.
        assert_eq!(
            rc, 0,
            "pthread_atfork failed: the nonce pool cannot detect a fork"
        );
    });
    GENERATION.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// Set in the re-executed test binary: run the fork there, where no
    /// other test thread may hold a lock the child would need.
    const CHILD_RUN: &str = "ATREST_FORK_TEST_RUN";

    /// A forked child draws other nonces than its parent, although it
    /// inherits the parent's thread with its pool of unused nonce bytes:
    /// without the fork generation both would hand out the same next
    /// bytes (and the parent's generation stays as it was).
    #[test]
    fn a_forked_child_never_reuses_the_parents_nonce_pool() {
        if std::env::var_os(CHILD_RUN).is_none() {
            let exe = std::env::current_exe().expect("the test binary");
            let out = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "fork::tests::a_forked_child_never_reuses_the_parents_nonce_pool",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD_RUN, "1")
                .output()
                .expect("re-executing the test binary");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "the forking run failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "the test did not run: {stdout}"
            );
            return;
        }
        let mut first = [0u8; 24];
        crate::fill_nonce(&mut first);
        let before = super::generation();
        let mut fds = [0; 2];
        // SAFETY: `fds` is two writable ints, as pipe(2) needs.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: this process runs one test thread (`--test-threads=1`)
        // and the harness's idle main thread, so no lock the child takes
        // (the nonce pool is thread-local; aws-lc's RNG) is held by
        // another thread at the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut nonce = [0u8; 24];
            crate::fill_nonce(&mut nonce);
            let ok = super::generation() == before + 1;
            // SAFETY: writes 24 bytes from a live buffer to the pipe's
            // write end, then ends the child without running the test
            // harness's exit path.
            let written = unsafe { libc::write(fds[1], nonce.as_ptr().cast(), nonce.len()) };
            // SAFETY: `_exit` never returns and touches no Rust state.
            unsafe { libc::_exit(if written == 24 && ok { 0 } else { 1 }) }
        }
        let mut parent_next = [0u8; 24];
        crate::fill_nonce(&mut parent_next);
        // SAFETY: the write end is ours and closed once; the read end is
        // handed to a `File` that owns it from here on.
        assert_eq!(unsafe { libc::close(fds[1]) }, 0);
        // SAFETY: as above: `fds[0]` is an open descriptor nothing else owns.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut child = Vec::new();
        pipe.read_to_end(&mut child)
            .expect("reading the child's nonce");
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a writable int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw the wrong fork generation or could not report"
        );
        assert_eq!(child.len(), 24);
        assert_ne!(
            child, parent_next,
            "the child drew the parent's next nonce from the inherited pool"
        );
        assert_ne!(child, first);
        assert_eq!(super::generation(), before, "the parent was not forked");
    }
}
