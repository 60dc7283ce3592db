//! Processes the bench starts (the agent, nginx).

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

// ---------------------------------------------------------------- processes

/// A process we started; SIGTERM (then SIGKILL) on drop.
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Starts `cmd` in `ns`, keeping the last 200 lines of its output.
    pub(crate) fn spawn(ns: &Ns, name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ns.spawn(&mut cmd).with_context(|| format!("cannot start {name}"))?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?),
            Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?),
        ];
        for pipe in pipes {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if l.len() >= 200 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(Proc { name: name.to_string(), child, log })
    }

    fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        l.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n")
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: our unreaped child (try_wait said it runs).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            eprintln!("forward_bench: {} ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

