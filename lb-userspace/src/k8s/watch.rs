//! Reflectors on Services, EndpointSlices and this node's Node: local
//! caches kept current by list + watch (no polling). A re-list (after 410
//! Gone) swaps the cache in one step when the list is complete, so the maps
//! never see a half-listed world. Errors back off up to [`MAX_BACKOFF`] and
//! mark the agent degraded until the API server answers again.
use std::{sync::Arc, time::Duration};

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
use tracing::warn;

use super::endpoints::SERVICE_NAME_LABEL;
use crate::metrics::Health;

/// Longest wait between two attempts to reach the API server.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff from 250 ms, doubling, capped at [`MAX_BACKOFF`].
#[derive(Clone, Debug)]
pub struct CappedBackoff {
    next: Duration,
}

impl Default for CappedBackoff {
    fn default() -> Self {
        CappedBackoff { next: Duration::from_millis(250) }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Some(d)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        *self = CappedBackoff::default();
    }
}

/// The caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
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

fn reflect<K>(api: Api<K>, config: watcher::Config, trigger: Arc<Notify>, health: Arc<Health>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, config).backoff(CappedBackoff::default()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => trigger.notify_one(),
                Err(e) => {
                    warn!(%kind, error = %e, "watch failed; forwarding goes on with the last known state, retrying");
                    health.set_degraded(Some(format!("watching {kind}: {e}")));
                }
            }
        }
    });
    reader
}

/// Starts the reflectors; `trigger` is notified on every change.
pub fn start(client: &Client, node_name: &str, trigger: Arc<Notify>, health: Arc<Health>) -> Stores {
    let services = reflect(Api::<Service>::all(client.clone()), watcher::Config::default(), trigger.clone(), health.clone());
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        trigger.clone(),
        health.clone(),
    );
    let nodes = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        trigger,
        health.clone(),
    );
    let probe_client = client.clone();
    tokio::spawn(async move {
        // While degraded, find out when the API server answers again (the
        // watches resume on their own and may have nothing new to say).
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if health.degraded().is_some() && probe_client.apiserver_version().await.is_ok() {
                health.set_degraded(None);
                tracing::info!("Kubernetes API server reachable again");
            }
        }
    });
    Stores { services, slices, nodes }
}
