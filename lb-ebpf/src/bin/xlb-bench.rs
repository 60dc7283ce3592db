//! Programs for the benchmarks only (`cargo xtask bench`), never attached by
//! the agent:
//! - `min_fwd`: the minimal forwarder, the ceiling of this machine: fixed
//!   rewrite of IPv4/UDP to one of two backends (by source-port parity) and
//!   XDP_REDIRECT, nothing else;
//! - `sink`: counts what reaches a backend and drops it;
//! - `tc_fwd`, `tc_sink`: the same at tc ingress, for the skb path (a pod
//!   veth whose peer runs no XDP): `tc_fwd` rewrites like `min_fwd` and
//!   sends with `bpf_redirect_neigh` or `bpf_redirect_peer` (`BENCH_TC`'s
//!   mode); `tc_sink` counts and drops;
//! - `gen`: a traffic generator, run with BPF_PROG_RUN in live-frame mode:
//!   gives every frame a new source port and sends it (XDP_TX);
//! - `gen_full`: the forwarding bench's generator: writes the whole header
//!   of every frame from `BENCH_GEN`, then a random source port (XDP_TX).
//! - `harness`, `harness_nop`, `stage_*`: the per-packet bench's
//!   frame-restoring harness, its baseline and one-operation programs (see
//!   the end of this file).
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: they live in the
// per-CPU scratch or the caller's frame, and by-value arguments would copy
// them again onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args, reason = "keeps map keys off the BPF stack")]

#[path = "../runtime.rs"]
mod runtime;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect_neigh, bpf_redirect_peer},
    macros::{classifier, map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};

/// Configuration of `min_fwd` (one entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FwdConf {
    /// Backend IPv4 addresses (network order bytes).
    pub backend: [[u8; 4]; 2],
    /// Next-hop MAC of each backend.
    pub dmac: [[u8; 6]; 2],
    /// Our MAC on each backend's interface.
    pub smac: [[u8; 6]; 2],
}

#[map(name = "BENCH_FWD")]
static FWD: Array<FwdConf> = Array::with_max_entries(1, 0);

/// Slot 0 and 1: egress interface of backend 0 and 1.
#[map(name = "BENCH_PORTS")]
static PORTS: DevMap = DevMap::with_max_entries(2, 0);

/// Packets seen (sink), or sent (gen).
#[map(name = "BENCH_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;

#[inline(always)]
fn at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    if ctx.data() + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((ctx.data() + off) as *mut T)
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Rewrites the IPv4 destination of an Ethernet + IPv4 + UDP header to
/// `new`, with an incremental IPv4 header checksum; UDP checksum none
/// (allowed for IPv4).
#[inline(always)]
fn set_dst(h: &mut [u8; ETH_LEN + IP_LEN + 8], new: [u8; 4]) {
    let mut acc = u32::from(!u16::from_ne_bytes([h[24], h[25]]));
    acc += u32::from(!u16::from_ne_bytes([h[30], h[31]])) + u32::from(!u16::from_ne_bytes([h[32], h[33]]));
    acc += u32::from(u16::from_ne_bytes([new[0], new[1]])) + u32::from(u16::from_ne_bytes([new[2], new[3]]));
    let c = (!fold(acc)).to_ne_bytes();
    h[24] = c[0];
    h[25] = c[1];
    h[30..34].copy_from_slice(&new);
    h[40] = 0;
    h[41] = 0;
}

/// The minimal forwarder.
#[xdp]
pub fn min_fwd(ctx: XdpContext) -> u32 {
    try_fwd(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_fwd(ctx: &XdpContext) -> Option<u32> {
    let hdr = at::<[u8; ETH_LEN + IP_LEN + 8]>(ctx, 0)?;
    // SAFETY: bounds checked by `at`.
    let h = unsafe { &mut *hdr };
    if h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 || h[23] != 17 {
        return Some(xdp_action::XDP_PASS);
    }
    let conf = FWD.get(0)?;
    let i = (h[ETH_LEN + IP_LEN + 1] & 1) as usize;
    set_dst(h, conf.backend[i & 1]);
    h[0..6].copy_from_slice(&conf.dmac[i & 1]);
    h[6..12].copy_from_slice(&conf.smac[i & 1]);
    Some(PORTS.redirect(i as u32, 0).unwrap_or(xdp_action::XDP_ABORTED))
}

#[inline(always)]
fn count() {
    if let Some(c) = COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Backend side: count and drop.
#[xdp]
pub fn sink(_ctx: XdpContext) -> u32 {
    count();
    xdp_action::XDP_DROP
}

/// Configuration of `tc_fwd` (one entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcConf {
    /// [`TC_NEIGH`] or [`TC_PEER`].
    pub mode: u32,
    /// Egress interface of backend 0 and 1 (the host end of its veth).
    pub ifindex: [u32; 2],
    /// Backend IPv4 addresses (network order bytes).
    pub backend: [[u8; 4]; 2],
    /// Backend MAC (the veth peer's) and ours, for `bpf_redirect_peer`,
    /// which does no neighbour lookup.
    pub dmac: [[u8; 6]; 2],
    pub smac: [[u8; 6]; 2],
}

/// `tc_fwd` sends with `bpf_redirect_neigh` (route and neighbour lookup,
/// then the egress device's transmit path: xlb's skb fallback today).
pub const TC_NEIGH: u32 = 0;
/// `tc_fwd` sends with `bpf_redirect_peer` (straight into the peer's
/// ingress in its namespace: no transmit path, no backlog).
pub const TC_PEER: u32 = 1;

#[map(name = "BENCH_TC")]
static TC: Array<TcConf> = Array::with_max_entries(1, 0);

/// The minimal tc forwarder (see the module docs).
#[classifier]
pub fn tc_fwd(ctx: TcContext) -> i32 {
    try_tc_fwd(&ctx).unwrap_or(TC_ACT_OK)
}

#[inline(always)]
fn try_tc_fwd(ctx: &TcContext) -> Option<i32> {
    if ctx.data() + ETH_LEN + IP_LEN + 8 > ctx.data_end() {
        return Some(TC_ACT_OK);
    }
    // SAFETY: bounds checked just above.
    let h = unsafe { &mut *(ctx.data() as *mut [u8; ETH_LEN + IP_LEN + 8]) };
    if h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 || h[23] != 17 {
        return Some(TC_ACT_OK);
    }
    let conf = TC.get(0)?;
    let i = (h[ETH_LEN + IP_LEN + 1] & 1) as usize & 1;
    set_dst(h, conf.backend[i]);
    let rc = if conf.mode == TC_PEER {
        h[0..6].copy_from_slice(&conf.dmac[i]);
        h[6..12].copy_from_slice(&conf.smac[i]);
        // SAFETY: helper call with plain arguments.
        unsafe { bpf_redirect_peer(conf.ifindex[i], 0) }
    } else {
        // SAFETY: helper call; a NULL neighbour block means "resolve via FIB".
        unsafe { bpf_redirect_neigh(conf.ifindex[i], core::ptr::null_mut(), 0, 0) }
    };
    Some(rc as i32)
}

/// Backend side at tc ingress: count and drop.
#[classifier]
pub fn tc_sink(_ctx: TcContext) -> i32 {
    count();
    TC_ACT_SHOT
}

/// Generator: a new UDP source port per frame (from the per-CPU count), then
/// XDP_TX. Frames must be IPv4/UDP without options and with checksum 0.
#[xdp]
pub fn gen(ctx: XdpContext) -> u32 {
    let Some(p) = at::<[u8; 2]>(&ctx, ETH_LEN + IP_LEN) else { return xdp_action::XDP_ABORTED };
    let n = COUNT.get_ptr_mut(0).map_or(0, |c| {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            *c += 1;
            *c
        }
    });
    let port = (1024 + (n % 60000) as u16).to_be_bytes();
    // SAFETY: bounds checked by `at`.
    unsafe { *p = port };
    xdp_action::XDP_TX
}

/// Bytes of the Ethernet, IPv4 (no options) and UDP headers `gen_full` writes.
pub const GEN_HEADER_LEN: usize = ETH_LEN + IP_LEN + 8;

/// Configuration of `gen_full` (one entry of `BENCH_GEN`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConf {
    /// The frame's header: its first [`GEN_HEADER_LEN`] bytes, as the frame
    /// holds them, in 4-byte words (the last word's final two bytes unused).
    pub header: [u32; 11],
    /// Source ports are `1024 + (random & port_mask)`: the number of ports
    /// (a power of two) minus one.
    pub port_mask: u32,
    /// Non-zero: churn instead of random ports. Flow `n / flow_packets` of
    /// this CPU's frame sequence `n` gets source port `1024 + id % 64512`
    /// and source address last byte `2 + id / 64512 % 252` (the IPv4
    /// checksum adjusted): every tuple of the pool of 16 M in turn, each for
    /// `flow_packets` consecutive frames.
    pub flow_packets: u32,
}

/// Frames `gen_full` sent on this CPU (its churn sequence).
#[map(name = "BENCH_GEN_SEQ")]
static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Source ports of the churn pool (1024..=65535).
const CHURN_PORTS: u64 = 64512;
/// Source address last bytes of the churn pool (2..=253).
const CHURN_HOSTS: u64 = 252;

#[map(name = "BENCH_GEN")]
static GEN: Array<GenConf> = Array::with_max_entries(1, 0);

/// The forwarding bench's generator: writes the whole header of every
/// frame (the frame it was configured for) and a random UDP source port,
/// then XDP_TX. In live-frame mode the kernel resets only the data pointers
/// of a page recycled within one BPF_PROG_RUN call, not its bytes, so a
/// frame a forwarder rewrote in place (zero-copy on veth) comes back
/// rewritten: `gen`, which only sets the port, would resend it addressed to
/// a backend. XDP_ABORTED without a configuration or a shorter frame.
#[xdp]
pub fn gen_full(ctx: XdpContext) -> u32 {
    try_gen_full(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_gen_full(ctx: &XdpContext) -> Option<u32> {
    let conf = GEN.get(0)?;
    let h = at::<[u32; GEN_HEADER_LEN / 4]>(ctx, 0)?;
    let tail = at::<u16>(ctx, GEN_HEADER_LEN - 2)?;
    // SAFETY: bounds checked by `at`. Frames start at the 8-byte aligned
    // data offset of their page (XDP_PACKET_HEADROOM past the kernel's page
    // head), so 4- and 2-byte stores are aligned.
    unsafe {
        (*h).copy_from_slice(&conf.header[..GEN_HEADER_LEN / 4]);
        let t = conf.header[GEN_HEADER_LEN / 4].to_ne_bytes();
        *tail = u16::from_ne_bytes([t[0], t[1]]);
    }
    let port = at::<u16>(ctx, ETH_LEN + IP_LEN)?;
    if conf.flow_packets != 0 {
        return churn(ctx, conf, port);
    }
    // SAFETY: helper without arguments or side effects on our state.
    let r = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() };
    // SAFETY: bounds checked by `at`; aligned as above.
    unsafe { *port = (1024 + (r & conf.port_mask) as u16).to_be() };
    Some(xdp_action::XDP_TX)
}

/// `gen_full`'s churn: the next tuple of the pool (see `GenConf::flow_packets`).
#[inline(always)]
fn churn(ctx: &XdpContext, conf: &GenConf, port: *mut u16) -> Option<u32> {
    let seq = GEN_SEQ.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let n = unsafe {
        *seq += 1;
        *seq
    };
    let id = n / u64::from(conf.flow_packets);
    let host = (2 + id / CHURN_PORTS % CHURN_HOSTS) as u8;
    // Source address bytes 2..4 (the checksummed word whose low byte changes).
    let word = at::<[u8; 2]>(ctx, ETH_LEN + 14)?;
    let csum = at::<[u8; 2]>(ctx, ETH_LEN + 10)?;
    // SAFETY: bounds checked by `at`; aligned as above.
    unsafe {
        let old = u16::from_be_bytes(*word);
        let new = (old & 0xff00) | u16::from(host);
        let acc = u32::from(!u16::from_be_bytes(*csum)) + u32::from(!old) + u32::from(new);
        *csum = (!fold(acc)).to_be_bytes();
        *word = new.to_be_bytes();
        *port = (1024 + (id % CHURN_PORTS) as u16).to_be();
    }
    Some(xdp_action::XDP_TX)
}

// ---------------------------------------------------------------------------
// Per-packet harness of `cargo xtask bench datapath`
// (lb-userspace/examples/datapath_bench.rs).
// ---------------------------------------------------------------------------

/// The frame-restoring harness. `BPF_PROG_TEST_RUN` with `repeat > 1` (not
/// live) runs the program again and again on the same buffer, so without a
/// restore every iteration after the first would time the packet the
/// previous one already rewrote. `harness` copies the template frame over
/// the packet (and, for new-flow classes, gives it a new source), then
/// tail-calls the program under test in `BENCH_PROGS[0]`: `xlb_xdp` of the
/// data-path object, `min_fwd` above, or `harness_nop` (the baseline, whose
/// cost is subtracted).
mod harness {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::generated::bpf_xdp_store_bytes,
        macros::{map, xdp},
        maps::{Array, PerCpuArray, ProgramArray},
        programs::XdpContext,
    };

    use super::{at, fold};

    /// Bytes of the template buffer; frames are at most 255 bytes.
    pub const TEMPLATE_MAX: usize = 256;

    /// The frame every run starts from (one entry of `BENCH_TEMPLATE`).
    #[repr(C)]
    pub struct Template {
        /// Frame length (1..=255); the test-run input frame has this length.
        pub len: u32,
        /// Non-zero: every run is a new flow. A per-CPU sequence number `n`
        /// goes into the L4 source port (its low 16 bits) and is XORed into
        /// the last two bytes of the source address (its next 16 bits); the
        /// L4 (and IPv4 header) checksums are adjusted to match.
        pub vary: u32,
        /// Offset of the L4 source port.
        pub sport_off: u32,
        /// Offset of the last two bytes of the source address.
        pub saddr_off: u32,
        /// Offset of the L4 checksum; 0: none to adjust.
        pub l4_csum_off: u32,
        /// Offset of the IPv4 header checksum; 0: none (IPv6).
        pub ip_csum_off: u32,
        pub data: [u8; TEMPLATE_MAX],
    }

    #[map(name = "BENCH_TEMPLATE")]
    static TEMPLATE: Array<Template> = Array::with_max_entries(1, 0);

    /// Slot 0: the program under test.
    #[map(name = "BENCH_PROGS")]
    static PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

    /// Sequence number of the new-flow classes.
    #[map(name = "BENCH_SEQ")]
    static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Restores the frame, then runs the program under test. XDP_ABORTED
    /// when the frame could not be restored or the tail call failed.
    #[xdp]
    pub fn harness(ctx: XdpContext) -> u32 {
        if restore(&ctx).is_none() {
            return xdp_action::XDP_ABORTED;
        }
        // SAFETY: tail call into a program of the same type on the same context.
        unsafe { PROGS.tail_call(&ctx, 0) };
        xdp_action::XDP_ABORTED
    }

    /// The baseline's program under test: returns at once.
    #[xdp]
    pub fn harness_nop(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    // Per-stage costs: programs doing one operation of the data path each,
    // tail-called by `harness` like the program under test, so that their
    // net cost is that operation's.

    /// A stage's verdict: XDP_PASS when its operation succeeded, XDP_DROP
    /// otherwise.
    #[inline(always)]
    fn pass_if(ok: bool) -> u32 {
        if ok {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
        }
    }

    /// Parameters of `stage_fib`: a lookup like the data path's (from the
    /// ingress interface, towards a backend).
    #[repr(C)]
    pub struct FibConf {
        /// AF_INET (2) or AF_INET6 (10).
        pub family: u32,
        /// Network byte order words; IPv4 uses word 0.
        pub src: [u32; 4],
        pub dst: [u32; 4],
    }

    #[map(name = "BENCH_FIB")]
    static FIB: Array<FibConf> = Array::with_max_entries(1, 0);

    #[map(name = "BENCH_FIB_PARAMS")]
    static FIB_PARAMS: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

    /// One `bpf_fib_lookup` (its fields set one by one, as a cache-less data
    /// path must). XDP_PASS when it found the neighbour, XDP_DROP otherwise.
    #[xdp]
    pub fn stage_fib(ctx: XdpContext) -> u32 {
        let (Some(c), Some(p)) = (FIB.get(0), FIB_PARAMS.get_ptr_mut(0)) else { return xdp_action::XDP_ABORTED };
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        let p = unsafe { &mut *p };
        p.family = c.family as u8;
        p.l4_protocol = 17;
        p.sport = 0x3412;
        p.dport = 0x3500;
        p.__bindgen_anon_1.tot_len = 46;
        p.ifindex = ctx.ingress_ifindex() as u32;
        p.__bindgen_anon_2.flowinfo = 0;
        p.__bindgen_anon_3.ipv6_src = c.src;
        p.__bindgen_anon_4.ipv6_dst = c.dst;
        let size = core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32;
        // SAFETY: p is a valid parameter block of `size` bytes.
        let rc = unsafe { aya_ebpf::helpers::generated::bpf_fib_lookup(ctx.ctx.cast(), p, size, 0) };
        pass_if(rc == 0)
    }

    /// One `bpf_ktime_get_ns`.
    #[xdp]
    pub fn stage_ktime(_ctx: XdpContext) -> u32 {
        // SAFETY: helper without side effects.
        let t = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        pass_if(t != 0)
    }

    /// One `bpf_ktime_get_coarse_ns`.
    #[xdp]
    pub fn stage_ktime_coarse(_ctx: XdpContext) -> u32 {
        // SAFETY: helper without side effects.
        let t = unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() };
        pass_if(t != 0)
    }

    /// A hash map with a 20-byte key (the size of a service key).
    #[map(name = "BENCH_HASH")]
    static HASH: aya_ebpf::maps::HashMap<[u32; 5], u64> = aya_ebpf::maps::HashMap::with_max_entries(1024, 0);

    /// An LRU hash map with a 40-byte key (the size of a flow key).
    #[map(name = "BENCH_LRU")]
    static LRU: aya_ebpf::maps::LruHashMap<[u64; 5], u64> = aya_ebpf::maps::LruHashMap::with_max_entries(65536, 0);

    /// One lookup in `BENCH_HASH` of the key [1, 2, 3, 4, 5] (which
    /// userspace inserts): XDP_PASS when found.
    #[xdp]
    pub fn stage_hash(_ctx: XdpContext) -> u32 {
        let key = [1u32, 2, 3, 4, 5];
        // SAFETY: value only tested for presence.
        pass_if(unsafe { HASH.get(&key) }.is_some())
    }

    /// One lookup in `BENCH_LRU` of the key [1, 2, 3, 4, 5]: XDP_PASS when found.
    #[xdp]
    pub fn stage_lru(_ctx: XdpContext) -> u32 {
        let key = [1u64, 2, 3, 4, 5];
        // SAFETY: value only tested for presence.
        pass_if(unsafe { LRU.get(&key) }.is_some())
    }

    /// LRU hash maps to insert new keys into: with the common LRU list (as
    /// the data path's connection tables) and with per-CPU lists
    /// (`BPF_F_NO_COMMON_LRU`). Sized by the loader (`map_max_entries`).
    #[map(name = "BENCH_LRU_INS")]
    static LRU_INS: aya_ebpf::maps::LruHashMap<[u64; 5], u64> = aya_ebpf::maps::LruHashMap::with_max_entries(64, 0);

    #[map(name = "BENCH_PCPU_LRU_INS")]
    static PCPU_LRU_INS: aya_ebpf::maps::LruHashMap<[u64; 5], u64> =
        aya_ebpf::maps::LruHashMap::with_max_entries(64, aya_ebpf::bindings::BPF_F_NO_COMMON_LRU);

    #[map(name = "BENCH_INS_SEQ")]
    static INS_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// The next number of this CPU's sequence (a new key every run).
    #[inline(always)]
    fn next_seq() -> Option<u64> {
        let n = INS_SEQ.get_ptr_mut(0)?;
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            *n += 1;
            Some(*n)
        }
    }

    #[inline(always)]
    fn insert_new(map: &aya_ebpf::maps::LruHashMap<[u64; 5], u64>) -> u32 {
        let Some(n) = next_seq() else { return xdp_action::XDP_ABORTED };
        pass_if(map.insert(&[n, 1, 2, 3, 4], &n, 0).is_ok())
    }

    /// One insert of a new key into `BENCH_LRU_INS` (common LRU list).
    #[xdp]
    pub fn stage_lru_insert(_ctx: XdpContext) -> u32 {
        insert_new(&LRU_INS)
    }

    /// One insert of a new key into `BENCH_PCPU_LRU_INS` (per-CPU LRU lists).
    #[xdp]
    pub fn stage_pcpu_lru_insert(_ctx: XdpContext) -> u32 {
        insert_new(&PCPU_LRU_INS)
    }

    /// A plain (preallocated, no LRU) hash map with a 40-byte key.
    #[map(name = "BENCH_HASH_INS")]
    static HASH_INS: aya_ebpf::maps::HashMap<[u64; 5], u64> = aya_ebpf::maps::HashMap::with_max_entries(64, 0);

    /// One insert of a new key into `BENCH_HASH_INS` (plain hash, no LRU).
    #[xdp]
    pub fn stage_hash_insert(_ctx: XdpContext) -> u32 {
        let Some(n) = next_seq() else { return xdp_action::XDP_ABORTED };
        pass_if(HASH_INS.insert(&[n, 1, 2, 3, 4], &n, 0).is_ok())
    }

    /// A big array of 64-byte buckets (sized by the loader).
    #[map(name = "BENCH_BUCKETS")]
    static BUCKETS: Array<[u64; 8]> = Array::with_max_entries(64, 0);

    /// Read and write one bucket at a pseudo-random index (a new one every
    /// run): the cost of one cold cache line of a big table.
    #[xdp]
    pub fn stage_bucket(_ctx: XdpContext) -> u32 {
        let Some(n) = next_seq() else { return xdp_action::XDP_ABORTED };
        let i = ((n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 44) as u32;
        let Some(b) = BUCKETS.get_ptr_mut(i) else { return xdp_action::XDP_DROP };
        // SAFETY: map value pointer valid for this run.
        let b = unsafe { &mut *b };
        if b[0] == n {
            return xdp_action::XDP_DROP;
        }
        b[0] = n;
        b[1] = 1;
        b[2] = 2;
        b[3] = 3;
        b[4] = 4;
        b[5] = n;
        xdp_action::XDP_PASS
    }

    #[inline(always)]
    fn restore(ctx: &XdpContext) -> Option<()> {
        let t = TEMPLATE.get_ptr_mut(0)?;
        // SAFETY: map value pointer valid for this program run; only
        // userspace writes the template.
        let t = unsafe { &mut *t };
        let len = t.len & 0xff;
        if len == 0 {
            return None;
        }
        // SAFETY: helper copying `len` (< TEMPLATE_MAX) bytes of the map
        // value into our own packet; it checks the packet's length.
        if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, t.data.as_mut_ptr().cast(), len) } != 0 {
            return None;
        }
        if t.vary != 0 {
            vary(ctx, t)?;
        }
        Some(())
    }

    /// One's-complement update of the checksum at `off` for the words
    /// `old` → `new` (RFC 1624).
    #[inline(always)]
    fn adjust(ctx: &XdpContext, off: u32, old: [u16; 2], new: [u16; 2], udp: bool) -> Option<()> {
        let c = at::<[u8; 2]>(ctx, (off & 0xff) as usize)?;
        // SAFETY: bounds checked by `at`.
        let c = unsafe { &mut *c };
        let check = u16::from_ne_bytes(*c);
        if check == 0 && udp {
            return Some(());
        }
        let acc = u32::from(!check) + u32::from(!old[0]) + u32::from(new[0]) + u32::from(!old[1]) + u32::from(new[1]);
        let mut v = !fold(acc);
        if v == 0 && udp {
            v = 0xffff;
        }
        *c = v.to_ne_bytes();
        Some(())
    }

    #[inline(always)]
    fn vary(ctx: &XdpContext, t: &Template) -> Option<()> {
        let n = SEQ.get_ptr_mut(0)?;
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        let n = unsafe {
            *n += 1;
            *n
        };
        let p = at::<[u8; 2]>(ctx, (t.sport_off & 0xff) as usize)?;
        let a = at::<[u8; 2]>(ctx, (t.saddr_off & 0xff) as usize)?;
        // SAFETY: bounds checked by `at`.
        let (p, a) = unsafe { (&mut *p, &mut *a) };
        let (old_p, old_a) = (u16::from_ne_bytes(*p), u16::from_ne_bytes(*a));
        let new_p = (n as u16).to_be();
        let new_a = old_a ^ ((n >> 16) as u16).to_be();
        *p = new_p.to_ne_bytes();
        *a = new_a.to_ne_bytes();
        if t.l4_csum_off != 0 {
            // UDP's checksum sits 6 bytes into its header, TCP's 16.
            let udp = t.l4_csum_off == t.sport_off + 6;
            adjust(ctx, t.l4_csum_off, [old_p, old_a], [new_p, new_a], udp)?;
        }
        if t.ip_csum_off != 0 {
            adjust(ctx, t.ip_csum_off, [old_a, 0], [new_a, 0], false)?;
        }
        Some(())
    }
}
