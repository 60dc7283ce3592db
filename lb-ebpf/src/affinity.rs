//! Client-IP session affinity (`sessionAffinity: ClientIP`): a new flow of
//! a service with `affinity_timeout` goes to the backend the client's last
//! new flow to that service went to, if that was less than the timeout ago
//! and the backend still takes new flows; otherwise the lookup table picks
//! and the pick is remembered. Flows already in the connection table never
//! look here.
use lb_common::{Affinity, Backend, Service, BE_F_ACTIVE};

use crate::{
    maps::{AFFINITY, BACKENDS},
    scratch::Scratch,
    words,
};

const NS: u64 = 1_000_000_000;

/// The backend of the client's live affinity entry, refreshing the entry's
/// time (this new flow counts as the client's last). Leaves the key in
/// `s.akey` for [`remember`]. Sets `s.backend_id` when it finds one.
#[inline(never)]
pub fn sticky(s: &mut Scratch, svc: &Service, now: u64) -> Option<&'static Backend> {
    words::copy(s.akey.client_aligned_mut(), s.pkt.key.src_aligned());
    s.akey.service_id = svc.id;
    s.akey._pad = 0;
    let a = AFFINITY.get_ptr_mut(&s.akey)?;
    // SAFETY: map value pointer valid for this program run.
    let a = unsafe { &mut *a };
    if now.saturating_sub(a.last_ns) >= u64::from(svc.affinity_timeout) * NS {
        return None;
    }
    let be = BACKENDS.get(a.backend_id)?;
    // The slot must still hold the same backend of this service, taking new flows.
    if be.flags & BE_F_ACTIVE == 0 || be.generation != a.backend_gen || be.service_id != svc.id || be.weight == 0 {
        return None;
    }
    if !crate::trace::enabled() {
        a.last_ns = now;
    }
    s.backend_id = a.backend_id;
    Some(be)
}

/// Records the backend just picked (`s.backend_id`) as the client's
/// affinity (key from [`sticky`]).
#[inline(always)]
pub fn remember(s: &mut Scratch, be: &Backend, now: u64) {
    if crate::trace::enabled() {
        return;
    }
    s.aff = Affinity { backend_id: s.backend_id, backend_gen: be.generation, last_ns: now };
    let _ = AFFINITY.insert(&s.akey, &s.aff, 0);
}
