//! Typed handles on the data path's maps, opened either from a freshly
//! loaded object (the agent) or from their pins (the CLI, `/metrics`).
use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray},
    Ebpf,
};
use lb_common::{names, Backend, Counter, Flow, FlowKey, Reverse, Service, ServiceKey, ServiceName, LAYOUT_VERSION};

/// Failure to open a map.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// The pinned map does not exist.
    #[error("{path}: no pinned xlb map here; is an agent running with this --pin-path?")]
    NotPinned { path: PathBuf },
    /// The map exists but could not be opened or has another layout.
    #[error("{name}: {source}")]
    Open {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// The loaded object lacks a map.
    #[error("the eBPF object has no map {0}")]
    Missing(&'static str),
}

/// Directory holding the maps of the current layout under a pin path.
pub fn map_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(format!("v{LAYOUT_VERSION}"))
}

/// All maps of the data path.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: Array<MapData, Backend>,
    pub table: Array<MapData, u32>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub reverse: HashMap<MapData, FlowKey, Reverse>,
    pub service_stats: PerCpuArray<MapData, Counter>,
    pub backend_stats: PerCpuArray<MapData, Counter>,
    pub stats: PerCpuArray<MapData, u64>,
    pub names: Array<MapData, ServiceName>,
    pub ifaces: HashMap<MapData, u32, u32>,
    pub tx_ports: DevMapHash<MapData>,
    pub settings: Array<MapData, lb_common::settings::Settings>,
}

macro_rules! typed {
    ($get:expr, $name:expr) => {{
        let name: &'static str = $name;
        let map: Map = $get(name)?;
        map.try_into().map_err(|source| MapsError::Open { name, source })?
    }};
}

impl Maps {
    fn build(mut get: impl FnMut(&'static str) -> Result<Map, MapsError>) -> Result<Self, MapsError> {
        Ok(Self {
            services: typed!(get, names::SERVICES),
            backends: typed!(get, names::BACKENDS),
            table: typed!(get, names::TABLE),
            flows: typed!(get, names::FLOWS),
            reverse: typed!(get, names::REVERSE),
            service_stats: typed!(get, names::SERVICE_STATS),
            backend_stats: typed!(get, names::BACKEND_STATS),
            stats: typed!(get, names::STATS),
            names: typed!(get, names::SERVICE_NAMES),
            ifaces: typed!(get, names::IFACES),
            tx_ports: typed!(get, names::TX_PORTS),
            settings: typed!(get, lb_common::settings::SETTINGS_MAP),
        })
    }

    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Self::build(|name| ebpf.take_map(name).ok_or(MapsError::Missing(name)))
    }

    /// Opens the maps pinned under `pin_path`.
    pub fn open_pinned(pin_path: &Path) -> Result<Self, MapsError> {
        let dir = map_dir(pin_path);
        Self::build(|name| {
            let path = dir.join(name);
            if !path.exists() {
                return Err(MapsError::NotPinned { path });
            }
            let data = MapData::from_pin(&path).map_err(|source| MapsError::Open { name, source })?;
            Map::from_map_data(data).map_err(|source| MapsError::Open { name, source })
        })
    }
}

/// Sums a per-CPU counter.
pub fn sum_counter(values: &aya::maps::PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}
