//! Checks that maps already pinned under `--pin-path` have the layout this
//! xlb expects before they are reused, so a layout change is reported with
//! what to do instead of a verifier failure or misread maps.
use std::{mem::size_of, path::Path};

use aya::maps::MapInfo;
use lb_common::{
    names, prefilter::PREFILTER_ENTRIES, settings::Settings, Affinity, AffinityKey, Backend, Counter, Flow, FlowKey,
    L2Iface, RangeKey, ReplyNote, Reverse, Service, ServiceKey, ServiceName, ServiceSlot, LAYOUT_VERSION,
};

use crate::bpf::maps::map_dir;

/// A pinned map that cannot be reused.
#[derive(Debug, thiserror::Error)]
#[expect(missing_docs, reason = "variant fields are named in the #[error] messages")]
pub enum PinError {
    /// A pinned map has other key or value sizes.
    #[error(
        "pinned map {path} has key/value size {found_key}/{found_value} but this xlb (map layout v{LAYOUT_VERSION}) expects {key}/{value}: \
         it was left by another xlb build. Stop every agent using {dir}, remove that directory (flows in progress will be re-picked), and start again"
    )]
    Layout { path: String, dir: String, found_key: u32, found_value: u32, key: u32, value: u32 },
    /// A pinned map of a fixed size has another size.
    #[error(
        "pinned map {path} holds {found} entries but this xlb (map layout v{LAYOUT_VERSION}) expects {wanted}: \
         it was left by another xlb build. Stop every agent using {dir}, remove that directory (flows in progress will be re-picked), and start again"
    )]
    Entries { path: String, dir: String, found: u32, wanted: u32 },
    /// A pinned map sized by a flag has another size.
    #[error(
        "pinned map {path} holds {found} entries but {flag} asks for {wanted}: start with {flag} {found}, \
         or stop every agent using {dir} and remove that directory to resize (flows in progress will be re-picked)"
    )]
    Size { path: String, dir: String, flag: &'static str, found: u32, wanted: u32 },
    /// The pin path holds maps of a newer layout: a downgrade.
    #[error(
        "{pin_path} holds maps of a newer xlb (map layout v{found}); this xlb uses v{LAYOUT_VERSION} and would start \
         from empty maps, dropping every flow, so it refuses (nothing was attached or changed). Run an xlb of layout \
         v{found} or newer, or stop every agent using {pin_path}, remove that directory, and start again"
    )]
    Newer { pin_path: String, found: u32 },
}

/// Sizes that depend on flags.
pub struct Wanted {
    /// Entries of the connection tables (`--flow-table-size`).
    pub flow_entries: u32,
}

/// Verifies every pinned map that exists; missing ones will be created.
/// A newer layout than ours is refused (a downgrade).
pub fn check(pin_path: &Path, wanted: &Wanted) -> Result<(), PinError> {
    let dir = map_dir(pin_path);
    let layouts = crate::bpf::maps::pinned_layouts(pin_path);
    if let Some(&found) = layouts.last().filter(|v| **v > LAYOUT_VERSION) {
        return Err(PinError::Newer { pin_path: pin_path.display().to_string(), found });
    }
    // Maps of an older layout are carried over (or reported) by
    // `bpf::migrate`.
    let sz = |n: usize| n as u32;
    #[expect(clippy::type_complexity, reason = "a literal table: name, key size, value size, inner map")]
    let expected: [(&str, u32, u32, Option<(&'static str, u32)>); 20] = [
        (names::SERVICES, sz(size_of::<ServiceKey>()), sz(size_of::<Service>()), None),
        (names::SERVICE_SLOTS, 4, sz(size_of::<ServiceSlot>()), None),
        (names::BACKENDS, 4, sz(size_of::<Backend>()), None),
        (names::TABLE, 4, 4, None),
        (
            names::FLOWS,
            sz(size_of::<FlowKey>()),
            sz(size_of::<Flow>()),
            Some(("--flow-table-size", wanted.flow_entries)),
        ),
        (
            names::REVERSE,
            sz(size_of::<FlowKey>()),
            sz(size_of::<Reverse>()),
            Some(("--flow-table-size", wanted.flow_entries)),
        ),
        (names::SERVICE_STATS, 4, sz(size_of::<Counter>()), None),
        (names::BACKEND_STATS, 4, sz(size_of::<Counter>()), None),
        (names::STATS, 4, 8, None),
        (names::SERVICE_NAMES, 4, sz(size_of::<ServiceName>()), None),
        (names::IFACES, 4, 4, None),
        (names::SETTINGS, 4, sz(size_of::<Settings>()), None),
        (names::VIPS, 16, 4, None),
        (names::AFFINITY, sz(size_of::<AffinityKey>()), sz(size_of::<Affinity>()), None),
        // LPM trie keys: a 32-bit prefix length, then the data.
        (names::RANGES, 4 + sz(size_of::<RangeKey>()), 1, None),
        (names::PREFILTER, 4, 8, None),
        (names::ROUTE_GEN, 4, 4, None),
        (names::ANNOUNCE, 16, 4, None),
        (names::L2_IFACES, 4, sz(size_of::<L2Iface>()), None),
        (names::NOTES, sz(size_of::<ServiceKey>()), sz(size_of::<ReplyNote>()), None),
    ];
    // (XLB_STATS is not here: `datapath::load_with` replaces an array of
    // another length, carrying its counters over, as counters are added.)
    let fixed: [(&str, u32); 12] = [
        (names::SERVICES, lb_common::MAX_SERVICES),
        (names::SERVICE_SLOTS, lb_common::MAX_SERVICES),
        (names::BACKENDS, lb_common::MAX_BACKENDS),
        (names::SERVICE_STATS, lb_common::MAX_SERVICES),
        (names::BACKEND_STATS, lb_common::MAX_BACKENDS),
        (names::SERVICE_NAMES, lb_common::MAX_SERVICES),
        (names::AFFINITY, lb_common::AFFINITY_ENTRIES),
        (names::RANGES, lb_common::RANGE_ENTRIES),
        (names::PREFILTER, PREFILTER_ENTRIES),
        (names::ANNOUNCE, lb_common::MAX_ANNOUNCED),
        (names::L2_IFACES, lb_common::MAX_IFACES),
        (names::NOTES, lb_common::NOTE_ENTRIES),
    ];
    for (name, wanted) in fixed {
        let path = dir.join(name);
        let Ok(info) = MapInfo::from_pin(&path) else { continue };
        if info.max_entries() != wanted {
            return Err(PinError::Entries {
                path: path.display().to_string(),
                dir: dir.display().to_string(),
                found: info.max_entries(),
                wanted,
            });
        }
    }
    for (name, key, value, entries) in expected {
        let path = dir.join(name);
        let Ok(info) = MapInfo::from_pin(&path) else { continue };
        let p = path.display().to_string();
        let d = dir.display().to_string();
        if info.key_size() != key || info.value_size() != value {
            return Err(PinError::Layout {
                path: p,
                dir: d,
                found_key: info.key_size(),
                found_value: info.value_size(),
                key,
                value,
            });
        }
        if let Some((flag, wanted)) = entries {
            if info.max_entries() != wanted {
                return Err(PinError::Size { path: p, dir: d, flag, found: info.max_entries(), wanted });
            }
        }
    }
    Ok(())
}
