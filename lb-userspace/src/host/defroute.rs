//! `--interface-default-route`: the interfaces of this node's default
//! routes (IPv4 and IPv6, main table), read once at start with an
//! rtnetlink `RTM_GETROUTE` dump.
//!
//! A later change of default route is **not followed**: the programs stay
//! on the interfaces found at start (moving XDP off the node's uplink while
//! it carries flows would break them). Each change is logged
//! ([`spawn_watch`]) with what to do: restart the agent.
//!
//! [`parse_route`] and [`pick`] are pure (tested without a kernel);
//! [`dump`] and [`interfaces`] talk to it.
use std::{io, time::Duration};

use tracing::{info, warn};

use crate::host::{
    netwatch::{Interest, Watcher},
    rtnetlink::{self, attrs, Kind},
};

/// `RTA_OIF`.
const RTA_OIF: u16 = 4;
/// `RTA_MULTIPATH`.
const RTA_MULTIPATH: u16 = 9;
/// `RTA_TABLE`.
const RTA_TABLE: u16 = 15;
/// `RT_TABLE_MAIN`.
const RT_TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`.
const RTN_UNICAST: u8 = 1;

/// The facts of one route that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// Prefix length of the destination (0: a default route).
    pub dst_len: u8,
    /// Routing table.
    pub table: u32,
    /// `rtm_type` (`RTN_UNICAST`, `RTN_UNREACHABLE`...).
    pub kind: u8,
    /// Output interfaces (one, or every next hop of a multipath route).
    pub oifs: Vec<u32>,
}

/// The interface indexes of the default unicast routes of the main table,
/// IPv4 first, each once, in the order found.
pub fn pick(routes: &[Route]) -> Vec<u32> {
    let mut defaults: Vec<&Route> =
        routes.iter().filter(|r| r.dst_len == 0 && r.table == RT_TABLE_MAIN && r.kind == RTN_UNICAST).collect();
    defaults.sort_by_key(|r| r.family != libc::AF_INET as u8);
    let mut out = Vec::new();
    for i in defaults.iter().flat_map(|r| r.oifs.iter().copied()) {
        if i != 0 && !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The route of an `RTM_NEWROUTE` payload (`rtmsg` and its attributes);
/// `None` if it is too short.
pub fn parse_route(payload: &[u8]) -> Option<Route> {
    let rtmsg = payload.get(..12)?;
    let mut route =
        Route { family: rtmsg[0], dst_len: rtmsg[1], table: u32::from(rtmsg[4]), kind: rtmsg[7], oifs: Vec::new() };
    for (kind, value) in attrs(&payload[12..]) {
        match kind {
            RTA_OIF => route.oifs.extend(u32_of(value)),
            RTA_TABLE => route.table = u32_of(value).unwrap_or(route.table),
            RTA_MULTIPATH => {
                // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } + attributes.
                let mut rest = value;
                while let Some(hdr) = rest.get(..8) {
                    let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
                    if len < 8 {
                        break;
                    }
                    route.oifs.extend(u32_of(&hdr[4..8]));
                    rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
                }
            }
            _ => {}
        }
    }
    Some(route)
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// The `RTM_GETROUTE` dump request of every family.
fn dump_request(seq: u32) -> Vec<u8> {
    // rtmsg: AF_UNSPEC, everything else 0.
    rtnetlink::dump_request(libc::RTM_GETROUTE, seq, &[0u8; 12])
}

/// Every route of this network namespace (all tables, both families).
pub fn dump() -> io::Result<Vec<Route>> {
    let seq = 1;
    let payloads = rtnetlink::dump(&dump_request(seq), seq, libc::RTM_NEWROUTE)?;
    Ok(payloads.iter().filter_map(|p| parse_route(p)).collect())
}

/// Why [`interfaces`] found nothing to attach to.
#[derive(Debug, thiserror::Error)]
pub enum DefaultRouteError {
    /// The routes could not be read.
    #[error("cannot read the routes (rtnetlink): {0}")]
    Dump(#[from] io::Error),
    /// No default route in the main table, IPv4 or IPv6.
    #[error(
        "this node has no default route (IPv4 or IPv6, main table) to take the interface from; \
         add one (`ip route add default via GATEWAY dev IF`) or name the interfaces with --interface IF \
         or --interface-glob PATTERN instead"
    )]
    NoDefaultRoute,
}

/// The names of the interfaces of this network namespace's default routes
/// (IPv4 first).
pub fn interfaces() -> Result<Vec<String>, DefaultRouteError> {
    let names = names(&pick(&dump()?));
    if names.is_empty() {
        return Err(DefaultRouteError::NoDefaultRoute);
    }
    Ok(names)
}

fn names(indexes: &[u32]) -> Vec<String> {
    indexes.iter().filter_map(|&i| nix::net::if_::if_indextoname(i).ok()?.into_string().ok()).collect()
}

/// Logs every later change of the default routes' interfaces (they are not
/// followed: the programs stay on `attached`).
pub fn spawn_watch(attached: Vec<String>) {
    let mut routes = match Watcher::shared() {
        Ok(w) => w.subscribe(Interest::of(&[Kind::Route, Kind::Link])),
        Err(e) => {
            warn!(error = %e, "cannot listen for route events: a change of default route will not be logged");
            return;
        }
    };
    tokio::spawn(async move {
        let mut last = attached.clone();
        while routes.changed().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            routes.changed_now();
            let now = match tokio::task::spawn_blocking(|| dump().map(|r| names(&pick(&r)))).await {
                Ok(Ok(now)) => now,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the routes after a route change");
                    continue;
                }
                Err(_) => continue,
            };
            if now != last {
                if now == attached {
                    info!(interfaces = ?now, "default routes back on the interfaces xlb is attached to");
                } else {
                    warn!(
                        default_route_interfaces = ?now,
                        attached = ?attached,
                        "the default routes changed interface; --interface-default-route is resolved at start only: \
                         restart the agent to attach to the new interfaces"
                    );
                }
                last = now;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: u8 = libc::AF_INET as u8;
    const V6: u8 = libc::AF_INET6 as u8;

    fn route(family: u8, dst_len: u8, table: u32, kind: u8, oifs: &[u32]) -> Route {
        Route { family, dst_len, table, kind, oifs: oifs.to_vec() }
    }

    #[test]
    fn picks_the_default_unicast_routes_of_the_main_table_ipv4_first() {
        let routes = [
            route(V6, 0, RT_TABLE_MAIN, RTN_UNICAST, &[7]),
            route(V4, 24, RT_TABLE_MAIN, RTN_UNICAST, &[3]), // not a default route
            route(V4, 0, 100, RTN_UNICAST, &[4]),            // another table
            route(V6, 0, RT_TABLE_MAIN, 7 /* unreachable */, &[1]), // not unicast
            route(V4, 0, RT_TABLE_MAIN, RTN_UNICAST, &[5, 6]), // multipath
            route(V6, 0, RT_TABLE_MAIN, RTN_UNICAST, &[5]),  // same interface again
        ];
        assert_eq!(pick(&routes), vec![5, 6, 7]);
        assert_eq!(pick(&routes[1..4]), Vec::<u32>::new(), "no default route: nothing");
        assert_eq!(pick(&[]), Vec::<u32>::new());
    }

    fn attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
        let len = u16::try_from(4 + value.len()).unwrap();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().next_multiple_of(4), 0);
    }

    #[test]
    fn parses_oif_table_and_multipath_next_hops() {
        let mut p = vec![V4, 0, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        attr(&mut p, RTA_TABLE, &RT_TABLE_MAIN.to_ne_bytes());
        attr(&mut p, RTA_OIF, &9u32.to_ne_bytes());
        assert_eq!(parse_route(&p), Some(route(V4, 0, RT_TABLE_MAIN, RTN_UNICAST, &[9])));

        let mut p = vec![V6, 0, 0, 0, 252, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        attr(&mut p, RTA_TABLE, &1000u32.to_ne_bytes());
        let mut hops = Vec::new();
        for ifindex in [11u32, 12] {
            hops.extend_from_slice(&16u16.to_ne_bytes()); // len: header + one 8-byte attribute
            hops.extend_from_slice(&[0, 0]);
            hops.extend_from_slice(&ifindex.to_ne_bytes());
            attr(&mut hops, 5 /* RTA_GATEWAY */, &[10, 0, 0, 1]);
        }
        attr(&mut p, RTA_MULTIPATH, &hops);
        assert_eq!(parse_route(&p), Some(route(V6, 0, 1000, RTN_UNICAST, &[11, 12])));
        assert_eq!(parse_route(&p[..11]), None, "shorter than rtmsg");
    }

    #[test]
    fn dump_request_is_a_full_dump_of_every_family() {
        let m = dump_request(7);
        assert_eq!(m.len(), 28);
        let msg = netlink_packet_core::NetlinkBuffer::new_checked(&m[..]).unwrap();
        assert_eq!((msg.message_type(), msg.length(), msg.sequence_number()), (libc::RTM_GETROUTE, 28, 7));
        assert_eq!(i32::from(msg.flags()), libc::NLM_F_REQUEST | libc::NLM_F_DUMP);
        assert_eq!(msg.payload()[0], 0, "AF_UNSPEC");
    }

    /// Root: in a new network namespace, the dump finds the default
    /// routes' interfaces, and none without a default route.
    #[test]
    fn resolves_the_default_route_interfaces_of_a_namespace() {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}; this test needs root", io::Error::last_os_error());
            let ip = |args: &str| {
                let st = std::process::Command::new("ip").args(args.split(' ')).status().expect("run ip");
                assert!(st.success(), "ip {args}: {st}");
            };
            ip("link add up4 type veth peer name up4p");
            ip("link add up6 type veth peer name up6p");
            for l in ["up4", "up4p", "up6", "up6p"] {
                ip(&format!("link set {l} up"));
            }
            assert!(matches!(interfaces(), Err(DefaultRouteError::NoDefaultRoute)));
            ip("addr add 10.9.0.1/24 dev up4");
            ip("addr add 2001:db8:9::1/64 dev up6 nodad");
            ip("route add 10.8.0.0/16 via 10.9.0.2 dev up4");
            assert!(matches!(interfaces(), Err(DefaultRouteError::NoDefaultRoute)), "not a default route");
            ip("-6 route add default via 2001:db8:9::2 dev up6");
            assert_eq!(interfaces().unwrap(), vec!["up6"]);
            ip("route add default via 10.9.0.2 dev up4");
            assert_eq!(interfaces().unwrap(), vec!["up4", "up6"], "IPv4 first");
        })
        .join()
        .expect("the test thread");
    }
}
