//! `cargo xtask bench control` runs this (release build, as root): the
//! control plane at scale. From a generated desired state of N services × M
//! backends (default 10,000 × 10) it measures, with the agent's own code
//! (`MapWriter` on maps loaded as the agent loads them):
//!
//! - the time to apply it to empty maps;
//! - the time to re-apply it unchanged (what every reload of an unchanged
//!   configuration costs);
//! - the time for one endpoint change (a backend of one service replaced by
//!   another address) to reach the maps: from the new desired state to the
//!   return of `apply`, whose map updates are synchronous; each change is
//!   then checked in the kernel's backend array;
//! - the kernel memory of the maps (`memlock` of each map's
//!   `/proc/self/fdinfo` entry) and this process's memory (it holds what the
//!   agent holds: the loaded object, the writer's mirror of the maps, the
//!   desired state, the mapping of the lookup-table array).
//!
//! It runs in a network namespace of its own (so that the source address of
//! the routes to the backends, which `source: snat` services use, resolves),
//! with the maps pinned in a directory of its own; both are removed at exit.
//!
//! Usage: `control_bench [--services N] [--backends N] [--changes N]
//! [--table-size P] [--json FILE] [--tiny]`.
use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use clap::Parser;
use xlb_bench::{
    host::{cleanup_stale, ensure_bpffs, enter_netns, sh},
    machine::Machine,
    stop::catch_signals,
};

use crate::measure::{measure, Results};
use crate::report::summary;

#[derive(Parser, Debug, Clone)]
#[command(about = "Control-plane cost of xlb at scale (apply, one endpoint change, memory)")]
pub(crate) struct Opts {
    /// Services in the desired state.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) services: u32,
    /// Backends per service.
    #[arg(long, default_value_t = 10)]
    pub(crate) backends: u32,
    /// Endpoint changes to time (median and worst are reported).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) changes: u32,
    /// maglev_table_size of every service (a prime of the allowed list).
    #[arg(long, default_value_t = 251)]
    pub(crate) table_size: u32,
    /// Entries of the lookup-table array (the agent's --table-entries).
    #[arg(long, default_value_t = lb_common::TABLE_ENTRIES)]
    pub(crate) table_entries: u32,
    /// Entries of the connection and reverse-NAT tables (the agent's --flow-table-size).
    #[arg(long, default_value_t = lb_common::DEFAULT_FLOW_ENTRIES)]
    pub(crate) flow_entries: u32,
    /// Where the results also go.
    #[command(flatten)]
    pub(crate) out: xlb_bench::results::ResultFiles,
    /// Also run this `xlb` binary as an agent on the same services (from a
    /// generated YAML file) and report its start time, RSS and the time
    /// from a file change to the reloaded maps.
    #[arg(long)]
    pub(crate) xlb: Option<PathBuf>,
    /// Tiny configuration for the test suite: 100 services × 10 backends,
    /// 5 changes, 1 Mi table entries, 4096 flow entries.
    #[arg(long)]
    pub(crate) tiny: bool,
}

mod agent;
mod measure;
mod report;
mod state;

pub(crate) const NETNS_PREFIX: &str = "xlbbench-cp-";
pub(crate) const PIN_PREFIX: &str = "/sys/fs/bpf/xlb-bench-cp-";

/// The namespace, the pin directories and the agent's configuration file,
/// removed on drop (also on panic).
pub(crate) struct Cleanup {
    pub(crate) netns: String,
    pub(crate) pin: PathBuf,
    pub(crate) agent_pin: PathBuf,
    pub(crate) config: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.netns], None);
        let _ = std::fs::remove_dir_all(&self.pin);
        let _ = std::fs::remove_dir_all(&self.agent_pin);
        let _ = std::fs::remove_file(&self.config);
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control_bench: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<()> {
    let mut opts = Opts::parse();
    if opts.tiny {
        opts.services = 100;
        opts.backends = 10;
        opts.changes = 5;
        opts.table_entries = 1 << 20;
        opts.flow_entries = 4096;
    }
    ensure!(
        lb_common::TABLE_SIZES.contains(&opts.table_size),
        "--table-size {} is not one of {:?}",
        opts.table_size,
        lb_common::TABLE_SIZES
    );
    ensure!(opts.services > 0 && opts.backends > 0, "--services and --backends must be positive");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF maps, network namespaces, bpffs): run it as root");
    }
    ensure_bpffs()?;
    cleanup_stale(NETNS_PREFIX, PIN_PREFIX);
    catch_signals();
    let pid = std::process::id();
    let cleanup = Cleanup {
        netns: format!("{NETNS_PREFIX}{pid}"),
        pin: PathBuf::from(format!("{PIN_PREFIX}{pid}")),
        agent_pin: PathBuf::from(format!("{PIN_PREFIX}{pid}-agent")),
        config: std::env::temp_dir().join(format!("xlb-bench-cp-{pid}.yaml")),
    };
    sh(&["ip", "netns", "add", &cleanup.netns], None)?;
    let setup = "link set lo up\n\
                 link add v0 type veth peer name v1\n\
                 link set v0 up\n\
                 link set v1 up\n\
                 addr add 10.255.255.254/8 dev v0\n";
    sh(&["ip", "-n", &cleanup.netns, "-batch", "-"], Some(setup))?;

    println!(
        "Control plane: {} services × {} backends (source: snat, maglev_table_size {}), {} endpoint changes",
        opts.services, opts.backends, opts.table_size, opts.changes
    );
    let (ns, pin, o) = (cleanup.netns.clone(), cleanup.pin.clone(), opts.clone());
    let (agent_pin, config) = (cleanup.agent_pin.clone(), cleanup.config.clone());
    let handle = std::thread::Builder::new().name("control".into()).spawn(move || -> Result<Results> {
        enter_netns(&ns)?;
        let agent = o.xlb.as_deref().map(|x| (x, ns.as_str(), agent_pin.as_path(), config.as_path()));
        measure(&o, &pin, agent)
    })?;
    let result = handle.join().map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?;
    drop(cleanup);
    let r = result?;
    println!();
    let machine = Machine::read().line();
    let table = summary(&r, &opts);
    println!("machine: {machine}\n");
    println!("{table}");
    opts.out.write_markdown(|| format!("Machine: {machine}.\n\n{table}"))?;
    opts.out.write_json(&r)?;
    Ok(())
}
