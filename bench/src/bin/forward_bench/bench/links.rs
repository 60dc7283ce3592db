//! Veths, addresses, routes and neighbours of the topology.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, DevMap, MapData};
use aya::programs::XdpMode;
use aya::Ebpf;
use serde_json::{json, Value};
use xlb_bench::median;
use xlb_bench::stop::{check_stop, stopped};
use xlb_bench::host::{get_affinity, get_nice, set_affinity, set_nice};
use xlb_bench::table::{markdown_table, print_table};
use xlb_tests::Netns;

use crate::bench::Bench;
use crate::cases::{Case, Sample};
use crate::options::{Args, Plan};
use crate::proc::Proc;
use crate::programs::{attach, count, load_bench, xdp_ref, Generator};
use crate::report::{counter_delta, fmt_pps, fmt_ratio, num, plan_runs, targets, udp_rows, TCP_HEADER, UDP_HEADER};
use crate::sys::{clock_ticks, cpu_busy, ifindex, napi_threads, progress, set_gro, write_sysctl, BENCH_NICE};
use crate::topology::{
    be_addr, be_gw, cleanup_stale, gen_addr, lb_addr, mac_b, mac_be, mac_g, mac_l, mac_str, run_cmd, udp_frame, InNs, Ns,
    CALL_SECS, CONTENDED, FRAME_LEN, FWD_CPU, GEN_CPU, RR_BYTES, TCP_RR_PORT, TCP_SETUP_PORT, UDP_PORT, VIP_NFT,
    VIP_PRESERVE, VIP_PROXY, VIP_SINK, VIP_SNAT,
};
use crate::bench::start_servers;
use crate::bench::Servers;

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
                &g.name,
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
                &be.name,
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
