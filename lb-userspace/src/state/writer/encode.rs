//! Encoders between the model's values and the maps' keys and values:
//! addresses, service keys, names, source-range entries, and the reason an
//! unroutable backend records. Shared by the writer and `reader.rs`.
use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::lpm_trie::Key;
use lb_common::{range_prefix_len, Backend, RangeKey, ServiceKey, ServiceName, BE_F_ACTIVE, BE_F_UNROUTABLE, NAME_LEN};

use crate::state::model::{Protocol, ServiceSpec};

/// Converts an address to the 16-byte form of the maps.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => lb_common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Converts back from the 16-byte form.
pub fn ip_from16(a: [u8; 16]) -> IpAddr {
    if lb_common::is_v4_mapped(&a) {
        IpAddr::V4([a[12], a[13], a[14], a[15]].into())
    } else {
        IpAddr::V6(a.into())
    }
}

/// The `snat_addr` of an unroutable backend: the errno of the failed route
/// lookup (see [`lb_common::BE_F_UNROUTABLE`]).
pub(super) fn unroutable_snat(err: &std::io::Error) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&err.raw_os_error().unwrap_or(0).to_ne_bytes());
    a
}

/// Why a backend value flagged [`BE_F_UNROUTABLE`] is not usable, for the
/// CLI; `None` for any other backend.
pub fn unroutable_reason(b: &Backend) -> Option<String> {
    if b.flags & BE_F_UNROUTABLE == 0 || b.flags & BE_F_ACTIVE != 0 {
        return None;
    }
    let errno = i32::from_ne_bytes([b.snat_addr[0], b.snat_addr[1], b.snat_addr[2], b.snat_addr[3]]);
    let why = if errno == 0 {
        "route lookup failed".to_string()
    } else {
        std::io::Error::from_raw_os_error(errno).to_string()
    };
    Some(format!(
        "no route to {}: {why}; without a SNAT source address it takes no new flows until a route appears \
         (add one, or set snat_address)",
        ip_from16(b.addr)
    ))
}

/// A service's prefix in `XLB_RANGES` without the service id: (LPM prefix
/// length, address), see [`lb_common::range_prefix_len`].
pub type RangeEntry = (u32, [u8; 16]);

/// The `XLB_RANGES` entries a service's `source_ranges` need: those of the
/// VIP's family (an IPv4 service only ever sees IPv4 clients, and the other
/// way round), host bits cleared.
pub fn range_entries(spec: &ServiceSpec) -> BTreeSet<RangeEntry> {
    spec.source_ranges
        .iter()
        .filter(|n| n.addr().is_ipv4() == spec.vip.is_ipv4())
        .map(|n| {
            let n = n.trunc();
            (range_prefix_len(n.addr().is_ipv4(), n.prefix_len()), addr16(n.network()))
        })
        .collect()
}

/// Converts an `XLB_RANGES` entry back to the prefix it holds.
pub fn range_net((plen, addr): RangeEntry) -> Option<ipnet::IpNet> {
    let ip = ip_from16(addr);
    let len = plen.checked_sub(range_prefix_len(ip.is_ipv4(), 0))?;
    ipnet::IpNet::new(ip, u8::try_from(len).ok()?).ok()
}

/// The `XLB_RANGES` key of a service's entry.
pub fn range_key(service_id: u32, (plen, addr): RangeEntry) -> Key<RangeKey> {
    Key::new(plen, RangeKey { service: service_id.to_be_bytes(), addr })
}

/// The map key of a service.
pub fn service_key(vip: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey { addr: addr16(vip), port: port.to_be(), proto: protocol.number(), _pad: 0 }
}

/// Encodes a name for the names map (truncated to its size).
pub fn name_to(name: &str) -> ServiceName {
    let mut n = ServiceName { name: [0; NAME_LEN] };
    let bytes = name.as_bytes();
    let len = bytes.len().min(NAME_LEN);
    n.name[..len].copy_from_slice(&bytes[..len]);
    n
}

/// Decodes a name from the names map.
pub fn name_from(n: &ServiceName) -> String {
    let end = n.name.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&n.name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trip() {
        for a in ["10.1.2.3", "2001:db8::1", "::1", "0.0.0.0"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_from16(addr16(ip)), ip);
        }
    }

    #[test]
    fn names_round_trip_and_truncate() {
        assert_eq!(name_from(&name_to("default/dns:53")), "default/dns:53");
        assert_eq!(name_from(&name_to(&"x".repeat(500))).len(), NAME_LEN);
    }

    #[test]
    fn keys_use_network_order() {
        let k = service_key("192.0.2.1".parse().unwrap(), 53, Protocol::Udp);
        assert_eq!(k.port.to_ne_bytes(), [0, 53]);
        assert_eq!(k.proto, 17);
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 192, 0, 2, 1]);
    }

    #[test]
    fn unroutable_reason_names_the_backend_and_the_lookup_error() {
        let err = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        let b = Backend {
            addr: addr16("10.99.0.5".parse().unwrap()),
            flags: BE_F_UNROUTABLE,
            snat_addr: unroutable_snat(&err),
            ..Default::default()
        };
        let r = unroutable_reason(&b).expect("an unroutable backend has a reason");
        assert!(r.starts_with("no route to 10.99.0.5: "), "{r}");
        assert!(r.contains(&err.to_string()), "the lookup's error ({err}) in {r}");
        assert!(r.contains("snat_address"), "what to do: {r}");
        assert_eq!(unroutable_reason(&Backend { flags: BE_F_ACTIVE, ..b }), None);
        assert_eq!(unroutable_reason(&Backend { flags: 0, ..b }), None, "a free slot");
        let other = std::io::Error::other("no errno");
        let r = unroutable_reason(&Backend { snat_addr: unroutable_snat(&other), ..b }).unwrap();
        assert!(r.contains("route lookup failed"), "{r}");
    }
}
