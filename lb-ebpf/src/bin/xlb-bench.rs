//! Programs for the benchmarks only (`cargo xtask bench`), never attached by
//! the agent:
//! - `min_fwd`: the minimal forwarder, the ceiling of this machine: fixed
//!   rewrite of IPv4/UDP to one of two backends (by source-port parity) and
//!   XDP_REDIRECT, nothing else;
//! - `sink`: counts what reaches a backend and drops it;
//! - `gen`: the traffic generator, run with BPF_PROG_RUN in live-frame mode:
//!   gives every frame a new source port and sends it (XDP_TX).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
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
    let new = conf.backend[i & 1];
    // Incremental IPv4 header checksum over the destination change.
    let mut acc = (!u16::from_ne_bytes([h[24], h[25]])) as u32;
    acc += (!u16::from_ne_bytes([h[30], h[31]])) as u32 + (!u16::from_ne_bytes([h[32], h[33]])) as u32;
    acc += u16::from_ne_bytes([new[0], new[1]]) as u32 + u16::from_ne_bytes([new[2], new[3]]) as u32;
    let c = (!fold(acc)).to_ne_bytes();
    h[24] = c[0];
    h[25] = c[1];
    h[30..34].copy_from_slice(&new);
    // UDP checksum: none (allowed for IPv4).
    h[40] = 0;
    h[41] = 0;
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
