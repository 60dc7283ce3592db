//! Typed handles on the data path's maps, opened either from a freshly
//! loaded object (the agent) or from their pins (the CLI, `/metrics`).
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    maps::{Array, IterableMap as _, Map, MapData, MapError},
    Ebpf,
};
use lb_common::{names, Counter, LAYOUT_VERSION};

use crate::bpf::handles::{self as kind, open, Handle};

/// Failure to open a map.
#[derive(Debug, thiserror::Error)]
#[expect(missing_docs, reason = "variant fields are named in the #[error] messages")]
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
    /// The newest maps under the pin path are of another layout (another
    /// xlb build runs the agent): reading them would give wrong numbers.
    #[error(
        "{pin_path} holds maps of xlb map layout v{found}, this xlb reads v{ours}: \
         use the xlb CLI of the build that runs the agent (compare `xlb --version` with the agent's image)"
    )]
    OtherLayout { pin_path: PathBuf, found: u32, ours: u32 },
    /// The lookup-table array cannot be mapped into memory.
    #[error("{name}: {message}")]
    Table { name: &'static str, message: String },
}

/// The map layout versions pinned under a pin path (its `v<N>`
/// directories), sorted.
pub fn pinned_layouts(pin_path: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(pin_path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix('v')?;
            (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then(|| n.parse().ok()).flatten()
        })
        .collect();
    found.sort_unstable();
    found
}

/// Refuses (for readers) a pin path whose newest maps are of another
/// layout than this build's.
pub fn check_layout(pin_path: &Path) -> Result<(), MapsError> {
    match pinned_layouts(pin_path).last() {
        Some(&found) if found != LAYOUT_VERSION => {
            Err(MapsError::OtherLayout { pin_path: pin_path.to_path_buf(), found, ours: LAYOUT_VERSION })
        }
        _ => Ok(()),
    }
}

/// Directory holding the maps of the current layout under a pin path.
pub fn map_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(format!("v{LAYOUT_VERSION}"))
}

/// All maps of the data path (their handle types: [`handles`](crate::bpf::handles)).
pub struct Maps {
    /// `XLB_SERVICES`: service key → service.
    pub services: Handle<kind::Services>,
    /// Service id → (key, service), the mirror of `services` the established
    /// path reads (`lb_common::ServiceSlot`).
    pub service_slots: Handle<kind::ServiceSlots>,
    /// `XLB_BACKENDS`: backends by id.
    pub backends: Handle<kind::Backends>,
    /// The lookup tables of all services (memory-mapped array).
    pub table: Table,
    /// Connection table: client flows.
    pub flows: Handle<kind::Flows>,
    /// Reverse-NAT table: backend reply tuple → client.
    pub reverse: Handle<kind::Reverses>,
    /// `XLB_NOTES` (see [`kind::Notes`]).
    pub notes: Handle<kind::Notes>,
    /// Per-service counters (per CPU).
    pub service_stats: Handle<kind::ServiceStats>,
    /// Per-backend counters (per CPU).
    pub backend_stats: Handle<kind::BackendStats>,
    /// Global data-path counters (per CPU), indexed by `lb_common::stats`.
    pub stats: Handle<kind::Stats>,
    /// Service names by id, for the CLI.
    pub names: Handle<kind::ServiceNames>,
    /// Attached interfaces (ifindex → `IF_F_*` flags).
    pub ifaces: Handle<kind::Ifaces>,
    /// Devmap of the interfaces XDP_REDIRECT may send to.
    pub tx_ports: Handle<kind::TxPorts>,
    /// Data-path settings (one entry).
    pub settings: Handle<kind::SettingsMap>,
    /// `XLB_VIPS`: VIP → number of services on it.
    pub vips: Handle<kind::Vips>,
    /// Session affinity (written by the data path; the writer deletes).
    pub affinity: Handle<kind::AffinityMap>,
    /// Allowed source prefixes per service.
    pub ranges: Handle<kind::Ranges>,
    /// The non-VIP pre-filter's bit sets and ready word (`lb_common::prefilter`).
    pub prefilter: Handle<kind::Prefilter>,
    /// `XLB_ANNOUNCE`: VIPs whose ARP/NDP the data path answers → nonzero.
    pub announce: Handle<kind::Announce>,
    /// `XLB_L2_IFACES`: announce interfaces (ifindex → MAC).
    pub l2_ifaces: Handle<kind::L2Ifaces>,
}

impl Maps {
    fn build(mut get: impl FnMut(&'static str) -> Result<Map, MapsError>) -> Result<Self, MapsError> {
        let get = &mut get;
        Ok(Self {
            services: open::<kind::Services>(get)?,
            service_slots: open::<kind::ServiceSlots>(get)?,
            backends: open::<kind::Backends>(get)?,
            table: Table::new(open::<kind::Table>(get)?)?,
            flows: open::<kind::Flows>(get)?,
            reverse: open::<kind::Reverses>(get)?,
            notes: open::<kind::Notes>(get)?,
            service_stats: open::<kind::ServiceStats>(get)?,
            backend_stats: open::<kind::BackendStats>(get)?,
            stats: open::<kind::Stats>(get)?,
            names: open::<kind::ServiceNames>(get)?,
            ifaces: open::<kind::Ifaces>(get)?,
            tx_ports: open::<kind::TxPorts>(get)?,
            settings: open::<kind::SettingsMap>(get)?,
            vips: open::<kind::Vips>(get)?,
            affinity: open::<kind::AffinityMap>(get)?,
            ranges: open::<kind::Ranges>(get)?,
            prefilter: open::<kind::Prefilter>(get)?,
            announce: open::<kind::Announce>(get)?,
            l2_ifaces: open::<kind::L2Ifaces>(get)?,
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
    values
        .iter()
        .fold(Counter::default(), |acc, c| Counter { packets: acc.packets + c.packets, bytes: acc.bytes + c.bytes })
}

/// The lookup-table array (`XLB_TABLE`, created `BPF_F_MMAPABLE`), mapped
/// shared and read-write into this process: reading, comparing and writing
/// its entries costs no system call.
///
/// The kernel stores array elements `round_up(value_size, 8)` bytes apart,
/// so entry `i` (a `u32`) is the first 4 bytes of the `i`-th 8-byte slot of
/// the mapping (and the array costs 8 bytes of kernel memory per entry); the
/// other 4 bytes stay 0. [`Table::new`] checks that layout against the
/// kernel's own lookup. Entries are accessed as [`AtomicU32`] because the
/// data path reads them concurrently (a `u32` store is never torn); writers
/// must publish new entries only through a later map update (the service
/// value that switches to their region), which orders them.
pub struct Table {
    /// Keeps the map's fd (the mapping holds its own reference to the map).
    map: Array<MapData, u32>,
    ptr: NonNull<AtomicU32>,
    /// Entries of the array (from the kernel, not from the object file).
    len: u32,
    /// `u32` words from one entry to the next.
    stride: usize,
    /// Length of the mapping in bytes (a whole number of pages).
    mapped: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value and only
// ever accessed through `&[AtomicU32]`, which is Send and Sync.
unsafe impl Send for Table {}
// SAFETY: as above; all access is atomic.
unsafe impl Sync for Table {}

/// Entries `offset..offset + len` of the [`Table`].
#[derive(Clone, Copy)]
pub struct Region<'t> {
    words: &'t [AtomicU32],
    stride: usize,
}

impl<'t> Region<'t> {
    /// Entries in the region.
    pub fn len(&self) -> usize {
        self.words.len().div_ceil(self.stride)
    }

    /// Whether the region has no entry.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The entries, in order, each as the atomic word the data path reads.
    pub fn slots(&self) -> impl Iterator<Item = &'t AtomicU32> + 't {
        self.words.iter().step_by(self.stride)
    }

    /// The entries' values, in order.
    pub fn values(&self) -> impl Iterator<Item = u32> + 't {
        self.slots().map(|w| w.load(Ordering::Relaxed))
    }

    /// Entry `i` of the region.
    pub fn get(&self, i: usize) -> Option<u32> {
        self.words.get(i.checked_mul(self.stride)?).map(|w| w.load(Ordering::Relaxed))
    }
}

impl Table {
    /// Maps the array. Fails when it was created without `BPF_F_MMAPABLE`
    /// (by an older xlb), is not an array of `u32`, or its mapping does not
    /// show what the kernel's lookup shows.
    pub fn new(map: Array<MapData, u32>) -> Result<Self, MapsError> {
        let name = names::TABLE;
        let fail = |message: String| MapsError::Table { name, message };
        let info = map.map().info().map_err(|source| MapsError::Open { name, source })?;
        if info.map_flags() & lb_common::TABLE_MAP_FLAGS == 0 {
            return Err(fail(
                "this lookup-table array was created without BPF_F_MMAPABLE (by an older xlb); \
                 restart the agent with this xlb, which replaces it"
                    .into(),
            ));
        }
        if info.value_size() != 4 {
            return Err(fail(format!("entries of {} bytes, expected 4", info.value_size())));
        }
        let len = info.max_entries();
        if len == 0 {
            return Err(fail("the array has no entry".into()));
        }
        // The kernel's element size: the value size rounded up to 8 bytes.
        let elem = (info.value_size() as usize).div_ceil(8) * 8;
        let stride = elem / 4;
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        let mapped = (len as usize * elem).div_ceil(page) * page;
        let fd = map.map().fd().as_fd().as_raw_fd();
        // SAFETY: a fresh mapping (no address hint, so nothing existing is
        // replaced) of an fd we hold open, of the array's size rounded up to
        // whole pages, which is what the kernel allows for an mmapable array.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), mapped, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(fail(format!("mmap of {mapped} bytes: {e}")));
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU32>()).ok_or_else(|| fail("mmap returned a null mapping".into()))?;
        let table = Self { map, ptr, len, stride, mapped };
        // Check the layout on the last entry: the mapping must show what the
        // kernel's lookup shows.
        let last = len - 1;
        let via_map = table.map.get(&last, 0).map_err(|source| MapsError::Open { name, source })?;
        if table.get(last) != Some(via_map) {
            return Err(fail(format!(
                "the mapped array shows {:?} at entry {last} where the kernel shows {via_map}: unexpected element layout",
                table.get(last)
            )));
        }
        Ok(table)
    }

    /// Entries of the array.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the array has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every word of the mapping that holds entries.
    fn words(&self) -> &[AtomicU32] {
        // SAFETY: `ptr` is the start of a live mapping of `len` elements of
        // `stride` u32 words each, page-aligned (so aligned for AtomicU32),
        // valid until `self` is dropped (which the returned lifetime cannot
        // outlive); every access, ours and the data path's, is a single
        // aligned 32-bit load or store, so sharing the words as atomics is
        // sound.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize * self.stride) }
    }

    /// All entries.
    pub fn all(&self) -> Region<'_> {
        Region { words: self.words(), stride: self.stride }
    }

    /// The entries `offset..offset + len`, if they lie within the array.
    pub fn region(&self, offset: u32, len: u32) -> Option<Region<'_>> {
        let start = offset as usize * self.stride;
        let end = (offset as usize).checked_add(len as usize)? * self.stride;
        Some(Region { words: self.words().get(start..end)?, stride: self.stride })
    }

    /// One entry.
    pub fn get(&self, index: u32) -> Option<u32> {
        self.all().get(index as usize)
    }

    /// The map itself (for its fd and info).
    pub fn map(&self) -> &Array<MapData, u32> {
        &self.map
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference into
        // it can outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
    }
}
