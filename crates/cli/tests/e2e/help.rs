//! Every command's help, version and usage errors, as the `atrest` binary
//! prints them, against the copies in testdata/cli-help/ (one file a
//! command, every visible command reached from `atrest -h`).
//!
//! The binary builds the arguments of only the command given
//! (`#[command(defer = true)]`, crates/cli/src/cli.rs); the copies were
//! first made by the build that built the whole tree on every start, so
//! this is what shows that the lazily built commands print what the whole
//! tree printed. A deliberate change to a help text or an error:
//! `ATREST_BLESS_HELP=1 cargo test -p atrest --test e2e help::` rewrites
//! the copies; review their diff like code. Needs neither root nor FUSE.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::atrest;

/// Hidden commands (not listed by their parent) that are checked too.
const HIDDEN: &[&[&str]] = &[&["generate-files"]];

fn copies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cli-help")
}

/// Runs `atrest ARGS` with an empty environment (`[env: ...]` in a help
/// shows the variable's value, COLUMNS its width) and appends to `record`
/// the command line, exit status, stdout and stderr, the version written
/// as VERSION. Returns stdout.
fn run(args: &[&str], record: &mut String) -> String {
    let output = atrest()
        .args(args)
        .env_clear()
        .output()
        .expect("run atrest");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    let version = env!("CARGO_PKG_VERSION");
    let status = output
        .status
        .code()
        .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
    writeln!(record, "$ atrest {}", args.join(" ")).expect("write to a String");
    writeln!(record, "exit {status}").expect("write to a String");
    writeln!(record, "--- stdout").expect("write to a String");
    record.push_str(&stdout.replace(version, "VERSION"));
    writeln!(record, "--- stderr").expect("write to a String");
    record.push_str(&stderr.replace(version, "VERSION"));
    record.push('\n');
    stdout
}

/// The subcommands a help text lists under "Commands:" (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        // A description's continuation lines are indented further.
        .filter(|line| line.starts_with("  ") && !line[2..].starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// What the copy of command `path` holds, and the subcommands it lists.
/// Only help, version and usage errors are asked for: nothing runs.
fn transcript(path: &[String]) -> (String, Vec<String>) {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = path.clone();
        args.extend_from_slice(extra);
        args
    };
    let mut record = String::new();
    let short = run(&with(&["-h"]), &mut record);
    run(&with(&["--help"]), &mut record);
    let mut help = vec!["help"];
    help.extend_from_slice(&path);
    run(&help, &mut record);
    run(&with(&["--version"]), &mut record);
    run(&with(&["--no-such-option"]), &mut record);
    let subcommands = subcommands(&short);
    if !subcommands.is_empty() {
        // A command with subcommands never runs by itself: these print
        // its help, a usage error, and a suggestion.
        run(&path, &mut record);
        run(&with(&["no-such-command"]), &mut record);
        let typo = format!("{}x", subcommands[0]);
        assert!(!subcommands.contains(&typo), "{typo} is a command");
        let mut args = path.clone();
        args.push(&typo);
        run(&args, &mut record);
    }
    (record, subcommands)
}

#[test]
fn every_commands_help_and_usage_errors_are_as_recorded() {
    let bless = std::env::var_os("ATREST_BLESS_HELP").is_some();
    let dir = copies();
    if bless {
        fs::create_dir_all(&dir).expect("create testdata/cli-help");
    }
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    pending.extend(
        HIDDEN
            .iter()
            .map(|path| path.iter().map(|s| s.to_string()).collect()),
    );
    let mut seen = BTreeSet::new();
    let mut differ = Vec::new();
    while let Some(path) = pending.pop() {
        let (record, subcommands) = transcript(&path);
        for sub in subcommands {
            let mut longer = path.clone();
            longer.push(sub);
            pending.push(longer);
        }
        let name = std::iter::once("atrest")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-")
            + ".txt";
        let file = dir.join(&name);
        if bless {
            fs::write(&file, &record).expect("write a copy");
        } else {
            match fs::read_to_string(&file) {
                Ok(copy) if copy == record => {}
                Ok(copy) => {
                    let line = copy
                        .lines()
                        .zip(record.lines())
                        .position(|(a, b)| a != b)
                        .unwrap_or_else(|| copy.lines().count().min(record.lines().count()));
                    differ.push(format!(
                        "{name}, line {}: recorded {:?}, now {:?}",
                        line + 1,
                        copy.lines().nth(line).unwrap_or("(end)"),
                        record.lines().nth(line).unwrap_or("(end)")
                    ));
                }
                Err(e) => differ.push(format!("{name}: no copy ({e})")),
            }
        }
        seen.insert(name);
    }
    assert!(seen.len() > 50, "only {} commands found", seen.len());
    let recorded: BTreeSet<String> = fs::read_dir(&dir)
        .expect("read testdata/cli-help")
        .map(|entry| {
            entry
                .expect("an entry of testdata/cli-help")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".txt"))
        .collect();
    for gone in recorded.difference(&seen) {
        if bless {
            fs::remove_file(dir.join(gone)).expect("remove a copy of a removed command");
        } else {
            differ.push(format!("{gone}: a copy of a command that no longer exists"));
        }
    }
    assert!(
        differ.is_empty(),
        "help or usage errors differ from testdata/cli-help/ (if the change is \
         meant, rerun with ATREST_BLESS_HELP=1 and review the diff):\n{}",
        differ.join("\n")
    );
}
