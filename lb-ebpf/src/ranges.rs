//! Source ranges (`loadBalancerSourceRanges`): a service flagged
//! `SVC_F_RANGES` is reached only by clients inside one of its prefixes in
//! the `XLB_RANGES` LPM trie. Checked on every client → VIP packet of such a
//! service, so a range change also cuts flows in progress; services without
//! the flag never get here.
use lb_common::{RangeKey, Service, RANGE_FULL_PREFIX};

use crate::{maps::RANGES, scratch::Scratch};

/// True when the packet's source address lies in one of `svc`'s prefixes.
/// The key is built in the scratch area (not on the stack).
#[inline(always)]
pub fn allowed(s: &mut Scratch, svc: &Service) -> bool {
    s.range.prefix_len = RANGE_FULL_PREFIX;
    s.range.data = RangeKey { service: svc.id.to_be_bytes(), addr: s.pkt.key.src };
    RANGES.get(&s.range).is_some()
}
