//! Map keys, values and constants shared by the XDP data path (`lb-ebpf`)
//! and the userspace agent/CLI (`lb-userspace`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that both sides
//! agree on the byte layout. Addresses are always 16 bytes: IPv4 addresses are
//! stored IPv4-mapped (`::ffff:a.b.c.d`). Ports are stored in network byte
//! order, exactly as they appear on the wire.

#![warn(missing_docs)]
#![no_std]

pub mod aligned;
pub mod csum;
pub mod frag;
pub mod hash;
pub mod maps;
pub mod prefilter;
pub mod settings;
pub mod stats;
pub mod status;
pub mod trace;

pub use aligned::AlignedAddr;
pub use maps::*;
pub use stats::Stat;
