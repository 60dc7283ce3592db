//! L2 announcement (`--announce l2`): ARP requests and IPv6 neighbour
//! solicitations for a VIP this node announces (`XLB_ANNOUNCE`), arriving on
//! an announce interface (`XLB_L2_IFACES`, which gives its MAC), are turned
//! in place into the reply and sent back out of that interface: XDP_TX where
//! the interface can transmit XDP frames (`IF_F_TX`), else through the tc
//! hand-off ([`META_MAGIC_L2`]: tc sends the frame as it is).
//!
//! Everything else — ARP for other addresses, gratuitous ARP, replies,
//! malformed ARP, solicitations for other targets — is not ours
//! ([`NOT_OURS`]) and takes the normal path (to the kernel, as before).
//!
//! [`for_other_host`]: a packet for a VIP flooded by a switch to an announce
//! interface, addressed to another host's MAC, is left to the kernel.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{csum, L2Iface, Stat, IF_F_TX, META_MAGIC_L2};

use crate::{
    forward::{caps_of, hand_off},
    maps::{ANNOUNCE, L2_IFACES},
    packet::ptr_at,
    stats::bump,
};

/// `answer`'s result when the frame is not an L2 request it answers.
pub const NOT_OURS: u32 = u32::MAX;

const ETH_LEN: usize = 14;
const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_IPV6: [u8; 2] = [0x86, 0xdd];
const PROTO_ICMPV6: u8 = 58;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
/// Ethernet + IPv6 + NA with a target link-layer address option.
const NA_FRAME: usize = ETH_LEN + 40 + 32;

/// Answers the frame when it is an ARP request or neighbour solicitation
/// for an announced VIP on an announce interface; else [`NOT_OURS`].
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) else { return NOT_OURS };
    // SAFETY: bounds checked by ptr_at.
    let ty = unsafe { [(*eth)[12], (*eth)[13]] };
    if ty == ETH_ARP {
        arp(ctx)
    } else if ty == ETH_IPV6 {
        // Next header and ICMPv6 type: an NS has no extension header.
        let (Some(nh), Some(icmp)) = (ptr_at::<u8>(ctx, ETH_LEN + 6), ptr_at::<u8>(ctx, ETH_LEN + 40)) else {
            return NOT_OURS;
        };
        // SAFETY: bounds checked by ptr_at.
        if unsafe { *nh != PROTO_ICMPV6 || *icmp != ND_SOLICIT } {
            return NOT_OURS;
        }
        ndp(ctx)
    } else {
        NOT_OURS
    }
}

/// True (and counted) when the frame arrived on an announce interface with
/// another host's unicast MAC as its Ethernet destination: a switch flooded
/// it (unknown unicast), and only its addressee may balance it. The caller
/// leaves it to the kernel, which drops `PACKET_OTHERHOST` frames. Group
/// (multicast, broadcast) destinations and other interfaces, whose MAC XDP
/// does not know, are never "other host". Called only for packets to a VIP,
/// so the `XLB_L2_IFACES` lookup costs nothing elsewhere.
#[inline(always)]
pub fn for_other_host(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr_at::<[u8; 6]>(ctx, 0) else { return false };
    // SAFETY: bounds checked by ptr_at.
    let dst = unsafe { *eth };
    if dst[0] & 1 != 0 {
        return false;
    }
    let Some(iface) = l2_iface(ctx) else { return false };
    let m = iface.mac;
    // Word compares: a byte-array compare may become a `bcmp` call.
    let other = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]) != u32::from_ne_bytes([m[0], m[1], m[2], m[3]])
        || u16::from_ne_bytes([dst[4], dst[5]]) != u16::from_ne_bytes([m[4], m[5]]);
    if other {
        bump(Stat::PassOtherHost);
    }
    other
}

/// The announce interface the frame arrived on, if it is one.
#[inline(always)]
fn l2_iface(ctx: &XdpContext) -> Option<L2Iface> {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: value copied out at once; userspace only replaces whole values.
    unsafe { L2_IFACES.get(&ifindex) }.copied()
}

/// Whether `vip` (16 bytes, IPv4-mapped for IPv4) is announced.
#[inline(always)]
fn announced(vip: &[u8; 16]) -> bool {
    // SAFETY: value copied out at once.
    unsafe { ANNOUNCE.get(vip) }.is_some_and(|v| *v != 0)
}

/// Sends the answer back out of the interface it came in on.
#[inline(always)]
fn send_back(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    if caps_of(ifindex) & IF_F_TX != 0 {
        return xdp_action::XDP_TX;
    }
    // Without room for the metadata the answer cannot be sent: drop it
    // (the kernel would not know what to do with an ARP reply to itself).
    if hand_off(ctx, ifindex, META_MAGIC_L2) == Some(true) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// ARP request (Ethernet, IPv4) → reply, in place.
#[inline(never)]
fn arp(ctx: &XdpContext) -> u32 {
    // htype, ptype, hlen, plen, oper, sha, spa, tha, tpa.
    let Some(p) = ptr_at::<[u8; 28]>(ctx, ETH_LEN) else { return NOT_OURS };
    // SAFETY: bounds checked by ptr_at.
    let a = unsafe { &mut *p };
    let head = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    if head != u64::from_ne_bytes([0, 1, 0x08, 0x00, 6, 4, 0, 1]) {
        return NOT_OURS;
    }
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    // A gratuitous ARP (another node announcing the address) is no question.
    if u32::from_ne_bytes(spa) == u32::from_ne_bytes(tpa) {
        return NOT_OURS;
    }
    if !announced(&lb_common::v4_mapped(tpa)) {
        return NOT_OURS;
    }
    let Some(iface) = l2_iface(ctx) else { return NOT_OURS };
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let mac = iface.mac;
    a[7] = 2;
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&tpa);
    a[18..24].copy_from_slice(&sha);
    a[24..28].copy_from_slice(&spa);
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else { return NOT_OURS };
    // SAFETY: bounds checked by ptr_at.
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&sha);
    eth[6..12].copy_from_slice(&mac);
    bump(Stat::ArpReply);
    send_back(ctx)
}

/// Adds the 16-bit words of `b` (as they sit in memory) to `acc`.
#[inline(always)]
fn sum<const N: usize>(mut acc: u32, b: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u32::from(u16::from_ne_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    acc
}

/// What an NA is built from, read from the NS before the frame is resized.
struct Solicit {
    /// The soliciting node's MAC (Ethernet source).
    mac: [u8; 6],
    /// Its address (`::` during duplicate address detection).
    src: [u8; 16],
    /// The solicited address (an announced VIP).
    target: [u8; 16],
}

/// Reads an NS (hop limit 255, code 0, a unicast target) into a [`Solicit`].
#[inline(always)]
fn solicit(ctx: &XdpContext) -> Option<Solicit> {
    let len = ctx.data_end() - ctx.data();
    let ip = ptr_at::<[u8; 40]>(ctx, ETH_LEN)?;
    let ns = ptr_at::<[u8; 24]>(ctx, ETH_LEN + 40)?;
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let (ip, ns, eth) = unsafe { (&*ip, &*ns, &*eth) };
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if ip[0] >> 4 != 6 || ip[7] != 255 || payload < 24 || ETH_LEN + 40 + payload > len || ns[1] != 0 || ns[8] == 0xff {
        return None;
    }
    let mut s = Solicit { mac: [0; 6], src: [0; 16], target: [0; 16] };
    s.mac.copy_from_slice(&eth[6..12]);
    s.src.copy_from_slice(&ip[8..24]);
    s.target.copy_from_slice(&ns[8..24]);
    Some(s)
}

/// Neighbour solicitation → neighbour advertisement (solicited, override,
/// target link-layer address option), rebuilt in the frame resized to
/// [`NA_FRAME`] bytes. An NS from `::` (duplicate address detection) is
/// answered to all-nodes, not solicited.
#[inline(never)]
fn ndp(ctx: &XdpContext) -> u32 {
    let Some(s) = solicit(ctx) else { return NOT_OURS };
    if !announced(&s.target) {
        return NOT_OURS;
    }
    let Some(iface) = l2_iface(ctx) else { return NOT_OURS };
    let dad = lb_common::addr_eq(&s.src, &[0; 16]);
    let (dst, dmac, flags) = if dad {
        let mut all = [0u8; 16];
        all[0] = 0xff;
        all[1] = 0x02;
        all[15] = 1;
        (all, [0x33, 0x33, 0, 0, 0, 1], 0x20u8)
    } else {
        (s.src, s.mac, 0x60u8)
    };
    let len = (ctx.data_end() - ctx.data()) as i32;
    let delta = NA_FRAME as i32 - len;
    // Shorter (an NS without options): grow at the front, which every
    // driver allows (headroom); longer: trim the tail.
    // SAFETY: helper calls on our own context.
    let resized = unsafe {
        match delta.cmp(&0) {
            core::cmp::Ordering::Greater => bpf_xdp_adjust_head(ctx.ctx, -delta),
            core::cmp::Ordering::Less => bpf_xdp_adjust_tail(ctx.ctx, delta),
            core::cmp::Ordering::Equal => 0,
        }
    };
    if resized != 0 {
        return NOT_OURS;
    }
    let Some(f) = ptr_at::<[u8; NA_FRAME]>(ctx, 0) else { return xdp_action::XDP_DROP };
    // SAFETY: bounds checked by ptr_at.
    let f = unsafe { &mut *f };
    let mac = iface.mac;
    f[0..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_IPV6);
    // Version 6, no traffic class or flow label; payload 32; ICMPv6; hop limit 255.
    f[14..22].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, PROTO_ICMPV6, 255]);
    f[22..38].copy_from_slice(&s.target);
    f[38..54].copy_from_slice(&dst);
    f[54..62].copy_from_slice(&[ND_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
    f[62..78].copy_from_slice(&s.target);
    f[78..80].copy_from_slice(&[2, 1]);
    f[80..86].copy_from_slice(&mac);
    // Pseudo header (addresses, length 32, next header 58), then the message.
    let mut acc = sum(sum(0, &s.target), &dst);
    acc += u32::from(u16::from_ne_bytes([0, 32])) + u32::from(u16::from_ne_bytes([0, PROTO_ICMPV6]));
    acc += u32::from(u16::from_ne_bytes([ND_ADVERT, 0])) + u32::from(u16::from_ne_bytes([flags, 0]));
    acc = sum(acc, &s.target);
    acc += u32::from(u16::from_ne_bytes([2, 1]));
    acc = sum(acc, &mac);
    f[56..58].copy_from_slice(&(!csum::fold(acc)).to_ne_bytes());
    bump(Stat::NdpAdvert);
    send_back(ctx)
}
