//! Reflectors on the Gateway API kinds, started when the API server serves
//! them: a first discovery at start, then one every [`DISCOVER_EVERY`]
//! until every kind is watched, so CRDs installed later are picked up and
//! absent ones cost one discovery request per period (logged once, no
//! error, no degraded health). A watch of a kind whose CRD is removed
//! later logs that once, empties its cache (the objects went with the CRD:
//! their listeners' services go too) and keeps retrying quietly, every few
//! seconds at most, with no degraded health; the CRD installed again, the
//! watch lists the kind again.
use std::{
    collections::BTreeSet,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    runtime::{
        reflector::{self, store::Writer, Store},
        utils::WatchStreamExt as _,
        watcher,
    },
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{
    translate::Route,
    types::{Gateway, GatewayClass, ReferenceGrant, ReferenceGrantV1beta1, TCPRoute, UDPRoute, GROUP},
};
use crate::{metrics::Health, source::k8s::watch::CappedBackoff};

/// How often the agent looks for Gateway API kinds it does not watch yet.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(15);

/// The caches of the Gateway API kinds (empty until a kind is served).
#[derive(Clone)]
pub struct GatewayStores {
    /// GatewayClasses.
    pub classes: Store<GatewayClass>,
    /// Gateways.
    pub gateways: Store<Gateway>,
    /// TCPRoutes.
    pub tcp_routes: Store<TCPRoute>,
    /// UDPRoutes.
    pub udp_routes: Store<UDPRoute>,
    /// ReferenceGrants (`v1`).
    pub grants: Store<ReferenceGrant>,
    /// ReferenceGrants (`v1beta1`, when `v1` is not served).
    pub grants_v1beta1: Store<ReferenceGrantV1beta1>,
    /// Namespaces (watched along with Gateways, for namespace selectors).
    pub namespaces: Store<Namespace>,
    started: Arc<Mutex<BTreeSet<&'static str>>>,
}

/// What the caches hold, taken at once.
pub struct Snapshot {
    /// GatewayClasses.
    pub classes: Vec<Arc<GatewayClass>>,
    /// Gateways.
    pub gateways: Vec<Arc<Gateway>>,
    /// TCPRoutes and UDPRoutes.
    pub routes: Vec<Route>,
    /// ReferenceGrants, either version.
    pub grants: Vec<Arc<ReferenceGrant>>,
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
}

fn is_ready<K: Resource + Clone>(s: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    s.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

impl GatewayStores {
    /// Whether the API server serves Gateways (their watch has started).
    pub fn present(&self) -> bool {
        self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains("gateways")
    }

    /// Whether every watch started holds a complete first list.
    pub fn ready(&self) -> bool {
        let started = self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        started.iter().all(|k| match *k {
            "gatewayclasses" => is_ready(&self.classes),
            "gateways" => is_ready(&self.gateways),
            "tcproutes" => is_ready(&self.tcp_routes),
            "udproutes" => is_ready(&self.udp_routes),
            "referencegrants" => is_ready(&self.grants),
            "referencegrants.v1beta1" => is_ready(&self.grants_v1beta1),
            "namespaces" => is_ready(&self.namespaces),
            _ => true,
        })
    }

    /// Waits (up to `limit`) until every watch started holds a first list.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The caches' content, or `None` while a started watch has no
    /// complete first list yet.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.ready() {
            return None;
        }
        let mut grants = self.grants.state();
        grants.extend(self.grants_v1beta1.state().iter().map(|g| Arc::new(ReferenceGrant::from(g.as_ref()))));
        let mut routes: Vec<Route> = self.tcp_routes.state().iter().map(|r| Route::tcp(r)).collect();
        routes.extend(self.udp_routes.state().iter().map(|r| Route::udp(r)));
        Some(Snapshot {
            classes: self.classes.state(),
            gateways: self.gateways.state(),
            routes,
            grants,
            namespaces: self.namespaces.state(),
        })
    }
}

struct Writers {
    classes: Option<Writer<GatewayClass>>,
    gateways: Option<Writer<Gateway>>,
    tcp_routes: Option<Writer<TCPRoute>>,
    udp_routes: Option<Writer<UDPRoute>>,
    grants: Option<Writer<ReferenceGrant>>,
    grants_v1beta1: Option<Writer<ReferenceGrantV1beta1>>,
    namespaces: Option<Writer<Namespace>>,
}

/// The resources served in `GROUP/version` (empty when the version is not
/// served); `None` when the API server could not be asked.
async fn served(client: &Client, version: &str) -> Option<BTreeSet<String>> {
    match client.list_api_group_resources(&format!("{GROUP}/{version}")).await {
        Ok(list) => Some(list.resources.into_iter().map(|r| r.name).collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Some(BTreeSet::new()),
        Err(e) => {
            debug!(error = %e, "Gateway API discovery failed; trying again later");
            None
        }
    }
}

/// Whether a watch error says the API server does not serve the kind (its
/// CRD was removed): a 404 from the list, the watch's start, or the watch.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

fn spawn<K>(mut writer: Writer<K>, api: Api<K>, trigger: Arc<Notify>, health: Arc<Health>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let backoff = CappedBackoff::new(Arc::new(AtomicU64::new(0)));
    let stream = watcher(api, watcher::Config::default()).backoff(backoff);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut gone_told = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    writer.apply_watcher_event(&event);
                    gone_told = false;
                    trigger.notify_one();
                }
                // The CRD was removed: not an outage of the API server, and
                // none of the kind's objects exist any more (the API server
                // deletes them with it; the cache forgets any it did not
                // tell of). Retried quietly, picked up when installed again.
                Err(e) if not_served(&e) => {
                    if !writer.as_reader().is_empty() {
                        writer.apply_watcher_event(&watcher::Event::Init);
                        writer.apply_watcher_event(&watcher::Event::InitDone);
                        trigger.notify_one();
                    }
                    if !gone_told {
                        info!(%kind, "the API server no longer serves this Gateway API kind (CRD removed?); its objects are gone, retrying quietly");
                        gone_told = true;
                    }
                }
                Err(e) => {
                    if health.degraded().is_none() {
                        warn!(%kind, error = %e, "watch failed; forwarding goes on with the last known state, retrying");
                    }
                    health.set_degraded(Some(format!("watching {kind}: {e}")));
                }
            }
        }
    });
}

/// One discovery round: starts the watches of the kinds newly served.
/// Returns whether every kind is watched now.
async fn discover(
    client: &Client,
    w: &mut Writers,
    stores: &GatewayStores,
    trigger: &Arc<Notify>,
    health: &Arc<Health>,
) -> bool {
    let Some(v1) = served(client, "v1").await else { return false };
    let mut started = Vec::new();
    macro_rules! start {
        ($field:ident, $ty:ty, $name:literal, $api:expr) => {
            if let Some(writer) = w.$field.take() {
                spawn::<$ty>(writer, $api, trigger.clone(), health.clone());
                started.push($name);
            }
        };
    }
    if v1.contains("gatewayclasses") {
        start!(classes, GatewayClass, "gatewayclasses", Api::all(client.clone()));
    }
    if v1.contains("gateways") {
        start!(gateways, Gateway, "gateways", Api::all(client.clone()));
        start!(namespaces, Namespace, "namespaces", Api::all(client.clone()));
    }
    if v1.contains("tcproutes") {
        start!(tcp_routes, TCPRoute, "tcproutes", Api::all(client.clone()));
    }
    if v1.contains("udproutes") {
        start!(udp_routes, UDPRoute, "udproutes", Api::all(client.clone()));
    }
    if v1.contains("referencegrants") {
        if w.grants_v1beta1.is_some() {
            start!(grants, ReferenceGrant, "referencegrants", Api::all(client.clone()));
            w.grants_v1beta1 = None;
        }
    } else if w.grants_v1beta1.is_some() {
        if let Some(beta) = served(client, "v1beta1").await {
            if beta.contains("referencegrants") {
                start!(grants_v1beta1, ReferenceGrantV1beta1, "referencegrants.v1beta1", Api::all(client.clone()));
                w.grants = None;
            }
        }
    }
    if !started.is_empty() {
        stores.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(started.iter().copied());
        info!(kinds = ?started, "Gateway API: watching");
    }
    // (Starting one ReferenceGrant version drops the other's writer.)
    w.classes.is_none()
        && w.gateways.is_none()
        && w.tcp_routes.is_none()
        && w.udp_routes.is_none()
        && w.grants.is_none()
        && w.grants_v1beta1.is_none()
}

/// Discovers the Gateway API kinds once (waiting for it at most a few
/// seconds), starts their watches, and keeps discovering in the background
/// every [`DISCOVER_EVERY`] until every kind is watched.
pub async fn start(client: &Client, trigger: Arc<Notify>, health: Arc<Health>) -> GatewayStores {
    let (classes, wc) = reflector::store();
    let (gateways, wg) = reflector::store();
    let (tcp_routes, wt) = reflector::store();
    let (udp_routes, wu) = reflector::store();
    let (grants, wr) = reflector::store();
    let (grants_v1beta1, wb) = reflector::store();
    let (namespaces, wn) = reflector::store();
    let stores = GatewayStores {
        classes,
        gateways,
        tcp_routes,
        udp_routes,
        grants,
        grants_v1beta1,
        namespaces,
        started: Arc::default(),
    };
    let mut writers = Writers {
        classes: Some(wc),
        gateways: Some(wg),
        tcp_routes: Some(wt),
        udp_routes: Some(wu),
        grants: Some(wr),
        grants_v1beta1: Some(wb),
        namespaces: Some(wn),
    };
    let first =
        tokio::time::timeout(Duration::from_secs(5), discover(client, &mut writers, &stores, &trigger, &health)).await;
    if first == Ok(true) {
        return stores;
    }
    if !stores.present() {
        info!(every = ?DISCOVER_EVERY, "Gateway API: the API server does not serve gateway.networking.k8s.io/v1 Gateways (CRDs not installed); looking again periodically");
    }
    let (client, bg) = (client.clone(), stores.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(DISCOVER_EVERY).await;
            if discover(&client, &mut writers, &bg, &trigger, &health).await {
                break;
            }
        }
    });
    stores
}
