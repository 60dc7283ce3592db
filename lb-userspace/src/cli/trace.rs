//! `xlb trace`: where a packet would go and why, from the real data path.
//!
//! A second instance of the embedded XDP program is loaded with the agent's
//! pinned maps and trace mode on (the read-only global `XLB_TRACE`), which
//! skips every map write of the data path (flows, reverse entries, SNAT
//! ports, affinity, counters). It runs once (BPF_PROG_TEST_RUN) on a frame
//! built for the packet, as it would arrive on the ingress interface, and
//! its decision is read from its own trace-output map (`XLB_TRACE_OUT`).
//! Loading and verifying the program is most of a trace's time: `--batch`
//! loads it once ([`Tracer`]) and runs it on each packet of a list,
//! clearing the trace record before each run.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, MapInfo},
    programs::Xdp,
    Ebpf, EbpfLoader,
};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use lb_common::{
    names,
    trace::{self, TraceRecord},
    Backend, Flow, FlowKey, ServiceName, PROTO_TCP, PROTO_UDP,
};
use serde::Serialize;

use crate::{
    bpf::{maps::map_dir, testrun::run_xdp},
    cli::{print_json, Output},
    state::writer::{addr16, ip_from16, name_from},
    EBPF_OBJECT,
};

/// The pinned maps the data path uses: all must exist (loading would
/// otherwise create and pin the missing ones, changing the agent's state).
const PINNED: [&str; 22] = [
    names::SERVICES,
    names::SERVICE_SLOTS,
    names::BACKENDS,
    names::TABLE,
    names::FLOWS,
    names::REVERSE,
    names::SERVICE_STATS,
    names::BACKEND_STATS,
    names::STATS,
    names::SERVICE_NAMES,
    names::IFACES,
    names::TX_PORTS,
    names::VIPS,
    names::AFFINITY,
    names::RANGES,
    names::AGENT,
    names::SETTINGS,
    names::PREFILTER,
    names::ROUTE_GEN,
    names::ANNOUNCE,
    names::NOTES,
    names::L2_IFACES,
];

/// What `xlb trace` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// `PROTO_UDP` or `PROTO_TCP`.
    pub proto: u8,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The VIP and port.
    pub vip: SocketAddr,
    /// A TCP SYN (else an ACK).
    pub syn: bool,
    /// Trace the reply of the client's flow sent by this backend.
    pub reply: Option<SocketAddr>,
    /// Ingress interface (default: the first the agent attached to).
    pub interface: Option<String>,
}

/// The packet as it would leave.
#[derive(Debug, Serialize)]
pub struct Leaving {
    /// Source "ip:port".
    pub src: String,
    /// Destination "ip:port".
    pub dst: String,
    /// Egress interface name (when routed).
    pub interface: Option<String>,
    /// Egress ifindex (when routed).
    pub ifindex: Option<u32>,
}

/// The answer of `xlb trace`.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The traced packet: "udp 10.0.0.1:5000 -> 10.0.0.100:53".
    pub packet: String,
    /// Ingress interface.
    pub ingress: String,
    /// Service name (null when not for a service).
    pub service: Option<String>,
    /// "forward", "reject", "drop" or "pass".
    pub verdict: &'static str,
    /// The XDP action the program returned.
    pub action: &'static str,
    /// The backend "ip:port" (null when none).
    pub backend: Option<String>,
    /// Why: "existing flow", "affinity", "lookup-table slot N", "no
    /// backend", "source range refused", "reply of a tracked flow", "not a
    /// VIP", "no service on this port of the VIP".
    pub reason: String,
    /// Lookup-table slot (new flows picked by the table).
    pub slot: Option<u32>,
    /// The packet as it leaves (forwarded packets).
    pub out: Option<Leaving>,
}

/// Runs `xlb trace` and prints the answer.
pub fn run(pin_path: &Path, req: &Request, output: Output) -> Result<()> {
    let answer = trace(pin_path, req)?;
    match output {
        Output::Json => print_json(&answer),
        Output::Table => {
            print_table(&answer);
            Ok(())
        }
    }
}

/// Runs `xlb trace --batch`: every request on one load of the program;
/// prints the answers in order (a JSON array, or the tables one after the
/// other, separated by a blank line). The first request that cannot be
/// traced stops the batch, naming its line.
pub fn run_batch(pin_path: &Path, reqs: &[(usize, Request)], output: Output) -> Result<()> {
    let mut tracer = Tracer::new(pin_path)?;
    let mut answers = Vec::with_capacity(reqs.len());
    for (line, req) in reqs {
        answers.push(tracer.trace(req).with_context(|| format!("line {line}"))?);
    }
    match output {
        Output::Json => print_json(&answers),
        Output::Table => {
            for (i, a) in answers.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_table(a);
            }
            Ok(())
        }
    }
}

fn print_table(answer: &Answer) {
    let dash = || "-".to_string();
    println!("packet:   {} (in on {})", answer.packet, answer.ingress);
    println!("service:  {}", answer.service.clone().unwrap_or_else(dash));
    println!("verdict:  {} (XDP action {})", answer.verdict, answer.action);
    println!("backend:  {}", answer.backend.clone().unwrap_or_else(dash));
    println!("reason:   {}", answer.reason);
    if let Some(o) = &answer.out {
        let via = match (&o.interface, o.ifindex) {
            (Some(n), Some(i)) => format!(" via {n} (ifindex {i})"),
            _ => String::new(),
        };
        println!("leaves:   {} -> {}{via}", o.src, o.dst);
    }
}

fn sock(ip: [u8; 16], port_be: u16) -> SocketAddr {
    SocketAddr::new(ip_from16(ip), u16::from_be(port_be))
}

fn open_pinned(dir: &Path, name: &str) -> Result<aya::maps::Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    aya::maps::Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}

/// Traces one packet (see the module docs).
pub fn trace(pin_path: &Path, req: &Request) -> Result<Answer> {
    Tracer::new(pin_path)?.trace(req)
}

/// The trace instance over one agent's pinned maps, loaded (and verified)
/// once, at the first packet, for any number of packets.
pub struct Tracer {
    pin_path: PathBuf,
    dir: PathBuf,
    ebpf: Option<Ebpf>,
}

impl Tracer {
    /// Checks that the agent's maps are pinned under `pin_path`; loads
    /// nothing yet.
    pub fn new(pin_path: &Path) -> Result<Self> {
        crate::bpf::maps::check_layout(pin_path)?;
        let dir = map_dir(pin_path);
        for name in PINNED {
            ensure!(
                dir.join(name).exists(),
                "{} is missing: no agent's maps under {} (start the agent, or pass its --pin-path)",
                dir.join(name).display(),
                pin_path.display()
            );
        }
        Ok(Tracer { pin_path: pin_path.to_path_buf(), dir, ebpf: None })
    }

    /// Traces one packet (see the module docs).
    pub fn trace(&mut self, req: &Request) -> Result<Answer> {
        ensure!(req.client.is_ipv4() == req.vip.is_ipv4(), "CLIENT and VIP:PORT must be both IPv4 or both IPv6");
        let ingress = match &req.interface {
            Some(i) => i.clone(),
            None => crate::status::read(&self.pin_path)
                .interfaces
                .into_iter()
                .next()
                .context("the agent records no attached interface: name the ingress interface with --interface")?,
        };
        let ifindex = crate::host::iface::ifindex(&ingress)
            .with_context(|| format!("no interface {ingress:?} here (run in the agent's network namespace)"))?;
        let dir = self.dir.clone();
        let (src, dst) = match req.reply {
            None => (req.client, req.vip),
            Some(be) => (be, reply_destination(&dir, req, be)?),
        };
        let frame = build_frame(req.proto, src, dst, req.syn, mac_of(&ingress))?;
        let ebpf = match &mut self.ebpf {
            Some(e) => e,
            e @ None => e.insert(load(&dir)?),
        };
        let ran = run_once(ebpf, ifindex, &frame)?;
        answer(&dir, req, (src, dst), ingress, &ran)
    }
}

/// What one run of the trace instance left.
struct Ran {
    /// The XDP action.
    action: u32,
    /// The frame as it left.
    frame: Vec<u8>,
    /// The trace record.
    rec: TraceRecord,
}

/// The answer to `req` (a packet from `src` to `dst` in on `ingress`) from
/// what the trace instance left.
fn answer(
    dir: &Path,
    req: &Request,
    (src, dst): (SocketAddr, SocketAddr),
    ingress: String,
    ran: &Ran,
) -> Result<Answer> {
    let (action, rec) = (ran.action, ran.rec);
    let service = if matches!(rec.reason, trace::REASON_NONE | trace::REASON_REPLY) {
        None
    } else {
        let names: Array<_, ServiceName> = open_pinned(dir, names::SERVICE_NAMES)?.try_into()?;
        Some(names.get(&rec.service_id, 0).map_or_else(|_| format!("#{}", rec.service_id), |n| name_from(&n)))
    };
    let forwarded =
        matches!(rec.reason, trace::REASON_FLOW | trace::REASON_AFFINITY | trace::REASON_SLOT | trace::REASON_REPLY);
    let backend = if forwarded {
        let backends: Array<_, Backend> = open_pinned(dir, names::BACKENDS)?.try_into()?;
        let b = backends.get(&rec.backend_id, 0).context("reading XLB_BACKENDS")?;
        Some(format_sock(sock(b.addr, b.port)))
    } else {
        None
    };
    let action_name = action_name(action);
    let verdict = match (action, rec.reason) {
        (XDP_DROP | 0, _) => "drop",
        (_, trace::REASON_NO_BACKEND) => "reject",
        (XDP_PASS, _) if !(forwarded && rec.routed != 0) => "pass",
        _ if forwarded => "forward",
        _ => "pass",
    };
    let reason = match rec.reason {
        trace::REASON_FLOW => "existing flow".to_string(),
        trace::REASON_AFFINITY => "affinity".to_string(),
        trace::REASON_SLOT => format!("lookup-table slot {}", rec.slot),
        trace::REASON_NO_BACKEND => "no backend".to_string(),
        trace::REASON_SOURCE_RANGE => "source range refused".to_string(),
        trace::REASON_REPLY => "reply of a tracked flow".to_string(),
        _ if req.reply.is_some() => "not a reply of a tracked flow".to_string(),
        _ if is_vip(dir, dst.ip())? => "no service on this port of the VIP".to_string(),
        _ => "not a VIP".to_string(),
    };
    let out = if forwarded && verdict == "forward" {
        let (s, d) = addresses(&ran.frame).context("parsing the packet the data path sent")?;
        let egress = (rec.routed != 0 && rec.egress != 0).then_some(rec.egress);
        Some(Leaving { src: format_sock(s), dst: format_sock(d), interface: egress.and_then(if_name), ifindex: egress })
    } else {
        None
    };
    let proto = if req.proto == PROTO_TCP {
        if req.syn {
            "tcp syn"
        } else {
            "tcp"
        }
    } else {
        "udp"
    };
    Ok(Answer {
        packet: format!("{proto} {} -> {}", format_sock(src), format_sock(dst)),
        ingress,
        service,
        verdict,
        action: action_name,
        backend,
        reason,
        slot: (rec.reason == trace::REASON_SLOT).then_some(rec.slot),
        out,
    })
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "aborted",
        1 => "drop",
        2 => "pass",
        3 => "tx",
        4 => "redirect",
        _ => "unknown",
    }
}

fn format_sock(s: SocketAddr) -> String {
    s.to_string()
}

fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The ingress interface's MAC (the frame's destination as it arrives).
fn mac_of(iface: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(PathBuf::from(format!("/sys/class/net/{iface}/address"))).unwrap_or_default();
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *m = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

/// Whether `ip` is a VIP of some service (in the agent's `XLB_VIPS`).
fn is_vip(dir: &Path, ip: IpAddr) -> Result<bool> {
    let vips: HashMap<_, [u8; 16], u32> = open_pinned(dir, names::VIPS)?.try_into()?;
    Ok(vips.get(&addr16(ip), 0).is_ok())
}

/// Where the backend's reply goes: the SNAT address and port of the
/// client's flow, or the client itself.
fn reply_destination(dir: &Path, req: &Request, backend: SocketAddr) -> Result<SocketAddr> {
    let key = FlowKey {
        src: addr16(req.client.ip()),
        dst: addr16(req.vip.ip()),
        sport: req.client.port().to_be(),
        dport: req.vip.port().to_be(),
        proto: req.proto,
        _pad: [0; 3],
    };
    let flows: HashMap<_, FlowKey, Flow> = open_pinned(dir, names::FLOWS)?.try_into()?;
    let Ok(flow) = flows.get(&key, 0) else {
        bail!(
            "no flow from {} to {} in the connection table: --reply traces the reply of an existing flow",
            req.client,
            req.vip
        );
    };
    if flow.snat_port == 0 {
        return Ok(req.client);
    }
    let backends: Array<_, Backend> = open_pinned(dir, names::BACKENDS)?.try_into()?;
    let b = backends.get(&flow.backend_id, 0).context("reading XLB_BACKENDS")?;
    if ip_from16(b.addr) != backend.ip() || u16::from_be(b.port) != backend.port() {
        eprintln!("note: the flow's backend is {}, not {backend}", sock(b.addr, b.port));
    }
    Ok(sock(b.snat_addr, flow.snat_port))
}

/// An Ethernet frame of one UDP datagram or TCP segment (SYN or ACK).
fn build_frame(proto: u8, src: SocketAddr, dst: SocketAddr, syn: bool, dmac: [u8; 6]) -> Result<Vec<u8>> {
    let smac = [0x02, 0, 0, 0x7a, 0xce, 0x01];
    let payload = b"xlb trace";
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => bail!("source and destination must be of one family"),
    };
    let mut frame = Vec::new();
    if proto == PROTO_UDP {
        ip.udp(src.port(), dst.port()).write(&mut frame, payload)?;
    } else {
        let tcp = ip.tcp(src.port(), dst.port(), 1, 64240);
        let tcp = if syn { tcp.syn() } else { tcp.ack(1) };
        tcp.write(&mut frame, if syn { &[] } else { payload })?;
    }
    Ok(frame)
}

/// Loads the trace instance: the embedded object, its pinned maps from
/// `dir` (sized as pinned), trace mode on, the XDP program verified.
fn load(dir: &Path) -> Result<Ebpf> {
    let entries = |name: &str| -> Result<u32> {
        let p = dir.join(name);
        Ok(MapInfo::from_pin(&p).with_context(|| format!("reading {}", p.display()))?.max_entries())
    };
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .map_max_entries(names::FLOWS, entries(names::FLOWS)?)
        .map_max_entries(names::REVERSE, entries(names::REVERSE)?)
        .map_max_entries(names::TABLE, entries(names::TABLE)?)
        .override_global(trace::TRACE_GLOBAL, &1u8, true)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object in trace mode (are we root?)")?;
    let xdp: &mut Xdp = ebpf.program_mut("xlb_xdp").context("no program xlb_xdp")?.try_into()?;
    xdp.load().context("loading xlb_xdp in trace mode")?;
    Ok(ebpf)
}

/// Runs the program once on `frame` arriving on `ifindex`: the XDP action,
/// the frame as it left and the trace record (cleared before the run: the
/// data path records nothing for a packet that is not for a service).
fn run_once(ebpf: &mut Ebpf, ifindex: u32, frame: &[u8]) -> Result<Ran> {
    let mut out: Array<_, TraceRecord> = ebpf
        .map_mut(trace::TRACE_OUT)
        .context("the data path has no trace-output map (an older object?)")?
        .try_into()
        .context("XLB_TRACE_OUT is not an array")?;
    out.set(0, TraceRecord::default(), 0).context("clearing XLB_TRACE_OUT")?;
    let prog: &Xdp = ebpf.program("xlb_xdp").context("no program xlb_xdp")?.try_into()?;
    let run = run_xdp(prog, ifindex, frame, 1).context("BPF_PROG_TEST_RUN of the trace instance")?;
    let out: Array<_, TraceRecord> = ebpf
        .map(trace::TRACE_OUT)
        .context("the data path has no trace-output map (an older object?)")?
        .try_into()
        .context("XLB_TRACE_OUT is not an array")?;
    let rec = out.get(&0, 0).context("reading XLB_TRACE_OUT")?;
    Ok(Ran { action: run.action, frame: run.frame, rec })
}

/// Source and destination of an Ethernet frame's UDP/TCP packet.
fn addresses(frame: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (s, d): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(v4) => (v4.header().source_addr().into(), v4.header().destination_addr().into()),
        NetSlice::Ipv6(v6) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        NetSlice::Arp(_) => return None,
    };
    let (sp, dp) = match p.transport? {
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        _ => return None,
    };
    Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp)))
}

/// Arguments of `xlb trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// udp or tcp.
    #[arg(value_parser = ["udp", "tcp"], required_unless_present = "batch")]
    proto: Option<String>,
    /// The client's address and port ("ip:port", IPv6 as "[addr]:port").
    #[arg(required_unless_present = "batch")]
    client: Option<SocketAddr>,
    /// The VIP and port.
    #[arg(required_unless_present = "batch")]
    vip: Option<SocketAddr>,
    /// TCP: trace a SYN (a new connection) instead of an ACK.
    #[arg(long)]
    syn: bool,
    /// Trace the reply direction: a packet from this backend ("ip:port")
    /// of the client's flow, to the client or the flow's SNAT address.
    #[arg(long, value_name = "BACKEND")]
    reply: Option<SocketAddr>,
    /// Ingress interface (default: the first one the agent attached to;
    /// with --reply, name the backend-side interface for an exact answer
    /// on XDP_TX versus XDP_REDIRECT).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Trace many packets with one load of the program: one per line of
    /// FILE ("-": standard input), written as this command's arguments
    /// (`PROTO CLIENT VIP:PORT [--syn] [--reply BACKEND] [--interface IF]`;
    /// blank lines and `#` comments skipped; --interface here is every
    /// line's default). With -o json, prints an array of answers.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["proto", "client", "vip", "syn", "reply"])]
    batch: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Output,
    /// bpffs directory of the agent's pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pin_path: PathBuf,
}

/// One line of `xlb trace --batch`.
#[derive(clap::Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct BatchLine {
    #[arg(value_parser = ["udp", "tcp"])]
    proto: String,
    client: SocketAddr,
    vip: SocketAddr,
    #[arg(long)]
    syn: bool,
    #[arg(long)]
    reply: Option<SocketAddr>,
    #[arg(long)]
    interface: Option<String>,
}

/// A request `xlb trace --batch` cannot read: bad usage (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchUsageError(String);

/// The usage error of CLIENT, VIP:PORT and BACKEND of different families.
fn family_error(client: SocketAddr, vip: SocketAddr, reply: Option<SocketAddr>) -> Option<String> {
    let v4 = vip.is_ipv4();
    (client.is_ipv4() != v4 || reply.is_some_and(|r| r.is_ipv4() != v4)).then(|| {
        "CLIENT, VIP:PORT and --reply must be of one address family: all IPv4 or all IPv6 ([addr]:port)".to_owned()
    })
}

fn proto_number(proto: &str) -> u8 {
    if proto == "tcp" {
        PROTO_TCP
    } else {
        PROTO_UDP
    }
}

/// The requests of a batch `text` (from `source`, for the errors), with
/// their line numbers; `interface` is the default ingress.
fn parse_batch(text: &str, source: &str, interface: Option<&str>) -> Result<Vec<(usize, Request)>, BatchUsageError> {
    let mut reqs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |e: &str| BatchUsageError(format!("{source} line {}: {e} (in {line:?})", n + 1));
        let l = <BatchLine as clap::Parser>::try_parse_from(line.split_whitespace()).map_err(|e| {
            let text = e.to_string();
            bad(text.lines().next().unwrap_or_default().trim_start_matches("error: "))
        })?;
        if let Some(e) = family_error(l.client, l.vip, l.reply) {
            return Err(bad(&e));
        }
        reqs.push((
            n + 1,
            Request {
                proto: proto_number(&l.proto),
                client: l.client,
                vip: l.vip,
                syn: l.syn,
                reply: l.reply,
                interface: l.interface.or_else(|| interface.map(str::to_owned)),
            },
        ));
    }
    if reqs.is_empty() {
        return Err(BatchUsageError(format!("{source}: no packet to trace (one per line: PROTO CLIENT VIP:PORT ...)")));
    }
    Ok(reqs)
}

impl TraceArgs {
    /// A usage error clap cannot see: CLIENT, VIP:PORT and --reply of
    /// different address families.
    pub fn usage_error(&self) -> Option<String> {
        family_error(self.client?, self.vip?, self.reply)
    }

    /// Runs the command. A batch line it cannot read is a
    /// [`BatchUsageError`].
    pub fn run(&self) -> Result<()> {
        if let Some(file) = &self.batch {
            let (text, source) = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading standard input")?;
                (text, "standard input".to_owned())
            } else {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the batch file {}", file.display()))?;
                (text, file.display().to_string())
            };
            let reqs = parse_batch(&text, &source, self.interface.as_deref())?;
            return run_batch(&self.pin_path, &reqs, self.output);
        }
        let (Some(proto), Some(client), Some(vip)) = (&self.proto, self.client, self.vip) else {
            bail!("PROTO, CLIENT and VIP:PORT are required without --batch");
        };
        let req = Request {
            proto: proto_number(proto),
            client,
            vip,
            syn: self.syn,
            reply: self.reply,
            interface: self.interface.clone(),
        };
        run(&self.pin_path, &req, self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_parse_as_the_arguments() {
        let text = "# flows\nudp 10.0.0.1:5000 10.0.0.100:53\n\ntcp 10.0.0.1:5001 10.0.0.100:80 --syn # new\n\
                    udp [2001:db8::1]:5 [2001:db8::100]:53 --reply [2001:db8:1::2]:5353 --interface eth1\n";
        let reqs = parse_batch(text, "f", Some("eth0")).expect("parses");
        let lines: Vec<usize> = reqs.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 4, 5]);
        let (_, udp) = &reqs[0];
        assert_eq!((udp.proto, udp.syn, udp.interface.as_deref()), (PROTO_UDP, false, Some("eth0")));
        assert_eq!(udp.client, "10.0.0.1:5000".parse().unwrap());
        let (_, tcp) = &reqs[1];
        assert_eq!((tcp.proto, tcp.syn, tcp.vip.port()), (PROTO_TCP, true, 80));
        let (_, v6) = &reqs[2];
        assert_eq!(v6.reply, Some("[2001:db8:1::2]:5353".parse().unwrap()));
        assert_eq!(v6.interface.as_deref(), Some("eth1"));
    }

    #[test]
    fn bad_batch_lines_name_their_line() {
        let err = |text: &str| parse_batch(text, "f", None).expect_err(text).to_string();
        assert!(err("udp 10.0.0.1:5000 10.0.0.100:53\nsctp 10.0.0.1:1 10.0.0.100:53\n").starts_with("f line 2: "));
        assert!(err("udp 10.0.0.1 10.0.0.100:53\n").starts_with("f line 1: "));
        let mixed = err("udp 10.0.0.1:5 [2001:db8::100]:53\n");
        assert!(mixed.contains("one address family"), "{mixed}");
        assert!(err("# nothing\n\n").contains("no packet to trace"));
    }
}
