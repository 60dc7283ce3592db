//! Fuzzing the real XDP program: frames of every class (UDP/TCP to a VIP,
//! replies of translated flows, non-VIP traffic, ICMP errors quoting a flow
//! or garbage, echo requests, fragments, VLAN tags single and stacked, IPv6
//! extension chains, non-IP), structurally mutated (truncation, header
//! fields, lengths, IHL, data offsets, checksums, TCP flags), run through
//! `BPF_PROG_TEST_RUN` in the data-path tests' lab (`datapath/harness.rs`),
//! each checked against invariants (`fuzz/check.rs`):
//!
//! * the verdict is one of those allowed for what the frame is (as read by
//!   the fuzzer's own parser, `fuzz/view.rs`): a frame that is not a
//!   well-formed packet to a service, a reply of a known flow, an ICMP error
//!   about one, a fragment of a translated datagram or an echo request to a
//!   VIP is never transmitted or rewritten;
//! * a rewritten frame is a correct translation (every byte but MACs,
//!   addresses, ports and checksums unchanged; addresses and ports those of
//!   a backend of the frame's service, or of the flow's client; IPv4 header,
//!   L4 and ICMP checksums updated so that they verify exactly when the
//!   input's did);
//! * counters move only on the frame's own path (global counters, the
//!   service's and the backend's);
//! * per batch, the flow, reverse-NAT and affinity tables grow by at most
//!   the new flows counted, and hold only keys of services / backends.
//!
//! A fixed seed (printed; `XLB_FUZZ_SEED` overrides it) and a frame count
//! (`XLB_FUZZ_FRAMES`, default 50,000 here; `cargo xtask fuzz` runs
//! 1,000,000) give the same frames every time. Each violation is printed with
//! the seed, the frame index, how the frame was made and a hex dump; the test
//! fails on any. Needs root, like the data-path suite.

#[path = "datapath/frame.rs"]
mod frame;
#[allow(unused_imports, reason = "the harness re-exports topology names for the datapath suite")]
#[path = "datapath/harness.rs"]
mod harness;

#[path = "fuzz/check.rs"]
mod check;
#[path = "fuzz/gen.rs"]
mod gen;
#[path = "fuzz/view.rs"]
mod view;

use frame::{PROTO_TCP, PROTO_UDP};
use xlb::state::model::SourceMode::{self, Preserve, Snat};

/// The seed when `XLB_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x0078_6c62_f022;
/// Frames of the test run when `XLB_FUZZ_FRAMES` is not set.
const DEFAULT_FRAMES: u64 = 50_000;

pub const VIP4: &str = "192.0.2.10";
pub const VIP6: &str = "2001:db8::10";

/// Clients: neighbours of the lab, on-link without a neighbour entry, unrouted.
pub const CLIENTS4: [&str; 4] = ["10.100.0.10", "10.100.0.11", "10.100.0.77", "198.51.100.7"];
pub const CLIENTS6: [&str; 3] = ["fd00:100::10", "fd00:100::77", "2001:db8:ffff::1"];
/// Non-VIP destinations.
pub const OTHERS4: [&str; 3] = ["10.1.0.77", "10.2.0.5", "192.0.2.11"];
pub const OTHERS6: [&str; 3] = ["fd00:1::77", "fd00:2::5", "2001:db8::11"];

/// One service of the fuzzing lab.
#[derive(Clone, Copy, Debug)]
pub struct Svc {
    pub name: &'static str,
    pub vip: &'static str,
    pub port: u16,
    pub proto: u8,
    pub source: SourceMode,
    pub backends: &'static [&'static str],
    /// Allowed client prefixes (empty: all).
    pub ranges: &'static [&'static str],
    pub affinity: bool,
}

/// Every kind of service: SNAT and preserve, UDP and TCP, IPv4 and IPv6,
/// affinity, source ranges, and services without backends (rejects).
pub const SERVICES: [Svc; 6] = [
    Svc {
        name: "udp4-snat",
        vip: VIP4,
        port: 53,
        proto: PROTO_UDP,
        source: Snat,
        backends: &["10.1.0.2:5353", "10.1.0.3:5353"],
        ranges: &[],
        affinity: false,
    },
    Svc {
        name: "tcp4-preserve-affinity",
        vip: VIP4,
        port: 80,
        proto: PROTO_TCP,
        source: Preserve,
        backends: &["10.1.0.2:8080", "10.1.0.4:8080"],
        ranges: &[],
        affinity: true,
    },
    Svc {
        name: "udp6-preserve-ranges",
        vip: VIP6,
        port: 53,
        proto: PROTO_UDP,
        source: Preserve,
        backends: &["[fd00:1::2]:5353", "[fd00:1::3]:5353"],
        ranges: &["fd00:100::/64"],
        affinity: false,
    },
    Svc {
        name: "tcp6-snat",
        vip: VIP6,
        port: 443,
        proto: PROTO_TCP,
        source: Snat,
        backends: &["[fd00:1::3]:8443", "[fd00:1::4]:8443"],
        ranges: &[],
        affinity: false,
    },
    Svc {
        name: "udp4-none",
        vip: VIP4,
        port: 9,
        proto: PROTO_UDP,
        source: Snat,
        backends: &[],
        ranges: &[],
        affinity: false,
    },
    Svc {
        name: "tcp6-none",
        vip: VIP6,
        port: 9,
        proto: PROTO_TCP,
        source: Preserve,
        backends: &[],
        ranges: &[],
        affinity: false,
    },
];

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim().replace('_', "");
            let parsed = v.strip_prefix("0x").map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16));
            parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number ({e}); give a decimal or 0x-hex value"))
        }
        Err(_) => default,
    }
}

#[test]
fn fuzz_datapath() {
    let seed = env_u64("XLB_FUZZ_SEED", DEFAULT_SEED);
    let frames = env_u64("XLB_FUZZ_FRAMES", DEFAULT_FRAMES);
    println!("fuzz: seed {seed:#x} ({seed}), {frames} frames (XLB_FUZZ_SEED / XLB_FUZZ_FRAMES override)");
    let (tx, rx) = std::sync::mpsc::channel();
    harness::run_case("fuzz_datapath", move |lab| {
        let report = check::run(lab, seed, frames);
        tx.send(report).expect("sending the report");
    });
    let report = rx.recv().expect("the fuzz run's report");
    println!(
        "fuzz: {} frames, seed {seed:#x} ({seed}), {} violations, {:.1} s ({})",
        report.frames, report.violations, report.secs, report.classes
    );
    assert_eq!(report.frames, frames, "not every frame was run");
    assert_eq!(report.violations, 0, "the data path violated invariants (see above); seed {seed:#x}");
}
