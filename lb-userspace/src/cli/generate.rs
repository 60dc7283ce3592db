//! What is generated from the command line itself: shell completions
//! (`xlb completions SHELL`) and man pages (`xlb man-pages DIR`, hidden;
//! `cargo xtask man` writes them to `target/man/`).
use std::{io::Write, path::Path};

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use super::args::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "xlb", out);
}

/// Writes `xlb.1` and one page per visible subcommand (`xlb-services.1`,
/// ...) into `dir`, creating it; returns the files written, sorted.
pub fn man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "1")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("xlb"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            for sub in ["agent", "services", "backends", "flows", "stats", "maglev", "status", "completions"] {
                assert!(text.contains(sub), "{shell}: {sub} missing");
            }
        }
    }
}
