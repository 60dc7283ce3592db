//! `/metrics` (Prometheus text format, read from the pinned maps on each
//! scrape) and `/healthz`.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::Context as _;
use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{maps::Maps, reader};

/// What `/healthz` reports.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Why the agent is degraded (e.g. the Kubernetes API is unreachable):
    /// it still forwards, on the last known state.
    degraded: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// Marks the agent ready (programs attached, configuration applied).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks the agent degraded (`Some(why)`) or healthy again (`None`).
    pub fn set_degraded(&self, why: Option<String>) {
        *self.degraded.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Why the agent is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug)]
struct MapCollector {
    pin_path: PathBuf,
}

type Labels = Vec<(&'static str, String)>;

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(0u64);
    let mut fam = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for MapCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(maps) = Maps::open_pinned(&self.pin_path) else {
            let g = ConstGauge::new(0i64);
            return g.encode(enc.encode_descriptor("xlb_maps_readable", "1 when the pinned maps could be read", None, g.metric_type())?);
        };
        let services = reader::services(&maps).unwrap_or_default();
        let svc = |f: fn(&reader::ServiceRow) -> u64| -> Vec<(Labels, u64)> {
            services.iter().map(|s| (vec![("service", s.name.clone())], f(s))).collect()
        };
        family(&mut enc, "xlb_service_packets", "Packets from clients to the service", &svc(|s| s.packets))?;
        family(&mut enc, "xlb_service_bytes", "IP bytes from clients to the service", &svc(|s| s.bytes))?;
        let be = |f: fn(&reader::BackendRow) -> u64| -> Vec<(Labels, u64)> {
            services
                .iter()
                .flat_map(|s| s.backend_rows.iter())
                .map(|b| (vec![("service", b.service.clone()), ("backend", b.address.clone())], f(b)))
                .collect()
        };
        family(&mut enc, "xlb_backend_packets", "Packets sent to the backend", &be(|b| b.packets))?;
        family(&mut enc, "xlb_backend_bytes", "IP bytes sent to the backend", &be(|b| b.bytes))?;
        let stats: Vec<(Labels, u64)> = reader::stats(&maps)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (vec![("counter", k.to_string())], v))
            .collect();
        family(&mut enc, "xlb_datapath_events", "Data-path counters by reason (see `xlb stats`)", &stats)?;
        let g = ConstGauge::new(1i64);
        g.encode(enc.encode_descriptor("xlb_maps_readable", "1 when the pinned maps could be read", None, g.metric_type())?)
    }
}

struct AppState {
    registry: Registry,
    health: Arc<Health>,
}

/// Binds `addr` (so a bad address fails at start) and serves in the background.
pub async fn serve(addr: SocketAddr, pin_path: PathBuf, health: Arc<Health>) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MapCollector { pin_path }));
    let state = Arc::new(AppState { registry, health });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}: pick a free address:port"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn metrics(State(s): State<Arc<AppState>>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (StatusCode::OK, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], out),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], e.to_string()),
    }
}

/// 200 `ok` when ready; 200 `degraded: WHY` when forwarding on the last
/// known state (restarting the agent would not help, so liveness stays
/// good); 503 `starting` before the first configuration is applied.
async fn healthz(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    if !s.health.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into());
    }
    match s.health.degraded() {
        Some(why) => (StatusCode::OK, format!("degraded: {why}\n")),
        None => (StatusCode::OK, "ok\n".into()),
    }
}
