//! Writes the statuses of [`super::status`] through the status
//! subresources with merge patches, on the agent holding the allocator
//! Lease only. A status equal to the cached object's is not written, nor is
//! one already written for the object's current resourceVersion (the cache
//! lagging behind our own write): no write storms.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde::Serialize;
use tracing::{debug, warn};

use super::{
    status,
    translate::{ObjKey, Translation},
    types::{Gateway, GatewayClass, RouteKind, TCPRoute, UDPRoute},
    watch::Snapshot,
};

/// Writes Gateway API statuses, remembering what it wrote.
pub struct StatusWriter {
    client: Client,
    controller: String,
    /// Per object (`kind/ns/name`): the resourceVersion it had and the
    /// status written.
    written: HashMap<String, (Option<String>, serde_json::Value)>,
}

enum Target<'a> {
    Class(&'a str),
    Gateway(&'a str, &'a str),
    Route(RouteKind, &'a str, &'a str),
}

impl StatusWriter {
    /// A writer for controller `controller` (`--gateway-controller-name`).
    pub fn new(client: Client, controller: &str) -> Self {
        StatusWriter { client, controller: controller.into(), written: HashMap::new() }
    }

    /// Writes what differs: the statuses of the GatewayClasses, Gateways
    /// (with the addresses in `allocated`) and routes of `t`, compared with
    /// the objects in `snap`.
    pub async fn write(&mut self, t: &Translation, snap: &Snapshot, allocated: &BTreeMap<ObjKey, IpAddr>) {
        let now = Time(Timestamp::now());
        let mut live = std::collections::HashSet::new();
        for c in &snap.classes {
            let name = c.metadata.name.clone().unwrap_or_default();
            let Some(generation) = t.classes.get(&name) else { continue };
            let want = status::class_status(*generation, c.status.as_ref(), &now);
            let key = format!("gatewayclass/{name}");
            live.insert(key.clone());
            self.put(key, Target::Class(&name), c.status.as_ref(), &want, c.metadata.resource_version.clone()).await;
        }
        for g in &snap.gateways {
            let k = (g.metadata.namespace.clone().unwrap_or_default(), g.metadata.name.clone().unwrap_or_default());
            let Some(result) = t.gateways.get(&k) else { continue };
            let want = status::gateway_status(result, allocated.get(&k).copied(), g.status.as_ref(), &now);
            let key = format!("gateway/{}/{}", k.0, k.1);
            live.insert(key.clone());
            self.put(key, Target::Gateway(&k.0, &k.1), g.status.as_ref(), &want, g.metadata.resource_version.clone())
                .await;
        }
        for r in &snap.routes {
            let (ns, name) =
                (r.metadata.namespace.clone().unwrap_or_default(), r.metadata.name.clone().unwrap_or_default());
            let Some(result) = t.routes.get(&(r.kind, ns.clone(), name.clone())) else { continue };
            let want = status::route_status(result, &self.controller, r.status.as_ref(), &now);
            let key = format!("{}/{ns}/{name}", r.kind.kind());
            live.insert(key.clone());
            self.put(
                key,
                Target::Route(r.kind, &ns, &name),
                r.status.as_ref(),
                &want,
                r.metadata.resource_version.clone(),
            )
            .await;
        }
        self.written.retain(|k, _| live.contains(k));
    }

    async fn put<S: Serialize + PartialEq>(
        &mut self,
        key: String,
        target: Target<'_>,
        current: Option<&S>,
        want: &S,
        rv: Option<String>,
    ) {
        if current == Some(want) {
            return;
        }
        let Ok(value) = serde_json::to_value(want) else { return };
        if self.written.get(&key).is_some_and(|(at, v)| *at == rv && *v == value) {
            return;
        }
        let patch = serde_json::json!({ "status": value });
        let (pp, p) = (PatchParams::default(), Patch::Merge(&patch));
        let c = self.client.clone();
        let r = match target {
            Target::Class(name) => Api::<GatewayClass>::all(c).patch_status(name, &pp, &p).await.map(|_| ()),
            Target::Gateway(ns, name) => {
                Api::<Gateway>::namespaced(c, ns).patch_status(name, &pp, &p).await.map(|_| ())
            }
            Target::Route(RouteKind::Tcp, ns, name) => {
                Api::<TCPRoute>::namespaced(c, ns).patch_status(name, &pp, &p).await.map(|_| ())
            }
            Target::Route(RouteKind::Udp, ns, name) => {
                Api::<UDPRoute>::namespaced(c, ns).patch_status(name, &pp, &p).await.map(|_| ())
            }
        };
        match r {
            Ok(()) => {
                debug!(object = %key, "status written");
                self.written.insert(key, (rv, value));
            }
            Err(e) => warn!(object = %key, error = %e, "could not write the status"),
        }
    }
}
