//! The straight line: parse → VIP lookup → flow lookup or backend pick →
//! rewrite → send. Replies of tracked flows take the same line backwards.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::trace::{
    REASON_AFFINITY, REASON_FLOW, REASON_NO_BACKEND, REASON_REPLY, REASON_SLOT, REASON_SOURCE_RANGE,
};
use lb_common::{
    frag::NO_SERVICE, hash::flow_hash_words, Backend, Flow, FlowKey, Reverse, Service, ServiceKey, Stat, BE_F_ACTIVE,
    BE_F_REJECT, FLOW_CLOSING, FLOW_OPEN, PROTO_TCP, SNAT_PORT_COUNT, SNAT_PORT_MIN, SNAT_TRIES, SVC_F_RANGES,
    SVC_F_REPLY_NOTE, SVC_F_SNAT, TCP_CLOSING_TIMEOUT,
};

use aya_log_ebpf::debug;

use crate::{
    affinity,
    clock::now,
    flowcache,
    forward::{transmit, FIB_FRAG_NEEDED},
    frag, guard, icmp, l2, log,
    maps::{BACKENDS, FLOWS, REVERSE, SERVICES, SERVICE_SLOTS, TABLE, VIPS},
    nat::rewrite,
    nexthop, notes,
    packet::{parse, Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    prefilter, ranges,
    reject::{reject, too_big},
    scratch::{self, Scratch},
    stats::{bump, count},
    trace, untracked, words,
};

const NS: u64 = 1_000_000_000;
/// Refresh `last_seen` at most this often (saves writes on hot flows).
const REFRESH_NS: u64 = NS;
const BPF_NOEXIST: u64 = 1;
/// `to_backend` result: no usable backend, reject (a verdict is < 5). Kept
/// out of `to_backend`'s frame so the BPF call chain stays within 512 bytes.
const NO_BACKEND: u32 = u32::MAX;
/// `to_backend`/`reply` result: too big for the egress MTU and not to be
/// fragmented; answer the sender (MTU in `s.fib`).
const TOO_BIG: u32 = u32::MAX - 1;

/// Runs the data path on one packet.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> Result<u32, ()> {
    bump(Stat::Packets);
    let answered = l2::answer(ctx);
    if answered != l2::NOT_OURS {
        return Ok(answered);
    }
    if prefilter::not_ours(ctx) {
        bump(Stat::PassNotVip);
        return Ok(xdp_action::XDP_PASS);
    }
    let s = scratch::get().ok_or(())?;
    match parse(ctx, &mut s.pkt) {
        Parsed::L4 => {}
        Parsed::LaterFragment => return Ok(frag::later(ctx, s)),
        Parsed::IcmpError => return Ok(icmp::error(ctx, s)),
        Parsed::Echo => return Ok(icmp::echo(ctx, s)),
        Parsed::Pass(why) => {
            bump(why);
            return Ok(xdp_action::XDP_PASS);
        }
        Parsed::Malformed => {
            bump(Stat::DropMalformed);
            if log::allowed() {
                debug!(ctx, "xlb: malformed packet dropped (further ones this second not logged)");
            }
            return Ok(xdp_action::XDP_DROP);
        }
    }
    s.now = now();
    let dst = words::get(s.pkt.key.dst_aligned());
    let key = words::service_key(dst, s.pkt.key.dport, s.pkt.key.proto);
    // A packet to a VIP looks its flow up first: an established flow finds
    // its service through the flow's service id (an array slot) instead of
    // the `XLB_SERVICES` hash lookup. Replies (not to a VIP) skip this.
    let looked = prefilter::maybe_vip(dst);
    let mut flow = None;
    let mut svc = None;
    s.from_cache = false;
    // A service this CPU found untracked (`flow_tracking: none`) has no
    // connection entry to look up.
    let untracked_svc = if looked { untracked::known(&key) } else { None };
    if untracked_svc.is_some() {
        svc = untracked_svc;
    } else if looked {
        s.epoch = flowcache::epoch();
        // Packets that change a flow's state take the table itself.
        let steady = !pkt_changes_state(&s.pkt);
        s.from_cache = steady && flowcache::get(&s.pkt.key, s.now, s.epoch, &mut s.cached);
        let f = if s.from_cache {
            // SAFETY: the scratch area is a map value, valid for this
            // program run; `cached` is not touched through `s` meanwhile.
            Some(unsafe { &mut *core::ptr::addr_of_mut!(s.cached) })
        } else {
            // SAFETY: map value pointer valid for this program run.
            FLOWS.get_ptr_mut(&s.pkt.key).map(|p| unsafe { &mut *p })
        };
        if let Some(f) = f {
            if !opening(&s.pkt) {
                svc = slot(f.service_id, &key);
            }
            flow = Some(f);
        }
    }
    // SAFETY: map value pointer valid for this program run.
    let svc = svc.or_else(|| SERVICES.get_ptr(&key).map(|p| unsafe { &*p }));
    if let Some(svc) = svc {
        // Flooded to every node of the segment: balanced by its addressee only.
        if l2::for_other_host(ctx) {
            return Ok(xdp_action::XDP_PASS);
        }
        return Ok(match to_backend(ctx, s, svc, flow, looked) {
            NO_BACKEND => reject(ctx, s),
            TOO_BIG => too_big(ctx, s),
            verdict => verdict,
        });
    }
    // A tracked flow's reverse entry, else the translation its backend's
    // note gives (`flow_tracking: none`, `SVC_F_REPLY_NOTE`; one call site
    // of `reply`: the verifier walks each call's body again).
    // SAFETY: map value pointer valid for this program run.
    let rev = REVERSE.get_ptr_mut(&s.pkt.key).map(|p| unsafe { &mut *p });
    if let Some(rev) = rev.or_else(|| notes::reply_entry_if_any(&s.pkt.key)) {
        return Ok(match reply(ctx, s, rev) {
            TOO_BIG => too_big(ctx, s),
            verdict => verdict,
        });
    }
    // SAFETY: value only tested for presence.
    bump(if unsafe { VIPS.get(&s.pkt.key.dst) }.is_some() { Stat::PassVipOtherPort } else { Stat::PassNotVip });
    Ok(xdp_action::XDP_PASS)
}

/// A TCP SYN without ACK: it starts a new connection and never trusts an
/// existing entry.
#[inline(always)]
fn opening(pkt: &crate::packet::Packet) -> bool {
    pkt.has(TCP_SYN) && !pkt.has(TCP_ACK)
}

/// The service of id `id` from `XLB_SVC_SLOTS`, when it is still the
/// service of `key` (the packet's VIP, port and protocol).
#[inline(always)]
fn slot(id: u32, key: &ServiceKey) -> Option<&'static Service> {
    let sl = SERVICE_SLOTS.get(id)?;
    (sl.svc.id == id && words::service_key_eq(&sl.key, key)).then_some(&sl.svc)
}

/// Idle timeout of a flow in its current state.
#[inline(always)]
fn timeout_ns(svc: &Service, proto: u8, state: u8) -> u64 {
    let s = if proto != PROTO_TCP {
        svc.udp_timeout
    } else if state == FLOW_CLOSING {
        TCP_CLOSING_TIMEOUT
    } else {
        svc.tcp_timeout
    };
    u64::from(s) * NS
}

#[inline(always)]
fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

/// The packet's flow (`flow`: already looked up when `looked`, else looked
/// up here); when its entry is still valid, sets `s.backend_id`/`s.snat_port`
/// and returns the backend.
#[inline(never)]
fn existing(s: &mut Scratch, svc: &Service, flow: Option<&mut Flow>, looked: bool) -> Option<&'static Backend> {
    let pkt = &s.pkt;
    // A SYN never trusts an existing entry: it starts a new connection.
    if opening(pkt) {
        return None;
    }
    let flow = match flow {
        Some(f) => f,
        None if looked => return None,
        None => {
            s.epoch = flowcache::epoch();
            // SAFETY: map value pointer valid for this program run.
            unsafe { &mut *FLOWS.get_ptr_mut(&s.pkt.key)? }
        }
    };
    let now = s.now;
    if flow.service_id != svc.id || now.saturating_sub(flow.last_seen_ns) > timeout_ns(svc, pkt.key.proto, flow.state) {
        return None;
    }
    // A flow recorded under the service's other source mode (preserve ↔
    // snat, changed by a reload) has no translation for this one: re-picked.
    if (svc.flags & SVC_F_SNAT != 0) != (flow.snat_port != 0) {
        return None;
    }
    let be = backend(flow.backend_id)?;
    if be.flags & BE_F_ACTIVE == 0 || be.generation != flow.backend_gen {
        return None;
    }
    s.backend_id = flow.backend_id;
    s.snat_port = flow.snat_port;
    if trace::enabled() {
        return Some(be);
    }
    if pkt.has(TCP_FIN) || pkt.has(TCP_RST) {
        flow.state = FLOW_CLOSING;
    }
    // Refresh at most once a second, but often enough for short timeouts.
    if now.saturating_sub(flow.last_seen_ns) > REFRESH_NS.min(timeout_ns(svc, pkt.key.proto, flow.state) / 2) {
        flow.last_seen_ns = now;
        if flow.snat_port != 0 {
            let proto = pkt.key.proto;
            words::set_key(
                &mut s.rkey,
                words::get(be.addr_aligned()),
                words::get(be.snat_addr_aligned()),
                be.port,
                flow.snat_port,
                proto,
            );
            if let Some(r) = REVERSE.get_ptr_mut(&s.rkey) {
                // SAFETY: map value pointer valid for this program run.
                unsafe { (*r).last_seen_ns = now };
            }
        }
    }
    if !s.from_cache && !pkt_changes_state(&s.pkt) {
        let window = REFRESH_NS.min(timeout_ns(svc, s.pkt.key.proto, flow.state) / 2);
        flowcache::put(&s.pkt.key, flow, flow.last_seen_ns + window, s.epoch);
    }
    Some(be)
}

/// A packet that opens or closes a connection: it never uses the flow
/// cache and its flow is not cached from it.
#[inline(always)]
fn pkt_changes_state(pkt: &crate::packet::Packet) -> bool {
    pkt.has(TCP_SYN | TCP_FIN | TCP_RST)
}

/// The service key (VIP, port, protocol) a packet to a VIP is for.
#[inline(always)]
fn packet_service_key(k: &FlowKey) -> ServiceKey {
    words::service_key(words::get(k.dst_aligned()), k.dport, k.proto)
}

/// Picks a backend for a new flow: the service's lookup table at the flow hash.
#[inline(always)]
fn pick(s: &mut Scratch, svc: &Service) -> Option<&'static Backend> {
    if svc.table_size == 0 {
        return None;
    }
    let k = &s.pkt.key;
    let h = tuple_hash(k, svc.hash_seed);
    let slot = h % svc.table_size;
    trace::record(|r| r.slot = slot);
    let id = *TABLE.get(svc.table_offset + slot)?;
    let be = backend(id)?;
    if be.flags & BE_F_ACTIVE == 0 {
        // The service's reject share (or a slot gone since the table was
        // read): rejected as for a service without a usable backend.
        if be.flags & BE_F_REJECT != 0 {
            bump(Stat::RejectShare);
        }
        return None;
    }
    s.backend_id = id;
    Some(be)
}

/// The flow hash of `k`'s 5-tuple with `seed`.
#[inline(always)]
fn tuple_hash(k: &FlowKey, seed: u32) -> u32 {
    flow_hash_words(words::get(k.src_aligned()), words::get(k.dst_aligned()), k.sport, k.dport, k.proto, seed)
}

/// Fills `s.rev` with the translation back to the client.
#[inline(always)]
fn fill_reverse(s: &mut Scratch, svc: &Service, now: u64) {
    let k = &s.pkt.key;
    let r = &mut s.rev;
    words::copy(r.client_aligned_mut(), k.src_aligned());
    words::copy(r.vip_aligned_mut(), k.dst_aligned());
    r.client_port = k.sport;
    r.vip_port = k.dport;
    r.service_id = svc.id;
    r.backend_id = s.backend_id;
    r.timeout = (timeout_ns(svc, k.proto, FLOW_OPEN) / NS) as u32;
    r.last_seen_ns = now;
}

/// Allocates a SNAT source port so that (node address, port, backend) is
/// unique to this client flow, recording the reverse translation. Sets
/// `s.snat_port` (network byte order); false when every probed port is taken.
#[inline(never)]
fn alloc_snat(s: &mut Scratch, svc: &Service, be: &Backend) -> bool {
    let now = s.now;
    fill_reverse(s, svc, now);
    let k = &s.pkt.key;
    let base = tuple_hash(k, 0x5eed_5eed);
    let proto = k.proto;
    words::put(s.rkey.src_aligned_mut(), words::get(be.addr_aligned()));
    words::put(s.rkey.dst_aligned_mut(), words::get(be.snat_addr_aligned()));
    for i in 0..SNAT_TRIES {
        let port =
            (u32::from(SNAT_PORT_MIN) + base.wrapping_add(i.wrapping_mul(7919)) % u32::from(SNAT_PORT_COUNT)) as u16;
        words::set_tail(&mut s.rkey, be.port, port.to_be(), proto);
        // Look before inserting: a refused insert costs as much as one that
        // succeeds (the LRU hands out a node and takes it back), and the
        // lookup warms the bucket the insert walks.
        let Some(old) = REVERSE.get_ptr_mut(&s.rkey) else {
            if trace::enabled() {
                s.snat_port = s.rkey.dport;
                return true;
            }
            // Refused only when another CPU took the port meanwhile.
            if REVERSE.insert(&s.rkey, &s.rev, BPF_NOEXIST).is_ok() {
                s.snat_port = s.rkey.dport;
                return true;
            }
            continue;
        };
        // SAFETY: map value pointer valid for this program run.
        let old = unsafe { &mut *old };
        let same = words::eq(old.client_aligned(), s.rev.client_aligned())
            && old.client_port == s.rev.client_port
            && words::eq(old.vip_aligned(), s.rev.vip_aligned())
            && old.vip_port == s.rev.vip_port;
        if same {
            // This client's own tuple (a SYN again, a flow re-picked): the
            // entry is rewritten in place, no new node.
            if !trace::enabled() {
                words::copy_value(old, &s.rev);
            }
            s.snat_port = s.rkey.dport;
            return true;
        }
        let stale = now.saturating_sub(old.last_seen_ns) > u64::from(old.timeout) * NS;
        if stale && (trace::enabled() || REVERSE.insert(&s.rkey, &s.rev, 0).is_ok()) {
            s.snat_port = s.rkey.dport;
            return true;
        }
    }
    false
}

/// Records a new flow (and, without SNAT, its reverse translation; with
/// `sticky`, the client's session affinity to the backend). False when the
/// connection table refused the entry. Above the flood-guard rate a flow is
/// neither recorded nor made sticky.
#[inline(never)]
fn record(s: &mut Scratch, svc: &Service, be: &Backend, sticky: bool, flow: Option<&mut Flow>) -> bool {
    let now = s.now;
    let pkt = &s.pkt;
    // An RST never creates an entry; a trace writes none.
    if pkt.has(TCP_RST) || trace::enabled() {
        return true;
    }
    s.flow.backend_id = s.backend_id;
    s.flow.backend_gen = be.generation;
    s.flow.service_id = svc.id;
    s.flow.snat_port = s.snat_port;
    s.flow.state = if pkt.has(TCP_FIN) { FLOW_CLOSING } else { FLOW_OPEN };
    s.flow._pad = 0;
    s.flow.created_ns = now;
    s.flow.last_seen_ns = now;
    // Not cached here: many flows have one packet (a DNS query), and the
    // copy would cost them a cold cache line; the flow's next packet
    // caches it (`existing`).
    if let Some(f) = flow {
        // The tuple has an entry already (a SYN again, an expired or
        // re-picked flow): rewritten in place, no new node. When its
        // translation changes, every copy of it (this CPU's or another's)
        // must go: a new flow epoch voids them all.
        if f.backend_id != s.flow.backend_id
            || f.backend_gen != s.flow.backend_gen
            || f.snat_port != s.flow.snat_port
            || f.service_id != s.flow.service_id
        {
            flowcache::bump();
        }
        words::copy_value(f, &s.flow);
        if sticky {
            affinity::remember(s, be, now);
        }
    } else if !guard::may_record(now) {
        bump(Stat::FloodGuard);
    } else if FLOWS.insert(&s.pkt.key, &s.flow, 0).is_err() {
        bump(Stat::DropTableFull);
        return false;
    } else if sticky {
        affinity::remember(s, be, now);
    }
    // Replies must still find their way back, recorded or not: through
    // the backend's note when the agent made it unambiguous, else a reverse
    // entry of their own.
    if s.snat_port == 0 && svc.flags & SVC_F_REPLY_NOTE != 0 {
        notes::note(s, be, &packet_service_key(&s.pkt.key), svc.id);
    } else if s.snat_port == 0 {
        fill_reverse(s, svc, now);
        let k = &s.pkt.key;
        let (src, sport, proto) = (words::get(k.src_aligned()), k.sport, k.proto);
        words::set_key(&mut s.rkey, words::get(be.addr_aligned()), src, be.port, sport, proto);
        match REVERSE.get_ptr_mut(&s.rkey) {
            // SAFETY: map value pointer valid for this program run.
            Some(r) => words::copy_value(unsafe { &mut *r }, &s.rev),
            None => {
                let _ = REVERSE.insert(&s.rkey, &s.rev, 0);
            }
        }
    }
    true
}

/// Client → VIP: find or pick the backend, rewrite, send. `flow`/`looked`:
/// as for `existing`.
#[inline(never)]
fn to_backend(
    ctx: &XdpContext,
    s: &mut Scratch,
    svc: &Service,
    mut flow: Option<&'static mut Flow>,
    looked: bool,
) -> u32 {
    trace::record(|r| r.service_id = svc.id);
    // Source ranges: every packet, flows in progress included.
    if svc.flags & SVC_F_RANGES != 0 && !ranges::allowed(s, svc) {
        trace::record(|r| r.reason = REASON_SOURCE_RANGE);
        bump(Stat::DropSourceRange);
        return xdp_action::XDP_DROP;
    }
    let snat = svc.flags & SVC_F_SNAT != 0;
    let be = if untracked::applies(svc.flags) {
        // `flow_tracking: none`: the lookup table picks for every packet;
        // nothing is recorded but the backend's reply translation.
        let Some(be) = pick(s, svc) else {
            trace::record(|r| r.reason = REASON_NO_BACKEND);
            return NO_BACKEND;
        };
        trace::record(|r| r.reason = REASON_SLOT);
        let vip = packet_service_key(&s.pkt.key);
        untracked::remember(&vip, svc.id);
        notes::note(s, be, &vip, svc.id);
        be
    } else if let Some(be) = existing(s, svc, flow.as_deref_mut(), looked) {
        bump(Stat::FlowHit);
        trace::record(|r| r.reason = REASON_FLOW);
        be
    } else {
        if s.from_cache {
            // The entry itself is rewritten below, not this CPU's copy.
            // SAFETY: map value pointer valid for this program run.
            flow = FLOWS.get_ptr_mut(&s.pkt.key).map(|p| unsafe { &mut *p });
            s.from_cache = false;
        }
        // Session affinity first, then the lookup table (whose pick
        // becomes the client's affinity when the flow is recorded).
        let affine = svc.affinity_timeout != 0;
        let sticky = if affine { affinity::sticky(s, svc, s.now) } else { None };
        let fresh = affine && sticky.is_none();
        let reason = if sticky.is_some() { REASON_AFFINITY } else { REASON_SLOT };
        let Some(be) = sticky.or_else(|| pick(s, svc)) else {
            trace::record(|r| r.reason = REASON_NO_BACKEND);
            return NO_BACKEND;
        };
        trace::record(|r| r.reason = reason);
        // An RST of a connection we do not know: with SNAT there is no
        // port to deliver it on; without, it goes to the hashed backend
        // (which may hold the connection, e.g. after a failover) unrecorded.
        if s.pkt.has(TCP_RST) && snat {
            bump(Stat::DropRstNoFlow);
            return xdp_action::XDP_DROP;
        }
        s.snat_port = 0;
        if snat && !alloc_snat(s, svc, be) {
            bump(Stat::DropSnatExhausted);
            return xdp_action::XDP_DROP;
        }
        if !record(s, svc, be, fresh, flow) && log::allowed() {
            debug!(ctx, "xlb: connection table full: flow forwarded by hash but not recorded");
        }
        bump(Stat::FlowNew);
        be
    };
    let backend_id = s.backend_id;
    trace::record(|r| r.backend_id = backend_id);
    count(svc.id, s.backend_id, u64::from(s.pkt.ip_len));
    words::copy(s.rw.dst_aligned_mut(), be.addr_aligned());
    s.rw.dport = be.port;
    if snat {
        words::copy(s.rw.src_aligned_mut(), be.snat_addr_aligned());
        s.rw.sport = s.snat_port;
    } else {
        words::put(s.rw.src_aligned_mut(), words::get(s.pkt.key.src_aligned()));
        s.rw.sport = s.pkt.key.sport;
    }
    frag::remember(s, svc.id, s.backend_id);
    finish(ctx, s)
}

/// Backend → client reply of a tracked flow (or one translated by its
/// backend's note: `notes::reply_entry`): translate back, send.
#[inline(never)]
fn reply(ctx: &XdpContext, s: &mut Scratch, rev: &mut Reverse) -> u32 {
    let now = s.now;
    if now.saturating_sub(rev.last_seen_ns) > REFRESH_NS && !trace::enabled() {
        rev.last_seen_ns = now;
    }
    let backend_id = rev.backend_id;
    trace::record(|r| {
        r.reason = REASON_REPLY;
        r.backend_id = backend_id;
    });
    bump(Stat::Reply);
    words::copy(s.rw.src_aligned_mut(), rev.vip_aligned());
    s.rw.sport = rev.vip_port;
    words::copy(s.rw.dst_aligned_mut(), rev.client_aligned());
    s.rw.dport = rev.client_port;
    frag::remember(s, NO_SERVICE, rev.backend_id);
    finish(ctx, s)
}

/// Route, rewrite and send. A packet too big for the egress link that must
/// not be fragmented is answered instead (`TOO_BIG`), quoting it untranslated
/// so its sender can lower its path MTU.
#[inline(always)]
fn finish(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    let (rc, caps) = nexthop::route(ctx, &s.pkt, &s.rw, &mut s.fib, s.now);
    let egress = s.fib.ifindex;
    trace::record(|r| {
        r.egress = egress;
        r.fib_rc = rc as i32;
        r.routed = 1;
    });
    if rc == FIB_FRAG_NEEDED && s.pkt.df {
        return TOO_BIG;
    }
    if let Some(partial) = rewrite(ctx, &s.pkt, &s.rw) {
        transmit(ctx, &mut s.fib, rc, partial, caps)
    } else {
        bump(Stat::DropMalformed);
        xdp_action::XDP_DROP
    }
}
