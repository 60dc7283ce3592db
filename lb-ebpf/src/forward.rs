//! Send: FIB lookup for the next hop, then XDP_TX, XDP_REDIRECT, or a
//! hand-off to the tc program (through XDP metadata) when the packet must
//! stay an skb (egress device without XDP support, partial checksum, no
//! neighbour entry yet).
//!
//! # The XDP → tc hand-off
//!
//! [`to_kernel`] prepends a [`ForwardMeta`] to the packet and passes it up;
//! the kernel builds an skb that keeps those bytes as its metadata, and
//! [`tc_forward`] (tc ingress on the same device) reads them and sends the
//! packet out of `ifindex` with `bpf_redirect_neigh`, or, when XDP already
//! set the MACs and `ifindex` is a pod's veth with nothing on its host
//! side's way out ([`IF_F_PEER`]), straight into the peer's namespace with
//! `bpf_redirect_peer`.
//!
//! skb metadata is not bound to the hop that wrote it: its bytes and length
//! survive veths, bridges and a kernel forwarding hop, and a later XDP
//! program that writes no metadata leaves them in place. So another node
//! running xlb (kind/k3d/containerlab nodes on one host, the multi-node
//! tests) would see this node's hand-off on a packet this node forwarded to
//! it, and redirect it to an `ifindex` that means nothing there. Three
//! guards make the hand-off unmistakable:
//!
//! * **node**: `node_tag` is this agent's random, non-zero
//!   [`Settings::node_tag`](lb_common::settings::Settings) (kept across
//!   restarts with the same pin path); tc acts only on its own tag;
//! * **device**: `ingress` is the interface XDP ran on; tc acts only when the
//!   skb came in on that interface (`skb->ingress_ifindex`);
//! * **consumed**: tc zeroes `magic` when it reads a hand-off, its own or
//!   not, so no later hop (on this node or the next) can act on it again.
//!
//! Metadata that fails a guard is left to the kernel (`TC_ACT_OK`), which
//! routes the packet as any other, and counted as `tc_foreign_meta`.
use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::generated::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_xdp_adjust_meta},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use core::mem::size_of;
use lb_common::{ForwardMeta, Stat, IF_F_PEER, IF_F_REDIRECT, IF_F_TX, META_MAGIC, META_MAGIC_L2, META_MAGIC_ROUTED};
use network_types::eth::EthHdr;

use crate::{
    maps::{IFACES, SETTINGS, TX_PORTS},
    nat::Rewrite,
    packet::{ptr_at, Packet},
    scratch::FibParams,
    stats::bump,
    words,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// An address as the four `u32`s of `bpf_fib_lookup` (network byte order).
#[inline(always)]
fn words(a: words::Addr) -> [u32; 4] {
    [a[0] as u32, (a[0] >> 32) as u32, a[1] as u32, (a[1] >> 32) as u32]
}

/// `bpf_fib_lookup` result: the packet is larger than the egress MTU
/// (`mtu_result` holds the MTU).
pub const FIB_FRAG_NEEDED: i64 = 8;

/// Sends a rewritten packet towards `rw.dst`; `p` is scratch space.
#[inline(never)]
pub fn send(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite, p: &mut FibParams, partial: bool) -> u32 {
    let rc = lookup(ctx, pkt, rw, p);
    transmit(ctx, p, rc, partial, CAPS_UNKNOWN)
}

/// `transmit`'s `caps` when the caller does not know the egress interface's
/// `IF_F_*` capabilities: `transmit` looks them up in `XLB_IFACES`.
pub const CAPS_UNKNOWN: u32 = u32::MAX;

/// The egress interface's `IF_F_*` capabilities (0 when not ours).
#[inline(always)]
pub fn caps_of(ifindex: u32) -> u32 {
    // SAFETY: value copied out at once; userspace only replaces whole values.
    unsafe { IFACES.get(&ifindex) }.copied().unwrap_or(0)
}

/// Looks up the route and next hop towards `rw.dst` into `p`.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite, p: &mut FibParams) -> i64 {
    // Every input field is written (no zeroing of the whole block: the
    // backend turns that into a byte-loop memset); with flags 0 the kernel
    // reads only these, and writes the outputs.
    p.family = if pkt.v6 { AF_INET6 } else { AF_INET };
    p.l4_protocol = pkt.key.proto;
    p.sport = rw.sport;
    p.dport = rw.dport;
    p.__bindgen_anon_1.tot_len = pkt.ip_len as u16;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_2.flowinfo = 0;
    p.__bindgen_anon_5.tbid = 0;
    let src = words(words::get(rw.src_aligned()));
    let dst = words(words::get(rw.dst_aligned()));
    if pkt.v6 {
        p.__bindgen_anon_3.ipv6_src = src;
        p.__bindgen_anon_4.ipv6_dst = dst;
    } else {
        p.__bindgen_anon_3.ipv6_src = [src[3], 0, 0, 0];
        p.__bindgen_anon_4.ipv6_dst = [dst[3], 0, 0, 0];
    }
    // SAFETY: p is a valid, fully initialised parameter block of the stated size.
    unsafe { bpf_fib_lookup(ctx.as_ptr(), p, size_of::<FibParams>() as i32, 0) }
}

/// Sends the (rewritten) packet according to the lookup result `rc` in `p`;
/// `caps`: the egress interface's capabilities when known (the next-hop
/// cache keeps them), else [`CAPS_UNKNOWN`].
#[inline(never)]
pub fn transmit(ctx: &XdpContext, p: &mut FibParams, rc: i64, partial: bool, caps: u32) -> u32 {
    if rc == FIB_SUCCESS {
        if let Some(eth) = ptr_at::<EthHdr>(ctx, 0) {
            // SAFETY: bounds checked by ptr_at.
            unsafe {
                (*eth).dst_addr = p.dmac;
                (*eth).src_addr = p.smac;
            }
        }
        if !partial {
            let out = p.ifindex;
            let caps = if caps == CAPS_UNKNOWN { caps_of(out) } else { caps };
            if out == ctx.ingress_ifindex() as u32 && caps & IF_F_TX != 0 {
                bump(Stat::FwdTx);
                return xdp_action::XDP_TX;
            }
            if caps & IF_F_REDIRECT != 0 {
                if let Ok(action) = TX_PORTS.redirect(out, 0) {
                    bump(Stat::FwdRedirect);
                    return action;
                }
                bump(Stat::RedirectFail);
                if crate::log::allowed() {
                    aya_log_ebpf::debug!(ctx, "xlb: XDP_REDIRECT to ifindex {} refused; handing to the kernel", out);
                }
            }
        }
        to_kernel(ctx, p.ifindex, META_MAGIC_ROUTED)
    } else if rc == FIB_NO_NEIGH {
        to_kernel(ctx, p.ifindex, META_MAGIC)
    } else if rc == FIB_FRAG_NEEDED {
        // Larger than the egress MTU and fragmenting is allowed (no DF): the
        // kernel's forwarding path fragments it.
        bump(Stat::FwdFragment);
        xdp_action::XDP_PASS
    } else {
        bump(Stat::FibFail);
        xdp_action::XDP_PASS
    }
}

/// This agent's node tag (0 until the agent wrote it).
#[inline(always)]
fn node_tag() -> u32 {
    SETTINGS.get(0).map_or(0, |s| s.node_tag)
}

/// Passes the packet up with metadata asking this node's tc program, on
/// this ingress device, to send it out of `ifindex` (see the module docs);
/// `magic`: [`META_MAGIC_ROUTED`] when the MACs are already set, else
/// [`META_MAGIC`].
#[inline(always)]
fn to_kernel(ctx: &XdpContext, ifindex: u32, magic: u32) -> u32 {
    match hand_off(ctx, ifindex, magic) {
        None => bump(Stat::FibFail),
        Some(true) => bump(Stat::FwdKernel),
        Some(false) => {}
    }
    xdp_action::XDP_PASS
}

/// Writes the hand-off metadata (`magic`: [`META_MAGIC`] to route the packet
/// out of `ifindex`, [`META_MAGIC_L2`] to send the frame as it is). `None`:
/// no room for metadata; `Some(false)`: the metadata is out of bounds.
#[inline(always)]
pub fn hand_off(ctx: &XdpContext, ifindex: u32, magic: u32) -> Option<bool> {
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(size_of::<ForwardMeta>() as i32)) } != 0 {
        return None;
    }
    let meta = ctx.metadata();
    if meta + size_of::<ForwardMeta>() > ctx.data() {
        return Some(false);
    }
    // SAFETY: bounds checked against data just above.
    unsafe {
        *(meta as *mut ForwardMeta) =
            ForwardMeta { magic, ifindex, ingress: ctx.ingress_ifindex() as u32, node_tag: node_tag() };
    }
    Some(true)
}

/// tc ingress: redirect packets that this node's XDP program rewrote and
/// marked on this device; consume the mark (see the module docs).
#[inline(always)]
#[expect(
    clippy::unnecessary_wraps,
    reason = "the Option shape of the other program bodies, unwrapped by the entry point"
)]
pub fn tc_forward(ctx: &TcContext) -> Option<i32> {
    // SAFETY: reading fields of the live __sk_buff context.
    let (meta, data, ingress) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.data_meta as usize, skb.data as usize, skb.ingress_ifindex)
    };
    if meta + size_of::<ForwardMeta>() > data {
        return Some(TC_ACT_OK);
    }
    let mp = meta as *mut ForwardMeta;
    // SAFETY: bounds checked against data just above.
    let m = unsafe { *mp };
    if m.magic != META_MAGIC && m.magic != META_MAGIC_ROUTED && m.magic != META_MAGIC_L2 {
        return Some(TC_ACT_OK);
    }
    // Consumed: whatever happens next, no later hop acts on it again.
    // SAFETY: bounds checked against data above; tc may write the metadata.
    unsafe { (*mp).magic = 0 };
    if m.ingress != ingress || m.node_tag != node_tag() {
        bump(Stat::TcForeignMeta);
        return Some(TC_ACT_OK);
    }
    bump(Stat::TcForward);
    if m.magic == META_MAGIC_L2 {
        // An ARP reply or neighbour advertisement built by XDP (`l2`): out
        // of the device as it is, no route or neighbour lookup.
        // SAFETY: helper call with plain arguments.
        return Some(unsafe { bpf_redirect(m.ifindex, 0) } as i32);
    }
    if m.magic == META_MAGIC_ROUTED && caps_of(m.ifindex) & IF_F_PEER != 0 {
        // MACs set by XDP, and the host side of this veth has nothing to
        // run on the way out (the agent checks, see `IF_F_PEER`): straight
        // into the peer's namespace, no transmit and backlog on the host side.
        bump(Stat::TcPeer);
        // SAFETY: helper call with plain arguments, from tc ingress.
        return Some(unsafe { bpf_redirect_peer(m.ifindex, 0) } as i32);
    }
    // SAFETY: helper call; a NULL neighbour block means "resolve via FIB".
    let rc = unsafe { bpf_redirect_neigh(m.ifindex, core::ptr::null_mut(), 0, 0) };
    Some(rc as i32)
}
