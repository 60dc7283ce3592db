//! Data-path tests: the XDP program `xlb_xdp` run through
//! `BPF_PROG_TEST_RUN` on hand-built frames, each case in a fresh network
//! namespace (see `datapath/harness.rs` for the topology) with its own pinned
//! maps, programmed through the real `MapWriter`.
//!
//! Every case asserts the verdict, the output frame (addresses, ports, MACs
//! from the FIB, checksums verified by full recomputation), the global
//! counter deltas (every counter not named must stay unchanged) and, where it
//! matters, the service/backend counters and the connection table.
//!
//! One module per concern: `forward` (client → VIP and replies), `flows`
//! (backend choice), `no_backend` (ICMP unreachable / RST), `reject_share`
//! (a service's weighted share of new flows rejected), `snat` (ports,
//! flood guard, timeouts, slots), `parsing` (frame shapes, malformed frames),
//! `passed` (what goes to the kernel untouched), `icmp` (ICMP errors of
//! translated flows), `checksums`, `paths` (XDP_TX/redirect/kernel, MTU),
//! `affinity` (client-IP affinity, source ranges), `l2` (ARP/NDP answers for
//! announced VIPs), `fuzz_found` (regressions found by `tests/fuzz.rs`), `untracked` (`flow_tracking: none`
//! services); `frame` builds the frames with etherparse and
//! `frame_decode` reads them back (checksums recomputed by etherparse),
//! `harness` runs them and `output` checks what came out.
//!
//! Needs root: a case fails (never skips) without it. Run with
//! `cargo test -p lb-userspace --test datapath -- --test-threads=1`.

#[path = "datapath/frame.rs"]
mod frame;
#[path = "datapath/harness.rs"]
mod harness;

use std::{collections::BTreeMap, net::SocketAddr};

use flows::{one_port_per_backend, open_flows, three_backends};
use frame::{fix_ipv4_csum, Csum, Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use harness::{mac, run_case, service, Lab, LAB_NODE_TAG, V0_MAC, V1_MAC, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use lb_common::{
    Counter, ForwardMeta, Stat, FLOW_CLOSING, FLOW_OPEN, IF_F_REDIRECT, IF_F_TX, META_MAGIC_ROUTED, SNAT_PORT_COUNT,
    SNAT_PORT_MIN,
};
use passed::dns_service;
use xlb::state::model::{
    FlowTracking,
    Protocol::{self, Tcp, Udp},
    SourceMode::{self, Preserve, Snat},
};

/// `case!(name, |lab| { ... })`: a named `#[test]` running in its own lab.
macro_rules! case {
    ($(#[$m:meta])* $name:ident, $body:expr) => {
        $(#[$m])*
        #[test]
        fn $name() {
            run_case(stringify!($name), $body)
        }
    };
}

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
const CLIENT4: &str = "10.100.0.10";
const CLIENT6: &str = "fd00:100::10";
const BACKENDS4: [&str; 3] = ["10.1.0.2:5353", "10.1.0.3:5353", "10.1.0.4:5353"];

/// "ip:port" with brackets for IPv6.
fn sa(ip: &str, port: u16) -> String {
    SocketAddr::new(ip.parse().unwrap(), port).to_string()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A client packet of `proto` (TCP: `flags`) from the client's neighbour MAC to v0.
fn client_pkt(proto: Protocol, client: &str, dst: &str, flags: u8) -> Pkt {
    let p = match proto {
        Udp => Pkt::udp(client, dst),
        Tcp => Pkt::tcp(client, dst, flags),
    };
    p.macs(mac(client), V0_MAC)
}

/// `p` as it should leave: new MACs, source and destination.
fn rewritten(p: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6], src: SocketAddr, dst: SocketAddr) -> Pkt {
    let mut w = p.clone().macs(eth_src, eth_dst);
    w.src = src;
    w.dst = dst;
    w
}

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const SYN_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

fn in_snat_range(port: u16) -> bool {
    (SNAT_PORT_MIN..SNAT_PORT_MIN + SNAT_PORT_COUNT).contains(&port)
}

fn ip_len(frame: &[u8], l3: usize) -> u64 {
    (frame.len() - l3) as u64
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

/// A UDP packet from the client to VIP4:53.
fn udp4_to_vip() -> Pkt {
    client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0)
}

#[path = "datapath/affinity.rs"]
mod affinity;
#[path = "datapath/checksums.rs"]
mod checksums;
#[path = "datapath/flows.rs"]
mod flows;
#[path = "datapath/forward.rs"]
mod forward;
#[path = "datapath/fuzz_found.rs"]
mod fuzz_found;
#[path = "datapath/icmp.rs"]
mod icmp;
#[path = "datapath/l2.rs"]
mod l2;
#[path = "datapath/no_backend.rs"]
mod no_backend;
#[path = "datapath/notes.rs"]
mod notes;
#[path = "datapath/parsing.rs"]
mod parsing;
#[path = "datapath/passed.rs"]
mod passed;
#[path = "datapath/paths.rs"]
mod paths;
#[path = "datapath/reject_share.rs"]
mod reject_share;
#[path = "datapath/snat.rs"]
mod snat;
#[path = "datapath/untracked.rs"]
mod untracked;
