//! Reads the pinned maps into rows for the CLI and `/metrics`.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    Stat, BE_F_ACTIVE, BE_F_IN_USE, BE_F_REJECT, BE_F_UNROUTABLE, FLOW_CLOSING, MAX_BACKENDS, PROTO_TCP, SVC_F_RANGES,
    SVC_F_SNAT, SVC_F_UNTRACKED,
};
use serde::Serialize;

use crate::{
    bpf::maps::sum_counter,
    bpf::view::MapsView,
    state::model::Protocol,
    state::writer::encode::{ip_from16, name_from, range_net, unroutable_reason},
};

/// A failure to read a map.
#[derive(Debug, thiserror::Error)]
#[error("reading map {map}: {source}")]
pub struct ReadError {
    map: &'static str,
    #[source]
    source: aya::maps::MapError,
}

fn rerr(map: &'static str) -> impl Fn(aya::maps::MapError) -> ReadError {
    move |source| ReadError { map, source }
}

/// Formats an address as "ip:port" ("[v6]:port").
fn sock(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// One backend of a service.
#[derive(Clone, Debug, Serialize)]
pub struct BackendRow {
    /// Service name.
    pub service: String,
    /// Backend address, `ip:port`; [`REJECT_ADDRESS`] for the service's
    /// reject share.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// "active", "draining" (weight 0) or "unroutable" (no route to it:
    /// takes no new flows until one appears; see `reason`); "reject" for
    /// the reject share (its weight's share of new flows is rejected).
    pub state: String,
    /// Why the backend takes no flows (unroutable); `null` otherwise.
    pub reason: Option<String>,
    /// Packets forwarded to it.
    pub packets: u64,
    /// Bytes forwarded to it.
    pub bytes: u64,
    /// Backend id (slot in `XLB_BACKENDS`).
    #[serde(skip)]
    pub id: u32,
}

/// The `address` of a service's reject share in [`BackendRow`] and
/// [`MaglevShare`] (a Gateway backendRef that does not resolve keeps its
/// weighted share of new flows, and that share is rejected).
pub const REJECT_ADDRESS: &str = crate::state::maglev::REJECT_NAME;

/// One programmed service.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceRow {
    /// Service name.
    pub name: String,
    /// VIP.
    pub vip: String,
    /// Service port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// `snat` or `preserve`.
    pub source: String,
    /// Backends, `ip:port`.
    pub backends: Vec<String>,
    /// Packets to the VIP.
    pub packets: u64,
    /// Bytes to the VIP.
    pub bytes: u64,
    /// Client-IP session affinity timeout in seconds; `null` when off.
    pub affinity_timeout: Option<u32>,
    /// Client prefixes allowed (CIDR strings, sorted); empty when all are.
    pub source_ranges: Vec<String>,
    /// Whether only clients inside `source_ranges` reach the service (true
    /// with an empty list when every range is of the other address family:
    /// no client is allowed).
    pub source_ranges_enforced: bool,
    /// `full` (a connection entry per flow) or `none` (`flow_tracking:
    /// none`: every packet picked from the lookup table).
    pub flow_tracking: String,
    /// Service id.
    #[serde(skip)]
    pub id: u32,
    /// The service's backends, in detail (its reject share included, as a
    /// row of state "reject").
    #[serde(skip)]
    pub backend_rows: Vec<BackendRow>,
    /// Lookup table (offset, size) in `XLB_TABLE`.
    #[serde(skip)]
    pub table: (u32, u32),
}

/// One connection-table entry.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRow {
    /// Service name.
    pub service: String,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Client `ip:port`.
    pub client: String,
    /// Backend `ip:port`.
    pub backend: String,
    /// "open", "closing" or "stale" (backend gone; re-picked on the next packet).
    pub state: String,
    /// Seconds since the flow was created.
    pub age_seconds: u64,
}

/// The data path's clock in ns: coarse monotonic time, as read by
/// `bpf_ktime_get_coarse_ns` (flow ages are measured against it).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}

/// All programmed services, sorted by name, with their backends and counters.
pub fn services(maps: &MapsView) -> Result<Vec<ServiceRow>, ReadError> {
    let mut rows = Vec::new();
    for entry in &maps.services {
        let (key, svc) = entry.map_err(rerr("services"))?;
        let name = name_from(&maps.names.get(&svc.id, 0).map_err(rerr("service names"))?);
        let c = sum_counter(&maps.service_stats.get(&svc.id, 0).map_err(rerr("service stats"))?);
        rows.push(ServiceRow {
            name,
            vip: ip_from16(key.addr).to_string(),
            port: u16::from_be(key.port),
            protocol: Protocol::from_number(key.proto).map_or_else(|| key.proto.to_string(), |p| p.to_string()),
            source: if svc.flags & SVC_F_SNAT != 0 { "snat" } else { "preserve" }.into(),
            backends: Vec::new(),
            packets: c.packets,
            bytes: c.bytes,
            affinity_timeout: (svc.affinity_timeout != 0).then_some(svc.affinity_timeout),
            source_ranges: Vec::new(),
            source_ranges_enforced: svc.flags & SVC_F_RANGES != 0,
            flow_tracking: if svc.flags & SVC_F_UNTRACKED != 0 { "none" } else { "full" }.into(),
            id: svc.id,
            backend_rows: Vec::new(),
            table: (svc.table_offset, svc.table_size),
        });
    }
    let by_id: HashMap<u32, usize> = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut ranges: BTreeMap<u32, Vec<ipnet::IpNet>> = BTreeMap::new();
    for key in maps.ranges.keys() {
        let key = key.map_err(rerr("source ranges"))?;
        let data = key.data();
        if let Some(net) = range_net((key.prefix_len(), data.addr)) {
            ranges.entry(u32::from_be_bytes(data.service)).or_default().push(net);
        }
    }
    for (id, mut nets) in ranges {
        if let Some(&i) = by_id.get(&id) {
            nets.sort();
            rows[i].source_ranges = nets.iter().map(ToString::to_string).collect();
        }
    }
    for bid in 0..MAX_BACKENDS {
        let b = maps.backends.get(&bid, 0).map_err(rerr("backends"))?;
        if b.flags & BE_F_IN_USE == 0 {
            continue;
        }
        let Some(&i) = by_id.get(&b.service_id) else { continue };
        if b.flags & (BE_F_ACTIVE | BE_F_UNROUTABLE) == 0 && b.flags & BE_F_REJECT != 0 {
            let service = rows[i].name.clone();
            rows[i].backend_rows.push(BackendRow {
                service,
                address: REJECT_ADDRESS.into(),
                weight: b.weight,
                state: "reject".into(),
                reason: None,
                packets: 0,
                bytes: 0,
                id: bid,
            });
            continue;
        }
        let c = sum_counter(&maps.backend_stats.get(&bid, 0).map_err(rerr("backend stats"))?);
        let address = sock(ip_from16(b.addr), u16::from_be(b.port));
        let reason = unroutable_reason(&b);
        // `backends` lists what is programmed; `xlb backends` shows the rest too.
        if reason.is_none() {
            rows[i].backends.push(address.clone());
        }
        let service = rows[i].name.clone();
        rows[i].backend_rows.push(BackendRow {
            service,
            address,
            weight: b.weight,
            state: backend_state(&b, reason.is_some()).into(),
            reason,
            packets: c.packets,
            bytes: c.bytes,
            id: bid,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// The `state` of a backend row.
fn backend_state(b: &lb_common::Backend, unroutable: bool) -> &'static str {
    match (unroutable, b.weight) {
        (true, _) => "unroutable",
        (false, 0) => "draining",
        (false, _) => "active",
    }
}

/// Connection-table entries, optionally of one service.
pub fn flows(maps: &MapsView, service: Option<&str>) -> Result<Vec<FlowRow>, ReadError> {
    let svcs = services(maps)?;
    let by_id: HashMap<u32, &ServiceRow> = svcs.iter().map(|s| (s.id, s)).collect();
    let now = monotonic_ns();
    let mut rows = Vec::new();
    for entry in &maps.flows {
        let (key, flow) = entry.map_err(rerr("flows"))?;
        let Some(svc) = by_id.get(&flow.service_id) else { continue };
        if service.is_some_and(|s| s != svc.name) {
            continue;
        }
        let b = maps.backends.get(&flow.backend_id, 0).map_err(rerr("backends"))?;
        let live = b.flags & BE_F_ACTIVE != 0 && b.generation == flow.backend_gen;
        rows.push(FlowRow {
            service: svc.name.clone(),
            protocol: if key.proto == PROTO_TCP { "tcp" } else { "udp" }.into(),
            client: sock(ip_from16(key.src), u16::from_be(key.sport)),
            backend: sock(ip_from16(b.addr), u16::from_be(b.port)),
            state: if !live {
                "stale"
            } else if flow.state == FLOW_CLOSING {
                "closing"
            } else {
                "open"
            }
            .into(),
            age_seconds: now.saturating_sub(flow.created_ns) / 1_000_000_000,
        });
    }
    rows.sort_by(|a, b| (&a.service, &a.client).cmp(&(&b.service, &b.client)));
    Ok(rows)
}

/// Global counters by name, in index order.
pub fn stats(maps: &MapsView) -> Result<Vec<(&'static str, u64)>, ReadError> {
    Stat::ALL
        .iter()
        .map(|s| {
            let v = maps.stats.get(&(*s as u32), 0).map_err(rerr("stats"))?;
            Ok((s.name(), v.iter().sum()))
        })
        .collect()
}

/// A backend's share of a lookup table.
#[derive(Clone, Debug, Serialize)]
pub struct MaglevShare {
    /// Backend `ip:port` ([`REJECT_ADDRESS`] for the reject share).
    pub address: String,
    /// Entries of the table pointing to it.
    pub slots: u32,
    /// Fraction of the table (`slots / table_size`).
    pub share: f64,
}

/// The lookup table of one service.
#[derive(Clone, Debug, Serialize)]
pub struct MaglevRow {
    /// Service name.
    pub service: String,
    /// Entries of the table.
    pub table_size: u32,
    /// Largest backend share over the average (weighted), 1.0 is perfect.
    pub max_avg: f64,
    /// The backends' shares.
    pub backends: Vec<MaglevShare>,
}

/// Each backend's share of a service's lookup table: its live region of
/// the table array. `table_size` is 0 when the service has no usable backend.
pub fn maglev(maps: &MapsView, service: &str) -> Result<Option<MaglevRow>, ReadError> {
    let svcs = services(maps)?;
    let Some(svc) = svcs.iter().find(|s| s.name == service) else { return Ok(None) };
    let (offset, size) = svc.table;
    // The live region, entry by entry (a missing one ends it: no table).
    let entries: Option<Vec<u32>> = (offset..offset.saturating_add(size)).map(|i| maps.table.get(&i, 0).ok()).collect();
    let (size, counts) = match entries {
        Some(entries) if offset.checked_add(size).is_some() => (size, table_counts(entries.into_iter())),
        _ => (0, BTreeMap::new()),
    };
    Ok(Some(maglev_row(&svc.name, size, &svc.backend_rows, &counts)))
}

/// Slots per backend id.
fn table_counts(entries: impl Iterator<Item = u32>) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for id in entries {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// The row of `xlb maglev` from a table's slot counts.
fn maglev_row(service: &str, size: u32, rows: &[BackendRow], counts: &BTreeMap<u32, u32>) -> MaglevRow {
    let backends: Vec<MaglevShare> = rows
        .iter()
        .map(|b| {
            let slots = counts.get(&b.id).copied().unwrap_or(0);
            MaglevShare {
                address: b.address.clone(),
                slots,
                share: if size == 0 { 0.0 } else { f64::from(slots) / f64::from(size) },
            }
        })
        .collect();
    // Each backend's slots against its weight's share, not the plain average.
    let max_avg = crate::state::maglev::weighted_max_avg(backends.iter().zip(rows).map(|(b, r)| (b.slots, r.weight)));
    MaglevRow { service: service.to_owned(), table_size: size, max_avg, backends }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: &str, id: u32, weight: u32) -> BackendRow {
        BackendRow {
            service: "s".into(),
            address: address.into(),
            weight,
            state: "active".into(),
            reason: None,
            packets: 0,
            bytes: 0,
            id,
        }
    }

    #[test]
    fn maglev_shares_from_a_built_table() {
        use crate::state::maglev::{build, Entry};
        let entries = [("10.0.0.1:53", 7, 1), ("10.0.0.2:53", 9, 3), ("10.0.0.3:53", 4, 0)];
        let table = build(
            &entries.iter().map(|(a, id, w)| Entry { name: a.to_string(), id: *id, weight: *w }).collect::<Vec<_>>(),
            1021,
            0,
        );
        let rows: Vec<BackendRow> = entries.iter().map(|(a, id, w)| row(a, *id, *w)).collect();
        let r = maglev_row("s", 1021, &rows, &table_counts(table.iter().copied()));
        assert_eq!(r.table_size, 1021);
        let slots: Vec<u32> = r.backends.iter().map(|b| b.slots).collect();
        assert_eq!(slots.iter().sum::<u32>(), 1021);
        assert_eq!(slots[2], 0, "weight 0 holds no slot");
        assert!((r.backends[1].share - 0.75).abs() < 0.01, "{:?}", r.backends[1]);
        // Each backend against its weight's share (1/4 and 3/4), not the
        // plain average (which would say 0.75 / 0.5 = 1.5 for a perfect 1:3).
        assert!((1.0..1.02).contains(&r.max_avg), "{}", r.max_avg);
        let empty = maglev_row("s", 0, &rows, &BTreeMap::new());
        assert_eq!((empty.table_size, empty.max_avg), (0, 0.0));
        assert!(empty.backends.iter().all(|b| b.slots == 0 && b.share == 0.0));
    }
}
