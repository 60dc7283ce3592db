//! Loading the embedded eBPF object with its maps pinned.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, Map, MapData, MapInfo, PerCpuArray, PerCpuValues},
    Ebpf, EbpfLoader,
};
use lb_common::{names, stats::STAT_COUNT, FLOW_CACHE_ENTRIES_PER_CPU, TABLE_MAP_FLAGS};
use tracing::warn;

use crate::{
    bpf::maps::{map_dir, Table},
    EBPF_OBJECT,
};

/// Lookup-table entries of [`load`]: small (8 MiB of kernel memory), for tests.
pub const SMALL_TABLE_ENTRIES: u32 = 1 << 20;

/// The data path's hot-flow cache (not pinned): a block of entries per
/// possible CPU.
const FLOW_CACHE: &str = "XLB_FLOW_CACHE";

/// Entries of [`FLOW_CACHE`]: [`FLOW_CACHE_ENTRIES_PER_CPU`] per possible
/// CPU (one CPU's block when the count cannot be read: the other CPUs then
/// cache nothing, which costs speed, not correctness).
fn flow_cache_entries() -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32;
    FLOW_CACHE_ENTRIES_PER_CPU.saturating_mul(cpus)
}

/// Loads the data path, reusing (or creating) the maps pinned under
/// `pin_path`. The connection and reverse-NAT tables get `flow_entries`
/// entries each when they are created; the lookup-table array gets
/// [`SMALL_TABLE_ENTRIES`] (see [`load_with`]).
pub fn load(pin_path: &Path, flow_entries: u32) -> Result<Ebpf> {
    load_with(pin_path, flow_entries, SMALL_TABLE_ENTRIES)
}

/// [`load`] with the lookup-table array (`XLB_TABLE`) sized to
/// `table_entries`. A pinned array of another size (or one created by an
/// older xlb, without `BPF_F_MMAPABLE`) is replaced by a new one of the
/// asked size; the entries that fit are carried over, so that services whose
/// tables lie within the new array keep them and no flow moves.
pub fn load_with(pin_path: &Path, flow_entries: u32, table_entries: u32) -> Result<Ebpf> {
    anyhow::ensure!(table_entries > 0, "the lookup-table array needs at least one entry (--table-entries)");
    let dir = map_dir(pin_path);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let carried = replace_table_pin(&dir.join(names::TABLE), table_entries)?;
    let counters = replace_stats_pin(&dir.join(names::STATS))?;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .map_max_entries(names::FLOWS, flow_entries)
        .map_max_entries(names::REVERSE, flow_entries)
        .map_max_entries(names::TABLE, table_entries)
        .map_max_entries(FLOW_CACHE, flow_cache_entries())
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (is this a kernel with BPF and are we root?)")?;
    if let Some(old) = carried.filter(|o| !o.is_empty()) {
        let table = open_table(&dir.join(names::TABLE))?;
        for (new, old) in table.all().slots().zip(&old) {
            new.store(*old, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if !counters.is_empty() {
        let mut stats = open_stats(&dir.join(names::STATS))?;
        for (i, values) in counters.into_iter().enumerate().take(STAT_COUNT as usize) {
            stats.set(i as u32, values, 0).context("carrying the counters over into the new XLB_STATS")?;
        }
    }
    Ok(ebpf)
}

/// Opens the pinned global-counter array.
fn open_stats(path: &Path) -> Result<PerCpuArray<MapData, u64>> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))?;
    map.try_into().with_context(|| format!("{} is not a per-CPU array", path.display()))
}

/// When the pinned global-counter array (`XLB_STATS`) has another number of
/// counters than this xlb (an xlb that added counters, which go last),
/// unpins it so that loading creates one of the right length, and returns
/// the per-CPU values it held, by index, to be written back.
fn replace_stats_pin(path: &Path) -> Result<Vec<PerCpuValues<u64>>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let info = MapInfo::from_pin(path).with_context(|| format!("reading {}", path.display()))?;
    if info.max_entries() == STAT_COUNT || info.value_size() != 8 || info.key_size() != 4 {
        // Right length, or not ours to fix (pins::check reports the layout).
        return Ok(Vec::new());
    }
    warn!(
        pinned = info.max_entries(),
        counters = STAT_COUNT,
        "the pinned counter array has another number of counters than this xlb: replacing it (counters carried over)"
    );
    let stats = open_stats(path)?;
    let old = (0..info.max_entries())
        .map(|i| stats.get(&i, 0).with_context(|| format!("reading {} entry {i}", path.display())))
        .collect::<Result<Vec<_>>>()?;
    drop(stats);
    std::fs::remove_file(path).with_context(|| format!("removing the old {}", path.display()))?;
    Ok(old)
}

/// Copies the lookup-table array pinned at `old` into the one at `new` (as
/// much as fits); returns the entries copied.
pub(crate) fn copy_table(old: &Path, new: &Path) -> Result<u64> {
    let (old, new) = (open_table(old)?, open_table(new)?);
    let mut n = 0;
    for (to, from) in new.all().slots().zip(old.all().values()) {
        to.store(from, std::sync::atomic::Ordering::Relaxed);
        n += 1;
    }
    Ok(n)
}

/// Opens a pinned lookup-table array and maps it.
fn open_table(path: &Path) -> Result<Table> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))?;
    let array: Array<MapData, u32> = map.try_into().with_context(|| format!("{} is not an array", path.display()))?;
    Ok(Table::new(array)?)
}

/// When the pinned lookup-table array at `path` cannot serve (another size,
/// or not mmapable), unpins it so that loading creates a new one, and
/// returns what it held (empty when not mmapable: its tables, from an older
/// layout, are all rebuilt).
fn replace_table_pin(path: &Path, entries: u32) -> Result<Option<Vec<u32>>> {
    if !path.exists() {
        return Ok(None);
    }
    let info = MapInfo::from_pin(path).with_context(|| format!("reading {}", path.display()))?;
    let mmapable = info.map_flags() & TABLE_MAP_FLAGS != 0;
    if mmapable && info.max_entries() == entries {
        return Ok(None);
    }
    let old = if mmapable {
        warn!(
            pinned = info.max_entries(),
            asked = entries,
            "the pinned lookup-table array has another size than --table-entries: replacing it \
             (tables that fit are kept; the others are rebuilt)"
        );
        let table = open_table(path)?;
        table.all().values().collect()
    } else {
        warn!("the pinned lookup-table array was made by an older xlb (not mmapable): replacing it; every table is rebuilt");
        Vec::new()
    };
    std::fs::remove_file(path).with_context(|| format!("removing the old {}", path.display()))?;
    Ok(Some(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates and pins a per-CPU array of `u64` with `entries` entries
    /// (what an xlb with fewer counters left).
    fn pin_percpu_array(path: &Path, entries: u32) {
        crate::bpf::test_support::pin_new_map(path, 6 /* PERCPU_ARRAY */, 4, 8, entries);
    }

    #[test]
    fn a_shorter_counter_array_is_replaced_keeping_its_counters() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        // Fails (never skips) when not root: CI runs the unit tests as root.
        assert!(
            euid == 0 && Path::new("/sys/fs/bpf").exists(),
            "a_shorter_counter_array_is_replaced_keeping_its_counters: needs root (uid {euid} now) and a bpffs on \
             /sys/fs/bpf; run it as root after `cargo xtask setup`, e.g. `sudo -E cargo test -p lb-userspace --lib`"
        );
        let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/xlb-unit-stats-{}", std::process::id()));
        let dir = map_dir(&pins);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(names::STATS);
        pin_percpu_array(&path, STAT_COUNT - 1);
        let cpus = aya::util::nr_cpus().unwrap();
        {
            let mut old = open_stats(&path).unwrap();
            let v = PerCpuValues::try_from((0..cpus as u64).map(|c| 100 + c).collect::<Vec<_>>()).unwrap();
            old.set(3, v, 0).unwrap();
        }
        let result = load(&pins, 1024).map(|_| {
            let new = open_stats(&path).unwrap();
            let info = MapInfo::from_pin(&path).unwrap();
            (info.max_entries(), new.get(&3, 0).unwrap().iter().sum::<u64>())
        });
        let _ = std::fs::remove_dir_all(&pins);
        let want: u64 = (0..cpus as u64).map(|c| 100 + c).sum();
        assert_eq!(result.unwrap(), (STAT_COUNT, want));
    }
}
