//! The summary table.

use std::fmt::Write as _;

use crate::bench::Row;

pub(crate) fn summary(rows: &[Row]) -> String {
    let min = rows.iter().find(|r| r.class.starts_with("min_fwd"));
    let (min_raw, min_net) = min.map_or((0, 0), |m| (m.raw_ns, m.net_ns));
    let mut s = String::new();
    let _ = writeln!(s, "| class | verdict | raw ns | net ns | raw ÷ min_fwd raw | net target (Katran) | |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|---|");
    for r in rows.iter().filter(|r| r.kind == "class") {
        let ratio = if min_raw > 0 { format!("{:.2}×", r.raw_ns as f64 / min_raw as f64) } else { "-".into() };
        let target = match (r.target_net_ns, r.katran_net_ns) {
            (Some(t), Some(k)) => format!("≤ {t} ({k})"),
            (Some(t), None) => format!("≤ {t}"),
            (None, Some(k)) => format!("({k})"),
            (None, None) => String::new(),
        };
        let mark = if !r.ok {
            "FAILED".to_string()
        } else if r.class.starts_with("min_fwd") {
            String::new()
        } else {
            match r.target_net_ns {
                Some(t) if r.net_ns <= t as i64 => "met".into(),
                Some(_) => "missed".into(),
                None => String::new(),
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.class, r.verdict, r.raw_ns, r.net_ns, ratio, target, mark
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "min_fwd: {min_raw} ns raw, {min_net} ns net; 3.5 × its raw figure (the target for xlb's established IPv4 UDP) = {} ns raw.",
        min_raw * 7 / 2
    );
    if rows.iter().any(|r| r.kind == "stage") {
        let _ = writeln!(s);
        let _ = writeln!(s, "| stage (one operation alone) | net ns |");
        let _ = writeln!(s, "|---|---:|");
        for r in rows.iter().filter(|r| r.kind == "stage") {
            let fail = if r.ok { String::new() } else { " FAILED".into() };
            let _ = writeln!(s, "| {} | {}{} |", r.class.trim_start_matches("stage: "), r.net_ns, fail);
        }
    }
    s
}
