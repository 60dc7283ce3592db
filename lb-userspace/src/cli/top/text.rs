//! The plain-text output of `xlb top --once`: a summary line, then one
//! table of packets/s and bytes/s per service (BACKEND `-`) and per backend.
use super::rates::Rates;

/// The columns of the table.
pub const HEADER: [&str; 4] = ["SERVICE", "BACKEND", "PACKETS/S", "BYTES/S"];

/// A rate with one decimal.
fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// The summary line: interval, packets/s and new flows/s of the whole data
/// path, and the drop reasons that moved.
pub fn summary(r: &Rates) -> String {
    let total: f64 = r.drops.iter().map(|d| d.packets_per_second).sum();
    let mut line = format!(
        "interval {:.2}s  packets/s {}  new flows/s {}  drops/s {}",
        r.interval_seconds,
        num(r.packets_per_second),
        num(r.new_flows_per_second),
        num(total)
    );
    let moved: Vec<String> = r
        .drops
        .iter()
        .filter(|d| d.packets_per_second > 0.0)
        .map(|d| format!("{} {}", d.reason, num(d.packets_per_second)))
        .collect();
    if !moved.is_empty() {
        line.push_str(&format!(" ({})", moved.join(", ")));
    }
    line
}

/// The whole output: the summary line and the table's header when
/// `headers`, then a row per service followed by a row per backend.
pub fn render(r: &Rates, headers: bool) -> String {
    let mut rows = Vec::new();
    for s in &r.services {
        rows.push(vec![s.service.clone(), "-".into(), num(s.packets_per_second), num(s.bytes_per_second)]);
        for b in &s.backends {
            rows.push(vec![s.service.clone(), b.address.clone(), num(b.packets_per_second), num(b.bytes_per_second)]);
        }
    }
    let table = crate::cli::table_with(&HEADER, &rows, headers);
    if headers {
        format!("{}\n{table}", summary(r))
    } else {
        table
    }
}

#[cfg(test)]
mod tests {
    use super::super::rates::{BackendRate, DropRate, ServiceRate};
    use super::*;

    fn rates() -> Rates {
        Rates {
            interval_seconds: 1.0,
            packets_per_second: 120.0,
            new_flows_per_second: 2.0,
            services: vec![ServiceRate {
                service: "dns".into(),
                packets_per_second: 100.0,
                bytes_per_second: 6400.0,
                backends: vec![BackendRate {
                    address: "10.1.0.2:5353".into(),
                    packets_per_second: 100.0,
                    bytes_per_second: 6400.0,
                }],
            }],
            drops: vec![
                DropRate { reason: "drop_malformed".into(), packets_per_second: 0.0 },
                DropRate { reason: "drop_no_backend".into(), packets_per_second: 3.5 },
            ],
        }
    }

    #[test]
    fn a_summary_and_one_table() {
        let out = render(&rates(), true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "interval 1.00s  packets/s 120.0  new flows/s 2.0  drops/s 3.5 (drop_no_backend 3.5)",
                "SERVICE  BACKEND        PACKETS/S  BYTES/S",
                "dns      -              100.0      6400.0",
                "dns      10.1.0.2:5353  100.0      6400.0",
            ]
        );
        let bare = render(&rates(), false);
        assert_eq!(bare.lines().collect::<Vec<_>>(), &lines[2..], "--no-headers: the rows only");
    }
}
