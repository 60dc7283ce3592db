//! TCP connection setup and request/response through xlb and nftables.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xlb_bench::stop::{check_stop, stopped};

use crate::bench::Bench;
use crate::cases::Case;
use crate::sys::{clock_ticks, progress, set_gro};
use crate::topology::{
    InNs, Ns, CONTENDED, FWD_CPU, GEN_CPU, RR_BYTES, TCP_RR_PORT, TCP_SETUP_PORT, VIP_NFT, VIP_PRESERVE, VIP_SNAT,
};

impl Bench {
    pub(crate) fn tcp_cases(&self) -> Vec<Case> {
        let mut v = vec![Case::XlbSnat, Case::XlbPreserve];
        if self.nft_rules.is_some() {
            v.push(Case::Nft);
        }
        v
    }

    /// Connection setup rate and request/response rate per case: per run,
    /// (connections/s, requests/s).
    pub(crate) fn tcp_phase(&mut self) -> Result<BTreeMap<Case, Vec<(f64, f64)>>> {
        // The sinks would drop TCP: detach them (dropping their objects);
        // GRO on the backends' eth0 keeps its NAPI on, so xlb's XDP_REDIRECT
        // into b0/b1 still lands.
        self.sinks.clear();
        for be in &self.be {
            be.run(|| -> Result<()> {
                set_gro("eth0", true)?;
                // The same NAPI hops on the kernel paths' links (b2/b3 <->
                // eth1) as on xlb's (b0/b1 run xlb's XDP, eth0 GRO).
                set_gro("eth1", true)
            })??;
        }
        self.lb.run(|| -> Result<()> {
            set_gro("b2", true)?;
            set_gro("b3", true)
        })??;
        self.servers = Some(start_servers(&self.be)?);
        let cases = self.tcp_cases();
        let mut res: BTreeMap<Case, Vec<(f64, f64)>> = BTreeMap::new();
        let (runs, rounds) = (self.plan.runs, self.plan.rounds);
        for run in 0..runs {
            let mut sums: BTreeMap<Case, (u64, f64, u64, f64)> = BTreeMap::new();
            for round in 0..rounds {
                let k = (run * rounds + round) as usize % cases.len();
                for &case in cases[k..].iter().chain(&cases[..k]) {
                    let (conns, csecs, reqs, rsecs) = loop {
                        if case == Case::Nft {
                            self.nft_load(true)?;
                        }
                        let f0 = self.foreign_ticks();
                        let t = Instant::now();
                        let r = self.tcp_slice(case);
                        let share = self.foreign_ticks().saturating_sub(f0) as f64
                            / clock_ticks()
                            / (t.elapsed().as_secs_f64() * self.nproc as f64);
                        if case == Case::Nft {
                            self.nft_load(false)?;
                        }
                        let r = r?;
                        if share <= CONTENDED || self.retry_budget == Duration::ZERO {
                            break r;
                        }
                        progress(&format!(
                            "TCP {:<28} other processes used {:.0}% of the CPUs: measuring this slice again",
                            case.label(),
                            share * 100.0
                        ));
                        std::thread::sleep(Duration::from_secs(2));
                        self.retry_budget = self.retry_budget.saturating_sub(t.elapsed());
                        self.retried += 1;
                    };
                    progress(&format!(
                        "run {}/{runs} round {}/{rounds}  TCP {:<26} {:>9.0} connections/s  {:>9.0} requests/s",
                        run + 1,
                        round + 1,
                        case.label(),
                        conns as f64 / csecs,
                        reqs as f64 / rsecs
                    ));
                    let e = sums.entry(case).or_default();
                    e.0 += conns;
                    e.1 += csecs;
                    e.2 += reqs;
                    e.3 += rsecs;
                }
            }
            for (c, (n, s, r, rs)) in sums {
                res.entry(c).or_default().push((n as f64 / s, r as f64 / rs));
            }
        }
        Ok(res)
    }

    /// One setup slice then one request/response slice toward `case`'s VIP,
    /// from the generator namespace (pinned like the generator).
    pub(crate) fn tcp_slice(&mut self, case: Case) -> Result<(u64, f64, u64, f64)> {
        let vip = match case {
            Case::XlbSnat => VIP_SNAT,
            Case::XlbPreserve => VIP_PRESERVE,
            Case::Nft => VIP_NFT,
            c => bail!("no TCP for {c:?}"),
        };
        let pin = (self.nproc > FWD_CPU).then_some(GEN_CPU);
        let _in = InNs::enter(&self.gen_ns, pin)?;
        let setup = SocketAddr::from((vip, TCP_SETUP_PORT));
        let connect = |until: Instant| -> (u64, u64) {
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < until && !stopped() {
                match TcpStream::connect_timeout(&setup, Duration::from_secs(1)) {
                    Ok(s) => {
                        // Close with RST: no TIME_WAIT, so the bench never runs out of ports.
                        let l = libc::linger { l_onoff: 1, l_linger: 0 };
                        // SAFETY: valid socket and option struct.
                        unsafe {
                            libc::setsockopt(
                                s.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&raw const l).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            )
                        };
                        ok += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        };
        connect(Instant::now() + self.plan.warmup / 2);
        let t0 = Instant::now();
        let (conns, failed) = connect(t0 + self.plan.slice);
        let csecs = t0.elapsed().as_secs_f64();
        *self.tcp_failed.entry(case).or_default() += failed;
        check_stop()?;
        let rr = SocketAddr::from((vip, TCP_RR_PORT));
        let mut s = TcpStream::connect_timeout(&rr, Duration::from_secs(2))
            .with_context(|| format!("TCP connect to {rr} ({})", case.label()))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let req = [0x5au8; RR_BYTES];
        let mut resp = [0u8; RR_BYTES];
        let mut exchange = |until: Instant| -> Result<u64> {
            let mut n = 0;
            while Instant::now() < until && !stopped() {
                s.write_all(&req)?;
                s.read_exact(&mut resp)?;
                n += 1;
            }
            Ok(n)
        };
        exchange(Instant::now() + self.plan.warmup / 2).with_context(|| format!("TCP request/response via {rr}"))?;
        let t1 = Instant::now();
        let reqs = exchange(t1 + self.plan.slice).with_context(|| format!("TCP request/response via {rr}"))?;
        let rsecs = t1.elapsed().as_secs_f64();
        check_stop()?;
        Ok((conns, csecs, reqs, rsecs))
    }
}

// ---------------------------------------------------------------- TCP servers

pub(crate) struct Servers {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// In each backend namespace: port 80 accepts and closes (connection
/// setup), port 81 echoes (request/response).
pub(crate) fn start_servers(be: &[Ns]) -> Result<Servers> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for ns in be {
        let (setup, rr) = ns.run(|| -> std::io::Result<(TcpListener, TcpListener)> {
            Ok((TcpListener::bind(("0.0.0.0", TCP_SETUP_PORT))?, TcpListener::bind(("0.0.0.0", TCP_RR_PORT))?))
        })??;
        for (l, echo) in [(setup, false), (rr, true)] {
            // A deeper accept queue than std's 128: a full one drops SYNs,
            // and each costs the client a 1 s retransmission.
            // SAFETY: listen on our own listening socket.
            unsafe { libc::listen(l.as_raw_fd(), 4096) };
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || accept_loop(l, echo, stop)));
        }
    }
    Ok(Servers { stop, threads })
}

pub(crate) fn accept_loop(l: TcpListener, echo: bool, stop: Arc<AtomicBool>) {
    let _ = l.set_nonblocking(true);
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pfd, 1, 50) };
        loop {
            match l.accept() {
                Ok((s, _)) if echo => {
                    let stop = stop.clone();
                    conns.push(std::thread::spawn(move || echo_conn(s, stop)));
                }
                Ok((s, _)) => drop(s),
                Err(_) => break,
            }
        }
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

pub(crate) fn echo_conn(mut s: TcpStream, stop: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}
