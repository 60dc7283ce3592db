//! `flow_tracking: none` services (`SVC_F_UNTRACKED`, Katran's LRU bypass):
//! every packet picks its backend from the lookup table and no connection or
//! reverse entry is written. Replies (the client's address is preserved) are
//! translated from the backend's (address, port, protocol) alone: the
//! forward path notes, per backend, the VIP it serves in `XLB_UNTRACKED`
//! (written only when missing or different, so once per backend, not per
//! flow); a reply without a reverse entry looks its source up there. The
//! agent refuses a `flow_tracking: none` service whose backend (address,
//! port, protocol) another service also uses, so the note is unambiguous.
//!
//! A note is trusted only while its service (`XLB_SVC_SLOTS`) still has that
//! VIP and is untracked, and its backend slot still has that generation: a
//! removed service or backend leaves a stale note that translates nothing.
//! The map is the data path's own (not pinned): after an agent restart the
//! notes come back with the next packet to each backend.
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use lb_common::{
    settings::SETTINGS_F_UNTRACKED, Backend, FlowKey, Reverse, Service, ServiceKey, BE_F_ACTIVE, MAX_BACKENDS,
    SVC_F_SNAT, SVC_F_UNTRACKED,
};

use crate::{maps::BACKENDS, scratch::Scratch, trace, words};

/// What a reply from one backend is translated back to.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Note {
    /// The service's key: VIP, port, protocol.
    pub vip: ServiceKey,
    /// The service id (checked against `XLB_SVC_SLOTS`).
    pub service_id: u32,
    /// The backend id and its slot's generation when noted.
    pub backend_id: u32,
    pub backend_gen: u32,
}

/// Backend (address, port, protocol) → its untracked service's VIP. LRU so
/// that notes of backends long gone make room by themselves.
#[map(name = "XLB_UNTRACKED")]
static NOTES: LruHashMap<ServiceKey, Note> = LruHashMap::with_max_entries(MAX_BACKENDS * 2, 0);

/// The reverse entry a valid note stands for, built per reply (this CPU's).
#[map(name = "XLB_UNTRACKED_REV")]
static REV: PerCpuArray<Reverse> = PerCpuArray::with_max_entries(1, 0);

/// Slots of [`KNOWN`] (a power of two).
const KNOWN_SLOTS: u32 = 16;

/// A service key found untracked, and its service id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Known {
    pub key: ServiceKey,
    pub id: u32,
}

/// This CPU's untracked service keys, direct-mapped by the VIP's last bytes
/// and the port: a packet to one of them skips the connection-table lookup
/// (which could only miss) and finds its service by id (an array read).
#[map(name = "XLB_UNTRACKED_KNOWN")]
static KNOWN: PerCpuArray<Known> = PerCpuArray::with_max_entries(KNOWN_SLOTS, 0);

#[inline(always)]
fn known_slot(key: &ServiceKey) -> u32 {
    let a = &key.addr;
    (u32::from_ne_bytes([a[12], a[13], a[14], a[15]]) ^ u32::from(key.port)) & (KNOWN_SLOTS - 1)
}

/// The service of `key` when this CPU saw it untracked and it still is
/// (checked against `XLB_SVC_SLOTS`): no connection entry to look up.
#[inline(always)]
pub fn known(key: &ServiceKey) -> Option<&'static Service> {
    let k = KNOWN.get(known_slot(key))?;
    if !words::service_key_eq(&k.key, key) {
        return None;
    }
    let sl = crate::maps::SERVICE_SLOTS.get(k.id)?;
    (sl.svc.id == k.id && applies(sl.svc.flags) && words::service_key_eq(&sl.key, key)).then_some(&sl.svc)
}

/// Remembers on this CPU that `key` is the untracked service `id`.
#[inline(always)]
fn remember(key: &ServiceKey, id: u32) {
    if let Some(k) = KNOWN.get_ptr_mut(known_slot(key)) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        let k = unsafe { &mut *k };
        if k.id != id || !words::service_key_eq(&k.key, key) {
            k.key = *key;
            k.id = id;
        }
    }
}

/// The service is served without flow tracking.
#[inline(always)]
pub fn applies(flags: u32) -> bool {
    flags & (SVC_F_UNTRACKED | SVC_F_SNAT) == SVC_F_UNTRACKED
}

/// Notes that replies from `be` (picked: `s.backend_id`) belong to the
/// packet's service (`service_id`), unless that is noted already.
#[inline(always)]
pub fn note(s: &Scratch, be: &Backend, service_id: u32) {
    if trace::enabled() {
        return;
    }
    let (k, backend_id) = (&s.pkt.key, s.backend_id);
    let vip = words::service_key(words::get(k.dst_aligned()), k.dport, k.proto);
    remember(&vip, service_id);
    let key = words::service_key(words::get(be.addr_aligned()), be.port, k.proto);
    // SAFETY: map value pointer valid for this program run.
    if let Some(n) = NOTES.get_ptr(&key).map(|p| unsafe { &*p }) {
        if n.service_id == service_id
            && n.backend_id == backend_id
            && n.backend_gen == be.generation
            && words::service_key_eq(&n.vip, &vip)
        {
            return;
        }
    }
    let n = Note { vip, service_id, backend_id, backend_gen: be.generation };
    let _ = NOTES.insert(&key, &n, 0);
}

/// [`reply_entry`] while some service is untracked (`SETTINGS_F_UNTRACKED`,
/// set by the agent): without one, a packet that is no VIP's and has no
/// reverse entry costs an array read here instead of a hash lookup.
#[inline(always)]
pub fn reply_entry_if_any(k: &FlowKey) -> Option<&'static mut Reverse> {
    let on = crate::maps::SETTINGS.get(0).is_some_and(|s| s.flags & SETTINGS_F_UNTRACKED != 0);
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
/// valid: its service untracked with that VIP, its backend slot unchanged
/// and active (a drained backend, weight 0, still is).
#[inline(always)]
fn valid_note(k: &FlowKey) -> Option<&'static Note> {
    let key = words::service_key(words::get(k.src_aligned()), k.sport, k.proto);
    // SAFETY: map value pointer valid for this program run.
    let n = unsafe { &*NOTES.get_ptr(&key)? };
    let sl = crate::maps::SERVICE_SLOTS.get(n.service_id)?;
    if sl.svc.id != n.service_id || !applies(sl.svc.flags) || !words::service_key_eq(&sl.key, &n.vip) {
        return None;
    }
    let be = BACKENDS.get(n.backend_id)?;
    (be.flags & BE_F_ACTIVE != 0 && be.generation == n.backend_gen && be.service_id == n.service_id).then_some(n)
}
