//! The YAML of services and the pods' echo servers.

use std::net::IpAddr;
use std::path::Path;

use xlb_tests::{tcp_echo_server, tcp_session_server, udp_echo_server, ServerHandle, Topology};

use super::{Fam, TCP_BACKEND_PORT, UDP_BACKEND_PORT};

/// `"ip:port"` of pod i's backend, as the config and the CLI write it.
pub fn backend(fam: Fam, i: usize, port: u16) -> String {
    fam.pod_sock(i, port).to_string()
}

/// One service entry of the YAML file (indented for the `services:` list).
/// `backends` are raw YAML list items (e.g. `10.1.0.2:5353` or
/// `{address: "10.1.0.2:5353", weight: 0}`); an empty slice gives
/// `backends: []`.
pub fn svc(name: &str, vip: IpAddr, port: u16, proto: &str, source: &str, backends: &[String]) -> String {
    let mut s = format!(
        "  - name: {name}\n    vip: \"{vip}\"\n    port: {port}\n    protocol: {proto}\n    source: {source}\n"
    );
    if backends.is_empty() {
        s.push_str("    backends: []\n");
    } else {
        s.push_str("    backends:\n");
        for b in backends {
            if b.starts_with('{') {
                s.push_str(&format!("      - {b}\n"));
            } else {
                s.push_str(&format!("      - \"{b}\"\n"));
            }
        }
    }
    s
}

/// A UDP service `name` on the IPv4 VIP, port `port`, `source: snat`.
pub fn udp_snat4(name: &str, port: u16, backends: &[String]) -> String {
    svc(name, Topology::VIP_V4.into(), port, "udp", "snat", backends)
}

/// `dns`: UDP/53 on the IPv4 VIP, `source: snat`, to the UDP echo servers
/// of pods `pods`.
pub fn dns(pods: impl IntoIterator<Item = usize>) -> String {
    udp_snat4("dns", 53, &backends(Fam::V4, pods, UDP_BACKEND_PORT))
}

/// The last component of `p` (e.g. the configuration file's name, as the
/// agent's `FILE:LINE:` errors print it).
pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A whole configuration file from service entries.
pub fn config(services: &[String]) -> String {
    format!("services:\n{}", services.concat())
}

/// A UDP service named `name` on the family's VIP:53 with the given pods'
/// backends on `UDP_BACKEND_PORT`.
pub fn dns_svc(name: &str, fam: Fam, source: &str, pods: impl IntoIterator<Item = usize>) -> String {
    svc(name, fam.vip(53).ip(), 53, "udp", source, &backends(fam, pods, UDP_BACKEND_PORT))
}

/// The usual pair of services: `dns` (UDP/53 → pods' UDP_BACKEND_PORT)
/// and `web` (TCP/80 → TCP_BACKEND_PORT) on the family's VIP, named
/// `dns6`/`web6` for IPv6.
pub fn dns_and_web(fam: Fam, source: &str, pods: std::ops::Range<usize>) -> Vec<String> {
    let (vip, suffix): (IpAddr, &str) = match fam {
        Fam::V4 => (Topology::VIP_V4.into(), ""),
        Fam::V6 => (Topology::VIP_V6.into(), "6"),
    };
    vec![
        svc(&format!("dns{suffix}"), vip, 53, "udp", source, &backends(fam, pods.clone(), UDP_BACKEND_PORT)),
        svc(&format!("web{suffix}"), vip, 80, "tcp", source, &backends(fam, pods, TCP_BACKEND_PORT)),
    ]
}

/// Backends of pods `pods` on `port`.
pub fn backends(fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<String> {
    pods.into_iter().map(|i| backend(fam, i, port)).collect()
}

/// UDP echo servers on `port` in the given pods, tagged `pod<i>`.
pub fn udp_servers(topo: &Topology, fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| udp_echo_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}

/// TCP echo servers (one request per connection) on `port`, tagged `pod<i>`.
pub fn tcp_servers(topo: &Topology, fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| tcp_echo_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}

/// TCP session servers (many requests per connection), tagged `pod<i>`.
pub fn tcp_session_servers(
    topo: &Topology,
    fam: Fam,
    pods: impl IntoIterator<Item = usize>,
    port: u16,
) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| tcp_session_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}
