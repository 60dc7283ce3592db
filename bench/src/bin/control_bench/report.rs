//! The summary table.

use std::fmt::Write as _;

use crate::measure::Results;

use crate::Opts;

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

pub(crate) fn summary(r: &Results, opts: &Opts) -> String {
    let mut s = String::new();
    let target = |v: f64, t: f64| if v <= t { "met" } else { "missed" };
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let _ = writeln!(
        s,
        "| apply {} services × {} backends to empty maps | {:.0} ms | ≤ 2000 ms | {} |",
        r.services,
        r.backends_per_service,
        r.apply_empty_ms,
        target(r.apply_empty_ms, 2000.0)
    );
    let _ = writeln!(s, "| re-apply unchanged | {:.1} ms | | |", r.reapply_unchanged_ms);
    let _ = writeln!(
        s,
        "| re-apply unchanged after a routing change (every backend's route resolved again) | {:.0} ms | | |",
        r.reapply_after_route_change_ms
    );
    let _ = writeln!(
        s,
        "| one endpoint change in the maps (median of {}) | {:.2} ms | ≤ 50 ms | {} |",
        r.changes,
        r.change_median_ms,
        target(r.change_median_ms, 50.0)
    );
    let _ = writeln!(
        s,
        "| one endpoint change, worst | {:.2} ms | ≤ 50 ms | {} |",
        r.change_max_ms,
        target(r.change_max_ms, 50.0)
    );
    let _ = writeln!(s, "| kernel memory of the maps (memlock) | {} | | |", mib(r.maps_memlock_bytes));
    let _ = writeln!(
        s,
        "| process RSS: total (anonymous + mapped maps and files) | {} ({} + {}) | | |",
        mib(r.rss_kib * 1024),
        mib(r.rss_anon_kib * 1024),
        mib((r.rss_file_kib + r.rss_shmem_kib) * 1024)
    );
    let _ = writeln!(s, "| process peak RSS | {} | | |", mib(r.hwm_kib * 1024));
    if let Some(a) = &r.agent {
        let _ = writeln!(
            s,
            "| agent (`xlb agent`, same services from a {} YAML file): start to running | {:.0} ms | | |",
            mib(a.config_bytes),
            a.start_ms
        );
        let _ = writeln!(
            s,
            "| agent RSS: total (anonymous + mapped maps and files) | {} ({} + {}) | | |",
            mib(a.rss_kib * 1024),
            mib(a.rss_anon_kib * 1024),
            mib(a.rss_file_kib * 1024)
        );
        let _ = writeln!(s, "| agent peak RSS | {} | | |", mib(a.hwm_kib * 1024));
        let _ = writeln!(
            s,
            "| agent: one endpoint changed in the file → maps reloaded (median of {}; includes its 200 ms event coalescing and {:.0} ms of parsing and validating the file) | {:.0} ms | | |",
            a.reloads, a.parse_ms, a.reload_median_ms
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "(maglev_table_size {}, --table-entries {}, --flow-table-size {}; load {:.0} ms, restore {:.0} ms)",
        opts.table_size, opts.table_entries, opts.flow_entries, r.load_ms, r.restore_ms
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| map | max entries | memlock |");
    let _ = writeln!(s, "|---|---:|---:|");
    for m in &r.maps {
        let _ = writeln!(s, "| {} | {} | {} |", m.name, m.max_entries, mib(m.memlock));
    }
    s
}
