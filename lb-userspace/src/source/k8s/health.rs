//! Health-check node ports: for each Service with
//! `externalTrafficPolicy: Local`, an HTTP server on
//! `NODE_ADDRESS:spec.healthCheckNodePort` that answers any path with 200
//! while this node has a ready local endpoint for it, 503 otherwise (the
//! body is kube-proxy's JSON), so an external load balancer or router sends
//! traffic only to nodes that can serve it locally.
//!
//! Beside kube-proxy: kube-proxy serves the same port for the same Services
//! (its answer is equivalent: 200 with a ready local endpoint, 503
//! otherwise), so the port is often taken when xlb starts. xlb then leaves
//! it to kube-proxy: it says so once per port (info; other bind errors once
//! at warn), keeps running and forwarding, and quietly tries the port again
//! every [`RETRY_EVERY`] and on every change, taking it over if it frees.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, Router};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::translate::HealthCheck;

type Shared = Arc<RwLock<Option<HealthCheck>>>;

struct Server {
    check: Shared,
    task: JoinHandle<()>,
}

/// How often ports that could not be bound are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The running health-check servers, one per port.
#[derive(Default)]
pub struct HealthServers {
    servers: HashMap<u16, Server>,
    /// Ports wanted but not bound, with the error already reported.
    unbound: HashMap<u16, std::io::ErrorKind>,
    /// The last [`HealthServers::sync`]'s arguments, for [`HealthServers::retry`].
    last: Option<(IpAddr, Vec<HealthCheck>)>,
}

/// Status and body for a check.
pub fn answer(check: Option<&HealthCheck>) -> (StatusCode, String) {
    let Some(c) = check else {
        return (StatusCode::SERVICE_UNAVAILABLE, "{\"localEndpoints\":0,\"serviceProxyHealthy\":true}\n".into());
    };
    let body = serde_json::json!({
        "service": {"namespace": c.namespace, "name": c.name},
        "localEndpoints": c.local_ready,
        "serviceProxyHealthy": true,
    });
    let code = if c.local_ready > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, format!("{body}\n"))
}

async fn handle(State(check): State<Shared>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let (code, body) = answer(check.read().expect("health check lock").as_ref());
    (code, [("content-type", "application/json")], body)
}

impl HealthServers {
    /// Serves exactly `checks` on `addr`: updates running servers, starts
    /// new ones, stops those no longer wanted. A port that cannot be bound
    /// is reported once and tried again on later calls and by
    /// [`HealthServers::retry`].
    pub async fn sync(&mut self, addr: IpAddr, checks: &[HealthCheck]) {
        self.last = Some((addr, checks.to_vec()));
        let wanted: HashMap<u16, &HealthCheck> = checks.iter().map(|c| (c.port, c)).collect();
        self.servers.retain(|port, s| {
            let keep = wanted.contains_key(port);
            if !keep {
                s.task.abort();
                info!(port, "health-check node port closed");
            }
            keep
        });
        self.unbound.retain(|port, _| wanted.contains_key(port));
        for (port, check) in wanted {
            if let Some(s) = self.servers.get(&port) {
                *s.check.write().expect("health check lock") = Some(check.clone());
                continue;
            }
            let at = SocketAddr::new(addr, port);
            let service = format!("{}/{}", check.namespace, check.name);
            let listener = match tokio::net::TcpListener::bind(at).await {
                Ok(l) => l,
                Err(e) => {
                    let kind = e.kind();
                    if self.unbound.insert(port, kind) != Some(kind) {
                        if kind == std::io::ErrorKind::AddrInUse {
                            info!(%at, %service,
                                  "health-check node port already in use, most likely by kube-proxy, which gives the same answer \
                                   (200 with a ready local endpoint, 503 otherwise); leaving it to that process, and taking it \
                                   over if it frees");
                        } else {
                            warn!(%at, %service, error = %e,
                                  "cannot serve the health-check node port; trying again every {}s", RETRY_EVERY.as_secs());
                        }
                    }
                    continue;
                }
            };
            let shared: Shared = Arc::new(RwLock::new(Some(check.clone())));
            let app = Router::new().fallback(handle).with_state(shared.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    warn!(error = %e, "health-check server stopped");
                }
            });
            if self.unbound.remove(&port).is_some() {
                info!(%at, %service, "health-check node port free again: xlb serves it now");
            } else {
                info!(%at, %service, "health-check node port open");
            }
            self.servers.insert(port, Server { check: shared, task });
        }
    }

    /// Whether some wanted port is not bound (see [`HealthServers::retry`]).
    pub fn waiting(&self) -> bool {
        !self.unbound.is_empty()
    }

    /// Tries the ports that could not be bound again, quietly.
    pub async fn retry(&mut self) {
        if let Some((addr, checks)) = self.last.take() {
            self.sync(addr, &checks).await;
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for s in self.servers.values() {
            s.task.abort();
        }
    }
}
