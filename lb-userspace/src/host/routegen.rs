//! The route generation of the data path's next-hop cache: a task that
//! listens to the kernel's routing notifications (links, addresses, routes,
//! rules, neighbours; IPv4 and IPv6: a subscriber of the namespace's
//! [`Watcher`]) and bumps the pinned `XLB_ROUTE_GEN`
//! after each batch, so that the XDP program stops trusting every cached
//! `bpf_fib_lookup` result at once. Without it, a cached next hop is still
//! dropped after `TTL` (one second) of coarse time: routing changes then
//! take up to that long to reach packets of flows already seen.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use tracing::warn;

use crate::{
    bpf::maps::map_dir,
    host::netwatch::{Interest, Subscription, Watcher},
};

/// Starts the watcher for the maps pinned under `pin_path`, in the calling
/// thread's network namespace (the agent's). Call it once, after the data
/// path is loaded (`datapath::load_with`) and before the programs are
/// attached, in a Tokio runtime.
pub fn spawn(pin_path: &Path) -> Result<()> {
    let path = map_dir(pin_path).join(lb_common::names::ROUTE_GEN);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))?;
    let mut gen: Array<MapData, u32> = map.try_into().with_context(|| format!("{} is not an array", path.display()))?;
    let changes = Watcher::shared().context("subscribing to routing notifications (netlink)")?.subscribe(Interest::ALL);
    // Whatever changed before the subscription: start a new generation.
    bump(&mut gen);
    tokio::spawn(watch(changes, gen));
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
async fn watch(mut changes: Subscription, mut gen: Array<MapData, u32>) {
    while changes.changed().await.is_ok() {
        bump(&mut gen);
    }
    warn!("routing notifications lost; cached next hops now expire only by age");
}
