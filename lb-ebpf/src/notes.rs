//! Reply notes: replies translated from the backend alone, without a
//! reverse entry per flow. Two kinds of services use them (the client's
//! address is preserved by both):
//!
//! * `flow_tracking: none` (`SVC_F_UNTRACKED`): no connection entry either;
//!   every forward packet notes its backend (a lookup, written only when
//!   missing or different);
//! * tracked services with `SVC_F_REPLY_NOTE` (their backends serve no other
//!   service): a new flow records its connection entry and notes its
//!   backend instead of inserting a reverse entry — one insert instead of
//!   two.
//!
//! The note of a backend (address, port, protocol) in `XLB_NOTES` names the
//! VIP its replies leave from; a reply without a reverse entry looks its
//! source up there. The agent sets either flag only on a service none of
//! whose backends another service uses, so a note is unambiguous.
//!
//! A note is trusted only while its service (`XLB_SVC_SLOTS`) still has
//! that VIP and no SNAT, and its backend slot still has that generation: a
//! removed service or backend leaves a stale note that translates nothing.
//! A service that loses the flag (another service took one of its backends)
//! keeps its note, which its flows recorded without reverse entries still
//! need; the other service's flows have reverse entries, found first.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::{
    settings::SETTINGS_F_NOTES, Backend, FlowKey, ReplyNote, Reverse, ServiceKey, BE_F_ACTIVE, SVC_F_SNAT,
};

use crate::{
    maps::{BACKENDS, NOTES, SERVICE_SLOTS, SETTINGS},
    scratch::Scratch,
    trace, words,
};

/// The reverse entry a valid note stands for, built per reply (this CPU's).
#[map(name = "XLB_NOTE_REV")]
static REV: PerCpuArray<Reverse> = PerCpuArray::with_max_entries(1, 0);

/// Notes that replies from `be` (picked: `s.backend_id`) belong to the
/// packet's service (`service_id`, key `vip`), unless that is noted already.
#[inline(always)]
pub fn note(s: &Scratch, be: &Backend, vip: &ServiceKey, service_id: u32) {
    if trace::enabled() {
        return;
    }
    let backend_id = s.backend_id;
    let key = words::service_key(words::get(be.addr_aligned()), be.port, vip.proto);
    // SAFETY: map value pointer valid for this program run.
    if let Some(n) = NOTES.get_ptr(&key).map(|p| unsafe { &*p }) {
        if n.service_id == service_id
            && n.backend_id == backend_id
            && n.backend_gen == be.generation
            && words::service_key_eq(&n.vip, vip)
        {
            return;
        }
    }
    let n = ReplyNote { vip: *vip, service_id, backend_id, backend_gen: be.generation };
    let _ = NOTES.insert(&key, &n, 0);
}

/// [`reply_entry`] while some service uses notes (`SETTINGS_F_NOTES`,
/// set by the agent): without one, a packet that is no VIP's and has no
/// reverse entry costs an array read here instead of a hash lookup.
#[inline(always)]
pub fn reply_entry_if_any(k: &FlowKey) -> Option<&'static mut Reverse> {
    let on = SETTINGS.get(0).is_some_and(|s| s.flags & SETTINGS_F_NOTES != 0);
    if on {
        reply_entry(k)
    } else {
        None
    }
}

/// For a reply with key `k` (source: the backend) that has no reverse entry:
/// the reverse entry its backend's note stands for (client: `k`'s
/// destination), in this CPU's slot, when the note is still valid.
#[inline(never)]
pub fn reply_entry(k: &FlowKey) -> Option<&'static mut Reverse> {
    let n = valid_note(k)?;
    let r = REV.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, no concurrent writer on this CPU; only this
    // program run uses it until it ends.
    let r = unsafe { &mut *r };
    words::copy(r.client_aligned_mut(), k.dst_aligned());
    r.client_port = k.dport;
    words::put(r.vip_aligned_mut(), words::v6(&n.vip.addr));
    r.vip_port = n.vip.port;
    r.service_id = n.service_id;
    r.backend_id = n.backend_id;
    r.timeout = 0;
    r.last_seen_ns = 0;
    Some(r)
}

/// The note for a reply with key `k` (source: the backend), when it is still
/// valid: its service with that VIP and without SNAT, its backend slot
/// unchanged and active (a drained backend, weight 0, still is).
#[inline(always)]
fn valid_note(k: &FlowKey) -> Option<&'static ReplyNote> {
    let key = words::service_key(words::get(k.src_aligned()), k.sport, k.proto);
    // SAFETY: map value pointer valid for this program run.
    let n = unsafe { &*NOTES.get_ptr(&key)? };
    let sl = SERVICE_SLOTS.get(n.service_id)?;
    if sl.svc.id != n.service_id || sl.svc.flags & SVC_F_SNAT != 0 || !words::service_key_eq(&sl.key, &n.vip) {
        return None;
    }
    let be = BACKENDS.get(n.backend_id)?;
    (be.flags & BE_F_ACTIVE != 0 && be.generation == n.backend_gen && be.service_id == n.service_id).then_some(n)
}
