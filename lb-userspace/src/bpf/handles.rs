//! The pinned maps userspace opens, as one table: each map's name
//! (`lb_common::names`) and the typed handle it is opened as. [`Maps`] (the
//! agent's, read-write) and [`MapsView`] (the readers', read-only) both open
//! their maps through it, so a map's name and type are written once.
//!
//! [`Maps`]: crate::bpf::maps::Maps
//! [`MapsView`]: crate::bpf::view::MapsView
use aya::maps::{lpm_trie::LpmTrie, Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray};
use lb_common::{
    names, settings::Settings, Affinity, AffinityKey, Backend, Counter, Flow, FlowKey, L2Iface, RangeKey, ReplyNote,
    Reverse, Service, ServiceKey, ServiceName, ServiceSlot,
};

use crate::bpf::maps::MapsError;

/// One pinned map: its name and the type of its handle.
pub trait Pinned {
    /// The name it is pinned (and declared in the eBPF object) under.
    const NAME: &'static str;
    /// The typed handle userspace opens it as.
    type Handle: TryFrom<Map, Error = MapError>;
}

/// The handle of the pinned map `P`.
pub type Handle<P> = <P as Pinned>::Handle;

/// Opens the map `P` through `get` (which finds a map by name: in a loaded
/// object, or by its pin) as its typed handle.
pub(crate) fn open<P: Pinned>(
    get: &mut impl FnMut(&'static str) -> Result<Map, MapsError>,
) -> Result<Handle<P>, MapsError> {
    get(P::NAME)?.try_into().map_err(|source| MapsError::Open { name: P::NAME, source })
}

macro_rules! pinned_maps {
    ($($(#[$doc:meta])* $kind:ident = $name:ident: $handle:ty;)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $kind {}

            impl Pinned for $kind {
                const NAME: &'static str = names::$name;
                type Handle = $handle;
            }
        )+
    };
}

pinned_maps! {
    /// `XLB_SERVICES`: (VIP, port, protocol) → service.
    Services = SERVICES: HashMap<MapData, ServiceKey, Service>;
    /// `XLB_SVC_SLOTS`: service id → (key, service), the mirror of
    /// `XLB_SERVICES` the established path reads.
    ServiceSlots = SERVICE_SLOTS: Array<MapData, ServiceSlot>;
    /// `XLB_BACKENDS`: backends by id.
    Backends = BACKENDS: Array<MapData, Backend>;
    /// `XLB_TABLE`: the lookup tables of all services, entry by entry.
    Table = TABLE: Array<MapData, u32>;
    /// `XLB_FLOWS`: the connection table.
    Flows = FLOWS: HashMap<MapData, FlowKey, Flow>;
    /// `XLB_REVERSE`: backend reply tuple → client.
    Reverses = REVERSE: HashMap<MapData, FlowKey, Reverse>;
    /// `XLB_NOTES`: backend (address, port, protocol) → the VIP its replies
    /// leave from (written by the data path).
    Notes = NOTES: HashMap<MapData, ServiceKey, ReplyNote>;
    /// `XLB_SVC_STATS`: per-service counters (per CPU).
    ServiceStats = SERVICE_STATS: PerCpuArray<MapData, Counter>;
    /// `XLB_BE_STATS`: per-backend counters (per CPU).
    BackendStats = BACKEND_STATS: PerCpuArray<MapData, Counter>;
    /// `XLB_STATS`: global counters (per CPU), indexed by `lb_common::stats`.
    Stats = STATS: PerCpuArray<MapData, u64>;
    /// `XLB_SVC_NAMES`: service names by id.
    ServiceNames = SERVICE_NAMES: Array<MapData, ServiceName>;
    /// `XLB_IFACES`: ifindex → `IF_F_*` flags.
    Ifaces = IFACES: HashMap<MapData, u32, u32>;
    /// `XLB_TX_PORTS`: the devmap XDP_REDIRECT sends through.
    TxPorts = TX_PORTS: DevMapHash<MapData>;
    /// `XLB_SETTINGS`: the data-path settings (one entry).
    SettingsMap = SETTINGS: Array<MapData, Settings>;
    /// `XLB_VIPS`: VIP → number of services on it.
    Vips = VIPS: HashMap<MapData, [u8; 16], u32>;
    /// `XLB_AFFINITY`: session affinity (written by the data path).
    AffinityMap = AFFINITY: HashMap<MapData, AffinityKey, Affinity>;
    /// `XLB_RANGES`: allowed source prefixes per service.
    Ranges = RANGES: LpmTrie<MapData, RangeKey, u8>;
    /// `XLB_PREFILTER`: the non-VIP pre-filter's bit sets and ready word.
    Prefilter = PREFILTER: Array<MapData, u64>;
    /// `XLB_ANNOUNCE`: VIPs whose ARP/NDP the data path answers → nonzero.
    Announce = ANNOUNCE: HashMap<MapData, [u8; 16], u32>;
    /// `XLB_L2_IFACES`: announce interfaces (ifindex → MAC).
    L2Ifaces = L2_IFACES: HashMap<MapData, u32, L2Iface>;
}
