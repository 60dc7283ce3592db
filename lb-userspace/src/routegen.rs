//! The route generation of the data path's next-hop cache: a thread that
//! listens to the kernel's routing notifications (links, addresses, routes,
//! rules, neighbours; IPv4 and IPv6) and bumps the pinned `XLB_ROUTE_GEN`
//! after each batch, so that the XDP program stops trusting every cached
//! `bpf_fib_lookup` result at once. Without it, a cached next hop is still
//! dropped after `TTL` (one second) of coarse time: routing changes then
//! take up to that long to reach packets of flows already seen.
use std::{os::fd::OwnedFd, path::Path};

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use tracing::warn;

use crate::{maps::map_dir, rtnetlink};

/// Starts the watcher for the maps pinned under `pin_path`, in the calling
/// thread's network namespace (the agent's). Call it once, after the data
/// path is loaded (`datapath::load_with`) and before the programs are
/// attached.
pub fn spawn(pin_path: &Path) -> Result<()> {
    let path = map_dir(pin_path).join(lb_common::names::ROUTE_GEN);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))?;
    let mut gen: Array<MapData, u32> = map.try_into().with_context(|| format!("{} is not an array", path.display()))?;
    let fd = subscribe().context("subscribing to routing notifications (netlink)")?;
    // Whatever changed before the socket existed: start a new generation.
    bump(&mut gen);
    std::thread::Builder::new()
        .name("xlb-routegen".into())
        .spawn(move || watch(fd, gen))
        .context("starting the route-generation thread")?;
    Ok(())
}

/// Adds one to the generation.
fn bump(gen: &mut Array<MapData, u32>) {
    let cur = gen.get(&0, 0).unwrap_or(0);
    if let Err(e) = gen.set(0, cur.wrapping_add(1), 0) {
        warn!(error = %e, "bumping the route generation");
    }
}

/// Bumps the generation after every batch of notifications, forever.
fn watch(fd: OwnedFd, mut gen: Array<MapData, u32>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(err) = rtnetlink::wait_batch(&fd, &mut buf) {
            warn!(error = %err, "routing notifications lost; cached next hops now expire only by age");
            return;
        }
        bump(&mut gen);
    }
}

/// A blocking `NETLINK_ROUTE` socket member of the link, address, route,
/// rule and neighbour groups.
fn subscribe() -> std::io::Result<OwnedFd> {
    use rtnetlink::{GROUP_LINK, GROUP_NEIGH, GROUP_IPV4_IFADDR, GROUP_IPV4_ROUTE, GROUP_IPV4_RULE, GROUP_IPV6_IFADDR, GROUP_IPV6_ROUTE, GROUP_NR_IPV6_RULE};
    rtnetlink::subscribe(
        GROUP_LINK | GROUP_NEIGH | GROUP_IPV4_IFADDR | GROUP_IPV4_ROUTE | GROUP_IPV4_RULE | GROUP_IPV6_IFADDR | GROUP_IPV6_ROUTE,
        &[GROUP_NR_IPV6_RULE],
    )
}
