//! The data-path topology: one network namespace in which `xlb_xdp` runs
//! through `BPF_PROG_TEST_RUN`, with routes and neighbours that
//! `bpf_fib_lookup` can answer from. Shared by the data-path tests
//! (`lb-userspace/tests/datapath`) and the per-packet benchmark
//! (`bench/src/bin/datapath_bench`).
//!
//! Inside the namespace (veth pair `v0`/`v1`, both up):
//!
//! ```text
//!   v0  02:00:00:00:00:a0  10.1.0.1/24 fd00:1::1/64     backends 10.1.0.2-4, fd00:1::2-4
//!                          10.100.0.1/24 fd00:100::1/64 clients 10.100.0.10-11, fd00:100::10
//!   v1  02:00:00:00:00:a1  10.2.0.1/24 fd00:2::1/64     backend 10.2.0.5, fd00:2::5
//! ```
//!
//! Every neighbour above is a permanent entry with a known MAC (see
//! [`NEIGHBOURS`]); 10.1.0.99 is on-link without a neighbour entry and
//! 198.51.100.0/24 has no route. Forwarding is enabled (the FIB helper
//! refuses to answer on an interface that does not forward).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::host::sh;

/// `XDP_ABORTED`: the program failed.
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`: on to the kernel.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`: back out of the interface it came in on.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`: out of another interface.
pub const XDP_REDIRECT: u32 = 4;

/// The name of an XDP verdict (`?` for none of them).
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    }
}

/// The MAC of `v0`.
pub const V0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa0];
/// The MAC of `v1`.
pub const V1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];

/// Static neighbours: (address, MAC, device).
pub const NEIGHBOURS: &[(&str, [u8; 6], &str)] = &[
    ("10.1.0.2", [0x02, 0, 0, 0x01, 0x00, 0x02], "v0"),
    ("10.1.0.3", [0x02, 0, 0, 0x01, 0x00, 0x03], "v0"),
    ("10.1.0.4", [0x02, 0, 0, 0x01, 0x00, 0x04], "v0"),
    ("fd00:1::2", [0x02, 0, 0, 0x01, 0x06, 0x02], "v0"),
    ("fd00:1::3", [0x02, 0, 0, 0x01, 0x06, 0x03], "v0"),
    ("fd00:1::4", [0x02, 0, 0, 0x01, 0x06, 0x04], "v0"),
    ("10.100.0.10", [0x02, 0, 0, 0x64, 0x00, 0x0a], "v0"),
    ("10.100.0.11", [0x02, 0, 0, 0x64, 0x00, 0x0b], "v0"),
    ("fd00:100::10", [0x02, 0, 0, 0x64, 0x06, 0x10], "v0"),
    ("10.2.0.5", [0x02, 0, 0, 0x02, 0x00, 0x05], "v1"),
    ("fd00:2::5", [0x02, 0, 0, 0x02, 0x06, 0x05], "v1"),
];

/// The MAC of a neighbour in [`NEIGHBOURS`] (address with or without port).
/// Panics when `addr` is none of them.
pub fn mac(addr: &str) -> [u8; 6] {
    let ip: IpAddr = addr
        .parse()
        .or_else(|_| addr.parse::<SocketAddr>().map(|s| s.ip()))
        .unwrap_or_else(|_| panic!("bad address {addr}"));
    NEIGHBOURS
        .iter()
        .find(|(a, _, _)| a.parse::<IpAddr>().unwrap() == ip)
        .unwrap_or_else(|| panic!("{addr} is not a neighbour of the test topology"))
        .1
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The `ip -batch` script that builds the topology in a fresh namespace.
pub fn setup_script() -> String {
    let mut c: Vec<String> = [
        "link set lo up",
        "link add v0 address 02:00:00:00:00:a0 type veth peer name v1 address 02:00:00:00:00:a1",
        "link set v0 up",
        "link set v1 up",
        "addr add 10.1.0.1/24 dev v0",
        "addr add 10.100.0.1/24 dev v0",
        "addr add fd00:1::1/64 dev v0 nodad",
        "addr add fd00:100::1/64 dev v0 nodad",
        "addr add 10.2.0.1/24 dev v1",
        "addr add fd00:2::1/64 dev v1 nodad",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    for (ip, m, dev) in NEIGHBOURS {
        c.push(format!("neigh add {ip} lladdr {} dev {dev} nud permanent", mac_str(m)));
    }
    c.join("\n") + "\n"
}

/// A namespace with the topology and a bpffs pin directory for the data
/// path's maps, both removed on drop (also on panic).
pub struct DatapathNetns {
    netns: String,
    pin: PathBuf,
}

impl DatapathNetns {
    /// Creates the namespace `netns` with forwarding on and the topology
    /// ([`setup_script`]). `pin` is not created (the loader does that) but is
    /// removed on drop; so is the namespace, also when this fails half-way.
    pub fn create(netns: impl Into<String>, pin: impl Into<PathBuf>) -> Result<Self> {
        let this = DatapathNetns { netns: netns.into(), pin: pin.into() };
        sh(&["ip", "netns", "add", &this.netns], None)?;
        sh(
            &[
                "ip",
                "netns",
                "exec",
                &this.netns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
            None,
        )?;
        sh(&["ip", "-n", &this.netns, "-batch", "-"], Some(&setup_script()))?;
        Ok(this)
    }

    /// The namespace's name (under `/var/run/netns`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The pin directory.
    pub fn pin(&self) -> &Path {
        &self.pin
    }
}

impl Drop for DatapathNetns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.netns], None);
        let _ = std::fs::remove_dir_all(&self.pin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_neighbour_is_in_the_script_and_found_by_mac() {
        let script = setup_script();
        for (ip, m, dev) in NEIGHBOURS {
            assert!(script.contains(&format!("neigh add {ip} lladdr {} dev {dev} nud permanent", mac_str(m))));
            assert_eq!(mac(ip), *m);
        }
        assert_eq!(mac("10.2.0.5:53"), [0x02, 0, 0, 0x02, 0x00, 0x05]);
        assert_eq!(mac("[fd00:1::3]:53"), [0x02, 0, 0, 0x01, 0x06, 0x03]);
    }
}
