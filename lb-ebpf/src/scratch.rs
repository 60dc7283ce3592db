//! Per-CPU scratch space for everything too large for the 512-byte BPF
//! stack: the parsed packet and the values being built for the maps.
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray},
};
use lb_common::{Affinity, AffinityKey, Flow, FlowKey, RangeKey, Reverse};

use crate::{nat::Rewrite, packet::Packet};

/// The parameter block of `bpf_fib_lookup` (`forward::lookup`, `nexthop`).
pub use aya_ebpf::bindings::bpf_fib_lookup as FibParams;

/// An ICMP error's translation (`icmp`): the quoted packet's new tuple and
/// the outer packet's new addresses. The addresses come first, each at a
/// multiple of 8 (`words` reads them as `u64` words; asserted below).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct IcmpRewrite {
    pub inner_src: [u8; 16],
    pub inner_dst: [u8; 16],
    pub outer_src: [u8; 16],
    pub outer_dst: [u8; 16],
    pub inner_sport: u16,
    pub inner_dport: u16,
}

lb_common::aligned_addrs!(IcmpRewrite {
    inner_src: inner_src_aligned, inner_src_aligned_mut;
    inner_dst: inner_dst_aligned, inner_dst_aligned_mut;
    outer_src: outer_src_aligned, outer_src_aligned_mut;
    outer_dst: outer_dst_aligned, outer_dst_aligned_mut;
});

/// One packet's working state.
pub struct Scratch {
    pub pkt: Packet,
    pub rw: Rewrite,
    pub flow: Flow,
    /// The packet's flow as this CPU's hot-flow cache holds it (`flowcache`).
    pub cached: Flow,
    pub rev: Reverse,
    pub rkey: FlowKey,
    pub fib: FibParams,
    pub icmp: IcmpRewrite,
    /// Session-affinity key and value being looked up / written.
    pub akey: AffinityKey,
    pub aff: Affinity,
    /// Source-range lookup key.
    pub range: Key<RangeKey>,
    /// Backend chosen for the packet.
    pub backend_id: u32,
    /// SNAT port of the flow (network byte order).
    pub snat_port: u16,
    /// The data path's clock, read once per packet (`clock::now`).
    pub now: u64,
    /// The packet's flow entry is this CPU's cached copy (`flowcache`),
    /// not the connection table's own.
    pub from_cache: bool,
    /// The flow epoch (`flowcache::epoch`), read before the flow's entry.
    pub epoch: u64,
}

#[map(name = "XLB_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch area.
#[inline(always)]
pub fn get() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU slot; XDP runs with preemption disabled, so nothing
    // else on this CPU touches it during the program run.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
