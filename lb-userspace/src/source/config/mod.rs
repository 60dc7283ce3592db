//! The static YAML configuration file.
//!
//! ```yaml
//! interfaces: [eth0]              # optional; list of interface names
//! maglev_seed: 0                  # optional, 0..=4294967295; the agent's
//!                                 # --maglev-seed overrides it
//! services:
//!   - name: dns                   # unique, [a-z0-9-], at most 63 chars
//!     vip: 192.0.2.10             # IPv4 or IPv6, unicast (not unspecified,
//!                                 # loopback, broadcast or multicast)
//!     port: 53                    # 1..=65535
//!     protocol: udp               # udp | tcp
//!     source: snat                # snat (default) | preserve
//!     snat_address: 10.0.0.1      # optional, same family as vip; not
//!                                 # with source: preserve
//!     udp_timeout: 30             # optional, seconds, 1..=604800
//!     tcp_timeout: 3600           # optional, seconds, 1..=604800
//!     maglev_table_size: 65537    # optional, one of 251, 509, 1021, 2039,
//!                                 # 4093, 8191, 16381, 32749, 65537, 131071
//!     session_affinity_timeout: 10800 # optional, seconds, 1..=86400: client-IP
//!                                 # session affinity (off when absent)
//!     source_ranges:              # optional CIDRs of the vip's family (host
//!       - 203.0.113.0/24          # bits zero) or addresses; when given, only
//!                                 # these clients reach the service; an empty
//!                                 # list is refused (leave the key out)
//!     backends:                   # optional, may be empty
//!       - 10.1.0.5:5353           # "ip:port" or "[v6addr]:port"; not the
//!                                 # service's own vip:port
//!       - {address: "10.1.0.6:5353", weight: 3}   # weight 0..=65535, default 1
//! ```
//!
//! [`parse`] and [`load`] turn such a file into a [`Config`], or report every
//! problem found as a [`ConfigErrors`], each with file, line and field path.
use std::{fmt, path::Path};

use thiserror::Error;

use crate::state::model::DesiredState;

mod addresses;
mod validate;
mod walk;
mod yaml;

#[cfg(test)]
mod tests;

/// A loaded and validated configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Interfaces to attach to, in file order (empty when not given).
    pub interfaces: Vec<String>,
    /// The services to serve.
    pub state: DesiredState,
    /// Seed of the flow hash and the lookup tables (`maglev_seed`), when given.
    pub maglev_seed: Option<u32>,
}

/// One validation or parse error.
///
/// Displays as `FILE:LINE: FIELD: MESSAGE`, for example
/// `xlb.yaml:7: services[0].port: 70000 is outside 1..=65535`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    /// The file name as given to [`parse`] or [`load`].
    pub file: String,
    /// 1-based line of the offending value (0 when the file could not be read).
    pub line: usize,
    /// Path of the offending field, e.g. `services[2].backends[1].weight`;
    /// `yaml` for syntax errors, `file` for problems with the file as a whole.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// All errors of one file. Displays one error per line, in line order.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&ConfigError> = self.0.iter().collect();
        sorted.sort_by_key(|e| e.line);
        for (i, e) in sorted.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Largest configuration file accepted, in bytes: room for every service and
/// backend the maps can hold, and a bound on what one file can cost to read.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The error for a file larger than [`MAX_FILE_BYTES`].
fn too_large(file_name: &str) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file_name.to_owned(),
        line: 0,
        field: "file".to_owned(),
        message: format!(
            "the file is larger than {} MiB, more than the maps can hold; split it or shorten it",
            MAX_FILE_BYTES >> 20
        ),
    }])
}

/// Parses and validates the configuration in `text`; `file_name` is only
/// used in error messages. Returns every error found, sorted by line.
///
/// The YAML reading is bounded (file size, alias expansion, nesting depth;
/// see the `yaml` module), so a hostile file is refused quickly and cheaply.
pub fn parse(file_name: &str, text: &str) -> Result<Config, ConfigErrors> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(file_name));
    }
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: file_name.to_owned(),
                line: e.line,
                field: "yaml".to_owned(),
                message: e.message,
            }]))
        }
    };
    validate::config(file_name, root.as_ref()).map_err(|mut errors| {
        errors.sort_by_key(|e| e.line);
        ConfigErrors(errors)
    })
}

/// Reads the file at `path` and [`parse`]s it. Messages name the path as
/// given; an unreadable or too large file is one error with line 0 and field
/// `file`. At most [`MAX_FILE_BYTES`] + 1 bytes are read.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    use std::io::Read as _;
    let file_name = path.display().to_string();
    let read = std::fs::File::open(path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > MAX_FILE_BYTES {
            return Ok(None);
        }
        String::from_utf8(bytes).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    });
    match read {
        Ok(None) => Err(too_large(&file_name)),
        Ok(Some(text)) => parse(&file_name, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: file_name,
            line: 0,
            field: "file".to_owned(),
            message: format!("cannot read the configuration file: {e}"),
        }])),
    }
}
