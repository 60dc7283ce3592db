//! Upgrades across map layouts: an agent that finds the maps of an older
//! layout (`<pin>/v<N>/`, N below [`LAYOUT_VERSION`]) and none of its own
//! carries them into its layout, so that an upgrade keeps every flow.
//!
//! The maps whose layout did not change since that version ([`CHANGED`]
//! says which did) are not copied but shared: the very map objects are
//! pinned again under the new layout's directory before the new program is
//! loaded ([`Migration::share`]), so the old program, forwarding until the
//! swap, and the new one read and write the same connection, reverse-NAT
//! and affinity tables and no flow can fall between them. The maps that
//! changed are created new and filled by converting every entry of the old
//! map ([`Migration::copy`]) before the agent's map writer reads them; the
//! old program keeps forwarding on its own copies until the new program
//! replaces it in the pinned links (atomically, per interface). Entries a
//! changed live map got from the old program meanwhile are converted once
//! more after the swap ([`Migration::finish`], never over an entry of the
//! new program), and only then are the old maps unpinned. A changed map
//! without a conversion is left to the agent, which rebuilds it, and
//! reported.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::{Path, PathBuf},
};

use aya::maps::{MapData, MapInfo, MapType};
use lb_common::{names, LAYOUT_VERSION};
use tracing::{info, warn};

use crate::bpf::maps::{map_dir, pinned_layouts};

/// A failure to carry maps over.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A pinned map could not be opened or read.
    #[error(
        "carrying {path} over from map layout v{from}: {source}; the old program keeps forwarding. \
         Fix the cause and restart the agent, or stop every agent using this pin path and remove {dir} (flows in progress will be re-picked)"
    )]
    Map {
        /// The map's pin.
        path: String,
        /// The old layout's directory.
        dir: String,
        /// The old layout version.
        from: u32,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// What one pass carried over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Entries written into the new maps.
    pub entries: u64,
    /// Maps copied (or converted) entry by entry.
    pub maps: Vec<String>,
    /// Maps left to the agent: no conversion from the old layout.
    pub skipped: Vec<String>,
}

/// Maps of an older layout to carry into this build's.
#[derive(Debug)]
pub struct Migration {
    from: u32,
    old_dir: PathBuf,
    new_dir: PathBuf,
    /// `<pin>/upgrading-v<N>`: exists from the first shared pin until the
    /// old maps are unpinned, so that an upgrade interrupted at any step
    /// (a crash, a kill, a failed start) is done again by the next start
    /// instead of its half-built maps being taken for this layout's.
    marker: PathBuf,
}

/// The layout history: the maps whose key or value layout changed in each
/// version (newest last). Every other map of an older layout is shared.
const CHANGED: &[(u32, &[&str])] = &[
    // `Settings` gained `flags` (8 → 12 bytes).
    (2, &[names::SETTINGS]),
    // No map changed; `XLB_NOTES` is new (a v2 program must not run on v3
    // maps: some replies have no reverse entry there).
    (3, &[]),
];

/// Maps the data path writes while it forwards: when changed, converted
/// again after the swap, for the entries the old program made meanwhile.
const LIVE: [&str; 3] = [names::FLOWS, names::REVERSE, names::AFFINITY];

/// The maps whose layout changed after version `from`.
fn changed_since(from: u32) -> Vec<&'static str> {
    CHANGED.iter().filter(|(v, _)| *v > from).flat_map(|(_, n)| n.iter().copied()).collect()
}

impl Migration {
    /// The migration to do at start, before the new maps are created: the
    /// newest older layout under `pin_path`, when this build's layout has
    /// no connection table pinned yet (else the maps are ours already, and
    /// an older directory is only a leftover, reported).
    pub fn pending(pin_path: &Path) -> Option<Self> {
        let new_dir = map_dir(pin_path);
        let marker = pin_path.join(format!("upgrading-v{LAYOUT_VERSION}"));
        let older = pinned_layouts(pin_path).into_iter().rfind(|v| *v < LAYOUT_VERSION);
        let Some(from) = older.filter(|v| pin_path.join(format!("v{v}")).join(names::FLOWS).exists()) else {
            // Nothing to carry over (any more: an upgrade that stopped just
            // after unpinning the old maps is done).
            let _ = std::fs::remove_dir(&marker);
            if let Some(v) = older {
                warn!(
                    dir = %pin_path.join(format!("v{v}")).display(),
                    "a directory of an older xlb layout (v{v}) without a connection table is pinned here; remove it"
                );
            }
            return None;
        };
        let old_dir = pin_path.join(format!("v{from}"));
        if marker.exists() {
            // An upgrade that did not finish: start it again from the old
            // maps (unpinning only drops paths; the maps a running program
            // uses stay, and the shared ones are pinned again).
            warn!(from, "an upgrade from this older layout did not finish: doing it again");
            let _ = std::fs::remove_dir_all(&new_dir);
            return Some(Self { from, old_dir, new_dir, marker });
        }
        if !new_dir.join(names::FLOWS).exists() {
            return Some(Self { from, old_dir, new_dir, marker });
        }
        warn!(
            dir = %old_dir.display(),
            "maps of an older xlb layout (v{from}) are pinned beside this agent's (v{LAYOUT_VERSION}) and not carried \
             over (this layout's maps exist already); remove it once no agent of the old version runs"
        );
        None
    }

    /// The old layout version.
    pub fn from(&self) -> u32 {
        self.from
    }

    /// Gives up before the new program was attached: this layout's
    /// directory and the marker go (unpinning drops paths only: the old
    /// program and its maps are untouched), so the next start begins anew.
    pub fn abandon(&self) {
        let _ = std::fs::remove_dir_all(&self.new_dir);
        let _ = std::fs::remove_dir_all(&self.marker);
    }

    /// The old layout's map names, sorted.
    fn old_maps(&self) -> Result<Vec<String>, MigrateError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.old_dir)
            .map_err(|e| self.error(&self.old_dir, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Before the new program is loaded: pins every map of the old layout
    /// that did not change under the new layout's directory too, so that
    /// loading reuses it. Returns the names shared.
    pub fn share(&self) -> Result<Vec<String>, MigrateError> {
        std::fs::create_dir_all(&self.marker).map_err(|e| self.error(&self.marker, e))?;
        std::fs::create_dir_all(&self.new_dir).map_err(|e| self.error(&self.new_dir, e))?;
        let changed = changed_since(self.from);
        let mut shared = Vec::new();
        for name in self.old_maps()? {
            if changed.contains(&name.as_str()) {
                continue;
            }
            let (old, new) = (self.old_dir.join(&name), self.new_dir.join(&name));
            let map = MapData::from_pin(&old).map_err(|e| self.error(&old, io::Error::other(e.to_string())))?;
            map.pin(&new).map_err(|e| self.error(&new, io::Error::other(e.to_string())))?;
            shared.push(name);
        }
        Ok(shared)
    }

    /// After loading (the changed maps are new, pinned and still unused):
    /// converts every entry of the old changed maps into them.
    pub fn copy(&self, shared: &[String]) -> Result<Carried, MigrateError> {
        let mut carried = Carried::default();
        let changed = changed_since(self.from);
        for name in self.old_maps()?.into_iter().filter(|n| changed.contains(&n.as_str())) {
            match self.copy_map(&name, Flags::Any)? {
                Some(n) => {
                    carried.entries += n;
                    carried.maps.push(name);
                }
                None => carried.skipped.push(name),
            }
        }
        info!(
            from = self.from,
            to = LAYOUT_VERSION,
            shared = shared.len(),
            converted = ?carried.maps,
            entries = carried.entries,
            rebuilt = ?carried.skipped,
            "carried the maps of the older layout over"
        );
        Ok(carried)
    }

    /// After the new program took over: converts the entries a changed
    /// live map (connections, reverse NAT, affinity) got from the old
    /// program since [`Self::copy`] (never over an entry of the new
    /// program), then unpins the old maps.
    pub fn finish(self) -> Result<Carried, MigrateError> {
        let mut carried = Carried::default();
        let changed = changed_since(self.from);
        for name in LIVE.into_iter().filter(|n| changed.contains(n)) {
            if let Some(n) = self.copy_map(name, Flags::NoExist)? {
                carried.entries += n;
                carried.maps.push(name.to_owned());
            }
        }
        std::fs::remove_dir_all(&self.old_dir).map_err(|e| self.error(&self.old_dir, e))?;
        std::fs::remove_dir_all(&self.marker).map_err(|e| self.error(&self.marker, e))?;
        info!(
            from = self.from,
            late_entries = carried.entries,
            dir = %self.old_dir.display(),
            "upgrade done: entries made by the old program meanwhile carried over, old maps unpinned"
        );
        Ok(carried)
    }

    fn error(&self, path: &Path, source: io::Error) -> MigrateError {
        MigrateError::Map {
            path: path.display().to_string(),
            dir: self.old_dir.display().to_string(),
            from: self.from,
            source,
        }
    }

    /// Copies map `name`; `None` when it is not carried over (not in the new
    /// layout, not a kind of map that holds data, or no conversion).
    fn copy_map(&self, name: &str, flags: Flags) -> Result<Option<u64>, MigrateError> {
        let (old_path, new_path) = (self.old_dir.join(name), self.new_dir.join(name));
        let (Ok(old_info), Ok(new_info)) = (MapInfo::from_pin(&old_path), MapInfo::from_pin(&new_path)) else {
            return Ok(None);
        };
        let io = |e: aya::maps::MapError| io::Error::other(e.to_string());
        let kind = new_info.map_type().map_err(io).map_err(|e| self.error(&new_path, e))?;
        if old_info.map_type().ok() != Some(kind) || !copyable(kind) || old_info.key_size() != new_info.key_size() {
            return Ok(None);
        }
        if name == names::TABLE {
            let n = crate::bpf::datapath::copy_table(&old_path, &new_path)
                .map_err(|e| self.error(&new_path, io::Error::other(format!("{e:#}"))))?;
            return Ok(Some(n));
        }
        let convert: Convert = if old_info.value_size() == new_info.value_size() {
            <[u8]>::to_vec
        } else if let Some(c) = conversion(self.from, name, old_info.value_size(), new_info.value_size()) {
            c
        } else {
            warn!(
                map = name,
                from = self.from,
                "no conversion of this map from the older layout: the agent rebuilds it"
            );
            return Ok(None);
        };
        let open = |p: &Path| MapData::from_pin(p).map_err(|e| self.error(p, io::Error::other(e.to_string())));
        let (old, new) = (open(&old_path)?, open(&new_path)?);
        let per_cpu = matches!(kind, MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash);
        let cpus = if per_cpu { aya::util::nr_cpus().map_err(|(_, e)| self.error(&new_path, e))? } else { 1 };
        let (src, dst) = (Raw::of(&old, &old_info, per_cpu, cpus), Raw::of(&new, &new_info, per_cpu, cpus));
        let is_array = matches!(kind, MapType::Array | MapType::PerCpuArray);
        let max = new_info.max_entries();
        let mut n = 0u64;
        let mut key: Option<Vec<u8>> = None;
        // Bounded: a hash map whose last key read was evicted meanwhile
        // starts over from its first key.
        let mut left = 2 * u64::from(old_info.max_entries()) + 1;
        while let Some(next) = src.next_key(key.as_deref()).map_err(|e| self.error(&old_path, e))? {
            left -= 1;
            if left == 0 {
                break;
            }
            if is_array && u32::from_ne_bytes(next[..4].try_into().unwrap_or_default()) >= max {
                break;
            }
            // An entry gone between the two calls (LRU eviction, expiry).
            if let Some(value) = src.lookup(&next).map_err(|e| self.error(&old_path, e))? {
                let value: Vec<u8> =
                    value.chunks(src.slot()).flat_map(|v| pad(convert(&v[..src.value_size]), dst.slot())).collect();
                match dst.update(&next, &value, flags) {
                    Ok(()) => n += 1,
                    Err(e) if flags == Flags::NoExist && e.raw_os_error() == Some(libc::EEXIST) => {}
                    // A full hash map (not LRU) keeps what fits.
                    Err(e) if e.raw_os_error() == Some(libc::E2BIG) => break,
                    Err(e) => return Err(self.error(&new_path, e)),
                }
            }
            key = Some(next);
        }
        Ok(Some(n))
    }
}

/// Turns one value of the old layout into the new one.
type Convert = fn(&[u8]) -> Vec<u8>;

/// The conversion of map `name`'s values from layout `from` (the sizes as
/// pinned and as this build has them), when there is one.
fn conversion(from: u32, name: &str, old_size: u32, new_size: u32) -> Option<Convert> {
    match (from, name, old_size, new_size) {
        // v1 → v2: `Settings { new_flows_per_cpu, node_tag }` gained `flags`.
        (1, names::SETTINGS, 8, 12) => Some(|v| {
            let mut out = v.to_vec();
            out.extend_from_slice(&0u32.to_ne_bytes());
            out
        }),
        _ => None,
    }
}

/// Map kinds whose entries are plain data that can be copied.
fn copyable(kind: MapType) -> bool {
    matches!(
        kind,
        MapType::Hash
            | MapType::Array
            | MapType::PerCpuHash
            | MapType::PerCpuArray
            | MapType::LruHash
            | MapType::LruPerCpuHash
            | MapType::LpmTrie
    )
}

/// `v` zero-padded (or cut) to `len` bytes.
fn pad(mut v: Vec<u8>, len: usize) -> Vec<u8> {
    v.resize(len, 0);
    v
}

/// How an entry is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flags {
    /// Create or replace.
    Any,
    /// Only when the key is not there yet.
    NoExist,
}

/// A map by its file descriptor, read and written by the raw system calls
/// (the maps here are of every kind and size, known only at run time).
struct Raw {
    fd: RawFd,
    key_size: usize,
    value_size: usize,
    /// A per-CPU map: one value per possible CPU, each 8-byte aligned.
    per_cpu: bool,
    /// Possible CPUs for per-CPU maps, else 1.
    cpus: usize,
}

/// `union bpf_attr` as the map element commands read it.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

impl Raw {
    /// The raw view of `map` (described by `info`), held open by `map`.
    fn of(map: &MapData, info: &MapInfo, per_cpu: bool, cpus: usize) -> Self {
        Self {
            fd: map.fd().as_fd().as_raw_fd(),
            key_size: info.key_size() as usize,
            value_size: info.value_size() as usize,
            per_cpu,
            cpus,
        }
    }

    /// One CPU's value as the kernel lays it out (per-CPU values are
    /// 8-byte aligned).
    fn slot(&self) -> usize {
        if self.per_cpu {
            self.value_size.next_multiple_of(8)
        } else {
            self.value_size
        }
    }

    fn call(&self, cmd: libc::c_long, key: *const u8, value: *mut u8, flags: u64) -> io::Result<()> {
        let attr = ElemAttr { map_fd: self.fd as u32, _pad: 0, key: key as u64, value: value as u64, flags };
        // SAFETY: bpf(2) with an attribute of the layout the command reads;
        // the key and value buffers are the map's key size and (per-CPU)
        // value size long and outlive the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw const attr, size_of::<ElemAttr>()) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The key after `key` (the first with `None`); `None` at the end.
    fn next_key(&self, key: Option<&[u8]>) -> io::Result<Option<Vec<u8>>> {
        let mut next = vec![0u8; self.key_size];
        let k = key.map_or(std::ptr::null(), <[u8]>::as_ptr);
        match self.call(BPF_MAP_GET_NEXT_KEY, k, next.as_mut_ptr(), 0) {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` (every CPU's, for per-CPU maps); `None` when absent.
    fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.slot() * self.cpus];
        match self.call(BPF_MAP_LOOKUP_ELEM, key.as_ptr(), value.as_mut_ptr(), 0) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn update(&self, key: &[u8], value: &[u8], flags: Flags) -> io::Result<()> {
        const BPF_ANY: u64 = 0;
        const BPF_NOEXIST: u64 = 1;
        let f = if flags == Flags::NoExist { BPF_NOEXIST } else { BPF_ANY };
        self.call(BPF_MAP_UPDATE_ELEM, key.as_ptr(), value.as_ptr().cast_mut(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_of_layout_1_gain_zero_flags() {
        let c = conversion(1, names::SETTINGS, 8, 12).expect("a conversion");
        let old = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(c(&old), vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
        assert!(conversion(1, names::FLOWS, 32, 24).is_none(), "no conversion is invented");
        assert!(conversion(2, names::SETTINGS, 8, 12).is_none());
    }

    #[test]
    fn only_maps_changed_after_the_old_version_are_converted() {
        assert_eq!(changed_since(1), vec![names::SETTINGS]);
        assert!(changed_since(LAYOUT_VERSION).is_empty());
        assert!(CHANGED.windows(2).all(|w| w[0].0 < w[1].0), "versions in order");
        assert!(CHANGED.last().is_some_and(|(v, _)| *v == LAYOUT_VERSION), "the newest change is this layout");
        // Every changed map has a conversion from the version before.
        for (v, maps) in CHANGED {
            for m in *maps {
                assert!(conversion(v - 1, m, 8, 12).is_some() || *m != names::SETTINGS, "{m} in v{v}");
            }
        }
    }

    /// Pins a new 4-byte-key array of one entry at `path` (a stand-in map).
    fn pin_array(path: &Path) {
        crate::bpf::test_support::pin_new_map(path, 2 /* ARRAY */, 4, 4, 1);
    }

    /// An upgrade interrupted after its first pins (the marker is still
    /// there) is done again from the old maps; one that finished (no
    /// marker) is not; a marker without old maps is cleaned up.
    #[test]
    fn an_unfinished_upgrade_is_done_again() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0 && Path::new("/sys/fs/bpf").exists(),
            "an_unfinished_upgrade_is_done_again: needs root (uid {euid} now) and a bpffs on /sys/fs/bpf; \
             run it as root after `cargo xtask setup`"
        );
        let pins = PathBuf::from(format!("/sys/fs/bpf/xlb-unit-migrate-{}", std::process::id()));
        let old = pins.join("v1");
        let new = map_dir(&pins);
        let marker = pins.join(format!("upgrading-v{LAYOUT_VERSION}"));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        pin_array(&old.join(names::FLOWS));
        pin_array(&new.join(names::FLOWS));
        let finished = Migration::pending(&pins).is_none();
        std::fs::create_dir(&marker).unwrap();
        let again = Migration::pending(&pins);
        let new_cleared = !new.exists();
        std::fs::remove_dir_all(&old).unwrap();
        let stale_marker_removed = Migration::pending(&pins).is_none() && !marker.exists();
        let _ = std::fs::remove_dir_all(&pins);
        assert!(finished, "our layout's maps without a marker: nothing to do");
        assert_eq!(again.map(|m| m.from()), Some(1), "with the marker: done again from v1");
        assert!(new_cleared, "the half-built v{LAYOUT_VERSION}/ is unpinned before doing it again");
        assert!(stale_marker_removed, "a marker without old maps is removed");
    }

    #[test]
    fn copied_kinds_are_plain_data_only() {
        assert!(copyable(MapType::LruHash) && copyable(MapType::LpmTrie) && copyable(MapType::PerCpuArray));
        assert!(!copyable(MapType::DevMapHash) && !copyable(MapType::RingBuf) && !copyable(MapType::ProgramArray));
    }
}
