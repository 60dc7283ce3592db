//! xlb: an XDP load balancer for UDP and TCP. This library holds the agent,
//! the CLI and the map writer; `main.rs` is a thin clap front end.

#![warn(missing_docs)]

pub mod agent;
pub mod announce;
pub mod bpf;
pub mod cli;
pub mod host;
pub mod metrics;
pub mod source;
pub mod state;
pub mod status;

/// `xlb --version`: the package version and the git commit it was built
/// from (`build.rs`; "unknown" outside a git checkout, or the value of
/// `XLB_GIT_COMMIT` at build time when set, as image builds without `.git` may).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("XLB_GIT_COMMIT"), ")");

/// The eBPF object built from `lb-ebpf` by `build.rs`, embedded so the
/// binary is all a node needs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
