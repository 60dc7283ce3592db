//! `cargo xtask bench charts`: the charts (SVG) and the summary table of
//! docs/BENCHMARKS.md, made from the benchmarks' JSON results.
//!
//! The committed results are `docs/bench/NAME.json` (the shape each bench
//! writes to `target/bench/NAME.json`); a full run of a bench copies its
//! results there (see [`crate::bench`]), and this module draws
//! `docs/bench/*.svg` from them and rewrites the summary table between the
//! markers of docs/BENCHMARKS.md. A unit test checks that the committed page
//! holds the table these files make, so the page cannot drift from the data.
//!
//! Charts are drawn with plotters' SVG backend alone (its built-in text
//! metrics: no font files, no system libraries).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use plotters::coord::combinators::IntoLogRange as _;
use plotters::prelude::*;
use serde_json::Value;

use crate::util;

/// First line of the generated summary in docs/BENCHMARKS.md.
pub const BEGIN: &str =
    "<!-- summary: made by `cargo xtask bench charts` from docs/bench/*.json; edit those, not this table -->";
/// Line after the generated summary.
pub const END: &str = "<!-- end of summary -->";

/// The benchmarks whose results have charts and a part in the summary.
pub const WITH_CHARTS: [&str; 3] = ["forward", "datapath", "control"];

/// The results of the benchmarks found in one directory (each optional).
#[derive(Debug, Default)]
pub struct Data {
    /// `forward.json`.
    pub forward: Option<Value>,
    /// `datapath.json`.
    pub datapath: Option<Value>,
    /// `control.json`.
    pub control: Option<Value>,
}

impl Data {
    /// Reads `forward.json`, `datapath.json` and `control.json` of `dir`
    /// (a missing file is no data; an unreadable one is an error).
    pub fn load(dir: &Path) -> Result<Data> {
        let read = |name: &str| -> Result<Option<Value>> {
            let path = dir.join(format!("{name}.json"));
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let v = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON: rerun the bench or restore it from git", path.display()))?;
            Ok(Some(v))
        };
        Ok(Data { forward: read("forward")?, datapath: read("datapath")?, control: read("control")? })
    }
}

/// The committed results and charts: `docs/bench/`.
pub fn docs_dir() -> PathBuf {
    util::workspace_root().join("docs/bench")
}

/// The page: `docs/BENCHMARKS.md`.
pub fn doc_path() -> PathBuf {
    util::workspace_root().join("docs/BENCHMARKS.md")
}

/// `cargo xtask bench charts`: charts and summary from the committed results.
pub fn charts() -> Result<()> {
    util::header("bench charts (docs/bench/*.json -> docs/bench/*.svg, summary of docs/BENCHMARKS.md)");
    let dir = docs_dir();
    let data = Data::load(&dir)?;
    for path in render(&data, &dir)? {
        util::info(&format!("wrote {}", path.display()));
    }
    update_doc(&doc_path(), &summary(&data)?)?;
    util::info(&format!("summary table of {} up to date", doc_path().display()));
    Ok(())
}

/// Replaces the summary between [`BEGIN`] and [`END`] in the page at `path`.
pub fn update_doc(path: &Path, summary: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (before, after) = split_summary(&text).with_context(|| format!("in {}", path.display()))?;
    let new = format!("{before}{BEGIN}\n{summary}{END}{after}");
    if new != text {
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The page around its summary: (text up to the begin marker, text from
/// after the end marker).
fn split_summary(text: &str) -> Result<(&str, &str)> {
    let b = text.find(BEGIN).ok_or_else(|| anyhow!("no summary marker `{BEGIN}`: put it back above the table"))?;
    let e = text.find(END).ok_or_else(|| anyhow!("no end marker `{END}`: put it back below the table"))?;
    if e < b {
        bail!("the end marker `{END}` comes before the begin marker");
    }
    Ok((&text[..b], &text[e + END.len()..]))
}

/// The summary in the page at the moment (between the markers).
#[cfg(test)]
fn summary_in(text: &str) -> Result<&str> {
    let b = text.find(BEGIN).ok_or_else(|| anyhow!("no summary marker `{BEGIN}`"))?;
    let e = text.find(END).ok_or_else(|| anyhow!("no end marker `{END}`"))?;
    Ok(text.get(b + BEGIN.len() + 1..e).unwrap_or_default())
}

// ---------------------------------------------------------------- numbers

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Packets (or anything) per second: `2.16 M`, `993.4 k`, `581`.
fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A ratio: `0.37×`, `2.72×`, `1578×`.
fn ratio(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}×")
    } else {
        format!("{v:.2}×")
    }
}

/// Milliseconds: `714 ms`, `8.28 ms`.
fn millis(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn rows<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn udp_row<'a>(forward: &'a Value, case: &str) -> Option<&'a Value> {
    rows(forward, "udp").find(|r| s(r, "case") == Some(case))
}

fn tcp_row<'a>(forward: &'a Value, case: &str) -> Option<&'a Value> {
    rows(forward, "tcp").find(|r| s(r, "case") == Some(case))
}

/// The row of a packet class: its exact name, or the name followed by a
/// parenthesis (`IPv4 UDP new flow, tables not full (43690 flows a run)`:
/// the count depends on the table size).
fn class_row<'a>(datapath: &'a Value, class: &str) -> Option<&'a Value> {
    rows(datapath, "rows").find(|r| s(r, "class") == Some(class)).or_else(|| {
        let prefix = format!("{class} (");
        rows(datapath, "rows").find(|r| s(r, "class").is_some_and(|c| c.starts_with(&prefix)))
    })
}

/// Forwarding cases of the summary and the charts: (case key, name shown).
const FORWARDERS: [(&str, &str); 5] = [
    ("xlb_snat", "xlb, source: snat"),
    ("xlb_preserve", "xlb, source: preserve"),
    ("min_fwd", "minimal XDP forwarder"),
    ("nft_dnat", "nftables DNAT"),
    ("nginx_udp_proxy", "nginx stream (userspace UDP proxy)"),
];

/// What xlb's snat row is compared with: (case, ratio key of xlb's row).
const XLB_VS: [(&str, &str); 3] =
    [("min_fwd", "vs_min_fwd"), ("nft_dnat", "vs_nft_dnat"), ("nginx_udp_proxy", "vs_nginx_udp_proxy")];

/// Packet classes of the summary and the per-packet chart.
const CLASSES: [&str; 7] = [
    "min_fwd: IPv4 UDP",
    "IPv4 UDP established",
    "IPv4 TCP ACK (established)",
    "IPv4 non-VIP pass",
    "IPv4 TCP SYN, same tuple every time (Katran's method)",
    "IPv4 UDP new flow, tables not full",
    "IPv4 UDP new flow, full tables",
];

/// The machine line, from the forwarding results (or the per-packet ones).
fn machine(data: &Data) -> Option<String> {
    if let Some(m) = data.forward.as_ref().and_then(|f| f.get("machine")) {
        let mut line = format!(
            "{}, {} CPUs{}, Linux {}",
            s(m, "cpu")?,
            m.get("cpus")?,
            if m.get("virtual_machine") == Some(&Value::Bool(true)) { " (a VM)" } else { "" },
            s(m, "kernel")?
        );
        if let Some(g) = f(m, "memory_gib") {
            line += &format!(", {g:.1} GiB RAM");
        }
        return Some(line);
    }
    data.datapath.as_ref().and_then(|d| s(d, "machine")).map(str::to_string)
}

/// The summary table(s) of docs/BENCHMARKS.md, from the results.
pub fn summary(data: &Data) -> Result<String> {
    let mut md = String::new();
    if let Some(m) = machine(data) {
        md += &format!("Machine: {m}.\n\n");
    }
    if let Some(fw) = &data.forward {
        let xlb = udp_row(fw, "xlb_snat").context("forward.json has no xlb_snat row")?;
        md += "**Forwarding** (UDP flood of 64-byte packets through veths, one forwarder CPU; \
               TCP: one sequential client):\n\n";
        md += "| forwarder | delivered packets/s | xlb (snat) ÷ it | TCP connections/s | TCP requests/s |\n";
        md += "|---|---:|---:|---:|---:|\n";
        for (case, name) in FORWARDERS {
            let Some(r) = udp_row(fw, case) else { continue };
            let vs = XLB_VS.iter().find(|(c, _)| *c == case).and_then(|(_, k)| f(xlb, k)).map_or("–".into(), ratio);
            let tcp = tcp_row(fw, case);
            let conn = tcp.and_then(|t| f(t, "connections_per_s")).map_or("–".into(), |v| format!("{v:.0}"));
            let req = tcp.and_then(|t| f(t, "requests_per_s")).map_or("–".into(), |v| format!("{v:.0}"));
            let pps = f(r, "delivered_pps").map_or("–".into(), rate);
            md += &format!("| {name} | {pps} | {vs} | {conn} | {req} |\n");
        }
        md += "\n";
    }
    if let Some(dp) = &data.datapath {
        let min_raw = class_row(dp, CLASSES[0]).and_then(|r| f(r, "raw_ns"));
        md += "**Per packet** (the XDP program alone, `BPF_PROG_TEST_RUN`, one CPU; \
               Katran: the reference figures the bench's targets come from, not measured here):\n\n";
        md += "| packet class | xlb, ns | ÷ minimal forwarder | Katran, ns |\n";
        md += "|---|---:|---:|---:|\n";
        for class in CLASSES {
            let Some(r) = class_row(dp, class) else { continue };
            let net = f(r, "net_ns").map_or("–".into(), |v| format!("{v:.0}"));
            let vs = match (f(r, "raw_ns"), min_raw) {
                (Some(raw), Some(min)) if min > 0.0 => ratio(raw / min),
                _ => "–".into(),
            };
            let katran = f(r, "katran_net_ns").map_or("–".into(), |v| format!("{v:.0}"));
            let class = s(r, "class").unwrap_or(class);
            let name = class.strip_prefix("min_fwd: ").map_or(class.to_string(), |c| format!("minimal forwarder, {c}"));
            md += &format!("| {name} | {net} | {vs} | {katran} |\n");
        }
        md +=
            "\n(ns: net of the measuring harness; ÷: the raw times, harness included, as in the history's tables.)\n\n";
    }
    if let Some(cp) = &data.control {
        let services = f(cp, "services").unwrap_or(0.0);
        let backends = f(cp, "backends_per_service").unwrap_or(0.0);
        md += &format!("**Control plane** ({services:.0} services × {backends:.0} backends):\n\n");
        md += "| measure | value |\n|---|---:|\n";
        let agent = cp.get("agent");
        let items = [
            ("apply to empty maps", f(cp, "apply_empty_ms").map(millis)),
            ("one endpoint change in the maps (median)", f(cp, "change_median_ms").map(millis)),
            (
                "agent: one endpoint changed in its file → maps reloaded (median)",
                agent.and_then(|a| f(a, "reload_median_ms")).map(millis),
            ),
            ("agent: start to running", agent.and_then(|a| f(a, "start_ms")).map(millis)),
            (
                "kernel memory of the maps",
                f(cp, "maps_memlock_bytes").map(|b| format!("{:.1} MiB", b / 1024.0 / 1024.0)),
            ),
        ];
        for (what, v) in items {
            if let Some(v) = v {
                md += &format!("| {what} | {v} |\n");
            }
        }
        md += "\n";
    }
    Ok(md)
}

// ----------------------------------------------------------------- charts

/// A tick of a log axis: `1`, `10`, `100`, `1 k`, `10 M`.
fn axis_label(v: f64) -> String {
    let (div, unit) = if v >= 1e6 {
        (1e6, " M")
    } else if v >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, "")
    };
    let x = v / div;
    if x >= 1.0 {
        format!("{x:.0}{unit}")
    } else {
        format!("{x}{unit}")
    }
}

/// One bar of a chart: (series, value).
type Bar = (&'static str, f64);

/// One horizontal bar chart, on a log axis: groups of bars, one per
/// category, each bar one series (with its colour and legend entry).
struct BarChart {
    title: String,
    axis: String,
    series: Vec<&'static str>,
    groups: Vec<(String, Vec<Bar>)>,
    value: fn(f64) -> String,
}

const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

impl BarChart {
    fn svg(&self) -> Result<String> {
        let values: Vec<f64> =
            self.groups.iter().flat_map(|(_, b)| b.iter().map(|(_, v)| *v)).filter(|v| *v > 0.0).collect();
        if values.is_empty() {
            bail!("chart {:?}: no positive values", self.title);
        }
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(0.0, f64::max);
        let lo = 10f64.powf((lo / 2.0).log10().floor());
        // Room right of the longest bar for its value and the legend.
        let decades = hi.log10() - lo.log10();
        let room = if self.series.len() > 1 { (0.6 * decades).max(0.8) } else { 0.5 };
        let hi = 10f64.powf((hi.log10() + room).ceil());
        let per_group = self.series.len() as f64 + 1.0;
        let n = self.groups.len() as f64 * per_group;
        let height = 90 + (n * 16.0) as u32 + 40;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (760, height)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 17))
                .margin(12)
                .margin_right(28)
                .x_label_area_size(36)
                .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_label_formatter(&|v| axis_label(*v))
                .x_desc(self.axis.as_str())
                .draw()?;
            for (si, name) in self.series.iter().enumerate() {
                let colour = COLOURS[si % COLOURS.len()];
                let bars = self.groups.iter().enumerate().filter_map(|(gi, (_, bars))| {
                    let v = bars.iter().find(|(s, _)| s == name)?.1;
                    let top = n - gi as f64 * per_group - 1.0 - si as f64;
                    Some(Rectangle::new([(lo, top - 0.85), (v.max(lo), top)], colour.filled()))
                });
                chart
                    .draw_series(bars)?
                    .label(*name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
            }
            let text = |t: String, x: f64, y: f64| Text::new(t, (x, y), ("sans-serif", 12).into_font());
            for (gi, (label, bars)) in self.groups.iter().enumerate() {
                let top = n - gi as f64 * per_group;
                chart.draw_series(std::iter::once(text(label.clone(), lo, top - 0.05)))?;
                for (si, name) in self.series.iter().enumerate() {
                    if let Some((_, v)) = bars.iter().find(|(s, _)| s == name) {
                        let y = top - 1.0 - si as f64;
                        chart.draw_series(std::iter::once(text((self.value)(*v), v.max(lo) * 1.08, y)))?;
                    }
                }
            }
            if self.series.len() > 1 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 12))
                    .draw()?;
            }
            root.present()?;
        }
        Ok(out)
    }
}

/// Forwarding: delivered packets/s per forwarder, and TCP rates.
fn forward_charts(fw: &Value) -> Vec<(&'static str, BarChart)> {
    let mut groups = Vec::new();
    for (case, name) in FORWARDERS {
        if let Some(v) = udp_row(fw, case).and_then(|r| f(r, "delivered_pps")) {
            groups.push((name.to_string(), vec![("delivered packets/s", v)]));
        }
    }
    let udp = BarChart {
        title: "UDP forwarding: 64-byte flood, delivered packets/s (log scale)".into(),
        axis: "delivered packets per second".into(),
        series: vec!["delivered packets/s"],
        groups,
        value: rate,
    };
    let mut groups = Vec::new();
    for (case, name) in FORWARDERS {
        let Some(t) = tcp_row(fw, case) else { continue };
        let mut bars = Vec::new();
        if let Some(v) = f(t, "connections_per_s") {
            bars.push(("connections/s", v));
        }
        if let Some(v) = f(t, "requests_per_s") {
            bars.push(("requests/s (one connection)", v));
        }
        groups.push((name.to_string(), bars));
    }
    let mut charts = vec![("forward-udp", udp)];
    if !groups.is_empty() {
        charts.push((
            "forward-tcp",
            BarChart {
                title: "TCP through the forwarder: one sequential client (log scale)".into(),
                axis: "per second".into(),
                series: vec!["connections/s", "requests/s (one connection)"],
                groups,
                value: rate,
            },
        ));
    }
    charts
}

/// Per packet: xlb's net ns per class, the minimal forwarder's, Katran's.
fn datapath_chart(dp: &Value) -> BarChart {
    let min = class_row(dp, CLASSES[0]).and_then(|r| f(r, "net_ns"));
    let mut groups = Vec::new();
    for class in &CLASSES[1..] {
        let Some(r) = class_row(dp, class) else { continue };
        let mut bars = Vec::new();
        if let Some(v) = f(r, "net_ns") {
            bars.push(("xlb", v));
        }
        if let Some(v) = min {
            bars.push(("minimal forwarder (IPv4 UDP)", v));
        }
        if let Some(v) = f(r, "katran_net_ns") {
            bars.push(("Katran (reference figure)", v));
        }
        groups.push((s(r, "class").unwrap_or(class).to_string(), bars));
    }
    BarChart {
        title: "Per packet: XDP program time by packet class, ns (log scale)".into(),
        axis: "nanoseconds per packet (net of the harness)".into(),
        series: vec!["xlb", "minimal forwarder (IPv4 UDP)", "Katran (reference figure)"],
        groups,
        value: |v| format!("{v:.0} ns"),
    }
}

/// Control plane: apply and change times.
fn control_chart(cp: &Value) -> BarChart {
    let agent = cp.get("agent");
    let items = [
        ("apply to empty maps", f(cp, "apply_empty_ms")),
        ("re-apply unchanged", f(cp, "reapply_unchanged_ms")),
        ("re-apply after a routing change", f(cp, "reapply_after_route_change_ms")),
        ("one endpoint change (median)", f(cp, "change_median_ms")),
        ("one endpoint change (worst)", f(cp, "change_max_ms")),
        ("agent: file changed -> maps reloaded", agent.and_then(|a| f(a, "reload_median_ms"))),
        ("agent: start to running", agent.and_then(|a| f(a, "start_ms"))),
    ];
    let services = f(cp, "services").unwrap_or(0.0);
    let backends = f(cp, "backends_per_service").unwrap_or(0.0);
    BarChart {
        title: format!("Control plane: {services:.0} services x {backends:.0} backends, ms (log scale)"),
        axis: "milliseconds".into(),
        series: vec!["time"],
        groups: items.into_iter().filter_map(|(what, v)| Some((what.to_string(), vec![("time", v?)]))).collect(),
        value: millis,
    }
}

/// Draws the charts of the results present in `data` into `out`
/// (`forward-udp.svg`, `forward-tcp.svg`, `datapath.svg`, `control.svg`)
/// and returns their paths.
pub fn render(data: &Data, out: &Path) -> Result<Vec<PathBuf>> {
    let mut charts = Vec::new();
    if let Some(fw) = &data.forward {
        charts.extend(forward_charts(fw));
    }
    if let Some(dp) = &data.datapath {
        charts.push(("datapath", datapath_chart(dp)));
    }
    if let Some(cp) = &data.control {
        charts.push(("control", control_chart(cp)));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = out.join(format!("{name}.svg"));
        let svg = chart.svg().with_context(|| format!("drawing {}", path.display()))?;
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Data {
        let data = Data::load(&docs_dir()).expect("docs/bench/*.json readable");
        assert!(
            data.forward.is_some() && data.datapath.is_some() && data.control.is_some(),
            "docs/bench/*.json missing"
        );
        data
    }

    /// The charts come out of the committed results, with every series and
    /// category named (so a renamed case or class shows here).
    #[test]
    fn charts_are_drawn_from_the_committed_results() {
        let data = committed();
        let out = std::env::temp_dir().join(format!("xlb-charts-test-{}", std::process::id()));
        let written = render(&data, &out).expect("render");
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["forward-udp.svg", "forward-tcp.svg", "datapath.svg", "control.svg"]);
        let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
        let expect: [(&str, &[&str]); 4] = [
            (
                "forward-udp.svg",
                &[
                    "xlb, source: snat",
                    "xlb, source: preserve",
                    "minimal XDP forwarder",
                    "nftables DNAT",
                    "nginx stream (userspace UDP proxy)",
                    "1.52 M",
                    "2.93 M",
                ],
            ),
            ("forward-tcp.svg", &["connections/s", "requests/s (one connection)", "nftables DNAT", "18.6 k", "42.8 k"]),
            (
                "datapath.svg",
                &["xlb", "minimal forwarder (IPv4 UDP)", "Katran (reference figure)", "IPv4 UDP established", "225 ns"],
            ),
            ("control.svg", &["apply to empty maps", "one endpoint change (median)", "714 ms", "8.28 ms"]),
        ];
        for (file, wanted) in expect {
            let svg = read(file);
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{file} is not an SVG document");
            for w in wanted {
                assert!(svg.contains(w), "{file} does not name {w:?}");
            }
        }
        // One bar per value: the per-packet chart has xlb, the minimal
        // forwarder and (where published) Katran for each of 6 classes.
        let dp = read("datapath.svg");
        let katran = CLASSES[1..]
            .iter()
            .filter(|c| class_row(data.datapath.as_ref().unwrap(), c).and_then(|r| f(r, "katran_net_ns")).is_some())
            .count();
        let bars = dp.matches("<rect").count();
        assert!(bars >= 6 * 2 + katran, "datapath.svg has {bars} rectangles, fewer than its bars");
        std::fs::remove_dir_all(&out).unwrap();
    }

    /// docs/BENCHMARKS.md holds the summary the committed results make:
    /// editing a number by hand, or committing new results without
    /// `cargo xtask bench charts`, fails here.
    #[test]
    fn summary_in_the_doc_matches_the_committed_results() {
        let data = committed();
        let made = summary(&data).unwrap();
        let doc = std::fs::read_to_string(doc_path()).unwrap();
        assert_eq!(
            summary_in(&doc).unwrap(),
            made,
            "docs/BENCHMARKS.md's summary differs from docs/bench/*.json: run `cargo xtask bench charts`"
        );
        // And the table carries the data's own numbers.
        let fw = data.forward.as_ref().unwrap();
        let xlb = udp_row(fw, "xlb_snat").unwrap();
        for key in ["vs_min_fwd", "vs_nft_dnat", "vs_nginx_udp_proxy"] {
            let cell = ratio(f(xlb, key).unwrap());
            assert!(made.contains(&format!("| {cell} |")), "summary lacks xlb's {key} {cell}");
        }
        let est = class_row(data.datapath.as_ref().unwrap(), "IPv4 UDP established").unwrap();
        assert!(made.contains(&format!("| IPv4 UDP established | {} |", f(est, "net_ns").unwrap())));
        assert!(
            made.contains("Machine: Intel(R) Xeon(R) Processor, 2 CPUs (a VM), Linux 6.18.44-fc-v1252, 23.5 GiB RAM.")
        );
    }

    #[test]
    fn a_changed_number_is_caught() {
        let mut data = committed();
        let before = summary(&data).unwrap();
        let fw = data.forward.as_mut().unwrap();
        let row = fw["udp"].as_array_mut().unwrap().iter_mut().find(|r| r["case"] == "nft_dnat").unwrap();
        row["delivered_pps"] = serde_json::json!(123_456.0);
        let after = summary(&data).unwrap();
        assert_ne!(before, after);
        assert!(after.contains("| nftables DNAT | 123.5 k |"));
    }

    #[test]
    fn update_doc_replaces_only_the_summary() {
        let path = std::env::temp_dir().join(format!("xlb-charts-doc-{}.md", std::process::id()));
        std::fs::write(&path, format!("# T\n\n{BEGIN}\nold\n{END}\n\n## History\n")).unwrap();
        update_doc(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("# T\n\n{BEGIN}\nnew\n{END}\n\n## History\n"));
        std::fs::write(&path, "# no markers\n").unwrap();
        assert!(update_doc(&path, "new\n").is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
