//! `flow_tracking: none` services (`SVC_F_UNTRACKED`, Katran's LRU bypass):
//! every packet picks its backend from the lookup table and no connection or
//! reverse entry is written; replies are translated through the backend's
//! note (`notes`). This module keeps, per CPU, the service keys found
//! untracked, so that their packets skip the connection-table lookup.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::{Service, ServiceKey, SVC_F_SNAT, SVC_F_UNTRACKED};

use crate::{trace, words};

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

/// Remembers on this CPU that `key` is the untracked service `id` (not
/// while tracing: a trace writes nothing).
#[inline(always)]
pub fn remember(key: &ServiceKey, id: u32) {
    if trace::enabled() {
        return;
    }
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
