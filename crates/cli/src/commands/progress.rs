//! Progress bars for long commands (`atrest backup run`, `restore` and
//! `atrest migrate`):
//! files and bytes done, throughput and time left, redrawn five times a
//! second on standard error. Nothing is drawn when standard error is not a
//! terminal (systemd, cron, pipes) or the command prints JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use atrest_backup::{Patterns, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much there is to do; `known` once counted.
#[derive(Default)]
pub struct Total {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub known: AtomicBool,
}

impl Total {
    pub fn fixed(files: u64, bytes: u64) -> Arc<Self> {
        let t = Self::default();
        t.files.store(files, Ordering::Relaxed);
        t.bytes.store(bytes, Ordering::Relaxed);
        t.known.store(true, Ordering::Relaxed);
        Arc::new(t)
    }

    /// Counts the regular files and bytes below `paths` in a thread of its
    /// own (leaving out what `excludes` matches), as the run starts.
    pub fn scan(paths: Vec<PathBuf>, excludes: Patterns, one_file_system: bool) -> Arc<Self> {
        use std::os::unix::fs::MetadataExt;
        let total = Arc::new(Self::default());
        let t = Arc::clone(&total);
        std::thread::spawn(move || {
            for root in paths {
                let Ok(md) = std::fs::symlink_metadata(&root) else {
                    continue;
                };
                let dev = md.dev();
                let mut stack = vec![(root, md)];
                while let Some((path, md)) = stack.pop() {
                    if md.is_file() {
                        t.files.fetch_add(1, Ordering::Relaxed);
                        t.bytes.fetch_add(md.len(), Ordering::Relaxed);
                    } else if md.is_dir() && !(one_file_system && md.dev() != dev) {
                        let Ok(entries) = std::fs::read_dir(&path) else {
                            continue;
                        };
                        for e in entries.flatten() {
                            let child = e.path();
                            if excludes.matches(&child) {
                                continue;
                            }
                            if let Ok(md) = std::fs::symlink_metadata(&child) {
                                stack.push((child, md));
                            }
                        }
                    }
                }
            }
            t.known.store(true, Ordering::Relaxed);
        });
        total
    }
}

/// A bar being drawn; cleared when dropped.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a bar for `done` against `total`, or nothing when `quiet` or
/// standard error is not a terminal.
pub fn start(
    what: &'static str,
    done: Arc<Progress>,
    total: Arc<Total>,
    quiet: bool,
) -> Option<Bar> {
    start_with(what, quiet, move || Counts {
        files: total.files.load(Ordering::Relaxed),
        bytes: total.bytes.load(Ordering::Relaxed),
        known: total.known.load(Ordering::Relaxed),
        files_done: done.files.load(Ordering::Relaxed),
        bytes_done: done.bytes.load(Ordering::Relaxed),
    })
}

/// What a bar shows, read at every frame.
pub struct Counts {
    pub files: u64,
    pub bytes: u64,
    /// The totals are final (else still being counted).
    pub known: bool,
    pub files_done: u64,
    pub bytes_done: u64,
}

/// [`start`] for any command: `read` gives the counts of each frame.
pub fn start_with(
    what: &'static str,
    quiet: bool,
    read: impl Fn() -> Counts + Send + 'static,
) -> Option<Bar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what);
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        loop {
            // Read the flag first: the frame drawn after it is set shows the
            // final counts (a short run may end before a second frame).
            let last = s.load(Ordering::Relaxed);
            let Counts {
                files,
                bytes,
                known,
                files_done,
                bytes_done,
            } = read();
            bar.set_length(bytes.max(bytes_done));
            bar.set_position(bytes_done);
            let eta = bar.eta().as_secs();
            let message = if known {
                format!(
                    "{files_done}/{files} files, {}:{:02} left",
                    eta / 60,
                    eta % 60
                )
            } else {
                format!("{files_done}/{files}+ files (counting)")
            };
            if last {
                // `finish_with_message` draws whatever the rate limit says.
                bar.finish_with_message(message);
                break;
            }
            bar.set_message(message);
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
    });
    Some(Bar {
        stop,
        thread: Some(thread),
    })
}
