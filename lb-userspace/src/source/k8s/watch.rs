//! Reflectors on Services, EndpointSlices and this node's Node: local
//! caches kept current by list + watch (no polling). A re-list (after 410
//! Gone) swaps the cache in one step when the list is complete, so the maps
//! never see a half-listed world. Errors back off up to [`MAX_BACKOFF`] and
//! mark the agent degraded until the API server answers again.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::{
        reflector::{self, Store},
        utils::{Backoff, WatchStreamExt as _},
        watcher,
    },
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::endpoints::SERVICE_NAME_LABEL;
use crate::metrics::Health;

/// Longest wait between two attempts to reach the API server.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Exponential backoff from `MIN_BACKOFF`, doubling, capped at
/// [`MAX_BACKOFF`]. It starts over when the stream yields again, or when
/// the API server is seen answering again (`recovered` changes), so that
/// e.g. the re-list after a 410 Gone that follows an outage is not delayed
/// by the outage's long waits.
#[derive(Clone, Debug)]
pub struct CappedBackoff {
    next: Duration,
    recovered: Arc<AtomicU64>,
    seen: u64,
}

impl CappedBackoff {
    /// A backoff that starts over whenever `recovered` changes.
    pub fn new(recovered: Arc<AtomicU64>) -> Self {
        let seen = recovered.load(Ordering::SeqCst);
        CappedBackoff { next: MIN_BACKOFF, recovered, seen }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.recovered.load(Ordering::SeqCst);
        if now != self.seen {
            self.seen = now;
            self.next = MIN_BACKOFF;
        }
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Some(d)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// The caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
}

impl Stores {
    /// Waits until each cache holds a complete first list.
    pub async fn ready(&self) {
        // A writer dropped means its task ended, which only happens at shutdown.
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }
}

/// A reflector on `api` (filtered by `config`) in the background: its
/// cache, kept current; `trigger` is notified on every change, watch
/// failures mark `health` degraded.
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trigger: Arc<Notify>,
    health: Arc<Health>,
    recovered: Arc<AtomicU64>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, config).backoff(CappedBackoff::new(recovered)));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => trigger.notify_one(),
                Err(e) => {
                    // Once per outage at warn level; the retries at debug.
                    if health.degraded().is_none() {
                        warn!(%kind, error = %e, "watch failed; forwarding goes on with the last known state, retrying");
                    } else {
                        debug!(%kind, error = %e, "watch failed again");
                    }
                    health.set_degraded(Some(format!("watching {kind}: {e}")));
                }
            }
        }
    });
    reader
}

/// Starts the reflectors; `trigger` is notified on every change.
pub fn start(client: &Client, node_name: &str, trigger: Arc<Notify>, health: Arc<Health>) -> Stores {
    let recovered = Arc::new(AtomicU64::new(0));
    let services = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        trigger.clone(),
        health.clone(),
        recovered.clone(),
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        trigger.clone(),
        health.clone(),
        recovered.clone(),
    );
    let nodes = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        trigger,
        health.clone(),
        recovered.clone(),
    );
    let probe_client = client.clone();
    tokio::spawn(async move {
        // While degraded, find out when the API server answers again (the
        // watches resume on their own and may have nothing new to say).
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if health.degraded().is_some() && probe_client.apiserver_version().await.is_ok() {
                recovered.fetch_add(1, Ordering::SeqCst);
                health.set_degraded(None);
                tracing::info!("Kubernetes API server reachable again");
            }
        }
    });
    Stores { services, slices, nodes }
}
