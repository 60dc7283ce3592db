//! The forwarders besides the XDP programs: the xlb agent, nftables DNAT,
//! nginx; threaded NAPI.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use xlb_bench::host::{set_affinity, set_nice};
use xlb_bench::stop::stopped;

use crate::bench::{xlb_binary, Bench};
use crate::options::Args;
use crate::proc::Proc;
use crate::sys::{napi_threads, progress, BENCH_NICE};
use crate::topology::{
    be_addr, FALLBACK_BACKEND_PORT, FWD_CPU, GEN_CPU, PRESERVE_BACKEND_PORT, TCP_RR_PORT, TCP_SETUP_PORT, UDP_PORT,
    UNTRACKED_BACKEND_PORT, VIP_FALLBACK, VIP_NFT, VIP_PRESERVE, VIP_PROXY, VIP_SNAT, VIP_UNTRACKED,
};

impl Bench {
    pub(crate) fn start_agent(&mut self, args: &Args) -> Result<()> {
        let bin = xlb_binary(&args.xlb)?;
        self.xlb_bin = Some(bin.clone());
        let mut yaml = String::from("services:\n");
        let svc_to = |name: &str, vip: Ipv4Addr, port: u16, proto: &str, source: &str, be_port: u16| {
            format!(
                "  - name: {name}\n    vip: {vip}\n    port: {port}\n    protocol: {proto}\n    source: {source}\n    backends:\n      - {}:{be_port}\n      - {}:{be_port}\n",
                be_addr(0),
                be_addr(1)
            )
        };
        let svc = |name: &str, vip: Ipv4Addr, port: u16, proto: &str, source: &str| {
            svc_to(name, vip, port, proto, source, port)
        };
        yaml += &svc("udp-snat", VIP_SNAT, UDP_PORT, "udp", "snat");
        // Backends of its own (a port no other service uses), as a
        // Deployment behind one Service has: its replies are told apart by
        // the backend, so a new flow records one entry, not two.
        yaml += &svc_to("udp-preserve", VIP_PRESERVE, UDP_PORT, "udp", "preserve", PRESERVE_BACKEND_PORT);
        // flow_tracking: none; its backends on a port of their own (no
        // backend of such a service may be another service's).
        yaml += &format!(
            "  - name: udp-untracked\n    vip: {VIP_UNTRACKED}\n    port: {UDP_PORT}\n    protocol: udp\n    source: preserve\n    flow_tracking: none\n    backends:\n      - {}:{UNTRACKED_BACKEND_PORT}\n      - {}:{UNTRACKED_BACKEND_PORT}\n",
            be_addr(0),
            be_addr(1)
        );
        // Backends behind b4/b5 (not xlb's interfaces; their peers run no
        // XDP): xlb's skb fallback.
        yaml += &format!(
            "  - name: udp-fallback\n    vip: {VIP_FALLBACK}\n    port: {UDP_PORT}\n    protocol: udp\n    source: preserve\n    backends:\n      - {}:{FALLBACK_BACKEND_PORT}\n      - {}:{FALLBACK_BACKEND_PORT}\n",
            be_addr(4),
            be_addr(5)
        );
        for (port, what) in [(TCP_SETUP_PORT, "setup"), (TCP_RR_PORT, "rr")] {
            yaml += &svc(&format!("tcp-{what}-snat"), VIP_SNAT, port, "tcp", "snat");
            yaml += &svc(&format!("tcp-{what}-preserve"), VIP_PRESERVE, port, "tcp", "preserve");
        }
        let config = self.tmp.join("xlb.yaml");
        std::fs::write(&config, yaml)?;
        progress(&format!("starting {} agent in the lb namespace (l1, b0, b1)", bin.display()));
        let mut cmd = Command::new(&bin);
        cmd.arg("agent").arg("--config").arg(&config);
        for i in ["l1", "b0", "b1"] {
            cmd.args(["--interface", i]);
        }
        // The contract's flags only: the agent finds by itself that the
        // backends' veths take XDP frames (their peers run `sink`).
        cmd.args(["--metrics-addr", "127.0.0.1:9464"]);
        cmd.arg("--pin-path").arg(&self.pins);
        cmd.args(&args.agent_args);
        let mut agent = Proc::spawn(&self.lb, "xlb agent", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !agent.running() {
                bail!("the xlb agent exited during start; its log:\n{}", agent.log_tail());
            }
            let metrics = SocketAddr::from(([127, 0, 0, 1], 9464));
            let healthy = xlb_tests::http::get(self.lb.netns(), metrics, "/healthz", Duration::from_secs(2))
                .is_ok_and(|(status, _)| status == 200);
            if healthy {
                break;
            }
            if Instant::now() > deadline || stopped() {
                bail!("the xlb agent did not become healthy within 30 s; its log:\n{}", agent.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.agent = Some(agent);
        self.check_paths(&bin);
        Ok(())
    }

    /// Logs the transmit path `xlb status` shows per interface; a note in
    /// the results when a backend's veth does not get XDP_REDIRECT.
    fn check_paths(&mut self, bin: &Path) {
        let out = Command::new(bin).args(["status", "-o", "json", "--pin-path"]).arg(&self.pins).output();
        let status: Option<serde_json::Value> = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok());
        let paths: Vec<(String, String)> = status
            .as_ref()
            .and_then(|v| v["attachments"].as_array())
            .map(|all| {
                all.iter()
                    .map(|a| {
                        let s = |k: &str| a[k].as_str().unwrap_or("?").to_string();
                        (s("interface"), format!("{} ({})", s("path"), s("path_reason")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shown: Vec<String> = paths.iter().map(|(i, p)| format!("{i}: {p}")).collect();
        progress(&format!("xlb transmit paths: {}", shown.join("; ")));
        for b in ["b0", "b1"] {
            let p = paths.iter().find(|(i, _)| i == b).map_or("not shown by xlb status", |(_, p)| p.as_str());
            if !p.starts_with("xdp-redirect") {
                self.notes.push(format!("xlb sends into {b} by {p}, not XDP_REDIRECT"));
            }
        }
    }

    pub(crate) fn nft(&self, args: &[&str]) -> Result<String> {
        let out =
            self.lb.output(Command::new("nft").args(args)).context("cannot run nft (apt-get install nftables)")?;
        if !out.status.success() {
            bail!("nft {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds (`on`) or removes a `clsact` qdisc on b4 and b5: while it is
    /// there xlb's agent sends into them with `bpf_redirect_neigh` instead
    /// of `bpf_redirect_peer` (it reacts to the qdisc event within
    /// milliseconds; 300 ms are left for it).
    pub(crate) fn egress_qdiscs(&mut self, on: bool) -> Result<()> {
        for dev in ["b4", "b5"] {
            let verb = if on { "add" } else { "del" };
            let out = self.lb.output(Command::new("tc").args(["qdisc", verb, "dev", dev, "clsact"])).context("tc")?;
            if !out.status.success() {
                bail!("tc qdisc {verb} dev {dev} clsact failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(())
    }

    /// kube-proxy's nftables mode, reduced to its DNAT: service map ->
    /// numgen random -> endpoint chain -> dnat.
    pub(crate) fn prepare_nft(&mut self) -> Result<()> {
        let mut svc = String::new();
        let mut chains = String::new();
        for (proto, port) in [("udp", UDP_PORT), ("tcp", TCP_SETUP_PORT), ("tcp", TCP_RR_PORT)] {
            let s = format!("svc-{proto}-{port}");
            svc += &format!("{VIP_NFT} . {proto} . {port} : goto {s}, ");
            chains += &format!(
                "  chain {s} {{\n    numgen random mod 2 vmap {{ 0 : goto {s}-ep0, 1 : goto {s}-ep1 }}\n  }}\n"
            );
            for i in 0..2u8 {
                chains += &format!(
                    "  chain {s}-ep{i} {{\n    meta l4proto {proto} dnat to {}:{port}\n  }}\n",
                    be_addr(i + 2)
                );
            }
        }
        let rules = format!(
            "table ip xlbbench {{\n  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {{ {} }}\n  }}\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n{chains}}}\n",
            svc.trim_end_matches(", ")
        );
        let path = self.tmp.join("nft.rules");
        std::fs::write(&path, rules)?;
        self.nft(&["-c", "-f", &path.display().to_string()]).context("checking the nft ruleset")?;
        self.nft_rules = Some(path);
        Ok(())
    }

    /// The DNAT table is loaded only while nftables is measured: loading
    /// it turns conntrack on in the lb namespace, which would tax nginx.
    pub(crate) fn nft_load(&mut self, on: bool) -> Result<()> {
        if on && !self.nft_loaded {
            let path = self.nft_rules.clone().ok_or_else(|| anyhow!("no nft rules"))?;
            self.nft(&["-f", &path.display().to_string()])?;
            self.nft_loaded = true;
        } else if !on && self.nft_loaded {
            self.nft(&["delete", "table", "ip", "xlbbench"])?;
            self.nft_loaded = false;
        }
        Ok(())
    }

    pub(crate) fn start_nginx(&mut self) -> Result<()> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("nginx is not installed (apt-get install nginx libnginx-mod-stream)"))?;
        let v = Command::new(&nginx).arg("-V").output().context("nginx -V")?;
        let v = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
        let load = if v.contains("--with-stream=dynamic") {
            let m = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
                .iter()
                .find(|p| Path::new(p).is_file())
                .ok_or_else(|| anyhow!("nginx's stream module is missing (apt-get install libnginx-mod-stream)"))?;
            format!("load_module {m};\n")
        } else if v.contains("--with-stream") {
            String::new()
        } else {
            bail!("this nginx has no stream module");
        };
        let dir = self.tmp.join("nginx");
        std::fs::create_dir_all(&dir)?;
        let affinity =
            if self.nproc > FWD_CPU { format!("worker_cpu_affinity {:b};\n", 1u64 << FWD_CPU) } else { String::new() };
        let conf = format!(
            "{load}daemon off;\nworker_processes 1;\n{affinity}worker_priority {BENCH_NICE};\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             stream {{\n  upstream backends {{ server {}:{UDP_PORT}; server {}:{UDP_PORT}; }}\n  \
             server {{\n    listen {VIP_PROXY}:{UDP_PORT} udp;\n    proxy_pass backends;\n    proxy_responses 0;\n    proxy_timeout 2s;\n  }}\n}}\n",
            be_addr(2),
            be_addr(3),
            d = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let args = |c: &mut Command| {
            c.arg("-p").arg(&dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf_path);
        };
        let mut t = Command::new(&nginx);
        args(&mut t);
        let out = self.lb.output(t.arg("-t")).context("nginx -t")?;
        if !out.status.success() {
            bail!("nginx -t refused the configuration: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        progress(&format!("starting nginx (stream, UDP {VIP_PROXY}:{UDP_PORT}, 1 worker) in the lb namespace"));
        let mut cmd = Command::new(&nginx);
        args(&mut cmd);
        let mut p = Proc::spawn(&self.lb, "nginx", cmd)?;
        let pidfile = dir.join("nginx.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() {
            if !p.running() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx did not start: {}\n{log}", p.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        self.nginx = Some(p);
        Ok(())
    }

    /// Threaded NAPI on l0..l4 with the kthreads pinned to the forwarder CPU.
    pub(crate) fn thread_napi(&mut self) -> Result<()> {
        if self.nproc <= FWD_CPU {
            self.notes.push(format!("only {} CPU: generator and forwarders share it (no pinning)", self.nproc));
            return Ok(());
        }
        let before = napi_threads();
        let threaded = ["l0", "l1", "l2", "l3", "l4"]
            .iter()
            .try_for_each(|i| self.lb.sh(&format!("echo 1 > /sys/class/net/{i}/threaded")).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        let new: Vec<i32> = napi_threads().difference(&before).copied().collect();
        if let Err(e) = threaded.and_then(|()| {
            if new.len() < 5 {
                bail!("expected 5 new NAPI kthreads for l0..l4, found {}", new.len());
            }
            Ok(())
        }) {
            self.notes.push(format!(
                "no threaded NAPI ({e:#}): the forwarders run in softirq on the CPU that queues the frames, the generator's; ratios only"
            ));
            return Ok(());
        }
        for pid in &new {
            set_affinity(*pid, &[FWD_CPU]).with_context(|| format!("pinning NAPI kthread {pid} to CPU {FWD_CPU}"))?;
            set_nice(*pid, BENCH_NICE);
        }
        self.notes.push(format!(
            "generator (BPF_PROG_RUN live frames) pinned to CPU {GEN_CPU}; l0..l4 use threaded NAPI, kthreads pinned to CPU {FWD_CPU}: \
             the forwarders and the backends' receive path they trigger run on CPU {FWD_CPU}; generator, NAPI kthreads and nginx's worker at nice {BENCH_NICE}"
        ));
        if self.nginx.is_some() {
            self.notes.push(format!(
                "nginx: 1 worker, worker_cpu_affinity CPU {FWD_CPU} (shares it with the kernel receive path)"
            ));
        }
        Ok(())
    }
}
