//! xlb: an XDP load balancer for UDP and TCP. This library holds the agent,
//! the CLI and the map writer; `main.rs` is a thin clap front end.

#![warn(missing_docs)]

pub mod agent;
pub mod attach;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod desired;
pub mod follow;
pub mod iface;
pub mod k8s;
pub mod maglev;
pub mod maps;
pub mod metrics;
#[expect(missing_docs, reason = "being restructured (issue 11 items 1-2); documented there")]
pub mod model;
pub mod netwatch;
pub mod pins;
pub mod reader;
pub mod routegen;
pub mod rtnetlink;
pub mod status;
pub mod view;
#[expect(missing_docs, reason = "being restructured (issue 11 items 1-2); documented there")]
pub mod writer;

/// The eBPF object built from `lb-ebpf` by `build.rs`, embedded so the
/// binary is all a node needs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Benchmark-only programs (minimal forwarder, sink, generator); see
/// `lb-ebpf/src/bin/xlb-bench.rs`.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-bench"));
