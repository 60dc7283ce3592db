//! Keys and values of the BPF maps, and their names and sizes.

/// Layout version of the pinned maps. Bump when any type below changes in a
/// way an older map cannot be read as (new maps, and a padding field that
/// becomes a field whose 0 means "off", as `Service::affinity_timeout`, do
/// not need it); the pin directory holds maps under `v<LAYOUT_VERSION>/` so
/// an agent never misreads maps written by another layout. An agent that
/// finds maps of an older layout carries them into its own
/// (`lb-userspace`'s `bpf::migrate`, which lists each version's changes).
///
/// v2: `Settings::flags` (`XLB_SETTINGS` values grew from 8 to 12 bytes).
/// v3: replies of services with [`SVC_F_REPLY_NOTE`] have no reverse entry
/// per flow but the backend's note in `XLB_NOTES` (new): a v2 program would
/// not translate them, so it must not take these maps over.
pub const LAYOUT_VERSION: u32 = 3;

/// Most services (VIP, port, protocol) the data path can hold.
pub const MAX_SERVICES: u32 = 16384;
/// Most backends over all services (10,000 services of 10 backends fit).
/// The per-backend counters are per-CPU: 16 bytes × this × CPUs of kernel
/// memory (2 MiB per CPU).
pub const MAX_BACKENDS: u32 = 131072;
/// Slots of a service's lookup table when it does not choose a size
/// (`maglev_table_size`).
pub const TABLE_SIZE: u32 = 65537;
/// Lookup-table sizes a service may choose (primes, ascending).
pub const TABLE_SIZES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, 131071];
/// Each service owns two adjacent table regions of its table size; the
/// service value names the live one, so a new table is written beside the
/// old and switched atomically.
pub const TABLE_REGIONS: u32 = 2;
/// Default entries of the lookup-table array; the agent's `--table-entries`
/// sets it when the array is created. The kernel stores array entries 8
/// bytes apart, so this is 128 MiB of kernel memory (128 services with
/// tables of the default size).
pub const TABLE_ENTRIES: u32 = 1 << 24;
/// Map flags of the lookup-table array: `BPF_F_MMAPABLE`, so userspace
/// reads and writes its entries through a shared mapping.
pub const TABLE_MAP_FLAGS: u32 = 1024;
/// Default connection-table size.
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 20;
/// Most interfaces the agent attaches to.
pub const MAX_IFACES: u32 = 256;
/// Longest service name stored for the CLI.
pub const NAME_LEN: usize = 192;

/// First source port the SNAT allocator hands out.
pub const SNAT_PORT_MIN: u16 = 40000;
/// Number of source ports in the SNAT range.
pub const SNAT_PORT_COUNT: u16 = 20000;
/// Ports probed for a free SNAT tuple before the packet is dropped.
pub const SNAT_TRIES: u32 = 32;

/// Default idle timeout of UDP flows, seconds.
pub const DEFAULT_UDP_TIMEOUT: u32 = 30;
/// Default idle timeout of established TCP flows, seconds.
pub const DEFAULT_TCP_TIMEOUT: u32 = 3600;
/// Life of a TCP flow after FIN or RST, seconds.
pub const TCP_CLOSING_TIMEOUT: u32 = 10;

/// Magic value in the XDP metadata that asks the tc program to forward
/// (see [`ForwardMeta`]).
pub const META_MAGIC: u32 = 0x786c_6202;

/// The name of a pinned (ABI) map as a string literal, defined here once.
///
/// `lb-ebpf` declares each pinned map with this literal as its symbol name
/// (`#[export_name = lb_common::map_name!(...)]`: aya's `#[map]` attribute
/// takes only a literal, which a `const` cannot give), and userspace opens
/// the map by the same name through [`names`]. Pinned maps are found by
/// name: these strings are part of the on-disk layout and must not change.
#[macro_export]
macro_rules! map_name {
    (SERVICES) => {
        "XLB_SERVICES"
    };
    (SERVICE_SLOTS) => {
        "XLB_SVC_SLOTS"
    };
    (BACKENDS) => {
        "XLB_BACKENDS"
    };
    (TABLE) => {
        "XLB_TABLE"
    };
    (FLOWS) => {
        "XLB_FLOWS"
    };
    (REVERSE) => {
        "XLB_REVERSE"
    };
    (SERVICE_STATS) => {
        "XLB_SVC_STATS"
    };
    (BACKEND_STATS) => {
        "XLB_BE_STATS"
    };
    (STATS) => {
        "XLB_STATS"
    };
    (SERVICE_NAMES) => {
        "XLB_SVC_NAMES"
    };
    (IFACES) => {
        "XLB_IFACES"
    };
    (TX_PORTS) => {
        "XLB_TX_PORTS"
    };
    (VIPS) => {
        "XLB_VIPS"
    };
    (AFFINITY) => {
        "XLB_AFFINITY"
    };
    (RANGES) => {
        "XLB_RANGES"
    };
    (AGENT) => {
        "XLB_AGENT"
    };
    (SETTINGS) => {
        "XLB_SETTINGS"
    };
    (PREFILTER) => {
        "XLB_PREFILTER"
    };
    (ROUTE_GEN) => {
        "XLB_ROUTE_GEN"
    };
    (ANNOUNCE) => {
        "XLB_ANNOUNCE"
    };
    (L2_IFACES) => {
        "XLB_L2_IFACES"
    };
    (NOTES) => {
        "XLB_NOTES"
    };
}

/// Names of the pinned maps (declared in `lb-ebpf/src/maps.rs`; see
/// [`map_name!`](crate::map_name)).
pub mod names {
    /// (VIP, port, protocol) → service.
    pub const SERVICES: &str = map_name!(SERVICES);
    /// Service id → the service's key and value (a mirror of `XLB_SERVICES`).
    pub const SERVICE_SLOTS: &str = map_name!(SERVICE_SLOTS);
    /// Backend id → backend.
    pub const BACKENDS: &str = map_name!(BACKENDS);
    /// The lookup tables of all services.
    pub const TABLE: &str = map_name!(TABLE);
    /// Connection table.
    pub const FLOWS: &str = map_name!(FLOWS);
    /// Reply tuple → reverse translation.
    pub const REVERSE: &str = map_name!(REVERSE);
    /// Per-service counters.
    pub const SERVICE_STATS: &str = map_name!(SERVICE_STATS);
    /// Per-backend counters.
    pub const BACKEND_STATS: &str = map_name!(BACKEND_STATS);
    /// Global counters, indexed by `Stat`.
    pub const STATS: &str = map_name!(STATS);
    /// Service names for the CLI.
    pub const SERVICE_NAMES: &str = map_name!(SERVICE_NAMES);
    /// Interface index → `IF_F_*` capabilities.
    pub const IFACES: &str = map_name!(IFACES);
    /// Devmap for XDP_REDIRECT.
    pub const TX_PORTS: &str = map_name!(TX_PORTS);
    /// VIP → number of services on it.
    pub const VIPS: &str = map_name!(VIPS);
    /// Client-IP session affinity: (service, client address) → backend.
    pub const AFFINITY: &str = map_name!(AFFINITY);
    /// Source ranges allowed per service (LPM trie).
    pub const RANGES: &str = map_name!(RANGES);
    /// The agent record for `xlb status` (`crate::status`).
    pub const AGENT: &str = map_name!(AGENT);
    /// Data-path settings (`crate::settings`, one entry).
    pub const SETTINGS: &str = map_name!(SETTINGS);
    /// The non-VIP pre-filter's bit sets (`crate::prefilter`).
    pub const PREFILTER: &str = map_name!(PREFILTER);
    /// Route generation (one `u32`), bumped by the agent on routing changes.
    pub const ROUTE_GEN: &str = map_name!(ROUTE_GEN);
    /// VIPs this node announces (ARP/NDP answered) → nonzero.
    pub const ANNOUNCE: &str = map_name!(ANNOUNCE);
    /// Announce interfaces: ifindex → [`L2Iface`](crate::L2Iface) (its MAC).
    pub const L2_IFACES: &str = map_name!(L2_IFACES);
    /// Backend (address, port, protocol) → the VIP its replies leave from
    /// ([`ReplyNote`](crate::ReplyNote)).
    pub const NOTES: &str = map_name!(NOTES);
}

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

// Keys and values holding addresses are 8-byte aligned (their sizes are
// multiples of 8 already, so the layout does not change): the BPF backend
// copies and zeroes aligned fields with word stores, unaligned ones through
// byte-loop memcpy/memset calls.

/// Service lookup key.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// VIP, IPv4-mapped when IPv4.
    pub addr: [u8; 16],
    /// Port, network byte order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Explicit padding, zero.
    pub _pad: u8,
}

/// `Service::flags`: rewrite the client source to the node (SNAT).
pub const SVC_F_SNAT: u32 = 1;
/// `Service::flags`: the VIP is IPv6.
pub const SVC_F_IPV6: u32 = 2;
/// `Service::flags`: only clients inside the service's prefixes in
/// `XLB_RANGES` reach it (`loadBalancerSourceRanges`); without the flag the
/// data path does no range lookup at all.
pub const SVC_F_RANGES: u32 = 4;
/// `Service::flags`: `flow_tracking: none` (Katran's LRU bypass). Every
/// packet picks its backend from the lookup table; no connection or reverse
/// entry is written or used. Only without `SVC_F_SNAT` and without affinity
/// (the agent never sets it with either; a data path given both ignores
/// this flag). Replies (source preserved) are translated from the backend's
/// (address, port, protocol) alone, which the agent keeps unambiguous.
pub const SVC_F_UNTRACKED: u32 = 8;
/// `Service::flags`: a tracked `source: preserve` service none of whose
/// backends (address, port, protocol) serves another service. A new flow
/// records its connection entry only, no reverse entry: its replies are
/// translated through the backend's [`ReplyNote`] in `XLB_NOTES` (written
/// once per backend, not per flow), which the agent keeps unambiguous by
/// setting this flag only then. One insert per new flow instead of two.
pub const SVC_F_REPLY_NOTE: u32 = 16;

/// Entries of the data path's hot-flow cache (`XLB_FLOW_CACHE`, not
/// pinned) per possible CPU: the agent creates the map with this many
/// entries times the possible CPUs (two ways of 64 bytes per set: 1 MiB
/// per CPU).
pub const FLOW_CACHE_ENTRIES_PER_CPU: u32 = 16384;

/// Entries of `XLB_NOTES` (an LRU hash: notes of backends long gone make
/// room by themselves).
pub const NOTE_ENTRIES: u32 = MAX_BACKENDS * 2;

/// What a reply from one backend is translated back to (`XLB_NOTES`, keyed
/// by the backend's (address, port, protocol) as a [`ServiceKey`]): written
/// by the data path for services with [`SVC_F_UNTRACKED`] or
/// [`SVC_F_REPLY_NOTE`], trusted only while the service slot still has that
/// VIP and no SNAT and the backend slot that generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyNote {
    /// The service's key: VIP, port, protocol.
    pub vip: ServiceKey,
    /// The service id (checked against `XLB_SVC_SLOTS`).
    pub service_id: u32,
    /// The backend id and its slot's generation when noted.
    pub backend_id: u32,
    /// See `backend_id`.
    pub backend_gen: u32,
}

/// Service value, read by the data path on every packet to a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into the per-service arrays (stats, names, table regions).
    pub id: u32,
    /// `SVC_F_*`.
    pub flags: u32,
    /// First entry of the live lookup table in `XLB_TABLE`.
    pub table_offset: u32,
    /// Entries of the lookup table; 0 when the service has no usable backend.
    pub table_size: u32,
    /// Idle timeout of UDP flows, seconds.
    pub udp_timeout: u32,
    /// Idle timeout of established TCP flows, seconds.
    pub tcp_timeout: u32,
    /// Seed of the flow hash.
    pub hash_seed: u32,
    /// Client-IP session affinity timeout, seconds; 0: no affinity. (Was
    /// padding, always 0, in maps written before affinity existed.)
    pub affinity_timeout: u32,
}

/// `XLB_SVC_SLOTS` value: a service's key and value, indexed by service id
/// (a mirror of `XLB_SERVICES` the map writer keeps: written with it,
/// zeroed when the service goes). A packet of an established flow finds its
/// service here through the flow's `service_id` — an array read instead of
/// a hash lookup — and uses it only when `key` is the packet's own service
/// key (so the VIP still maps to that service id); otherwise, and for every
/// packet without a flow, the data path looks `XLB_SERVICES` up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlot {
    /// The service's key; all zero (matching no packet) when the id is free.
    pub key: ServiceKey,
    /// Explicit padding, zero.
    pub _pad: u32,
    /// The service's value, as in `XLB_SERVICES`.
    pub svc: Service,
}

/// `Backend::flags`: the backend exists (slot in use).
pub const BE_F_ACTIVE: u16 = 1;
/// `Backend::flags`, never with `BE_F_ACTIVE`: the slot holds a configured
/// backend that cannot be used now because the node has no route to it (so
/// no SNAT source address). The data path treats it as absent (no flow picks
/// it; it is in no lookup table); the agent programs it when a route
/// appears. Its `snat_addr` then holds, in its first four bytes (native
/// order), the errno of the failed route lookup, for the CLI.
pub const BE_F_UNROUTABLE: u16 = 2;

/// `Backend::flags`, never with `BE_F_ACTIVE`: the slot is a service's
/// reject share, not a backend. Its id fills `weight / (weight + the
/// usable backends' weights)` of the service's lookup table (a Gateway
/// API backendRef that does not resolve keeps its share of new flows, and
/// that share is rejected); a new flow whose pick lands on it is answered
/// as for a service without a usable backend (UDP: ICMP port unreachable,
/// TCP SYN: RST; anything else dropped) and counted (`Stat::RejectShare`).
/// Its address and port are zero; no flow is ever recorded on it. (A data
/// path that does not know this flag rejects the same: the slot is not
/// active.)
pub const BE_F_REJECT: u16 = 4;
/// `Backend::flags` of a slot in use (a backend, routable or not, or a
/// reject share); a slot with none of these is free.
pub const BE_F_IN_USE: u16 = BE_F_ACTIVE | BE_F_UNROUTABLE | BE_F_REJECT;

/// Backend value, indexed by backend id.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Address, IPv4-mapped when IPv4.
    pub addr: [u8; 16],
    /// Port, network byte order.
    pub port: u16,
    /// `BE_F_*`.
    pub flags: u16,
    /// Owning service id.
    pub service_id: u32,
    /// Bumped each time the slot is given to a new backend, so flows pinned
    /// to an old occupant of the slot are re-picked.
    pub generation: u32,
    /// Configured weight (informational for the CLI; the table carries it).
    pub weight: u32,
    /// Source address used when the service SNATs towards this backend
    /// (IPv4-mapped when IPv4).
    pub snat_addr: [u8; 16],
}

/// A connection-table key: the packet's 5-tuple as it arrives.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address, IPv4-mapped when IPv4.
    pub src: [u8; 16],
    /// Destination address, IPv4-mapped when IPv4.
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Explicit padding, zero.
    pub _pad: [u8; 3],
}

/// Flow state: UDP, or TCP seen open.
pub const FLOW_OPEN: u8 = 0;
/// Flow state: TCP FIN or RST seen.
pub const FLOW_CLOSING: u8 = 1;

/// Connection-table value of a client flow (key: client → VIP tuple).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The backend picked for the flow.
    pub backend_id: u32,
    /// That backend slot's generation when it was picked.
    pub backend_gen: u32,
    /// The service the flow belongs to.
    pub service_id: u32,
    /// SNAT source port (network byte order), 0 with `source: preserve`.
    pub snat_port: u16,
    /// `FLOW_*`.
    pub state: u8,
    /// Explicit padding, zero.
    pub _pad: u8,
    /// `bpf_ktime_get_ns` at creation.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns` of the last packet (refreshed at most once a second).
    pub last_seen_ns: u64,
}

/// Reverse-NAT value (key: the backend's reply tuple as it arrives).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reverse {
    /// Client address: the reply's new destination.
    pub client: [u8; 16],
    /// VIP: the reply's new source.
    pub vip: [u8; 16],
    /// Client port, network byte order.
    pub client_port: u16,
    /// VIP port, network byte order.
    pub vip_port: u16,
    /// The service the flow belongs to.
    pub service_id: u32,
    /// The backend the reply comes from.
    pub backend_id: u32,
    /// Idle timeout, seconds.
    pub timeout: u32,
    /// `bpf_ktime_get_ns` of the last packet (refreshed at most once a second).
    pub last_seen_ns: u64,
}

/// Entries of the session-affinity table (`XLB_AFFINITY`, an LRU hash):
/// one per (client address, service with affinity). About 6 MiB of kernel
/// memory; when more clients than this are sticky at once, the least
/// recently used lose their stickiness (their next new flow is picked by
/// the lookup table and sticks again).
pub const AFFINITY_ENTRIES: u32 = 65536;

/// Session-affinity key: a client address of one service.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// Client address, IPv4-mapped when IPv4.
    pub client: [u8; 16],
    /// The service with affinity.
    pub service_id: u32,
    /// Explicit padding, zero.
    pub _pad: u32,
}

/// Session-affinity value: the backend the client's last new flow went to.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// The backend the client's last new flow went to.
    pub backend_id: u32,
    /// The backend slot's generation then: an entry never steers to a later
    /// occupant of the slot.
    pub backend_gen: u32,
    /// The data path's clock (`bpf_ktime_get_coarse_ns`) at that new flow.
    pub last_ns: u64,
}

/// Most prefixes in `XLB_RANGES` over all services (an LPM trie, allocated
/// as entries are added).
pub const RANGE_ENTRIES: u32 = 65536;

/// Data of an `XLB_RANGES` key (the LPM trie key is this behind a 32-bit
/// prefix length): compared bit by bit from the first byte, so the service
/// id comes first, big-endian, then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeKey {
    /// Service id, big-endian.
    pub service: [u8; 4],
    /// Address, IPv4-mapped when IPv4.
    pub addr: [u8; 16],
}

/// Prefix length of an `XLB_RANGES` key for a prefix of `len` bits: the
/// service id's 32 bits, then (IPv4) the 96 bits of the `::ffff:0:0/96`
/// mapping, then the prefix. A client is looked up with all 160 bits.
#[inline(always)]
pub const fn range_prefix_len(v4: bool, len: u8) -> u32 {
    32 + if v4 { 96 } else { 0 } + len as u32
}

/// Prefix length of an `XLB_RANGES` lookup: the service id and the whole address.
pub const RANGE_FULL_PREFIX: u32 = 32 + 128;

/// Per-CPU packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// A service's name, for the CLI (NUL-padded UTF-8).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ServiceName {
    /// The name, NUL-padded UTF-8.
    pub name: [u8; NAME_LEN],
}

/// `IFACES` value flag: XDP_TX back out of this interface works.
pub const IF_F_TX: u32 = 1;
/// `IFACES` value flag: XDP_REDIRECT into this interface works.
pub const IF_F_REDIRECT: u32 = 2;
/// `IFACES` value flag: a veth whose peer is in another network namespace
/// and runs no XDP, and whose host side has no egress hook (root qdisc
/// `noqueue`, no `clsact`/`ingress` qdisc, no tcx program): the tc program
/// may send a packet whose MACs XDP already set straight into the peer
/// (`bpf_redirect_peer`), skipping only the host side's empty transmit.
pub const IF_F_PEER: u32 = 4;

/// Most VIPs in `XLB_ANNOUNCE` (every VIP of every service fits).
pub const MAX_ANNOUNCED: u32 = MAX_SERVICES;

/// `XLB_L2_IFACES` value: an announce interface (`--announce-interface`)
/// and its MAC, which XDP cannot read from the device itself. ARP requests
/// and neighbour solicitations for a VIP in `XLB_ANNOUNCE` are answered only
/// on interfaces in this map, with this MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Iface {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// Explicit padding, zero.
    pub _pad: [u8; 2],
    /// Reserved for `L2_F_*` flags, zero.
    pub flags: u32,
}

/// Magic value in the XDP metadata that asks the tc program to send the
/// frame, unchanged, back out of `ifindex` (an ARP reply or neighbour
/// advertisement built in XDP on an interface without XDP_TX; see
/// [`ForwardMeta`]). The kernel's neighbour-aware redirect of [`META_MAGIC`]
/// would refuse an ARP frame.
pub const META_MAGIC_L2: u32 = 0x786c_6203;

/// Magic value in the XDP metadata: as [`META_MAGIC`], and the XDP program
/// already wrote the next hop's MACs (the FIB lookup resolved the
/// neighbour), so the tc program may skip the neighbour lookup: into an
/// [`IF_F_PEER`] veth it sends with `bpf_redirect_peer`.
pub const META_MAGIC_ROUTED: u32 = 0x786c_6204;

/// XDP metadata that hands a rewritten packet to the tc program.
///
/// skb metadata outlives the hop it was written for: its bytes and length
/// survive veths, bridges and even a kernel forwarding hop, so another
/// node's (or another device's) tc program can see it. The tc program acts
/// only on metadata whose `magic`, `node_tag` and `ingress` are all its own,
/// and clears `magic` once read. 16 bytes: a multiple of 4, at most 32 (the
/// kernel's limits for XDP metadata).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardMeta {
    /// [`META_MAGIC`] while the hand-off is pending; 0 once tc read it.
    pub magic: u32,
    /// Interface to send the packet out of (the FIB lookup's answer).
    pub ifindex: u32,
    /// Interface the XDP program ran on (`ingress_ifindex`); tc compares it
    /// with the skb's `ingress_ifindex`.
    pub ingress: u32,
    /// This agent's [`crate::settings::Settings::node_tag`].
    pub node_tag: u32,
}

const _: () =
    assert!(core::mem::size_of::<ForwardMeta>().is_multiple_of(4) && core::mem::size_of::<ForwardMeta>() <= 32);

/// Converts an IPv4 address to the 16-byte IPv4-mapped form.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// Compares two 16-byte addresses as two 64-bit words (no memcmp call,
/// which BPF programs cannot make).
#[inline(always)]
pub fn addr_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let w = |x: &[u8; 16], i: usize| {
        u64::from_ne_bytes([x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4], x[i + 5], x[i + 6], x[i + 7]])
    };
    w(a, 0) == w(b, 0) && w(a, 8) == w(b, 8)
}

/// True when a 16-byte address is IPv4-mapped.
#[inline(always)]
pub const fn is_v4_mapped(a: &[u8; 16]) -> bool {
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]) == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        Affinity, AffinityKey, Backend, Counter, Flow, FlowKey, ForwardMeta, L2Iface, RangeKey, ReplyNote, Reverse,
        Service, ServiceKey, ServiceName, ServiceSlot,
    };
    // SAFETY: all types are repr(C), Copy, and every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Service {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for ServiceSlot {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Backend {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Flow {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Reverse {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Counter {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for ServiceName {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for ForwardMeta {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for AffinityKey {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for Affinity {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for RangeKey {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for L2Iface {}
    // SAFETY: repr(C), Copy, every bit pattern valid (no padding: 20 + 12 bytes).
    unsafe impl aya::Pod for ReplyNote {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 32);
        assert_eq!(size_of::<ServiceSlot>(), 56);
        assert_eq!(size_of::<Backend>(), 48);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 32);
        assert_eq!(size_of::<Reverse>(), 56);
        assert_eq!(size_of::<ReplyNote>(), 32);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<AffinityKey>(), 24);
        assert_eq!(size_of::<Affinity>(), 16);
        assert_eq!(size_of::<RangeKey>(), 20);
        assert_eq!(size_of::<L2Iface>(), 12);
    }

    #[test]
    fn mapped_addresses() {
        let m = v4_mapped([10, 0, 0, 1]);
        assert!(is_v4_mapped(&m));
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        assert!(!is_v4_mapped(&v6));
    }
}
