//! The UDP flood: slices of generator traffic per case.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xlb_bench::stop::{check_stop, stopped};

use crate::bench::Bench;
use crate::cases::{Case, Sample, Traffic};
use crate::programs::count;
use crate::report::fmt_pps;
use crate::sys::{clock_ticks, progress};
use crate::topology::{udp_frame, InNs, CALL_SECS, CONTENDED, FRAME_LEN, FWD_CPU, GEN_CPU};

impl Bench {
    pub(crate) fn delivered(&self, case: Case) -> Result<(u64, u64)> {
        if case == Case::Ceiling {
            let c = count(&self.ceiling_sink)?;
            return Ok((c, c));
        }
        let sinks = if matches!(case, Case::TcNeigh | Case::TcPeer | Case::XlbFallback | Case::XlbFallbackNeigh) {
            &self.tc_sinks
        } else {
            &self.sinks
        };
        let a = count(&sinks[0])?;
        let b = count(&sinks[1])?;
        Ok((a + b, a))
    }

    /// Runs the generator toward `case` for `warmup + slice`; counts over the slice.
    pub(crate) fn udp_slice(&mut self, case: Case) -> Result<Sample> {
        if matches!(case, Case::TcNeigh | Case::TcPeer) {
            self.tc_mode(case == Case::TcPeer)?;
        }
        if case.is_nft() {
            self.nft_load(true)?;
        }
        if case == Case::XlbFallbackNeigh {
            self.egress_qdiscs(true)?;
        }
        let r = self.udp_slice_inner(case);
        if case.is_nft() {
            self.nft_load(false)?;
        }
        if case == Case::XlbFallbackNeigh {
            self.egress_qdiscs(false)?;
        }
        r
    }

    pub(crate) fn udp_slice_inner(&mut self, case: Case) -> Result<Sample> {
        let (x, dst) = case.target();
        let frame = udp_frame(x, dst);
        let mut ctx = [0u8; 24]; // struct xdp_md
        ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.gen_ifindex[x as usize].to_ne_bytes());
        let pin = (self.nproc > FWD_CPU).then_some(GEN_CPU);
        let batch = self.plan.batch;
        let frames_per_call = self.plan.frames_per_call;
        self.gen.configure(&frame, self.plan.ports, case.traffic())?;
        let gen = &self.gen;
        let in_gen_ns = InNs::enter(&self.gen_ns, pin)?;
        // Returns the frames sent (each successful call sends `frames_per_call`).
        // Each call costs the kernel two RCU grace periods (it swaps the
        // program into the XDP dispatcher and back), during which nothing is
        // sent: calls are sized to ~CALL_SECS from the rate measured so far.
        let mut rate = 0.0f64;
        // Returns (frames sent, seconds the kernel spent sending them).
        let mut fire = |until: Instant| -> Result<(u64, f64)> {
            let (mut sent, mut busy) = (0u64, 0.0f64);
            loop {
                let now = Instant::now();
                if now >= until || stopped() {
                    break;
                }
                let left = (until - now).as_secs_f64();
                let repeat = if rate > 0.0 {
                    (rate * left.min(CALL_SECS)).clamp(1024.0, f64::from(1u32 << 24)) as u32
                } else {
                    frames_per_call
                };
                let r = gen.run_live(&frame, &ctx, repeat, batch);
                match r {
                    Ok(ns) => {
                        sent += u64::from(repeat);
                        busy += f64::from(ns) * f64::from(repeat) / 1e9;
                        rate = f64::from(repeat) / now.elapsed().as_secs_f64();
                    }
                    Err(_) if stopped() => break,
                    Err(e) => return Err(e).context("BPF_PROG_RUN (live frames) of the generator"),
                }
            }
            Ok((sent, busy))
        };
        fire(Instant::now() + self.plan.warmup)?;
        let (d0, d00) = self.delivered(case)?;
        let p0 = self.prog_stats();
        let f0 = self.foreign_ticks();
        let t0 = Instant::now();
        let (offered, gen_busy) = fire(t0 + self.plan.slice)?;
        let secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(10)); // let the rings drain
        let (d1, d10) = self.delivered(case)?;
        let p1 = self.prog_stats();
        let foreign = self.foreign_ticks().saturating_sub(f0) as f64 / clock_ticks();
        drop(in_gen_ns);
        for (label, (ns, runs)) in p1 {
            let (ns0, runs0) = p0.get(label).copied().unwrap_or_default();
            if runs > runs0 {
                let e = self.bpf_costs.entry((case, label)).or_default();
                e.0 += ns - ns0;
                e.1 += runs - runs0;
            }
        }
        check_stop()?;
        Ok(Sample { offered, delivered: d1 - d0, delivered0: d10 - d00, secs, foreign, gen_busy })
    }

    pub(crate) fn udp_cases(&self) -> Vec<Case> {
        Case::ALL
            .into_iter()
            .filter(|c| self.only.is_empty() || self.only.iter().any(|o| o == c.key()))
            .filter(|c| match c {
                c if c.is_nft() => self.nft_rules.is_some(),
                // `gen` (--generator bench-gen) only sets random ports.
                c if c.traffic() != Traffic::Flood => !self.plan.bench_gen,
                Case::Nginx => self.nginx.is_some(),
                _ => true,
            })
            .collect()
    }

    /// `runs` x `rounds` interleaved slices; returns per case the per-run sums.
    pub(crate) fn udp_phase(&mut self) -> Result<BTreeMap<Case, Vec<Sample>>> {
        let cases = self.udp_cases();
        let mut res: BTreeMap<Case, Vec<Sample>> = BTreeMap::new();
        let (runs, rounds) = (self.plan.runs, self.plan.rounds);
        for run in 0..runs {
            let mut per_run: BTreeMap<Case, Sample> = BTreeMap::new();
            for round in 0..rounds {
                // Rotate the order so no case always follows the same one.
                let k = (run * rounds + round) as usize % cases.len();
                for &case in cases[k..].iter().chain(&cases[..k]) {
                    let mut s = self.udp_slice(case)?;
                    // Another process took a share of the CPUs: measure the
                    // slice again, within a bounded budget per phase.
                    while s.foreign / (s.secs * self.nproc as f64) > CONTENDED && self.retry_budget > Duration::ZERO {
                        progress(&format!(
                            "{:<32} other processes used {:.0}% of the CPUs: measuring this slice again",
                            case.label(),
                            s.foreign / (s.secs * self.nproc as f64) * 100.0
                        ));
                        let t = Instant::now();
                        std::thread::sleep(Duration::from_secs(2));
                        s = self.udp_slice(case)?;
                        self.retry_budget = self.retry_budget.saturating_sub(t.elapsed());
                        self.retried += 1;
                    }
                    if case == Case::Nginx {
                        if let Some(p) = self.nginx.as_mut() {
                            if !p.running() {
                                bail!("nginx exited during the bench: {}", p.log_tail());
                            }
                        }
                    }
                    let other = s.foreign / (s.secs * self.nproc as f64);
                    progress(&format!(
                        "run {}/{runs} round {}/{rounds}  {:<32} offered {:>10}pps  delivered {:>10}pps  (generator busy {:.0}%){}",
                        run + 1,
                        round + 1,
                        case.label(),
                        fmt_pps(s.offered_pps()),
                        fmt_pps(s.delivered_pps()),
                        s.gen_busy / s.secs * 100.0,
                        if other > 0.05 { format!("  (other processes used {:.0}% of the CPUs)", other * 100.0) } else { String::new() }
                    ));
                    per_run.entry(case).or_default().add(s);
                }
            }
            for (c, s) in per_run {
                res.entry(c).or_default().push(s);
            }
        }
        Ok(res)
    }

    // ------------------------------------------------------------ TCP
}
