//! Health-check node ports: for each Service with
//! `externalTrafficPolicy: Local`, an HTTP server on
//! `NODE_ADDRESS:spec.healthCheckNodePort` that answers any path with 200
//! while this node has a ready local endpoint for it, 503 otherwise (the
//! body is kube-proxy's JSON), so an external load balancer or router sends
//! traffic only to nodes that can serve it locally.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
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

/// The running health-check servers, one per port.
#[derive(Default)]
pub struct HealthServers {
    servers: HashMap<u16, Server>,
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
    /// new ones, stops those no longer wanted.
    pub async fn sync(&mut self, addr: IpAddr, checks: &[HealthCheck]) {
        let wanted: HashMap<u16, &HealthCheck> = checks.iter().map(|c| (c.port, c)).collect();
        self.servers.retain(|port, s| {
            let keep = wanted.contains_key(port);
            if !keep {
                s.task.abort();
                info!(port, "health-check node port closed");
            }
            keep
        });
        for (port, check) in wanted {
            if let Some(s) = self.servers.get(&port) {
                *s.check.write().expect("health check lock") = Some(check.clone());
                continue;
            }
            let at = SocketAddr::new(addr, port);
            let listener = match tokio::net::TcpListener::bind(at).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(%at, service = %format!("{}/{}", check.namespace, check.name), error = %e,
                          "cannot serve the health-check node port; is another process using it?");
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
            info!(%at, service = %format!("{}/{}", check.namespace, check.name), "health-check node port open");
            self.servers.insert(port, Server { check: shared, task });
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
