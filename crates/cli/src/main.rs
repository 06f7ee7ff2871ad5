//! `atrest`: the command line. Parses, runs one command, maps the outcome
//! to an exit code. All the work is in the library crates.

mod cli;
mod commands;
mod doctor;
mod hygiene;
mod secrets;

use std::process::ExitCode;

/// Exit code when `fsck` found problems (as e2fsck: errors left uncorrected).
pub const EXIT_CORRUPT: u8 = 4;

/// Exit code when a key authority refused an unlock for good (denied,
/// revoked, shredded); other failures (unreachable, timed out) exit 1.
pub const EXIT_REFUSED: u8 = 5;

/// Exit code when this host caught an authority's audit log rolled back or
/// forked, now or before (`atrest alarm list`): nothing is unlocked through
/// it until an operator acknowledges the alarm; retrying cannot help.
pub const EXIT_AUDIT_ALARM: u8 = 6;

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATREST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
        // Whatever ATREST_LOG says: fuser's own request logging (debug and
        // info) prints plaintext file names, symlink targets and xattr names.
        .add_directive("fuser=error".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atrest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
