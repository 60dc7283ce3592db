//! Veths, addresses, routes and neighbours of the topology.

use anyhow::Result;

use crate::bench::Bench;
use crate::sys::{ifindex, write_sysctl};
use crate::topology::{
    be_addr, be_gw, gen_addr, lb_addr, mac_b, mac_be, mac_g, mac_l, mac_str, VIP_NFT, VIP_PRESERVE, VIP_PROXY, VIP_SNAT,
};

impl Bench {
    pub(crate) fn build_links(&mut self) -> Result<()> {
        let (g, lb) = (&self.gen_ns, &self.lb);
        lb.run(|| write_sysctl("net/ipv4/ip_forward", "1"))??;
        for x in 0..4u8 {
            let (gi, li) = (format!("g{x}"), format!("l{x}"));
            lb.ip(&[
                "link",
                "add",
                &li,
                "address",
                &mac_str(mac_l(x)),
                "type",
                "veth",
                "peer",
                "name",
                &gi,
                "address",
                &mac_str(mac_g(x)),
                "netns",
                g.name(),
            ])?;
            lb.ip(&["addr", "add", &format!("{}/24", lb_addr(x)), "dev", &li])?;
            g.ip(&["addr", "add", &format!("{}/24", gen_addr(x)), "dev", &gi])?;
            lb.ip(&["link", "set", &li, "up"])?;
            g.ip(&["link", "set", &gi, "up"])?;
            lb.ip(&[
                "neigh",
                "replace",
                &gen_addr(x).to_string(),
                "lladdr",
                &mac_str(mac_g(x)),
                "dev",
                &li,
                "nud",
                "permanent",
            ])?;
            g.ip(&[
                "neigh",
                "replace",
                &lb_addr(x).to_string(),
                "lladdr",
                &mac_str(mac_l(x)),
                "dev",
                &gi,
                "nud",
                "permanent",
            ])?;
        }
        // A device without traffic (a veth pair left down: not every kernel
        // has `dummy`) that holds the generator in the XDP dispatcher (see
        // `Generator::attach_generic`): d0.
        g.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
        for (vip, x) in [(VIP_SNAT, 1u8), (VIP_PRESERVE, 1), (VIP_NFT, 2), (VIP_PROXY, 2)] {
            g.ip(&["route", "add", &format!("{vip}/32"), "via", &lb_addr(x).to_string(), "dev", &format!("g{x}")])?;
        }
        for n in 0..4u8 {
            let i = (n % 2) as usize;
            let be = &self.be[i];
            let (bn, en) = (format!("b{n}"), if n < 2 { "eth0" } else { "eth1" });
            lb.ip(&[
                "link",
                "add",
                &bn,
                "address",
                &mac_str(mac_b(n)),
                "type",
                "veth",
                "peer",
                "name",
                en,
                "address",
                &mac_str(mac_be(n)),
                "netns",
                be.name(),
            ])?;
            lb.ip(&["addr", "add", &format!("{}/24", be_gw(n)), "dev", &bn])?;
            be.ip(&["addr", "add", &format!("{}/24", be_addr(n)), "dev", en])?;
            lb.ip(&["link", "set", &bn, "up"])?;
            be.ip(&["link", "set", en, "up"])?;
            // The sinks drop ARP: static neighbours both ways.
            lb.ip(&[
                "neigh",
                "replace",
                &be_addr(n).to_string(),
                "lladdr",
                &mac_str(mac_be(n)),
                "dev",
                &bn,
                "nud",
                "permanent",
            ])?;
            be.ip(&[
                "neigh",
                "replace",
                &be_gw(n).to_string(),
                "lladdr",
                &mac_str(mac_b(n)),
                "dev",
                en,
                "nud",
                "permanent",
            ])?;
            // Replies: xlb's clients via b0/b1 (through xlb), nft's via b2/b3.
            let client_net = if n < 2 { "10.200.1.0/24" } else { "10.200.2.0/24" };
            be.ip(&["route", "add", client_net, "via", &be_gw(n).to_string(), "dev", en])?;
        }
        lb.ip(&["addr", "add", &format!("{VIP_PROXY}/32"), "dev", "lo"])?;
        let ifs = ["l0", "l1", "l2", "l3", "b0", "b1", "b2", "b3"];
        lb.run(|| -> Result<()> {
            for i in ifs {
                write_sysctl(&format!("net/ipv4/conf/{i}/rp_filter"), "0")?;
            }
            Ok(())
        })??;
        self.gen_ifindex =
            g.run(|| -> Result<[u32; 4]> { Ok([ifindex("g0")?, ifindex("g1")?, ifindex("g2")?, ifindex("g3")?]) })??;
        Ok(())
    }
}
