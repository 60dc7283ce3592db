//! `xlb trace`: where a packet would go and why, from the real data path.
//!
//! A second instance of the embedded XDP program is loaded with the agent's
//! pinned maps and trace mode on (the read-only global `XLB_TRACE`), which
//! skips every map write of the data path (flows, reverse entries, SNAT
//! ports, affinity, counters). It runs once (BPF_PROG_TEST_RUN) on a frame
//! built for the packet, as it would arrive on the ingress interface, and
//! its decision is read from its own trace-output map (`XLB_TRACE_OUT`).
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, MapInfo},
    programs::{TestRun as _, TestRunOptions, Xdp},
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
    bpf::maps::map_dir,
    cli::{print_json, Output},
    state::writer::{addr16, ip_from16, name_from},
    EBPF_OBJECT,
};

/// The pinned maps the data path uses: all must exist (loading would
/// otherwise create and pin the missing ones, changing the agent's state).
const PINNED: [&str; 21] = [
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
    /// Why: "existing flow", "affinity", "lookup-table slot N", ...
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
            Ok(())
        }
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
    ensure!(req.client.is_ipv4() == req.vip.is_ipv4(), "CLIENT and VIP:PORT must be both IPv4 or both IPv6");
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
    let ingress = match &req.interface {
        Some(i) => i.clone(),
        None => crate::status::read(pin_path)
            .interfaces
            .into_iter()
            .next()
            .context("the agent records no attached interface: name the ingress interface with --interface")?,
    };
    let ifindex = crate::host::iface::ifindex(&ingress)
        .with_context(|| format!("no interface {ingress:?} here (run in the agent's network namespace)"))?;
    let (src, dst) = match req.reply {
        None => (req.client, req.vip),
        Some(be) => (be, reply_destination(&dir, req, be)?),
    };
    let frame = build_frame(req.proto, src, dst, req.syn, mac_of(&ingress))?;
    let mut ebpf = load(&dir)?;
    let (action, out_frame) = run_once(&mut ebpf, ifindex, &frame)?;
    let rec: TraceRecord = {
        let m: Array<_, TraceRecord> = ebpf
            .map(trace::TRACE_OUT)
            .context("the data path has no trace-output map (an older object?)")?
            .try_into()
            .context("XLB_TRACE_OUT is not an array")?;
        m.get(&0, 0).context("reading XLB_TRACE_OUT")?
    };
    let service = if matches!(rec.reason, trace::REASON_NONE | trace::REASON_REPLY) {
        None
    } else {
        let names: Array<_, ServiceName> = open_pinned(&dir, names::SERVICE_NAMES)?.try_into()?;
        Some(names.get(&rec.service_id, 0).map_or_else(|_| format!("#{}", rec.service_id), |n| name_from(&n)))
    };
    let forwarded =
        matches!(rec.reason, trace::REASON_FLOW | trace::REASON_AFFINITY | trace::REASON_SLOT | trace::REASON_REPLY);
    let backend = if forwarded {
        let backends: Array<_, Backend> = open_pinned(&dir, names::BACKENDS)?.try_into()?;
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
        _ => "not a VIP".to_string(),
    };
    let out = if forwarded && verdict == "forward" {
        let (s, d) = addresses(&out_frame).context("parsing the packet the data path sent")?;
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

/// Runs the program once on `frame` arriving on `ifindex`: the XDP action
/// and the frame as it left.
fn run_once(ebpf: &mut Ebpf, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let md = [0u32, u32::try_from(frame.len())?, 0, ifindex, 0, 0];
    let ctx_in: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut ctx_out = [0u8; 24];
    let mut data_out = vec![0u8; 4096];
    let prog: &Xdp = ebpf.program("xlb_xdp").context("no program xlb_xdp")?.try_into()?;
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN of the trace instance")?;
    let word =
        |i: usize| u32::from_ne_bytes([ctx_out[i * 4], ctx_out[i * 4 + 1], ctx_out[i * 4 + 2], ctx_out[i * 4 + 3]]);
    let (meta_len, end) = (word(0) as usize, word(1) as usize);
    let end = end.min(data_out.len()).max(meta_len.min(data_out.len()));
    Ok((res.return_value, data_out[meta_len.min(end)..end].to_vec()))
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
    #[arg(value_parser = ["udp", "tcp"])]
    proto: String,
    /// The client's address and port ("ip:port", IPv6 as "[addr]:port").
    client: SocketAddr,
    /// The VIP and port.
    vip: SocketAddr,
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
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Output,
    /// bpffs directory of the agent's pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pin_path: PathBuf,
}

impl TraceArgs {
    /// A usage error clap cannot see: CLIENT, VIP:PORT and --reply of
    /// different address families.
    pub fn usage_error(&self) -> Option<String> {
        let v4 = self.vip.is_ipv4();
        (self.client.is_ipv4() != v4 || self.reply.is_some_and(|r| r.is_ipv4() != v4)).then(|| {
            "CLIENT, VIP:PORT and --reply must be of one address family: all IPv4 or all IPv6 ([addr]:port)".to_owned()
        })
    }

    /// Runs the command.
    pub fn run(&self) -> Result<()> {
        let req = Request {
            proto: if self.proto == "tcp" { PROTO_TCP } else { PROTO_UDP },
            client: self.client,
            vip: self.vip,
            syn: self.syn,
            reply: self.reply,
            interface: self.interface.clone(),
        };
        run(&self.pin_path, &req, self.output)
    }
}
