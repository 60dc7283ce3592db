//! Kubernetes mode: Services of `type: LoadBalancer` with our
//! `loadBalancerClass` and their EndpointSlices, watched through kube-rs
//! reflectors, translated into the same desired-state model the YAML loader
//! produces and sent to the agent, which owns the map writer
//! ([`crate::state::desired`]). Alongside, once a state is applied: health-check
//! node ports, Events, and (on the agent holding the Lease) VIP allocation
//! from `--vip-pool` into the Services' status.
pub mod address;
pub mod endpoints;
pub mod events;
pub mod gateway;
pub mod health;
pub mod lease;
pub mod rbac;
pub mod translate;
pub mod watch;

/// The User-Agent of the agent's Kubernetes requests.
pub const USER_AGENT: &str = concat!("xlb/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ObjectReference, Service},
};
use kube::{
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config, Resource as _,
};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::{
    announce::{self, eligible, lease::EligibleRefs},
    metrics::Health,
    state::desired::{Origin, Update},
};

/// Settings of Kubernetes mode (from the agent's flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// `--node-name`.
    pub node_name: String,
    /// `--kubeconfig` (else in-cluster, else the usual kubeconfig places).
    pub kubeconfig: Option<PathBuf>,
    /// `--lb-class`.
    pub lb_class: String,
    /// `--vip-pool`s.
    pub pools: Vec<IpNet>,
    /// Namespace of the allocator Lease (`POD_NAMESPACE`).
    pub namespace: String,
    /// The agent's interfaces (the first one's address is the node address
    /// when the Node object has none).
    pub interfaces: Vec<String>,
    /// `--announce l2`: compete for the Lease of each eligible VIP and send
    /// the VIPs held on the `announced` channel ([`crate::announce::lease`]).
    pub announce_l2: bool,
    /// `--announce bgp`: send the VIPs this node should attract
    /// ([`crate::announce::eligible::bgp`]) on the `announced` channel after
    /// every apply.
    pub announce_bgp: bool,
    /// `--gateway-controller-name`: the GatewayClasses served.
    pub gateway_controller_name: String,
}

/// A client from `--kubeconfig`, else in-cluster, else the default kubeconfig.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    // kube's TLS is rustls: it needs a process-wide crypto provider (an
    // error here only means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}: check the path and the file", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using --kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no Kubernetes configuration: run in a pod with a service account, or pass --kubeconfig")?,
    };
    // Name ourselves in the API server's audit log (kube sends no User-Agent).
    let mut config = config;
    config.headers.push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_static(USER_AGENT)));
    Client::try_from(config).context("building the Kubernetes client")
}

/// The node's address: its Node's `InternalIP`, else the first address of
/// the first interface.
fn node_address(stores: &watch::Stores, opts: &Options) -> Option<IpAddr> {
    let from_node = stores.nodes.state().iter().find_map(|n| {
        n.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse().ok())
    });
    from_node.or_else(|| opts.interfaces.first().and_then(|i| crate::host::iface::first_address(i)))
}

/// Runs Kubernetes mode until `shutdown` resolves: sends the agent a
/// desired state on `updates` after every change, and once it is applied
/// serves the health checks, tells Events and (as the allocator) writes
/// Services' status. No state is sent before every cache holds a complete
/// first list, so a restarted agent keeps forwarding on the pinned state
/// meanwhile.
///
/// With [`Options::announce_l2`], `announced` carries the VIPs this node
/// announces; at shutdown their Leases are released, then the set becomes
/// empty, before this returns (and the agent detaches).
pub async fn run(
    opts: Options,
    updates: mpsc::Sender<Update>,
    health: Arc<Health>,
    announced: tokio::sync::watch::Sender<BTreeSet<IpAddr>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let client = client(opts.kubeconfig.as_deref()).await?;
    let trigger = Arc::new(Notify::new());
    let stores = watch::start(&client, &opts.node_name, trigger.clone(), health.clone());
    let gw_stores = gateway::watch::start(&client, trigger.clone(), health.clone()).await;
    let mut shutdown = std::pin::pin!(shutdown);
    info!(node = %opts.node_name, class = %opts.lb_class, "waiting for the first list of Services, EndpointSlices and the Node");
    tokio::select! {
        () = async { stores.ready().await; gw_stores.wait_ready(Duration::from_secs(30)).await } => {}
        () = &mut shutdown => return Ok(()),
    }
    let leader = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let allocator = lease::Elector::new(
        Api::<Lease>::namespaced(client.clone(), &opts.namespace),
        lease::LEASE_NAME,
        opts.node_name.clone(),
        lease::ALLOCATOR,
    );
    let lease_task = tokio::spawn(hold_lease(allocator, leader.clone(), trigger.clone(), stopped.clone()));
    let (eligible, eligible_rx) = tokio::sync::watch::channel(EligibleRefs::new());
    // BGP: this task sends the VIPs to announce itself; L2: the Leases' task.
    let bgp_announced = opts.announce_bgp.then(|| announced.clone());
    let announcer = opts.announce_l2.then(|| {
        let settings = announce::lease::Settings {
            client: client.clone(),
            namespace: opts.namespace.clone(),
            identity: opts.node_name.clone(),
            health: health.clone(),
        };
        tokio::spawn(announce::lease::run(settings, eligible_rx, announced, stopped.clone()))
    });
    let mut notifier = events::Notifier::new(client.clone(), &opts.node_name);
    let mut gw_notifier = events::Notifier::new(client.clone(), &opts.node_name);
    let mut gw_writer = gateway::write::StatusWriter::new(client.clone(), &opts.gateway_controller_name);
    // The last Gateway translation, reused while a Gateway API watch just
    // started has no complete first list.
    let mut gw_last = gateway::translate::Translation::default();
    let mut health_servers = health::HealthServers::default();
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = trigger.notified() => {}
                // A health-check port another process holds (kube-proxy):
                // try it again now and then, without a reconcile.
                () = tokio::time::sleep(health::RETRY_EVERY), if health_servers.waiting() => {
                    health_servers.retry().await;
                    continue;
                }
                () = &mut shutdown => break,
            }
            // Coalesce a burst of changes into one reconcile.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first = false;
        let services = stores.services.state();
        let slices = stores.slices.state();
        let gw_snap = gw_stores.snapshot();
        if let Some(snap) = &gw_snap {
            gw_last = gateway::translate::translate(&gateway::translate::Inputs {
                classes: &snap.classes,
                gateways: &snap.gateways,
                routes: &snap.routes,
                grants: &snap.grants,
                namespaces: &snap.namespaces,
                services: &services,
                slices: &slices,
                controller_name: &opts.gateway_controller_name,
                node_name: &opts.node_name,
                pools: &opts.pools,
            });
        }
        let reserved = gw_last.reservations();
        let mut t = translate::translate(&translate::Inputs {
            services: &services,
            slices: &slices,
            node_name: &opts.node_name,
            lb_class: &opts.lb_class,
            pools: &opts.pools,
            reserved: &reserved,
        });
        // Port claims: the listeners an older Service holds yield.
        let mut gw = gw_last.clone();
        gw.yield_to(&t.taken);
        t.state.services.extend(gw.services().cloned());
        // An untracked Service sharing a backend with a route is tracked.
        translate::track_shared_backends(&mut t);
        // Events say "programmed" only once the agent has applied the state.
        // Sent once the state is applied: a VIP is announced where it is programmed.
        let eligible_now = opts.announce_l2.then(|| eligible_refs(&t, &services, &gw, &gw_stores.gateways.state()));
        let bgp_now = opts.announce_bgp.then(|| eligible::bgp(&t, &gw.services().cloned().collect::<Vec<_>>()));
        let (update, applied) = Update::acknowledged(t.state, None, Origin::Kubernetes);
        if updates.send(update).await.is_err() {
            break; // the agent stopped
        }
        tokio::select! {
            _ = applied => {}
            () = &mut shutdown => break,
        }
        if let (Some(tx), Some(now)) = (&bgp_announced, bgp_now) {
            tx.send_if_modified(|v| {
                let changed = *v != now;
                *v = now;
                changed
            });
        }
        match node_address(&stores, &opts) {
            Some(addr) => health_servers.sync(addr, &t.health_checks).await,
            None if !t.health_checks.is_empty() => {
                warn!("no node address (Node InternalIP or interface address): health-check node ports not served");
            }
            None => {}
        }
        if let Some(now) = eligible_now {
            eligible.send_if_modified(|e| {
                let changed = *e != now;
                *e = now;
                changed
            });
        }
        let leading = leader.load(Ordering::SeqCst);
        notifier.notify(&services, &t.notes, leading);
        if let Some(snap) = &gw_snap {
            let refs = snap.gateways.iter().map(|g| {
                let key =
                    (g.metadata.namespace.clone().unwrap_or_default(), g.metadata.name.clone().unwrap_or_default());
                (key, g.object_ref(&()))
            });
            gw_notifier.notify_refs(refs, &gw.notes(), leading);
        }
        if leading {
            let held = write_status(&client, &services, &opts, &gateway::address::in_use(&gw)).await;
            if let Some(snap) = &gw_snap {
                let allocated = gateway::address::plan(&gw, &held, &opts.pools);
                gw_writer.write(&gw, snap, &allocated).await;
            }
        }
    }
    let _ = stop.send(true);
    // The L2 Leases first: another node announces within a second.
    if let Some(task) = announcer {
        let _ = task.await;
    }
    if let Ok(mut allocator) = lease_task.await {
        if allocator.holding() {
            match tokio::time::timeout(Duration::from_secs(2), allocator.release()).await {
                Ok(Ok(_)) => info!("allocator Lease released"),
                Ok(Err(e)) => {
                    warn!(error = %e, "could not release the allocator Lease; another agent takes it when it expires");
                }
                Err(_) => warn!("releasing the allocator Lease timed out; another agent takes it when it expires"),
            }
        }
    }
    Ok(())
}

/// The VIPs this node may announce ([`eligible::eligible`], and the
/// Gateways' addresses, [`eligible::gateways`]) with references to their
/// Services and Gateways.
fn eligible_refs(
    t: &translate::Translation,
    services: &[Arc<Service>],
    gw: &gateway::translate::Translation,
    gateways: &[Arc<gateway::types::Gateway>],
) -> EligibleRefs {
    fn refs_of<K: kube::Resource<DynamicType = ()>>(objs: &[Arc<K>]) -> BTreeMap<(String, String), ObjectReference> {
        objs.iter()
            .map(|o| {
                let m = o.meta();
                ((m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default()), o.object_ref(&()))
            })
            .collect()
    }
    let mut out = EligibleRefs::new();
    for (eligible, refs) in [(eligible::eligible(t), refs_of(services)), (eligible::gateways(t, gw), refs_of(gateways))]
    {
        for (vip, keys) in eligible {
            out.entry(vip).or_default().extend(keys.iter().filter_map(|k| refs.get(k).cloned()));
        }
    }
    out
}

/// Keeps trying to hold the allocator Lease; notifies on a change of role.
/// Returns the elector when `stop` fires (to release the Lease).
async fn hold_lease(
    mut elector: lease::Elector,
    leader: Arc<AtomicBool>,
    trigger: Arc<Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> lease::Elector {
    loop {
        let held = match elector.try_hold().await {
            Ok(o) => o.held,
            Err(e) => {
                warn!(error = %e, "allocator Lease: cannot read or renew it");
                elector.holding()
            }
        };
        if leader.swap(held, Ordering::SeqCst) != held {
            info!(leader = held, "allocator Lease {}", if held { "acquired" } else { "lost" });
            trigger.notify_one();
        }
        tokio::select! {
            () = tokio::time::sleep(lease::RENEW_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return elector,
        }
    }
}

/// As the allocator: writes the addresses Services should have into their
/// status (`ipMode: VIP`), allocating from the pools (never one of
/// `gateways`, the Gateways' addresses) and releasing them. Returns the
/// addresses the Services of ours hold or are given.
async fn write_status(
    client: &Client,
    services: &[Arc<Service>],
    opts: &Options,
    gateways: &BTreeSet<IpAddr>,
) -> BTreeSet<IpAddr> {
    let ours = translate::ours_in_claim_order(services, &opts.lb_class);
    let others: Vec<Arc<Service>> =
        services.iter().filter(|s| !translate::is_ours(s, &opts.lb_class)).cloned().collect();
    let mut held: BTreeSet<IpAddr> = ours
        .iter()
        .flat_map(|s| {
            let mut ips = address::status_ips(s);
            ips.extend(address::requested(s, &opts.pools).unwrap_or_default());
            ips
        })
        .collect();
    let plan = address::plan_beside(&ours, &others, &opts.pools, gateways);
    held.extend(plan.iter().flat_map(|u| u.ips.iter().copied()));
    for u in plan {
        let ingress: Vec<serde_json::Value> =
            u.ips.iter().map(|ip| serde_json::json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api = Api::<Service>::namespaced(client.clone(), &u.namespace);
        match api.patch_status(&u.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                info!(service = %format!("{}/{}", u.namespace, u.name), ips = ?u.ips, "status.loadBalancer.ingress written");
            }
            Err(e) => {
                warn!(service = %format!("{}/{}", u.namespace, u.name), error = %e, "could not write the Service's status");
            }
        }
    }
    held
}
