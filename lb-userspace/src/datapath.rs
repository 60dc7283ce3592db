//! Loading the embedded eBPF object with its maps pinned.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, Map, MapData, MapInfo},
    Ebpf, EbpfLoader,
};
use lb_common::{names, TABLE_MAP_FLAGS};
use tracing::warn;

use crate::{
    maps::{map_dir, Table},
    EBPF_OBJECT,
};

/// Lookup-table entries of [`load`]: small (8 MiB of kernel memory), for tests.
pub const SMALL_TABLE_ENTRIES: u32 = 1 << 20;

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
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .map_max_entries(names::FLOWS, flow_entries)
        .map_max_entries(names::REVERSE, flow_entries)
        .map_max_entries(names::TABLE, table_entries)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (is this a kernel with BPF and are we root?)")?;
    if let Some(old) = carried.filter(|o| !o.is_empty()) {
        let table = open_table(&dir.join(names::TABLE))?;
        for (new, old) in table.all().slots().zip(&old) {
            new.store(*old, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(ebpf)
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
