//! `cargo xtask man`: builds `xlb` and writes its man pages (clap_mangen,
//! through the hidden `xlb man-pages DIR`) to `target/man/`: `xlb.1` and
//! one page per subcommand (`xlb-services.1`, ...). Read one with
//! `man -l target/man/xlb.1`, or install them under `man1/` of a MANPATH.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{build_release, info, output, target_dir};

/// Builds xlb (after setup) and writes the man pages.
pub fn man() -> Result<()> {
    crate::setup::setup()?;
    let bin = build_release()?;
    let dir = target_dir().join("man");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let listed = output(Command::new(&bin).arg("man-pages").arg(&dir))?;
    let pages: Vec<&str> = listed.lines().collect();
    if !pages.iter().any(|p| p.ends_with("/xlb.1")) {
        bail!("`xlb man-pages` wrote no xlb.1 into {}: {listed}", dir.display());
    }
    for p in &pages {
        info(p);
    }
    info(&format!("{} man page(s); read one with `man -l {}/xlb.1`", pages.len(), dir.display()));
    Ok(())
}
