//! `cargo xtask demo --l2`: the demo with the VIP announced on L2.
//!
//! The VIP lies in the client's own subnet and the client has no route for
//! it (only the connected one): it reaches the VIP only because the node's
//! data path answers its ARP request with the node's MAC (`--announce l2
//! --announce-interface <uplink>`). Shown: the gratuitous ARPs the agent
//! sends when it starts (counted with a packet socket on the client's
//! `eth0`), `xlb status`'s announced VIPs, the ARP reply and the client's
//! neighbour entry for the VIP, and the node's `arp_reply` counter. Each
//! step fails the demo when what it shows is not what L2 announcement
//! promises.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xlb_tests::l2::{self, arp_reply_for, format_mac, is_gratuitous_arp, Capture};
use xlb_tests::{udp_probe, Agent, Probe, Topology};

use crate::util::{header, info};

/// The VIP of `examples/demo-l2.yaml`: in the client's subnet
/// (10.100.0.0/24), assigned nowhere.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 100);
/// Where the L2 demo's configuration lives, under the workspace root.
pub const CONFIG: &str = "examples/demo-l2.yaml";
/// Longest wait for the first gratuitous ARP after the agent is healthy.
const FIRST_GARP: Duration = Duration::from_secs(5);
/// How long repeats are counted after the first gratuitous ARP (the agent
/// sends a few, a second apart, when it starts announcing a VIP).
const REPEATS: Duration = Duration::from_millis(2500);

/// What is set up before the agent starts: a packet socket on the client's
/// `eth0` (so the gratuitous ARPs of the agent's start are not missed) and
/// the node's MAC on the client link.
pub struct Watch {
    capture: Capture,
    node_mac: [u8; 6],
    opened: Instant,
}

/// Shows that the client has no route of its own for the VIP and opens the
/// packet socket; call before the agent starts.
pub fn prepare(topo: &Topology) -> Result<Watch> {
    header(&format!("L2: the client has no route for {VIP}; it will ask who has it (ARP)"));
    let out = topo.client.ip(&["route", "get", &VIP.to_string()])?;
    let route = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string();
    info(&format!("(in netns {}) ip route get {VIP}", topo.client.name));
    info(&format!("  {route}"));
    info("  (no gateway: the VIP is on the client's link, so the client asks who has it)");
    if route.contains(" via ") {
        bail!("the client routes {VIP} through a gateway ({route}); the L2 demo needs it on the client's link");
    }
    if let Some((mac, state)) = l2::neighbour(&topo.client, "eth0", VIP.into()) {
        bail!("the client already has a neighbour entry for {VIP} ({} {state}) before the agent runs", format_mac(mac));
    }
    let node_mac = l2::mac_of(&topo.node, &topo.client_if);
    info(&format!(
        "node uplink  {} MAC {} (the MAC the client must learn for {VIP})",
        topo.client_if,
        format_mac(node_mac)
    ));
    let capture = Capture::open(&topo.client, "eth0");
    info("listening on the client's eth0 with an AF_PACKET socket");
    Ok(Watch { capture, node_mac, opened: Instant::now() })
}

/// The agent flags of the L2 demo.
pub fn agent_flags(topo: &Topology) -> Vec<String> {
    vec!["--announce".into(), "l2".into(), "--announce-interface".into(), topo.client_if.clone()]
}

/// Everything the L2 demo shows once the agent is healthy; fails when the
/// node does not announce the VIP as it should.
pub fn show(topo: &Topology, agent: &Agent, watch: &Watch) -> Result<()> {
    let node = format_mac(watch.node_mac);

    header(&format!("gratuitous ARP for {VIP} seen on the client's eth0"));
    let first = watch.capture.wait_for(FIRST_GARP, |f| is_gratuitous_arp(f, VIP, watch.node_mac));
    if first.is_none() {
        bail!("no gratuitous ARP for {VIP} from {node} reached the client within {FIRST_GARP:?} of the agent's start");
    }
    let more = watch.capture.collect(REPEATS, |f| is_gratuitous_arp(f, VIP, watch.node_mac).then_some(())).len();
    info(&format!("ARP, who-has {VIP} tell {VIP}, from {node} (sender and target: the VIP)"));
    info(&format!(
        "{} gratuitous ARP(s) in the agent's first {:.1} s (a few, a second apart, when it starts announcing a VIP; then one periodically)",
        1 + more,
        watch.opened.elapsed().as_secs_f64()
    ));
    crate::demo::check_interrupted()?;

    header(&format!("xlb status --pin-path {}", agent.pin_path().display()));
    let out = agent.cli(&["status"]).context("running `xlb status`")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("`xlb status` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let vips = announced_vips(agent)?;
    if !vips.iter().any(|v| v == &VIP.to_string()) {
        bail!("`xlb status` does not list {VIP} among the announced VIPs: {vips:?}");
    }

    header(&format!("the client resolves {VIP}: the node's XDP program answers its ARP request"));
    let target = SocketAddr::new(VIP.into(), crate::demo::VIP_UDP_PORT);
    match udp_probe(&topo.client, target, b"who are you?", crate::demo::REQUEST_TIMEOUT)? {
        Probe::Reply(r) => info(&format!("first UDP request to {target}: reply {r:?}")),
        other => bail!("the first UDP request to {target} got no reply ({other:?})"),
    }
    for mac in watch.capture.collect(Duration::from_millis(200), |f| arp_reply_for(f, VIP)) {
        info(&format!("seen on the client's eth0: ARP, reply {VIP} is-at {}", format_mac(mac)));
    }
    info(&format!("(in netns {}) ip neigh show {VIP} dev eth0", topo.client.name));
    let out = topo.client.ip(&["neigh", "show", &VIP.to_string(), "dev", "eth0"])?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        info(&format!("  {line}"));
    }
    match l2::neighbour(&topo.client, "eth0", IpAddr::V4(VIP)) {
        Some((mac, _)) if mac == watch.node_mac => info(&format!("{VIP} is at {node}: the node's uplink")),
        Some((mac, state)) => {
            bail!("the client's entry for {VIP} is {} {state}, not the node's {node}", format_mac(mac))
        }
        None => bail!("the client has no neighbour entry for {VIP} after sending to it"),
    }

    header(&format!("xlb stats --pin-path {} (ARP counters)", agent.pin_path().display()));
    let out = agent.cli(&["stats"]).context("running `xlb stats`")?;
    if !out.status.success() {
        bail!("`xlb stats` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut arp_reply = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        if name == "COUNTER" || name.starts_with("arp_") {
            info(line);
        }
        if name == "arp_reply" {
            arp_reply = words.next().and_then(|v| v.parse::<u64>().ok());
        }
    }
    match arp_reply {
        Some(0) => bail!("the node answered no ARP request (arp_reply is 0)"),
        Some(n) => info(&format!("{n} ARP request(s) for {VIP} answered by the data path")),
        None => bail!("`xlb stats` has no arp_reply counter:\n{text}"),
    }
    Ok(())
}

/// `xlb status -o json`'s `announced_vips`.
fn announced_vips(agent: &Agent) -> Result<Vec<String>> {
    let out = agent.cli(&["status", "-o", "json"]).context("running `xlb status -o json`")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`xlb status -o json` printed no JSON: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(v["announced_vips"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect())
}
