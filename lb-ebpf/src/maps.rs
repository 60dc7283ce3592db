//! The BPF maps. Userspace (the map writer) is the only writer of the
//! configuration maps; the data path writes flows, reverse entries and
//! counters.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::{
    Affinity, AffinityKey, Backend, Counter, Flow, FlowKey, RangeKey, Reverse, Service, ServiceKey, ServiceName, ServiceSlot,
    AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, MAX_BACKENDS, MAX_IFACES, MAX_SERVICES, RANGE_ENTRIES, TABLE_ENTRIES,
};

/// (VIP, port, protocol) → service.
#[map(name = "XLB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_SERVICES, 0);

/// Service id → (key, service): the established path's way to its service
/// (see `lb_common::ServiceSlot`).
#[map(name = "XLB_SVC_SLOTS")]
pub static SERVICE_SLOTS: Array<ServiceSlot> = Array::pinned(MAX_SERVICES, 0);

/// Backend id → backend.
#[map(name = "XLB_BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Lookup tables of all services: `table_offset + hash % table_size` → backend id.
/// Mmapable (`BPF_F_MMAPABLE`): the agent writes it through a shared mapping.
/// Its size is set by the agent's `--table-entries` when it is created.
#[map(name = "XLB_TABLE")]
pub static TABLE: Array<u32> = Array::pinned(TABLE_ENTRIES, lb_common::TABLE_MAP_FLAGS);

/// Connection table: client → VIP tuple → flow.
#[map(name = "XLB_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::pinned(DEFAULT_FLOW_ENTRIES, 0);

/// Reply tuple (as the backend sends it) → what to translate it back to.
#[map(name = "XLB_REVERSE")]
pub static REVERSE: LruHashMap<FlowKey, Reverse> = LruHashMap::pinned(DEFAULT_FLOW_ENTRIES, 0);

/// Per-service counters (client → backend direction).
#[map(name = "XLB_SVC_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// Per-backend counters.
#[map(name = "XLB_BE_STATS")]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Global counters, indexed by `lb_common::Stat`.
#[map(name = "XLB_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(lb_common::stats::STAT_COUNT, 0);

/// Service names for the CLI (never read by the data path).
#[map(name = "XLB_SVC_NAMES")]
pub static SERVICE_NAMES: Array<ServiceName> = Array::pinned(MAX_SERVICES, 0);

/// Interface index → `IF_F_*` capabilities.
#[map(name = "XLB_IFACES")]
pub static IFACES: HashMap<u32, u32> = HashMap::pinned(MAX_IFACES, 0);

/// Devmap for XDP_REDIRECT, keyed by ifindex.
#[map(name = "XLB_TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_IFACES, 0);

/// Client-IP session affinity: (client address, service id) → the backend
/// of the client's last new flow to the service, and when. Written by the
/// data path; the agent deletes a service's entries when it removes the
/// service or turns its affinity off.
#[map(name = "XLB_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, Affinity> = LruHashMap::pinned(AFFINITY_ENTRIES, 0);

/// Allowed client prefixes of the services with `SVC_F_RANGES`: an LPM trie
/// keyed by (service id, address) (see `lb_common::RangeKey`).
#[map(name = "XLB_RANGES")]
pub static RANGES: LpmTrie<RangeKey, u8> = LpmTrie::pinned(RANGE_ENTRIES, 0);

/// The agent record for `xlb status` (`lb_common::status`): written by the
/// agent, never read by the data path.
#[map(name = "XLB_AGENT")]
pub static AGENT: Array<lb_common::status::AgentRecord> = Array::pinned(1, 0);
