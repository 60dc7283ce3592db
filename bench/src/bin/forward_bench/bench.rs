//! Everything the bench sets up, and its measurements.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, DevMap, MapData};
use aya::Ebpf;
use serde_json::Value;

use crate::cases::Case;
use crate::options::{Args, Plan};
use crate::proc::Proc;
use crate::programs::{attach, attach_tc, load_bench, load_tc, xdp_ref, Generator};
use crate::sys::{ifindex, progress, set_gro};
use crate::topology::{be_addr, mac_b, mac_be, Ns};

mod forwarders;
mod links;
mod tcp;
mod udp;

use tcp::Servers;

// ---------------------------------------------------------------- the bench

/// Everything we set up; fields drop in order: processes, programs, then
/// namespaces, pins and files.
pub(crate) struct Bench {
    pub(crate) plan: Plan,
    pub(crate) only: Vec<String>,
    pub(crate) nproc: usize,
    pub(crate) agent: Option<Proc>,
    pub(crate) nginx: Option<Proc>,
    pub(crate) servers: Option<Servers>,
    /// The generator (`gen_full`, or `gen` with `--generator bench-gen`).
    pub(crate) gen: Generator,
    pub(crate) xlb_bin: Option<PathBuf>,
    /// BPF run-time statistics on while held (`--bpf-stats`).
    pub(crate) stats_fd: Option<OwnedFd>,
    /// Programs whose run time is tracked: (label, program id).
    pub(crate) prog_ids: Vec<(&'static str, u32)>,
    /// Per case and program: (run time ns, runs) over the measured slices.
    pub(crate) bpf_costs: BTreeMap<(Case, &'static str), (u64, u64)>,
    pub(crate) min_fwd: Ebpf,
    pub(crate) ceiling_sink: Ebpf,
    /// One per backend (attached to its eth0 and eth1).
    pub(crate) sinks: Vec<Ebpf>,
    /// One per backend: `tc_sink` on its eth2 (a veth peer without XDP).
    pub(crate) tc_sinks: Vec<Ebpf>,
    /// `tc_fwd` on l4's tc ingress.
    pub(crate) tc_fwd: Ebpf,
    pub(crate) nft_rules: Option<PathBuf>,
    pub(crate) nft_loaded: bool,
    pub(crate) skipped: Vec<(String, String)>,
    pub(crate) notes: Vec<String>,
    /// Time left for measuring contended slices again.
    pub(crate) retry_budget: Duration,
    /// Slices measured again.
    pub(crate) retried: u32,
    /// Failed TCP connection attempts (each waited up to 1 s).
    pub(crate) tcp_failed: BTreeMap<Case, u64>,
    pub(crate) gen_ifindex: [u32; 5],
    pub(crate) lb: Ns,
    pub(crate) be: Vec<Ns>,
    pub(crate) gen_ns: Ns,
    pub(crate) pins: PathBuf,
    pub(crate) tmp: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if self.nft_loaded {
            let _ = self.nft(&["delete", "table", "ip", "xlbbench"]);
        }
        self.servers.take();
        self.nginx.take();
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        if self.pins.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pins) {
                eprintln!("forward_bench: cannot remove {}: {e}", self.pins.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
        // programs, then namespaces drop with the fields
    }
}

#[expect(clippy::ref_option, reason = "called with a field of the parsed arguments")]
pub(crate) fn xlb_binary(arg: &Option<PathBuf>) -> Result<PathBuf> {
    let p = if let Some(p) = arg {
        p.clone()
    } else if let Some(p) = std::env::var_os("XLB_BIN") {
        PathBuf::from(p)
    } else {
        let exe = std::env::current_exe()?;
        // target/<profile>/forward_bench -> target/<profile>/xlb
        exe.parent().map(|d| d.join("xlb")).ok_or_else(|| anyhow!("cannot locate xlb"))?
    };
    if !p.is_file() {
        bail!("xlb binary {} not found: build it (`cargo build --release -p lb-userspace`) or pass --xlb", p.display());
    }
    Ok(p)
}

impl Bench {
    pub(crate) fn setup(plan: Plan, args: &Args) -> Result<Bench> {
        let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let prefix = format!("xlbt{}-fwd", std::process::id());
        let tmp = std::env::temp_dir().join(format!("{prefix}-tmp"));
        std::fs::create_dir_all(&tmp)?;
        let pins = PathBuf::from(format!("/sys/fs/bpf/{prefix}-pins"));
        progress("creating namespaces gen, lb, be0, be1 and their veths");
        let gen_ns = Ns::create(format!("{prefix}-gen"))?;
        let lb = Ns::create(format!("{prefix}-lb"))?;
        let be = vec![Ns::create(format!("{prefix}-be0"))?, Ns::create(format!("{prefix}-be1"))?];
        let plan_bench_gen = plan.bench_gen;
        let mut b = Bench {
            plan,
            only: args.only.clone(),
            nproc,
            agent: None,
            nginx: None,
            servers: None,
            gen: if plan_bench_gen { Generator::port_only()? } else { Generator::full()? },
            stats_fd: None,
            xlb_bin: None,
            prog_ids: Vec::new(),
            bpf_costs: BTreeMap::new(),
            min_fwd: load_bench("min_fwd")?,
            ceiling_sink: load_bench("sink")?,
            sinks: vec![load_bench("sink")?, load_bench("sink")?],
            tc_sinks: vec![load_tc("tc_sink")?, load_tc("tc_sink")?],
            tc_fwd: load_tc("tc_fwd")?,
            nft_rules: None,
            nft_loaded: false,
            skipped: Vec::new(),
            notes: Vec::new(),
            tcp_failed: BTreeMap::new(),
            retry_budget: Duration::from_secs(if args.quick { 0 } else { args.retry_budget_s }),
            retried: 0,
            gen_ifindex: [0; 5],
            lb,
            be,
            gen_ns,
            pins,
            tmp,
        };
        b.build_links()?;
        b.attach_programs()?;
        b.start_agent(args)?;
        if args.no_nft {
            b.skipped.push(("nft_dnat".into(), "--no-nft".into()));
        } else if let Err(e) = b.prepare_nft() {
            b.skipped.push(("nft_dnat".into(), format!("{e:#}")));
        }
        if args.no_nginx || args.no_udp {
            if !args.no_udp {
                b.skipped.push(("nginx_udp_proxy".into(), "--no-nginx".into()));
            }
        } else if let Err(e) = b.start_nginx() {
            b.skipped.push(("nginx_udp_proxy".into(), format!("{e:#}")));
        }
        b.thread_napi()?;
        if args.bpf_stats {
            b.enable_bpf_stats()?;
        }
        Ok(b)
    }

    pub(crate) fn enable_bpf_stats(&mut self) -> Result<()> {
        self.stats_fd =
            Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?);
        let id = |e: &Ebpf, p: &str| -> Result<u32> { Ok(xdp_ref(e, p)?.info()?.id()) };
        self.prog_ids.push(("min_fwd", id(&self.min_fwd, "min_fwd")?));
        self.prog_ids.push(("sink", id(&self.sinks[0], "sink")?));
        self.prog_ids.push(("sink", id(&self.sinks[1], "sink")?));
        self.prog_ids.push(("sink", id(&self.ceiling_sink, "sink")?));
        let l1 = self.lb.ip(&["-d", "link", "show", "l1"])?;
        let xlb = l1
            .split_whitespace()
            .skip_while(|w| *w != "prog/xdp")
            .nth(2)
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| anyhow!("no XDP program id on l1: {l1}"))?;
        self.prog_ids.push(("xlb", xlb));
        self.notes.push(
            "--bpf-stats: kernel BPF run-time statistics were on (they add ~20-40 ns to every program run)".into(),
        );
        Ok(())
    }

    /// (run time ns, runs) per tracked label, summed over its programs.
    pub(crate) fn prog_stats(&self) -> BTreeMap<&'static str, (u64, u64)> {
        let mut out: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        if self.prog_ids.is_empty() {
            return out;
        }
        for info in aya::programs::loaded_programs().flatten() {
            if let Some((label, _)) = self.prog_ids.iter().find(|(_, id)| *id == info.id()) {
                let e = out.entry(label).or_default();
                e.0 += info.run_time().as_nanos() as u64;
                e.1 += info.run_count();
            }
        }
        out
    }

    pub(crate) fn attach_programs(&mut self) -> Result<()> {
        progress("attaching sink (backends, l3), min_fwd (l0); GRO on l2 (kernel paths)");
        // Kept in the XDP dispatcher on a device without traffic (see
        // `Generator::attach_generic`).
        if let Err(e) = self.gen.attach_generic(&self.gen_ns, "d0") {
            self.notes.push(format!("generator not kept in the XDP dispatcher ({e:#}): each call waits for RCU"));
        }
        for (i, be) in self.be.iter().enumerate() {
            for ifname in ["eth0", "eth1"] {
                attach(be, &mut self.sinks[i], "sink", ifname)?;
            }
        }
        attach(&self.lb, &mut self.ceiling_sink, "sink", "l3")?;
        // min_fwd: rewrite to 10.1.<i>.2 out b<i>, like xlb's backends.
        let (b0, b1) = self.lb.run(|| -> Result<(u32, u32)> { Ok((ifindex("b0")?, ifindex("b1")?)) })??;
        {
            let mut conf = [0u8; 32];
            conf[0..4].copy_from_slice(&be_addr(0).octets());
            conf[4..8].copy_from_slice(&be_addr(1).octets());
            conf[8..14].copy_from_slice(&mac_be(0));
            conf[14..20].copy_from_slice(&mac_be(1));
            conf[20..26].copy_from_slice(&mac_b(0));
            conf[26..32].copy_from_slice(&mac_b(1));
            let mut fwd: Array<&mut MapData, [u8; 32]> =
                Array::try_from(self.min_fwd.map_mut("BENCH_FWD").ok_or_else(|| anyhow!("no BENCH_FWD"))?)?;
            fwd.set(0, conf, 0)?;
        }
        {
            let mut ports: DevMap<&mut MapData> =
                DevMap::try_from(self.min_fwd.map_mut("BENCH_PORTS").ok_or_else(|| anyhow!("no BENCH_PORTS"))?)?;
            // The devmap resolves ifindexes in the caller's namespace.
            self.lb.run(|| -> Result<()> {
                ports.set(0, b0, None, 0)?;
                ports.set(1, b1, None, 0)?;
                Ok(())
            })??;
        }
        attach(&self.lb, &mut self.min_fwd, "min_fwd", "l0")?;
        self.lb.run(|| set_gro("l2", true))??;
        self.attach_tc_path()?;
        Ok(())
    }

    /// The skb path to veths whose peers run no XDP: `tc_sink` on each
    /// backend's eth2; `tc_fwd` on l4 (GRO on, so the generator's frames
    /// enter as skbs), configured for b4/b5.
    fn attach_tc_path(&mut self) -> Result<()> {
        for (i, be) in self.be.iter().enumerate() {
            attach_tc(be, &mut self.tc_sinks[i], "tc_sink", "eth2")?;
        }
        let (b4, b5) = self.lb.run(|| -> Result<(u32, u32)> { Ok((ifindex("b4")?, ifindex("b5")?)) })??;
        let mut conf = [0u8; 44];
        conf[4..8].copy_from_slice(&b4.to_ne_bytes());
        conf[8..12].copy_from_slice(&b5.to_ne_bytes());
        conf[12..16].copy_from_slice(&be_addr(4).octets());
        conf[16..20].copy_from_slice(&be_addr(5).octets());
        conf[20..26].copy_from_slice(&mac_be(4));
        conf[26..32].copy_from_slice(&mac_be(5));
        conf[32..38].copy_from_slice(&mac_b(4));
        conf[38..44].copy_from_slice(&mac_b(5));
        let mut map: Array<&mut MapData, [u8; 44]> =
            Array::try_from(self.tc_fwd.map_mut("BENCH_TC").ok_or_else(|| anyhow!("no BENCH_TC"))?)?;
        map.set(0, conf, 0)?;
        self.lb.run(|| set_gro("l4", true))??;
        attach_tc(&self.lb, &mut self.tc_fwd, "tc_fwd", "l4")
    }

    /// Sets `tc_fwd`'s mode (`TC_NEIGH` 0, `TC_PEER` 1 of xlb-bench.rs).
    pub(crate) fn tc_mode(&mut self, peer: bool) -> Result<()> {
        let mut map: Array<&mut MapData, [u8; 44]> =
            Array::try_from(self.tc_fwd.map_mut("BENCH_TC").ok_or_else(|| anyhow!("no BENCH_TC"))?)?;
        let mut conf = map.get(&0, 0)?;
        conf[0..4].copy_from_slice(&u32::from(peer).to_ne_bytes());
        map.set(0, conf, 0)?;
        Ok(())
    }

    /// CPU ticks (utime + stime) used so far by processes that are not part
    /// of the bench: not us or our children (agent, nginx master and
    /// workers, nft, ip), not the NAPI kthreads nor ksoftirqd.
    pub(crate) fn foreign_ticks(&self) -> u64 {
        let me = std::process::id() as i32;
        let mut ours: HashSet<i32> = [me].into_iter().collect();
        for p in [&self.agent, &self.nginx].into_iter().flatten() {
            ours.insert(p.child.id() as i32);
        }
        let mut total = 0;
        let Ok(rd) = std::fs::read_dir("/proc") else { return 0 };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ppid: i32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            if ours.contains(&pid)
                || ours.contains(&ppid)
                || comm.starts_with("napi/")
                || comm.starts_with("ksoftirqd/")
            {
                continue;
            }
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += t(11) + t(12);
        }
        total
    }

    /// `xlb stats -o json` (the CLI reads the pinned maps; empty on error).
    pub(crate) fn xlb_stats(&self) -> BTreeMap<String, u64> {
        let Some(bin) = &self.xlb_bin else { return BTreeMap::new() };
        let out =
            Command::new(bin).args(["stats", "-o", "json", "--pin-path"]).arg(&self.pins).stdin(Stdio::null()).output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<BTreeMap<String, Value>>(&o.stdout).ok())
            .map(|m| m.into_iter().filter_map(|(k, v)| v.as_u64().map(|n| (k, n))).collect())
            .unwrap_or_default()
    }
}
