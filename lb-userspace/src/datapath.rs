//! Loading the embedded eBPF object with its maps pinned.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader};
use lb_common::names;

use crate::{maps::map_dir, EBPF_OBJECT};

/// Loads the data path, reusing (or creating) the maps pinned under
/// `pin_path`. The connection and reverse-NAT tables get `flow_entries`
/// entries each when they are created.
pub fn load(pin_path: &Path, flow_entries: u32) -> Result<Ebpf> {
    let dir = map_dir(pin_path);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .map_max_entries(names::FLOWS, flow_entries)
        .map_max_entries(names::REVERSE, flow_entries)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (is this a kernel with BPF and are we root?)")
}
