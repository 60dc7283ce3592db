//! A read-only view of the pinned maps, for the readers (the CLI's
//! `services|backends|flows|stats|maglev`, `/metrics`): the maps they read,
//! opened once from their pins with `BPF_F_RDONLY` file descriptors, so a
//! reader cannot write them. [`CachedView`] keeps one view across
//! `/metrics` scrapes and opens the maps again only when their pins were
//! replaced (a new agent that could not keep them).
use std::{
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData};

use crate::bpf::{
    handles::{self as kind, open, Handle, Pinned},
    maps::{map_dir, MapsError},
};

/// The maps the readers read, opened read-only.
pub struct MapsView {
    /// `XLB_SERVICES`: services by VIP, port and protocol.
    pub services: Handle<kind::Services>,
    /// `XLB_BACKENDS`: backends by id.
    pub backends: Handle<kind::Backends>,
    /// The lookup-table array, read entry by entry.
    pub table: Handle<kind::Table>,
    /// `XLB_FLOWS`: the connection table.
    pub flows: Handle<kind::Flows>,
    /// Per-service counters, by service id.
    pub service_stats: Handle<kind::ServiceStats>,
    /// Per-backend counters, by backend id.
    pub backend_stats: Handle<kind::BackendStats>,
    /// Global counters, by `Stat`.
    pub stats: Handle<kind::Stats>,
    /// Service names, by service id.
    pub names: Handle<kind::ServiceNames>,
    /// Source ranges, by service id and prefix.
    pub ranges: Handle<kind::Ranges>,
    /// Which pins were opened: (device, inode) of each, in [`VIEW_MAPS`] order.
    pins: Vec<(u64, u64)>,
}

/// The maps in a view.
const VIEW_MAPS: [&str; 9] = [
    kind::Services::NAME,
    kind::Backends::NAME,
    kind::Table::NAME,
    kind::Flows::NAME,
    kind::ServiceStats::NAME,
    kind::BackendStats::NAME,
    kind::Stats::NAME,
    kind::ServiceNames::NAME,
    kind::Ranges::NAME,
];

/// `BPF_OBJ_GET`.
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_F_RDONLY`: a file descriptor that can read the map, not write it.
const BPF_F_RDONLY: u32 = 1 << 3;

/// `union bpf_attr` as `BPF_OBJ_GET` reads it.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// Opens the map pinned at `path` with a read-only file descriptor.
fn open_read_only(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let attr = ObjGetAttr { pathname: c.as_ptr() as u64, file_flags: BPF_F_RDONLY, ..Default::default() };
    // SAFETY: BPF_OBJ_GET reads `attr` (of the size given, zero past the
    // fields it knows) and the NUL-terminated path it points to, both alive
    // for the call; it returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &raw const attr, size_of::<ObjGetAttr>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// (device, inode) of each pin of a view, or the first that is missing.
fn pin_ids(dir: &Path) -> Result<Vec<(u64, u64)>, MapsError> {
    VIEW_MAPS
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).map_err(|_| MapsError::NotPinned { path })
        })
        .collect()
}

impl MapsView {
    /// Opens, read-only, the maps pinned under `pin_path`.
    pub fn open_pinned(pin_path: &Path) -> Result<Self, MapsError> {
        crate::bpf::maps::check_layout(pin_path)?;
        let dir = map_dir(pin_path);
        let pins = pin_ids(&dir)?;
        let mut get = |name: &'static str| -> Result<Map, MapsError> {
            let path = dir.join(name);
            let fd = open_read_only(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => MapsError::NotPinned { path: path.clone() },
                _ => MapsError::Open {
                    name,
                    source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "BPF_OBJ_GET",
                        io_error: e,
                    }),
                },
            })?;
            let data = MapData::from_fd(fd).map_err(|source| MapsError::Open { name, source })?;
            Map::from_map_data(data).map_err(|source| MapsError::Open { name, source })
        };
        let get = &mut get;
        Ok(Self {
            services: open::<kind::Services>(get)?,
            backends: open::<kind::Backends>(get)?,
            table: open::<kind::Table>(get)?,
            flows: open::<kind::Flows>(get)?,
            service_stats: open::<kind::ServiceStats>(get)?,
            backend_stats: open::<kind::BackendStats>(get)?,
            stats: open::<kind::Stats>(get)?,
            names: open::<kind::ServiceNames>(get)?,
            ranges: open::<kind::Ranges>(get)?,
            pins,
        })
    }
}

/// A pinned map of kind `K`, opened read-only; `None` when it is not pinned
/// (no agent, or one of an xlb without that map).
fn open_pinned<K: Pinned>(pin_path: &Path) -> Result<Option<Handle<K>>, MapsError> {
    let name = K::NAME;
    let path = map_dir(pin_path).join(name);
    let fd = match open_read_only(&path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(MapsError::Open {
                name,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "BPF_OBJ_GET", io_error: e }),
            })
        }
    };
    let data = MapData::from_fd(fd).map_err(|source| MapsError::Open { name, source })?;
    let map = Map::from_map_data(data)
        .map_err(|source| MapsError::Open { name, source })?
        .try_into()
        .map_err(|source| MapsError::Open { name, source })?;
    Ok(Some(map))
}

/// The VIPs in the pinned `XLB_ANNOUNCE` (the VIPs this node answers ARP
/// and NDP for), sorted; `None` when it is not pinned.
pub fn announced_vips(pin_path: &Path) -> Result<Option<Vec<std::net::IpAddr>>, MapsError> {
    let Some(map) = open_pinned::<kind::Announce>(pin_path)? else { return Ok(None) };
    let mut vips: Vec<std::net::IpAddr> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| *v != 0)
        .map(|(k, _)| crate::state::writer::ip_from16(k))
        .collect();
    vips.sort();
    Ok(Some(vips))
}

/// The veths in the pinned `XLB_IFACES` with `IF_F_PEER` (the tc program
/// sends into their peers with `bpf_redirect_peer`), by name in this
/// namespace (`#N` for an index without one), sorted; `None` when it is
/// not pinned.
pub fn peer_veths(pin_path: &Path) -> Result<Option<Vec<String>>, MapsError> {
    let Some(map) = open_pinned::<kind::Ifaces>(pin_path)? else { return Ok(None) };
    let mut names: Vec<String> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, caps)| caps & lb_common::IF_F_PEER != 0)
        .map(|(i, _)| {
            nix::net::if_::if_indextoname(i).ok().and_then(|n| n.into_string().ok()).unwrap_or(format!("#{i}"))
        })
        .collect();
    names.sort();
    Ok(Some(names))
}

/// One [`MapsView`] kept across uses (the `/metrics` scrapes): opened on
/// first use, opened again only when a pin was replaced or removed.
#[derive(Debug)]
pub struct CachedView {
    pin_path: PathBuf,
    view: Option<MapsView>,
    /// Times the maps were opened (for the tests).
    opens: u64,
}

impl std::fmt::Debug for MapsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapsView").field("pins", &self.pins).finish_non_exhaustive()
    }
}

impl CachedView {
    /// A cache of the view of the maps pinned under `pin_path` (nothing is
    /// opened yet).
    pub fn new(pin_path: PathBuf) -> Self {
        Self { pin_path, view: None, opens: 0 }
    }

    /// The view, if the maps are pinned: the one held, while every pin is
    /// the one it opened (one `stat` per map), else a new one.
    pub fn get(&mut self) -> Result<&MapsView, MapsError> {
        let current = pin_ids(&map_dir(&self.pin_path));
        let fresh = matches!((&self.view, &current), (Some(v), Ok(ids)) if v.pins == *ids);
        if !fresh {
            self.view = None;
            current?;
            self.view = Some(MapsView::open_pinned(&self.pin_path)?);
            self.opens += 1;
        }
        Ok(self.view.as_ref().expect("just opened"))
    }

    /// How many times the maps were opened.
    pub fn opens(&self) -> u64 {
        self.opens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pin directory removed on drop.
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Needs root and a bpffs at /sys/fs/bpf (as CI has): fails loudly
    /// without them rather than passing unseen.
    #[test]
    fn opened_once_read_only_and_again_when_the_pins_are_replaced() {
        let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/xlb-unit-view-{}", std::process::id())));
        let ebpf =
            crate::bpf::datapath::load_with(&pins.0, 1024, 4096).expect("loading the data path (needs root and bpffs)");
        let mut cache = CachedView::new(pins.0.clone());
        assert_eq!(cache.opens(), 0, "nothing opened before the first use");
        for _ in 0..3 {
            cache.get().expect("the view");
        }
        assert_eq!(cache.opens(), 1, "kept across uses while the pins stay");

        // Read-only: a write through the view is refused by the kernel.
        let mut view = MapsView::open_pinned(&pins.0).expect("the view");
        let name = view.names.get(&0, 0).expect("it reads");
        assert!(view.names.set(0, name, 0).is_err(), "a reader's map fd must not write");

        // New pins (a new agent that could not keep them): opened again.
        drop(ebpf);
        std::fs::remove_dir_all(&pins.0).expect("removing the pins");
        assert!(cache.get().is_err(), "no pins: no view");
        let _ebpf = crate::bpf::datapath::load_with(&pins.0, 1024, 4096).expect("loading the data path again");
        cache.get().expect("the view of the new pins");
        assert_eq!(cache.opens(), 2);
        cache.get().expect("the view");
        assert_eq!(cache.opens(), 2);
    }
}
