//! `atrest generate-files DIR` (hidden): man pages and shell completions
//! from the clap definitions, for packaging.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let man = dir.join("man/man1");
    let completions = dir.join("completions");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    let mut pages = 0;
    write_pages(&cmd, "atrest", &man, &mut pages)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "atrest", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    println!(
        "{pages} man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `name`.1 for `cmd`, then `name-SUB`.1 for each visible subcommand.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    man: &Path,
    pages: &mut usize,
) -> anyhow::Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    let path = man.join(format!("{name}.1"));
    fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    *pages += 1;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), man, pages)?;
    }
    Ok(())
}
