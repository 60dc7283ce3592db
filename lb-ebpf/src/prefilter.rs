//! The non-VIP pre-filter (see `lb_common::prefilter`): a plain UDP/TCP
//! packet that is neither to a VIP nor from a backend leaves with XDP_PASS
//! after reading the headers in place and two bits of an array map (inlined
//! lookups), before the scratch area, the parser or any hash lookup.
//! Anything unusual (VLAN tag, IPv4 options or fragments, IPv6 extension
//! headers, ICMP, short frames) takes the full path.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    prefilter::{prefilter_bit, PREFILTER_BACKENDS, PREFILTER_READY, PREFILTER_VIPS},
    PROTO_TCP, PROTO_UDP,
};

use crate::{maps::PREFILTER, packet::ptr_at, words};

const ETH_LEN: usize = 14;
/// Ethernet type IPv4 / IPv6, as read from the frame (network byte order).
const ETH_IP: u16 = u16::from_ne_bytes([0x08, 0x00]);
const ETH_IPV6: u16 = u16::from_ne_bytes([0x86, 0xdd]);

#[inline(always)]
fn set_has(base: u32, a: words::Addr) -> bool {
    let (word, mask) = prefilter_bit(a);
    PREFILTER.get(base + word).is_none_or(|w| w & mask != 0)
}

/// True when the packet is surely neither for a service nor a reply of a
/// backend (and well-formed up to its L4 header's start): pass it.
#[inline(always)]
pub fn not_ours(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) else { return false };
    // SAFETY: bounds checked by ptr_at.
    let eth = unsafe { &*eth };
    let ether_type = u16::from_ne_bytes([eth[12], eth[13]]);
    let len = ctx.data_end() - ctx.data();
    let (src, dst) = if ether_type == ETH_IP {
        // Header without options, plus 8 bytes of UDP/TCP.
        let Some(ip) = ptr_at::<[u8; 28]>(ctx, ETH_LEN) else { return false };
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let frags = u16::from_be_bytes([ip[6], ip[7]]);
        if ip[0] != 0x45
            || (ip[9] != PROTO_UDP && ip[9] != PROTO_TCP)
            || frags & 0x3fff != 0
            || tot < 28
            || tot > len - ETH_LEN
        {
            return false;
        }
        (words::v4(&[ip[12], ip[13], ip[14], ip[15]]), words::v4(&[ip[16], ip[17], ip[18], ip[19]]))
    } else if ether_type == ETH_IPV6 {
        let Some(ip) = ptr_at::<[u8; 48]>(ctx, ETH_LEN) else { return false };
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &*ip };
        let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if ip[0] >> 4 != 6 || (ip[6] != PROTO_UDP && ip[6] != PROTO_TCP) || payload < 8 || payload + 40 > len - ETH_LEN
        {
            return false;
        }
        // SAFETY: bytes 8..24 and 24..40 of the 48 bounds-checked bytes.
        let (s, d) = unsafe { (&*ip.as_ptr().add(8).cast::<[u8; 16]>(), &*ip.as_ptr().add(24).cast::<[u8; 16]>()) };
        (words::v6(s), words::v6(d))
    } else {
        return false;
    };
    if PREFILTER.get(PREFILTER_READY).is_none_or(|r| *r == 0) {
        return false;
    }
    !set_has(PREFILTER_VIPS, dst) && !set_has(PREFILTER_BACKENDS, src)
}

/// False when `dst` is surely not a VIP (its bit in the VIP set is clear and
/// the sets are ready): the packet cannot belong to a client flow.
#[inline(always)]
pub fn maybe_vip(dst: words::Addr) -> bool {
    PREFILTER.get(PREFILTER_READY).is_none_or(|r| *r == 0) || set_has(PREFILTER_VIPS, dst)
}
