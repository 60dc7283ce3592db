//! The map writer: the only writer of the configuration maps. It diffs a
//! desired state against what the maps hold and writes only the difference,
//! in an order that never lets a packet see a half-built service: backends
//! first, then the lookup table (into the region the service does not use),
//! then the service value that switches to it; removals in reverse.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use aya::maps::MapError;
use lb_common::{
    Backend, Counter, Service, ServiceKey, ServiceName, BE_F_ACTIVE, DEFAULT_TCP_TIMEOUT,
    DEFAULT_UDP_TIMEOUT, MAX_BACKENDS, MAX_SERVICES, NAME_LEN, SVC_F_IPV6, SVC_F_SNAT, TABLE_SIZE,
};
use tracing::{debug, info};

use crate::{
    iface::route_source,
    maglev,
    maps::Maps,
    model::{DesiredState, Protocol, ServiceSpec, SourceMode},
};

/// A failure to program the maps.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("service {service}: no route to backend {backend}, so no SNAT source address: add a route or set snat_address ({source})")]
    NoRoute {
        service: String,
        backend: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the CPU count: {0}")]
    Cpus(std::io::Error),
    #[error("too many services: the data path holds at most {MAX_SERVICES}")]
    TooManyServices,
    #[error("too many backends: the data path holds at most {MAX_BACKENDS} over all services")]
    TooManyBackends,
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> WriteError {
    move |source| WriteError::Map { map, source }
}

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

/// The map key of a service.
pub fn service_key(vip: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey { addr: addr16(vip), port: port.to_be(), proto: protocol.number(), _pad: 0 }
}

/// First entry of a service's table region.
fn region_offset(id: u32, region: u32) -> u32 {
    (id * lb_common::TABLE_REGIONS + region) * TABLE_SIZE
}

/// One service as it sits in the maps.
#[derive(Clone, Debug)]
struct Programmed {
    value: Service,
    name: String,
    /// Active backends: address → (id, weight).
    backends: BTreeMap<SocketAddr, (u32, u32)>,
}

/// What an `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Owns the maps and knows what they hold.
pub struct MapWriter {
    maps: Maps,
    services: HashMap<ServiceKey, Programmed>,
    /// Mirror of the backend array (generations survive deactivation).
    backends: Vec<Backend>,
    seed: u32,
}

impl MapWriter {
    /// Takes the maps and reads back what a previous agent left in them, so
    /// that an unchanged configuration rewrites nothing and moves no flow.
    pub fn restore(maps: Maps, seed: u32) -> Result<Self, WriteError> {
        let mut backends = Vec::with_capacity(MAX_BACKENDS as usize);
        for i in 0..MAX_BACKENDS {
            backends.push(maps.backends.get(&i, 0).map_err(map_err("backends"))?);
        }
        let mut services = HashMap::new();
        for entry in maps.services.iter() {
            let (key, value) = entry.map_err(map_err("services"))?;
            let name = maps
                .names
                .get(&value.id, 0)
                .map(|n| name_from(&n))
                .map_err(map_err("service names"))?;
            let mut be = BTreeMap::new();
            for (id, b) in backends.iter().enumerate() {
                if b.flags & BE_F_ACTIVE != 0 && b.service_id == value.id {
                    be.insert(SocketAddr::new(ip_from16(b.addr), u16::from_be(b.port)), (id as u32, b.weight));
                }
            }
            services.insert(key, Programmed { value, name, backends: be });
        }
        if !services.is_empty() {
            info!(services = services.len(), "reusing pinned maps left by a previous agent");
        }
        Ok(Self { maps, services, backends, seed })
    }

    /// Read access to the maps (for the interface setup).
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Number of programmed services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service is programmed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Brings the maps to `desired`, writing only what differs.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, WriteError> {
        let mut report = ApplyReport::default();
        let wanted: HashMap<ServiceKey, &ServiceSpec> =
            desired.services.iter().map(|s| (service_key(s.vip, s.port, s.protocol), s)).collect();
        if wanted.len() > MAX_SERVICES as usize {
            return Err(WriteError::TooManyServices);
        }
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            self.remove_service(&key)?;
            report.removed += 1;
        }
        // Deterministic order: by name.
        let mut specs: Vec<&ServiceSpec> = desired.services.iter().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        for spec in specs {
            match self.apply_service(spec)? {
                Change::Added => report.added += 1,
                Change::Updated => report.updated += 1,
                Change::Unchanged => report.unchanged += 1,
            }
        }
        Ok(report)
    }

    fn free_service_id(&self) -> Result<u32, WriteError> {
        let used: BTreeSet<u32> = self.services.values().map(|p| p.value.id).collect();
        (0..MAX_SERVICES).find(|i| !used.contains(i)).ok_or(WriteError::TooManyServices)
    }

    fn free_backend_id(&self, taken: &BTreeSet<u32>) -> Result<u32, WriteError> {
        self.backends
            .iter()
            .enumerate()
            .position(|(i, b)| b.flags & BE_F_ACTIVE == 0 && !taken.contains(&(i as u32)))
            .map(|i| i as u32)
            .ok_or(WriteError::TooManyBackends)
    }

    fn write_backend(&mut self, id: u32, value: Backend) -> Result<(), WriteError> {
        self.maps.backends.set(id, value, 0).map_err(map_err("backends"))?;
        self.backends[id as usize] = value;
        Ok(())
    }

    fn zero_stats(&mut self, service: Option<u32>, backend: Option<u32>) -> Result<(), WriteError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| WriteError::Cpus(e))?;
        let zeros = || aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(WriteError::Cpus);
        if let Some(id) = service {
            self.maps.service_stats.set(id, zeros()?, 0).map_err(map_err("service stats"))?;
        }
        if let Some(id) = backend {
            self.maps.backend_stats.set(id, zeros()?, 0).map_err(map_err("backend stats"))?;
        }
        Ok(())
    }

    fn apply_service(&mut self, spec: &ServiceSpec) -> Result<Change, WriteError> {
        let key = service_key(spec.vip, spec.port, spec.protocol);
        let old = self.services.get(&key).cloned();
        let id = match &old {
            Some(p) => p.value.id,
            None => self.free_service_id()?,
        };
        if old.is_none() {
            self.zero_stats(Some(id), None)?;
        }

        // 1. Backends: keep the ids of those that remain, add new ones.
        let mut backends = BTreeMap::new();
        let mut taken = BTreeSet::new();
        let mut changed = false;
        for b in &spec.backends {
            let snat = match (spec.source, spec.snat_address) {
                (SourceMode::Preserve, _) => [0; 16],
                (SourceMode::Snat, Some(a)) => addr16(a),
                (SourceMode::Snat, None) => addr16(route_source(b.addr.ip()).map_err(|source| WriteError::NoRoute {
                    service: spec.name.clone(),
                    backend: b.addr,
                    source,
                })?),
            };
            let existing = old.as_ref().and_then(|p| p.backends.get(&b.addr)).map(|(id, _)| *id);
            let (bid, generation) = match existing {
                Some(bid) => (bid, self.backends[bid as usize].generation),
                None => {
                    let bid = self.free_backend_id(&taken)?;
                    (bid, self.backends[bid as usize].generation.wrapping_add(1))
                }
            };
            taken.insert(bid);
            let value = Backend {
                addr: addr16(b.addr.ip()),
                port: b.addr.port().to_be(),
                flags: BE_F_ACTIVE,
                service_id: id,
                generation,
                weight: b.weight as u32,
                snat_addr: snat,
            };
            if self.backends[bid as usize] != value {
                if existing.is_none() {
                    self.zero_stats(None, Some(bid))?;
                }
                self.write_backend(bid, value)?;
                changed = true;
            }
            backends.insert(b.addr, (bid, b.weight as u32));
        }

        // 2. The lookup table, into the region not in use, when the set of
        //    backends or their weights changed.
        let old_region = old.as_ref().map(|p| (p.value.table_offset / TABLE_SIZE) % lb_common::TABLE_REGIONS);
        let same_set = old.as_ref().is_some_and(|p| p.backends == backends);
        let (table_offset, table_size) = if same_set {
            let p = old.as_ref().expect("same_set implies old");
            (p.value.table_offset, p.value.table_size)
        } else {
            let entries: Vec<maglev::Entry> = backends
                .iter()
                .map(|(addr, (bid, w))| maglev::Entry { name: addr.to_string(), id: *bid, weight: *w })
                .collect();
            let table = maglev::build(&entries, TABLE_SIZE, self.seed);
            let region = old_region.map_or(0, |r| 1 - r);
            let offset = region_offset(id, region);
            for (i, bid) in table.iter().enumerate() {
                self.maps.table.set(offset + i as u32, *bid, 0).map_err(map_err("table"))?;
            }
            (offset, table.len() as u32)
        };

        // 3. The service value, which switches the data path over.
        let mut flags = 0;
        if spec.source == SourceMode::Snat {
            flags |= SVC_F_SNAT;
        }
        if spec.vip.is_ipv6() {
            flags |= SVC_F_IPV6;
        }
        let value = Service {
            id,
            flags,
            table_offset,
            table_size,
            udp_timeout: spec.udp_timeout.unwrap_or(DEFAULT_UDP_TIMEOUT),
            tcp_timeout: spec.tcp_timeout.unwrap_or(DEFAULT_TCP_TIMEOUT),
            hash_seed: self.seed,
            _pad: 0,
        };
        if old.as_ref().map(|p| p.name.as_str()) != Some(spec.name.as_str()) {
            self.maps.names.set(id, name_to(&spec.name), 0).map_err(map_err("service names"))?;
            changed = true;
        }
        if old.as_ref().map(|p| p.value) != Some(value) {
            self.maps.services.insert(key, value, 0).map_err(map_err("services"))?;
            changed = true;
        }

        // 4. Backends that left: deactivate (their flows re-pick on their next packet).
        if let Some(p) = &old {
            for (addr, (bid, _)) in &p.backends {
                if !backends.contains_key(addr) {
                    let mut b = self.backends[*bid as usize];
                    b.flags &= !BE_F_ACTIVE;
                    self.write_backend(*bid, b)?;
                    changed = true;
                    debug!(service = %spec.name, backend = %addr, "backend removed");
                }
            }
        }
        self.services.insert(key, Programmed { value, name: spec.name.clone(), backends });
        Ok(match (old.is_some(), changed) {
            (false, _) => Change::Added,
            (true, true) => Change::Updated,
            (true, false) => Change::Unchanged,
        })
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), WriteError> {
        let Some(p) = self.services.remove(key) else { return Ok(()) };
        match self.maps.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("services")(e)),
        }
        for (bid, _) in p.backends.values() {
            let mut b = self.backends[*bid as usize];
            b.flags &= !BE_F_ACTIVE;
            self.write_backend(*bid, b)?;
        }
        self.maps.names.set(p.value.id, name_to(""), 0).map_err(map_err("service names"))?;
        debug!(service = %p.name, "service removed");
        Ok(())
    }
}

enum Change {
    Added,
    Updated,
    Unchanged,
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
    fn regions_do_not_overlap() {
        assert_eq!(region_offset(0, 1), TABLE_SIZE);
        assert_eq!(region_offset(1, 0), 2 * TABLE_SIZE);
        assert!(region_offset(MAX_SERVICES - 1, 1) + TABLE_SIZE <= lb_common::TABLE_ENTRIES);
    }
}
