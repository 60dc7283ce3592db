//! `--json FILE` and `--markdown FILE`: where a benchmark program also
//! writes its results (`cargo xtask bench` passes both, under
//! `target/bench/`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// The result files asked for on the command line (flatten into the
/// program's options).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ResultFiles {
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the summary (Markdown) to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

impl ResultFiles {
    /// Writes `value` as pretty-printed JSON, when asked for.
    pub fn write_json(&self, value: &impl serde::Serialize) -> Result<()> {
        match &self.json {
            Some(path) => write(path, serde_json::to_string_pretty(value)?),
            None => Ok(()),
        }
    }

    /// Writes the Markdown summary `text()` makes, when asked for (only
    /// then is it made).
    pub fn write_markdown(&self, text: impl FnOnce() -> String) -> Result<()> {
        match &self.markdown {
            Some(path) => write(path, text()),
            None => Ok(()),
        }
    }
}

fn write(path: &std::path::Path, text: String) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
