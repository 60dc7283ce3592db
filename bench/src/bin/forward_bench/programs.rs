//! The bench's XDP programs (`xlb_bench::BENCH_OBJECT`, built from
//! lb-ebpf/src/bin/xlb-bench.rs): sinks, the minimal forwarder and the
//! generators, and how the generator is run.

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{
    tc::qdisc_add_clsact, SchedClassifier, TcAttachType, TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
};
use aya::Ebpf;
use xlb_bench::BENCH_OBJECT;

use crate::cases::Traffic;
use crate::topology::Ns;

/// Loads the bench object with its program `prog` loaded.
pub(crate) fn load_bench(prog: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading xlb_bench::BENCH_OBJECT")?;
    let p: &mut Xdp =
        ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog} in the bench object"))?.try_into()?;
    p.load().with_context(|| format!("loading {prog}"))?;
    Ok(ebpf)
}

/// Loads the bench object with its tc program `prog` loaded.
pub(crate) fn load_tc(prog: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading xlb_bench::BENCH_OBJECT")?;
    let p: &mut SchedClassifier =
        ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog} in the bench object"))?.try_into()?;
    p.load().with_context(|| format!("loading {prog}"))?;
    Ok(ebpf)
}

/// Attaches the tc program `prog` of `ebpf` to `ifname`'s ingress inside
/// `ns` (adding its clsact qdisc).
pub(crate) fn attach_tc(ns: &Ns, ebpf: &mut Ebpf, prog: &str, ifname: &str) -> Result<()> {
    let p: &mut SchedClassifier = ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?;
    ns.run(|| -> Result<()> {
        // Already there is fine (`EEXIST`).
        let _ = qdisc_add_clsact(ifname);
        p.attach(ifname, TcAttachType::Ingress)?;
        Ok(())
    })?
    .with_context(|| format!("attaching {prog} to {ifname}'s tc ingress in {}", ns.name()))
}

pub(crate) fn xdp<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?)
}

pub(crate) fn xdp_ref<'a>(ebpf: &'a Ebpf, prog: &str) -> Result<&'a Xdp> {
    Ok(ebpf.program(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?)
}

/// Attaches `prog` of `ebpf` natively to `ifname` inside `ns`.
pub(crate) fn attach(ns: &Ns, ebpf: &mut Ebpf, prog: &str, ifname: &str) -> Result<()> {
    let p = xdp(ebpf, prog)?;
    ns.run(|| p.attach(ifname, XdpMode::Driver).map(|_| ()))?
        .with_context(|| format!("attaching {prog} to {ifname} in {} (native XDP)", ns.name()))
}

/// Sum over CPUs of BENCH_COUNT[0].
pub(crate) fn count(ebpf: &Ebpf) -> Result<u64> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map("BENCH_COUNT").ok_or_else(|| anyhow!("no BENCH_COUNT"))?)?;
    Ok(map.get(&0, 0)?.iter().sum())
}

/// Bytes of the header `gen_full` writes (Ethernet, IPv4, UDP).
const HDR: usize = 42;

/// A generator program run with BPF_PROG_RUN in live-frame mode: `gen_full`
/// (the whole header of every frame from its configuration, a random
/// source port) or `gen` (a new source port only; `--generator bench-gen`).
pub(crate) struct Generator {
    pub(crate) ebpf: Ebpf,
    pub(crate) prog: &'static str,
}

impl Generator {
    /// Loads `gen_full`.
    pub(crate) fn full() -> Result<Generator> {
        Ok(Generator { ebpf: load_bench("gen_full")?, prog: "gen_full" })
    }

    /// Loads `gen`.
    pub(crate) fn port_only() -> Result<Generator> {
        Ok(Generator { ebpf: load_bench("gen")?, prog: "gen" })
    }

    /// Makes `gen_full` write the header of `frame` and, for
    /// [`Traffic::Flood`], `ports` random source ports (1024 up; a power of
    /// two up to 32768); for the churn traffic, tuples of the churn pool in
    /// turn, each for `traffic.flow_packets()` frames. `gen` takes no
    /// configuration.
    pub(crate) fn configure(&mut self, frame: &[u8], ports: u32, traffic: Traffic) -> Result<()> {
        if self.prog != "gen_full" {
            return Ok(());
        }
        if frame.len() < HDR {
            bail!("frame shorter than its headers");
        }
        if !ports.is_power_of_two() || ports > 32768 {
            bail!("--ports must be a power of two up to 32768");
        }
        // GenConf of xlb-bench.rs: 44 header bytes (the last two unused),
        // the port mask, the packets per flow.
        let mut conf = [0u8; 52];
        conf[..HDR].copy_from_slice(&frame[..HDR]);
        conf[44..48].copy_from_slice(&(ports - 1).to_ne_bytes());
        conf[48..52].copy_from_slice(&traffic.flow_packets().to_ne_bytes());
        let mut map: Array<&mut MapData, [u8; 52]> =
            Array::try_from(self.ebpf.map_mut("BENCH_GEN").ok_or_else(|| anyhow!("no BENCH_GEN"))?)?;
        map.set(0, conf, 0).context("configuring the generator")
    }

    /// Attaches the program (generic XDP) to `ifname` in `ns`, a device that
    /// sees no traffic: attached, it stays in the kernel's XDP dispatcher,
    /// so test runs no longer swap it in and out (two RCU grace periods per
    /// call otherwise).
    pub(crate) fn attach_generic(&mut self, ns: &Ns, ifname: &str) -> Result<()> {
        let prog = self.prog;
        let p = xdp(&mut self.ebpf, prog)?;
        ns.run(|| p.attach(ifname, XdpMode::Skb).map(|_| ()))?
            .with_context(|| format!("attaching {prog} to {ifname} (generic XDP)"))
    }

    /// BPF_PROG_RUN in live-frame mode: `repeat` frames, `batch` per flush.
    /// Returns the kernel's time per frame (ns).
    pub(crate) fn run_live(&self, frame: &[u8], ctx: &[u8], repeat: u32, batch: u32) -> Result<u32> {
        let r = xdp_ref(&self.ebpf, self.prog)?.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(ctx),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as u32)
    }
}
