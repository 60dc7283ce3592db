//! `cargo xtask bench maglev` runs this (in release mode): Maglev table
//! build time, balance and disruption for a few backend counts and sizes.
//!
//! Usage: `maglev_bench [RUNS]` (default 15 builds per row for the median).
use xlb::state::maglev;

fn main() {
    let runs: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 15,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: maglev_bench [RUNS]   (RUNS: builds per row for the median, > 0)");
            std::process::exit(2);
        }
    };
    println!("Maglev lookup tables: equal-weight backends, seed 0, median of {runs} builds");
    println!("moved = percent of the table's entries whose backend changes; must = entries of the");
    println!("removed backend / entries the added backend takes; collateral = the others");
    println!();
    let header = ["backends", "size", "build", "max/avg", "remove: must", "collateral", "add: must", "collateral"];
    let mut rows = Vec::new();
    for size in [16381, 65537] {
        for backends in [10, 100, 1000] {
            let m = maglev::measure(backends, size, runs, 0);
            rows.push(vec![
                m.backends.to_string(),
                m.size.to_string(),
                format!("{:.3} ms", m.build.as_secs_f64() * 1e3),
                format!("{:.4}", m.max_avg),
                format!("{:.3}%", m.remove_must),
                format!("{:.3}%", m.remove_collateral),
                format!("{:.3}%", m.add_must),
                format!("{:.3}%", m.add_collateral),
            ]);
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line =
        |cells: Vec<&str>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ");
    println!("{}", line(header.to_vec()));
    for r in &rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
