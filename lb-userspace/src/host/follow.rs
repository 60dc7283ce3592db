//! `--interface-glob`: interfaces that come and go (the host ends of pod
//! veths a CNI creates: `cali*`, `lxc*`, `veth*`...). The programs are
//! attached to every matching interface at start and to each new one as the
//! kernel announces it (rtnetlink link events, no polling); interfaces that
//! disappear are forgotten.
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::Ebpf;
use tracing::{info, warn};

use crate::{
    bpf::attach::{self, Attached, XdpModeArg},
    host::netwatch::{Interest, Watcher},
};

/// The loaded programs and where they are attached; shared by the agent's
/// main loop (which pins or detaches them at exit) and the follower.
pub struct Programs {
    /// The loaded eBPF object (programs and maps).
    pub ebpf: Ebpf,
    /// Where the programs are attached.
    pub attached: Vec<Attached>,
}

/// Names of the interfaces of this network namespace that match a pattern.
pub fn matching(patterns: &[glob::Pattern]) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| patterns.iter().any(|p| p.matches(n)))
        .collect();
    names.sort();
    names
}

/// Attaches to the matching interfaces not attached yet and forgets the
/// ones that are gone. Only interfaces matched by a pattern are managed
/// here; `static_ifaces` (the `--interface`s) are left alone.
pub fn sync(
    programs: &Mutex<Programs>,
    patterns: &[glob::Pattern],
    static_ifaces: &[String],
    mode: XdpModeArg,
    pin_path: &std::path::Path,
) {
    let present: HashSet<String> = matching(patterns).into_iter().filter(|n| !static_ifaces.contains(n)).collect();
    let mut p = programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Programs { ebpf, attached } = &mut *p;
    let gone: Vec<usize> = attached
        .iter()
        .enumerate()
        .filter(|(_, a)| !static_ifaces.contains(&a.iface) && !present.contains(&a.iface))
        .map(|(i, _)| i)
        .collect();
    for i in gone.into_iter().rev() {
        let a = attached.remove(i);
        info!(iface = %a.iface, "interface gone");
        attach::detach(ebpf, a);
    }
    for name in present {
        if attached.iter().any(|a| a.iface == name) {
            continue;
        }
        match attach::attach_one(ebpf, &name, mode, pin_path) {
            Ok(a) => attached.push(a),
            // A link being set up may not take it yet; the next event retries.
            Err(e) => warn!(iface = %name, error = format!("{e:#}"), "could not attach to a matching interface"),
        }
    }
}

/// Follows link events in the background (a subscriber of the namespace's
/// [`Watcher`]), calling [`sync`] after each burst.
pub fn spawn(
    programs: Arc<Mutex<Programs>>,
    patterns: Vec<glob::Pattern>,
    static_ifaces: Vec<String>,
    mode: XdpModeArg,
    pin_path: PathBuf,
) {
    let mut links = match Watcher::shared() {
        Ok(w) => w.subscribe(Interest::LINKS),
        Err(e) => {
            warn!(error = %e, "cannot listen for link events: --interface-glob matches only the interfaces present at start");
            return;
        }
    };
    tokio::spawn(async move {
        while links.changed().await.is_ok() {
            // Coalesce the burst of events a new veth brings.
            tokio::time::sleep(Duration::from_millis(100)).await;
            links.changed_now();
            let (programs, patterns, static_ifaces, pin_path) =
                (programs.clone(), patterns.clone(), static_ifaces.clone(), pin_path.clone());
            let _ =
                tokio::task::spawn_blocking(move || sync(&programs, &patterns, &static_ifaces, mode, &pin_path)).await;
        }
        warn!("link events: stopped listening; --interface-glob attaches to no new interface");
    });
}
