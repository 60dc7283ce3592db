//! Veths, addresses, routes and neighbours of the topology.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::bench::Bench;
use crate::sys::{ifindex, write_sysctl};
use crate::topology::{
    be_addr, be_gw, gen_addr, lb_addr, mac_b, mac_be, mac_g, mac_l, mac_str, Ns, VIP_FALLBACK, VIP_NFT, VIP_PRESERVE,
    VIP_PROXY, VIP_SNAT, VIP_TC,
};

/// One end of a veth pair: its namespace, name, MAC and address (/24).
struct End<'a> {
    ns: &'a Ns,
    dev: &'a str,
    mac: [u8; 6],
    addr: Ipv4Addr,
}

/// A veth pair from `a` (created in its namespace) to `b` (moved into
/// its), with their addresses, up, and static neighbours both ways.
fn veth_pair(a: &End, b: &End) -> Result<()> {
    let (a_mac, b_mac) = (mac_str(a.mac), mac_str(b.mac));
    let peer = ["peer", "name", b.dev, "address", &b_mac, "netns", b.ns.name()];
    a.ns.ip(&[&["link", "add", a.dev, "address", &a_mac, "type", "veth"][..], &peer].concat())?;
    for end in [a, b] {
        end.ns.ip(&["addr", "add", &format!("{}/24", end.addr), "dev", end.dev])?;
    }
    for end in [a, b] {
        end.ns.ip(&["link", "set", end.dev, "up"])?;
    }
    for (end, peer, peer_mac) in [(a, b, &b_mac), (b, a, &a_mac)] {
        end.ns.ip(&[
            "neigh",
            "replace",
            &peer.addr.to_string(),
            "lladdr",
            peer_mac,
            "dev",
            end.dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

impl Bench {
    pub(crate) fn build_links(&mut self) -> Result<()> {
        let (g, lb) = (&self.gen_ns, &self.lb);
        lb.run(|| write_sysctl("net/ipv4/ip_forward", "1"))??;
        for x in 0..5u8 {
            let (gi, li) = (format!("g{x}"), format!("l{x}"));
            let lb_end = End { ns: lb, dev: &li, mac: mac_l(x), addr: lb_addr(x) };
            veth_pair(&lb_end, &End { ns: g, dev: &gi, mac: mac_g(x), addr: gen_addr(x) })?;
        }
        // A device without traffic (a veth pair left down: not every kernel
        // has `dummy`) that holds the generator in the XDP dispatcher (see
        // `Generator::attach_generic`): d0.
        g.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
        for (vip, x) in
            [(VIP_SNAT, 1u8), (VIP_PRESERVE, 1), (VIP_NFT, 2), (VIP_PROXY, 2), (VIP_TC, 4), (VIP_FALLBACK, 1)]
        {
            g.ip(&["route", "add", &format!("{vip}/32"), "via", &lb_addr(x).to_string(), "dev", &format!("g{x}")])?;
        }
        for n in 0..6u8 {
            let i = (n % 2) as usize;
            let be = &self.be[i];
            let (bn, en) = (format!("b{n}"), ["eth0", "eth1", "eth2"][usize::from(n / 2)]);
            // The sinks drop ARP: static neighbours both ways.
            let lb_end = End { ns: lb, dev: &bn, mac: mac_b(n), addr: be_gw(n) };
            veth_pair(&lb_end, &End { ns: be, dev: en, mac: mac_be(n), addr: be_addr(n) })?;
            // Replies: xlb's clients via b0/b1 (through xlb), nft's via b2/b3
            // (b4/b5's backends only count and drop: no replies).
            if n < 4 {
                let client_net = if n < 2 { "10.200.1.0/24" } else { "10.200.2.0/24" };
                be.ip(&["route", "add", client_net, "via", &be_gw(n).to_string(), "dev", en])?;
            }
        }
        lb.ip(&["addr", "add", &format!("{VIP_PROXY}/32"), "dev", "lo"])?;
        let ifs = ["l0", "l1", "l2", "l3", "l4", "b0", "b1", "b2", "b3", "b4", "b5"];
        lb.run(|| -> Result<()> {
            for i in ifs {
                write_sysctl(&format!("net/ipv4/conf/{i}/rp_filter"), "0")?;
            }
            Ok(())
        })??;
        self.gen_ifindex = g.run(|| -> Result<[u32; 5]> {
            Ok([ifindex("g0")?, ifindex("g1")?, ifindex("g2")?, ifindex("g3")?, ifindex("g4")?])
        })??;
        Ok(())
    }
}
