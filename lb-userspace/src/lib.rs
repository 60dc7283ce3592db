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

// The flat paths of the modules before they were grouped, kept so that
// `crate::writer`, `xlb::k8s`, ... still name them.
pub use bpf::{attach, datapath, maps, pins, view};
pub use host::{follow, iface, netwatch, routegen, rtnetlink};
pub use source::{config, k8s};
pub use state::{desired, maglev, model, reader, writer};

/// The eBPF object built from `lb-ebpf` by `build.rs`, embedded so the
/// binary is all a node needs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Benchmark-only programs (minimal forwarder, sink, generator); see
/// `lb-ebpf/src/bin/xlb-bench.rs`.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-bench"));
