//! The read-only commands: `xlb services|backends|flows|stats|maglev|status|top`.
//! Each opens the pinned maps, so it works beside a running agent. The
//! command line itself is in `args`; completions and man pages in `generate`.
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::ValueEnum;

use crate::{bpf::view::MapsView, state::reader};

pub mod args;
pub mod generate;
pub mod top;
pub mod trace;

/// Output format of the read-only commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
}

/// How the read-only commands print: the format and, for tables, whether
/// the header line is printed (`--no-headers` turns it off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Table or JSON.
    pub output: Output,
    /// Table output: print the header line (and `maglev`'s summary line).
    pub headers: bool,
}

impl From<Output> for Format {
    fn from(output: Output) -> Self {
        Format { output, headers: true }
    }
}

/// The error for a service name that is not programmed, naming those that are.
fn unknown_service(name: &str, svcs: &[reader::ServiceRow]) -> anyhow::Error {
    if svcs.is_empty() {
        return anyhow::anyhow!(
            "no service named {name:?}: no service is programmed (is an agent running? see `xlb status`)"
        );
    }
    let names: Vec<&str> = svcs.iter().map(|s| s.name.as_str()).collect();
    anyhow::anyhow!("no service named {name:?}; the services are: {} (`xlb services` lists them)", names.join(", "))
}

/// Fails with [`unknown_service`] unless `service` (when given) is programmed.
fn check_service(service: Option<&str>, svcs: &[reader::ServiceRow]) -> Result<()> {
    match service {
        Some(s) if !svcs.iter().any(|r| r.name == s) => Err(unknown_service(s, svcs)),
        _ => Ok(()),
    }
}

/// The pinned maps, read-only.
fn open(pin_path: &Path) -> Result<MapsView> {
    MapsView::open_pinned(pin_path).with_context(|| format!("opening the maps under {}", pin_path.display()))
}

/// Renders rows as an aligned table under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_with(header, rows, true)
}

/// Renders rows as an aligned table, with the `header` line or without it
/// (the columns are as wide either way).
pub fn table_with(header: &[&str], rows: &[Vec<String>], headers: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    let mut out = String::new();
    if headers {
        out.push_str(&line(header.to_vec()));
        out.push('\n');
    }
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints `rows` as JSON, or as a [`table`] under `header` with the cells
/// `cells` makes of each row.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    fmt: Format,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    match fmt.output {
        Output::Json => print_json(rows),
        Output::Table => {
            let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
            print!("{}", table_with(header, &body, fmt.headers));
            Ok(())
        }
    }
}

/// `xlb services`.
pub fn services(pin_path: &Path, fmt: Format) -> Result<()> {
    let rows = reader::services(&open(pin_path)?)?;
    let header =
        ["NAME", "VIP", "PORT", "PROTO", "SOURCE", "BACKENDS", "PACKETS", "BYTES", "AFFINITY", "SOURCE-RANGES"];
    print_rows(&rows, fmt, &header, |s| {
        vec![
            s.name.clone(),
            s.vip.clone(),
            s.port.to_string(),
            s.protocol.clone(),
            s.source.clone(),
            if s.backends.is_empty() { "-".into() } else { s.backends.join(",") },
            s.packets.to_string(),
            s.bytes.to_string(),
            s.affinity_timeout.map_or_else(|| "-".into(), |t| format!("{t}s")),
            ranges_cell(s),
        ]
    })
}

/// The SOURCE-RANGES cell: `-` when every client is allowed.
fn ranges_cell(s: &reader::ServiceRow) -> String {
    match (s.source_ranges_enforced, s.source_ranges.is_empty()) {
        (false, _) => "-".into(),
        (true, true) => "none (other family only)".into(),
        (true, false) => s.source_ranges.join(","),
    }
}

/// `xlb backends [SERVICE]`.
pub fn backends(pin_path: &Path, service: Option<&str>, fmt: Format) -> Result<()> {
    let svcs = reader::services(&open(pin_path)?)?;
    check_service(service, &svcs)?;
    let rows: Vec<reader::BackendRow> =
        svcs.into_iter().filter(|s| service.is_none_or(|n| n == s.name)).flat_map(|s| s.backend_rows).collect();
    let header = ["SERVICE", "ADDRESS", "WEIGHT", "STATE", "PACKETS", "BYTES", "REASON"];
    print_rows(&rows, fmt, &header, |b| {
        vec![
            b.service.clone(),
            b.address.clone(),
            b.weight.to_string(),
            b.state.clone(),
            b.packets.to_string(),
            b.bytes.to_string(),
            b.reason.clone().unwrap_or_else(|| "-".into()),
        ]
    })
}

/// `xlb flows [--service S]`.
pub fn flows(pin_path: &Path, service: Option<&str>, fmt: Format) -> Result<()> {
    let maps = open(pin_path)?;
    if service.is_some() {
        check_service(service, &reader::services(&maps)?)?;
    }
    let rows = reader::flows(&maps, service)?;
    let header = ["SERVICE", "PROTO", "CLIENT", "BACKEND", "STATE", "AGE(S)"];
    print_rows(&rows, fmt, &header, |f| {
        vec![
            f.service.clone(),
            f.protocol.clone(),
            f.client.clone(),
            f.backend.clone(),
            f.state.clone(),
            f.age_seconds.to_string(),
        ]
    })
}

/// `xlb stats`.
pub fn stats(pin_path: &Path, fmt: Format) -> Result<()> {
    let rows = reader::stats(&open(pin_path)?)?;
    match fmt.output {
        Output::Json => {
            let obj: serde_json::Map<String, serde_json::Value> =
                rows.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
            print_json(&obj)
        }
        Output::Table => {
            let body: Vec<Vec<String>> = rows.iter().map(|(k, v)| vec![k.to_string(), v.to_string()]).collect();
            print!("{}", table_with(&["COUNTER", "VALUE"], &body, fmt.headers));
            Ok(())
        }
    }
}

/// `xlb maglev SERVICE`.
pub fn maglev(pin_path: &Path, service: &str, fmt: Format) -> Result<()> {
    let maps = open(pin_path)?;
    let Some(row) = reader::maglev(&maps, service)? else {
        return Err(unknown_service(service, &reader::services(&maps)?));
    };
    match fmt.output {
        Output::Json => print_json(&row),
        Output::Table => {
            if fmt.headers {
                println!("service {}  table size {}  max/avg {:.3}", row.service, row.table_size, row.max_avg);
            }
            let body: Vec<Vec<String>> = row
                .backends
                .iter()
                .map(|b| vec![b.address.clone(), b.slots.to_string(), format!("{:.2}%", b.share * 100.0)])
                .collect();
            print!("{}", table_with(&["BACKEND", "SLOTS", "SHARE"], &body, fmt.headers));
            Ok(())
        }
    }
}

/// How long ago Unix time `t` was, e.g. `3m12s ago`.
fn ago(t: u64) -> String {
    let s = crate::metrics::unix_now().saturating_sub(t);
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m ago")
    } else if m > 0 {
        format!("{m}m{sec:02}s ago")
    } else {
        format!("{sec}s ago")
    }
}

/// `xlb status` (the exit code is the caller's: 1 when no agent runs).
pub fn status(st: &crate::status::Status, out: Output) -> Result<()> {
    if out == Output::Json {
        return print_json(st);
    }
    let agent = match (st.running, st.state.as_str()) {
        (true, _) => format!(
            "running (pid {}, {}, started {})",
            st.pid.unwrap_or(0),
            st.source.as_deref().unwrap_or("?"),
            st.started_unix.map_or_else(|| "?".into(), ago)
        ),
        (false, "never started") => format!("not running (nothing pinned under {})", st.pin_path),
        (false, "unknown") => "not running? (these maps carry no agent record: an older xlb, or none)".into(),
        (false, "stopped") => format!("not running (pid {} exited)", st.pid.unwrap_or(0)),
        (false, other) => format!(
            "not running ({other}: pid {}, no heartbeat for {:.0}s)",
            st.pid.unwrap_or(0),
            st.heartbeat_age_seconds.unwrap_or(0.0)
        ),
    };
    let ifaces = if st.attachments.is_empty() {
        "none".into()
    } else {
        let list: Vec<String> = st.attachments.iter().map(|a| format!("{} ({})", a.interface, a.xdp_mode)).collect();
        let kept = if st.running { "" } else { "  [kept attached by --keep-on-exit; nothing updates the maps]" };
        format!("{}{kept}", list.join(", "))
    };
    let apply = match &st.last_apply {
        None => "none".into(),
        Some(a) => {
            let mut line = format!("{} {}: {}", a.result, ago(a.time_unix), a.message);
            if a.result != "ok" {
                line.push_str(&format!(" (last success: {})", a.last_success_unix.map_or_else(|| "never".into(), ago)));
            }
            line
        }
    };
    // One line per interface, under the first.
    let paths = if st.attachments.is_empty() {
        "none".into()
    } else {
        let lines: Vec<String> =
            st.attachments.iter().map(|a| format!("{}: {} ({})", a.interface, a.path, a.path_reason)).collect();
        lines.join(&format!("\n{:16}", ""))
    };
    let vips = if st.announced_vips.is_empty() { "none".into() } else { st.announced_vips.join(", ") };
    let peers = if st.peer_redirect.is_empty() {
        "none (skb path: bpf_redirect_neigh)".into()
    } else {
        format!("{} (bpf_redirect_peer; other veths: bpf_redirect_neigh)", st.peer_redirect.join(", "))
    };
    for (key, value) in [
        ("agent", agent),
        ("interfaces", ifaces),
        ("transmit paths", paths),
        ("peer redirect", peers),
        ("last apply", apply),
        ("announced VIPs", vips),
        ("pin path", st.pin_path.clone()),
    ] {
        println!("{:<16}{value}", format!("{key}:"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
        let t = table_with(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]], false);
        assert_eq!(t, "xyz  1\n");
    }

    #[test]
    fn an_unknown_service_names_the_services() {
        assert!(unknown_service("x", &[]).to_string().contains("no service is programmed"));
        assert!(check_service(None, &[]).is_ok());
    }
}
