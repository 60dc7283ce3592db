//! Kubernetes mode, L2: which VIPs this node announces, decided by one
//! `coordination.k8s.io/v1` Lease per VIP, `xlb-l2-<VIP>` in the agent's
//! namespace, competed for only by the nodes where the VIP is eligible
//! ([`super::eligible`]). The producer of the announced set: it sends the
//! VIPs whose Lease this node holds on a `watch` channel, which the
//! announcer (map + gratuitous ARP/NA) consumes.
//!
//! Timings ([`TIMING`]): `leaseDurationSeconds` 6, renewal every 2 s. A
//! holder that cannot reach the API server keeps announcing (as forwarding
//! goes on from the last known state): when the API server is down for
//! every node, nobody could take over, and a VIP nobody announces is an
//! outage; it stops when the API server shows another holder (after a
//! partition of this node alone, both nodes answer ARP until then, and
//! both forward the same flows to the same backends). The Leases of the namespace are watched
//! (one watch for all VIPs), so the candidates that do not hold a Lease
//! send no request for it: they look at the watch cache every second and
//! on every change, and try to take it when it is released (at once) or
//! when it has not changed for 6 s on their clock. Per VIP that is 30
//! renewals (PUT) a minute from the holder and nothing from the others;
//! failover is ~0.1 s after a release (SIGTERM) and at most 6 s + 1 s
//! after the holder's last renewal when it dies.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::ObjectReference};
use kube::{
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
    Api, Client,
};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::{
    metrics::{self, Health},
    source::k8s::{
        lease::{Elector, Timing},
        watch as reflectors,
    },
};

/// The L2 Leases' timings (see the module's documentation).
pub const TIMING: Timing = Timing {
    duration: Duration::from_secs(6),
    renew_every: Duration::from_secs(2),
    retry_every: Duration::from_secs(1),
    renew_deadline: None,
};

/// Reason of the Normal Event on a Service whose VIP's announcer changed.
pub const ANNOUNCER_CHANGED: &str = "AnnouncerChanged";

/// Longest wait for the Leases' release at shutdown.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// `xlb-l2-<VIP>`, dots and colons written as dashes (`xlb-l2-192-0-2-10`,
/// `xlb-l2-2001-db8--10`). An IPv6 address ending in `::` gets a final `0`
/// (the same address), as a name must end with a letter or digit.
pub fn lease_name(vip: IpAddr) -> String {
    let mut name = format!("xlb-l2-{}", vip.to_string().replace(['.', ':'], "-"));
    if name.ends_with('-') {
        name.push('0');
    }
    name
}

/// The eligible VIPs, each with references to the Services on it (for
/// Events), as [`run`] reads them.
pub type EligibleRefs = BTreeMap<IpAddr, Vec<ObjectReference>>;

/// Where [`run`] works.
pub struct Settings {
    /// The agent's client.
    pub client: Client,
    /// The Leases' namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// This node's name: the holder identity.
    pub identity: String,
    /// Marked degraded while the Lease watch fails.
    pub health: Arc<Health>,
}

/// Competes for the Lease of every VIP in `eligible` and sends the VIPs
/// held on `announced`, until `stop` becomes true (or `eligible`'s sender
/// is dropped): then releases every Lease held, and only then sends the
/// empty set.
pub async fn run(
    s: Settings,
    mut eligible: watch::Receiver<EligibleRefs>,
    announced: watch::Sender<BTreeSet<IpAddr>>,
    mut stop: watch::Receiver<bool>,
) {
    let api = Api::<Lease>::namespaced(s.client.clone(), &s.namespace);
    let trigger = Arc::new(Notify::new());
    let store = reflectors::reflect(
        api.clone(),
        watcher::Config::default(),
        trigger.clone(),
        s.health.clone(),
        Arc::new(AtomicU64::new(0)),
    );
    tokio::select! {
        r = store.wait_until_ready() => if r.is_err() { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    let reporter = Reporter { controller: "xlb.io/agent".into(), instance: Some(s.identity.clone()) };
    let recorder = Recorder::new(s.client.clone(), reporter);
    let m = metrics::lease_metrics();
    let mut electors: BTreeMap<IpAddr, Elector> = BTreeMap::new();
    let mut held: BTreeSet<IpAddr> = BTreeSet::new();
    let mut tick = tokio::time::interval(TIMING.retry_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = trigger.notified() => {}
            r = eligible.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        let want = eligible.borrow_and_update().clone();
        // No longer eligible: release at once.
        let gone: Vec<IpAddr> = electors.keys().filter(|v| !want.contains_key(v)).copied().collect();
        for vip in gone {
            let Some(mut el) = electors.remove(&vip) else { continue };
            if held.remove(&vip) {
                announced.send_replace(held.clone());
                m.set_held(vip, false);
                if release(&mut el, vip, "this node is no longer eligible for it").await {
                    m.count(vip, "released");
                }
            }
        }
        for (vip, refs) in &want {
            let el = electors
                .entry(*vip)
                .or_insert_with(|| Elector::new(api.clone(), lease_name(*vip), s.identity.clone(), TIMING));
            let current = store.get(&ObjectRef::new(el.name()).within(&s.namespace)).map(|l| (*l).clone());
            let (now, from, other) = match el.step(current).await {
                Ok(o) => (o.held, o.acquired_from.flatten(), o.other),
                Err(e) => {
                    warn!(%vip, lease = el.name(), error = %e, "L2 Lease: cannot take or renew it");
                    (el.holding(), None, None)
                }
            };
            let was = held.contains(vip);
            if now && !was {
                held.insert(*vip);
                m.count(*vip, "acquired");
                m.set_held(*vip, true);
                let before = from.as_deref().unwrap_or("no node");
                info!(%vip, lease = el.name(), previous = before, "L2 Lease acquired: this node announces the VIP");
                let note = format!("{} announces {vip} (L2) now; before: {before}", s.identity);
                publish(&recorder, refs, note);
            } else if !now && was {
                held.remove(vip);
                m.count(*vip, "lost");
                m.set_held(*vip, false);
                let to = other.as_deref().unwrap_or("nobody known");
                warn!(%vip, lease = el.name(), holder = to, "L2 Lease lost: this node stops announcing the VIP");
            }
        }
        if *announced.borrow() != held {
            debug!(announced = ?held, "L2: VIPs this node announces");
            announced.send_replace(held.clone());
        }
    }
    // Release first (the others take over at once), then stop answering.
    let mut releases = tokio::task::JoinSet::new();
    for vip in std::mem::take(&mut held) {
        if let Some(mut el) = electors.remove(&vip) {
            releases.spawn(async move { (vip, release(&mut el, vip, "the agent stops").await) });
        }
    }
    let all = async {
        while let Some(r) = releases.join_next().await {
            if let Ok((vip, written)) = r {
                if written {
                    m.count(vip, "released");
                }
                m.set_held(vip, false);
            }
        }
    };
    if tokio::time::timeout(RELEASE_TIMEOUT, all).await.is_err() {
        warn!("releasing the L2 Leases timed out; the others take them over when they expire");
    }
    announced.send_replace(BTreeSet::new());
    info!("L2: this node announces no VIP any more");
}

/// Releases `el`'s Lease; logs; returns whether it was written.
async fn release(el: &mut Elector, vip: IpAddr, why: &str) -> bool {
    match tokio::time::timeout(RELEASE_TIMEOUT, el.release()).await {
        Ok(Ok(true)) => {
            info!(%vip, lease = el.name(), why, "L2 Lease released");
            true
        }
        Ok(Ok(false)) => {
            debug!(%vip, lease = el.name(), "L2 Lease not released: held by another node already");
            false
        }
        Ok(Err(e)) => {
            warn!(%vip, lease = el.name(), error = %e, "could not release the L2 Lease; another node takes it when it expires");
            false
        }
        Err(_) => {
            warn!(%vip, lease = el.name(), "releasing the L2 Lease timed out; another node takes it when it expires");
            false
        }
    }
}

/// Publishes a Normal [`ANNOUNCER_CHANGED`] Event on each Service, in the
/// background.
fn publish(recorder: &Recorder, refs: &[ObjectReference], note: String) {
    for reference in refs.iter().cloned() {
        let recorder = recorder.clone();
        let note = note.clone();
        tokio::spawn(async move {
            let ev = Event {
                type_: EventType::Normal,
                reason: ANNOUNCER_CHANGED.into(),
                note: Some(note),
                action: "Announce".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                let service = format!(
                    "{}/{}",
                    reference.namespace.as_deref().unwrap_or(""),
                    reference.name.as_deref().unwrap_or("")
                );
                warn!(%service, reason = ANNOUNCER_CHANGED, error = %e, "could not publish an event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_write_dots_and_colons_as_dashes() {
        assert_eq!(lease_name("192.0.2.10".parse().unwrap()), "xlb-l2-192-0-2-10");
        assert_eq!(lease_name("2001:db8:ffff::10".parse().unwrap()), "xlb-l2-2001-db8-ffff--10");
        assert_eq!(lease_name("2001:db8::".parse().unwrap()), "xlb-l2-2001-db8--0");
        // Failover well inside the contract's 10 s.
        assert!(TIMING.duration + TIMING.retry_every < Duration::from_secs(10));
    }
}
