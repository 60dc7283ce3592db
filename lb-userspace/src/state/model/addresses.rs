//! Which addresses can be a VIP, a backend or a SNAT address.
//!
//! Called by every producer of a [`super::DesiredState`] (the YAML
//! validation, the Kubernetes translation), so all refuse the same
//! mistakes: an address no client can send to (unspecified, loopback,
//! broadcast, multicast) as a VIP, or one no packet can be forwarded to as
//! a backend.
use std::net::{IpAddr, SocketAddr};

use super::ModelError;

/// Checks that `ip` can be a VIP (or a SNAT address). The error displays as
/// a sentence "IP is ..." for the caller to follow with what to do.
///
/// Refused: the unspecified address (`0.0.0.0`, `::`), loopback
/// (`127.0.0.0/8`, `::1`: packets to it never arrive on an interface),
/// the limited broadcast `255.255.255.255`, multicast (`224.0.0.0/4`,
/// `ff00::/8`: xlb balances unicast flows) and IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`: never seen on the wire; use the IPv4 address).
pub fn check_vip(ip: IpAddr) -> Result<(), ModelError> {
    let what = match ip {
        _ if ip.is_unspecified() => "the unspecified address",
        IpAddr::V4(_) if ip.is_loopback() => "a loopback address: packets to it never arrive on an interface",
        IpAddr::V6(_) if ip.is_loopback() => "the loopback address: packets to it never arrive on an interface",
        IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
        _ if ip.is_multicast() => "a multicast address: xlb balances unicast flows",
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            "an IPv4-mapped IPv6 address, never seen on the wire: use the IPv4 address"
        }
        _ => return Ok(()),
    };
    Err(ModelError::UnusableVip { ip, what })
}

/// Checks that `addr` can be a backend of the service on `vip`:`port`
/// (the address only; the family is [`super::check_same_family`]'s).
///
/// Refused: an unspecified, broadcast or multicast address (nothing can be
/// forwarded there), and the service's own VIP and port (a loop).
pub fn check_backend_addr(addr: SocketAddr, vip: IpAddr, port: u16) -> Result<(), ModelError> {
    let ip = addr.ip();
    let what = match ip {
        _ if ip.is_unspecified() => "the unspecified address",
        IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
        _ if ip.is_multicast() => "a multicast address",
        _ if addr == SocketAddr::new(vip, port) => return Err(ModelError::BackendLoop { addr }),
        _ => return Ok(()),
    };
    Err(ModelError::UnusableBackend { ip, what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::test_support::ip;

    #[test]
    fn vips() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "::",
            "::1",
            "ff02::1",
            "ff0e::10",
            "::ffff:192.0.2.10",
        ] {
            let m = check_vip(ip(bad)).expect_err(bad).to_string();
            assert!(m.starts_with(&format!("{bad} is ")), "{m}");
        }
        for good in ["192.0.2.10", "10.0.0.1", "198.51.100.255", "2001:db8::10", "fd00::1"] {
            assert_eq!(check_vip(ip(good)), Ok(()), "{good}");
        }
    }

    #[test]
    fn backends() {
        let vip = ip("192.0.2.10");
        for bad in ["0.0.0.0:53", "255.255.255.255:53", "224.0.0.5:53", "192.0.2.10:53"] {
            assert!(check_backend_addr(bad.parse().unwrap(), vip, 53).is_err(), "{bad}");
        }
        for good in ["192.0.2.10:5353", "10.1.0.5:53", "127.0.0.1:53"] {
            assert_eq!(check_backend_addr(good.parse().unwrap(), vip, 53), Ok(()), "{good}");
        }
        let vip6 = ip("2001:db8::10");
        for bad in ["[::]:53", "[ff02::1]:53", "[2001:db8::10]:53"] {
            assert!(check_backend_addr(bad.parse().unwrap(), vip6, 53).is_err(), "{bad}");
        }
    }
}
