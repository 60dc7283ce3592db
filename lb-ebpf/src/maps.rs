//! The pinned maps: the data path's ABI with the agent, each declared here
//! once under its name from `lb_common::map_name!` (the names userspace
//! opens them by, `lb_common::names`). Userspace (the map writer) is the
//! only writer of the configuration maps; the data path writes flows,
//! reverse entries, affinity entries and counters.
//!
//! Maps private to one module of the data path (per-CPU caches, the scratch
//! area, the fragment table, rate limits) stay in that module.
use aya_ebpf::maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray};
use lb_common::{
    settings::Settings, status::AgentRecord, Affinity, AffinityKey, Backend, Counter, Flow, FlowKey, L2Iface, RangeKey,
    ReplyNote, Reverse, Service, ServiceKey, ServiceName, ServiceSlot, AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES,
    MAX_ANNOUNCED, MAX_BACKENDS, MAX_IFACES, MAX_SERVICES, NOTE_ENTRIES, RANGE_ENTRIES, TABLE_ENTRIES,
};

/// Declares each pinned map `$name` under the name `lb_common::map_name!($name)`.
/// It expands to the two attributes aya's `#[map(name = ...)]` emits (the
/// `maps` section, the name as the symbol), which takes only a literal.
macro_rules! abi_map {
    ($($(#[$attr:meta])* $name:ident: $ty:ty = $init:expr;)+) => {
        $(
            $(#[$attr])*
            #[unsafe(link_section = "maps")]
            #[unsafe(export_name = lb_common::map_name!($name))]
            pub static $name: $ty = $init;
        )+
    };
}

abi_map! {
    /// (VIP, port, protocol) → service.
    SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_SERVICES, 0);

    /// Service id → (key, service): the established path's way to its service
    /// (see `lb_common::ServiceSlot`).
    SERVICE_SLOTS: Array<ServiceSlot> = Array::pinned(MAX_SERVICES, 0);

    /// Backend id → backend.
    BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

    /// Lookup tables of all services: `table_offset + hash % table_size` → backend id.
    /// Mmapable (`BPF_F_MMAPABLE`): the agent writes it through a shared mapping.
    /// Its size is set by the agent's `--table-entries` when it is created.
    TABLE: Array<u32> = Array::pinned(TABLE_ENTRIES, lb_common::TABLE_MAP_FLAGS);

    /// Connection table: client → VIP tuple → flow.
    FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::pinned(DEFAULT_FLOW_ENTRIES, 0);

    /// Reply tuple (as the backend sends it) → what to translate it back to.
    REVERSE: LruHashMap<FlowKey, Reverse> = LruHashMap::pinned(DEFAULT_FLOW_ENTRIES, 0);

    /// Backend (address, port, protocol) → the VIP its replies leave from,
    /// for services whose replies need no reverse entry per flow (`notes`).
    /// Pinned: flows recorded without a reverse entry outlive a restart.
    NOTES: LruHashMap<ServiceKey, ReplyNote> = LruHashMap::pinned(NOTE_ENTRIES, 0);

    /// Per-service counters (client → backend direction).
    SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_SERVICES, 0);

    /// Per-backend counters.
    BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_BACKENDS, 0);

    /// Global counters, indexed by `lb_common::Stat`.
    STATS: PerCpuArray<u64> = PerCpuArray::pinned(lb_common::stats::STAT_COUNT, 0);

    /// Service names for the CLI (never read by the data path).
    SERVICE_NAMES: Array<ServiceName> = Array::pinned(MAX_SERVICES, 0);

    /// Interface index → `IF_F_*` capabilities.
    IFACES: HashMap<u32, u32> = HashMap::pinned(MAX_IFACES, 0);

    /// Devmap for XDP_REDIRECT, keyed by ifindex.
    TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_IFACES, 0);

    /// VIP addresses (IPv4-mapped for IPv4) → number of services on them.
    /// Written by the agent; echo requests to these are answered.
    VIPS: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_SERVICES, 0);

    /// Client-IP session affinity: (client address, service id) → the backend
    /// of the client's last new flow to the service, and when. Written by the
    /// data path; the agent deletes a service's entries when it removes the
    /// service or turns its affinity off.
    AFFINITY: LruHashMap<AffinityKey, Affinity> = LruHashMap::pinned(AFFINITY_ENTRIES, 0);

    /// Allowed client prefixes of the services with `SVC_F_RANGES`: an LPM trie
    /// keyed by (service id, address) (see `lb_common::RangeKey`).
    RANGES: LpmTrie<RangeKey, u8> = LpmTrie::pinned(RANGE_ENTRIES, 0);

    /// The agent record for `xlb status` (`lb_common::status`): written by the
    /// agent, never read by the data path.
    AGENT: Array<AgentRecord> = Array::pinned(1, 0);

    /// Agent-written settings (one entry): the flood guard's rate, the node tag.
    SETTINGS: Array<Settings> = Array::pinned(1, 0);

    /// The non-VIP pre-filter's bit sets and ready word (written by the agent;
    /// see `lb_common::prefilter`).
    PREFILTER: Array<u64> = Array::pinned(lb_common::prefilter::PREFILTER_ENTRIES, 0);

    /// Route generation (one entry): the agent bumps it when routing or
    /// neighbours change, which invalidates every cached next hop (`nexthop`).
    ROUTE_GEN: Array<u32> = Array::pinned(1, 0);
}

abi_map! {
    /// VIPs this node announces (IPv4-mapped for IPv4) → nonzero: ARP
    /// requests and neighbour solicitations for them are answered on the
    /// interfaces of `L2_IFACES` (`l2`). Written by the agent (`--announce l2`).
    ANNOUNCE: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_ANNOUNCED, 0);
}

abi_map! {
    /// Announce interfaces: ifindex → its MAC (`lb_common::L2Iface`).
    L2_IFACES: HashMap<u32, L2Iface> = HashMap::pinned(MAX_IFACES, 0);
}
