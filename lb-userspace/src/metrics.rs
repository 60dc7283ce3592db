//! `/metrics` (Prometheus text format, read from the pinned maps, opened once
//! and kept while their pins stay), `/healthz` (liveness) and `/readyz` (readiness).
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use crate::{bpf::view::CachedView, state::reader};

/// The result of the last time a configuration was applied to the maps
/// (at start, on a reload, on a Kubernetes change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastApply {
    /// When, Unix seconds.
    pub unix: u64,
    /// Whether it was applied fully.
    pub ok: bool,
    /// What happened (the error when it failed).
    pub message: String,
    /// When the last successful apply was, Unix seconds (0: never).
    pub last_ok_unix: u64,
}

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Why the agent is degraded (e.g. the Kubernetes API is unreachable):
    /// it still forwards, on the last known state.
    degraded: std::sync::Mutex<Option<String>>,
    /// The last apply (start, reload), if any.
    last_apply: std::sync::Mutex<Option<LastApply>>,
}

impl Health {
    /// Marks the agent ready (programs attached, configuration applied).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks the agent degraded (`Some(why)`) or healthy again (`None`).
    pub fn set_degraded(&self, why: Option<String>) {
        *self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Why the agent is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        self.degraded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records the result of applying a configuration (`Err(why)` when it
    /// failed and the previous one stays in force).
    pub fn record_apply(&self, result: Result<String, String>) {
        let now = unix_now();
        let mut last = self.last_apply.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev_ok = last.as_ref().map_or(0, |l| l.last_ok_unix);
        *last = Some(match result {
            Ok(message) => LastApply { unix: now, ok: true, message, last_ok_unix: now },
            Err(message) => LastApply { unix: now, ok: false, message, last_ok_unix: prev_ok },
        });
    }

    /// The last apply, if any.
    pub fn last_apply(&self) -> Option<LastApply> {
        self.last_apply.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Now, Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Debug)]
struct MapCollector {
    /// The pinned maps, opened on the first scrape and kept while their
    /// pins are the same (not opened again on every scrape).
    view: std::sync::Mutex<CachedView>,
    health: Arc<Health>,
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

/// What one scrape reads: the pinned maps (when readable) and the
/// announced VIPs.
#[derive(Debug, Default)]
struct Snapshot {
    /// The services with their backends; `None` when the maps could not be read.
    services: Option<Vec<reader::ServiceRow>>,
    /// The global data-path counters.
    stats: Vec<(&'static str, u64)>,
    /// How many VIPs this node announces; `None` when `XLB_ANNOUNCE` is not pinned.
    announced: Option<usize>,
}

impl MapCollector {
    fn snapshot(&self) -> Snapshot {
        let announced = crate::bpf::view::announced_vips(&self.pin_path).ok().flatten().map(|v| v.len());
        let mut view = self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(maps) = view.get() else { return Snapshot { announced, ..Snapshot::default() } };
        Snapshot {
            services: Some(reader::services(maps).unwrap_or_default()),
            stats: reader::stats(maps).unwrap_or_default(),
            announced,
        }
    }
}

impl Collector for MapCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_snapshot(enc, &self.snapshot(), self.health.last_apply().as_ref())
    }
}

/// Encodes every metric read from a [`Snapshot`] and the last apply.
fn encode_snapshot(
    mut enc: DescriptorEncoder,
    snap: &Snapshot,
    last_apply: Option<&LastApply>,
) -> Result<(), std::fmt::Error> {
    encode_last_apply(&mut enc, last_apply)?;
    encode_announce(&mut enc, snap.announced)?;
    let Some(services) = &snap.services else {
        let g = ConstGauge::new(0i64);
        return g.encode(enc.encode_descriptor(
            "xlb_maps_readable",
            "1 when the pinned maps could be read",
            None,
            g.metric_type(),
        )?);
    };
    let svc = |f: fn(&reader::ServiceRow) -> u64| -> Vec<(Labels, u64)> {
        services.iter().map(|s| (vec![("service", s.name.clone())], f(s))).collect()
    };
    family(&mut enc, "xlb_service_packets", "Packets from clients to the service", &svc(|s| s.packets))?;
    family(&mut enc, "xlb_service_bytes", "IP bytes from clients to the service", &svc(|s| s.bytes))?;
    let be = |f: fn(&reader::BackendRow) -> u64| -> Vec<(Labels, u64)> {
        services
            .iter()
            .flat_map(|s| s.backend_rows.iter())
            // A reject share forwards nothing: no series.
            .filter(|b| b.address != reader::REJECT_ADDRESS)
            .map(|b| (vec![("service", b.service.clone()), ("backend", b.address.clone())], f(b)))
            .collect()
    };
    family(&mut enc, "xlb_backend_packets", "Packets sent to the backend", &be(|b| b.packets))?;
    family(&mut enc, "xlb_backend_bytes", "IP bytes sent to the backend", &be(|b| b.bytes))?;
    let stats: Vec<(Labels, u64)> = snap.stats.iter().map(|(k, v)| (vec![("counter", (*k).to_string())], *v)).collect();
    family(&mut enc, "xlb_datapath_events", "Data-path counters by reason (see `xlb stats`)", &stats)?;
    let g = ConstGauge::new(1i64);
    g.encode(enc.encode_descriptor(
        "xlb_maps_readable",
        "1 when the pinned maps could be read",
        None,
        g.metric_type(),
    )?)
}

/// `xlb_config_last_reload_success` (1 when the last apply, at start or on
/// a reload, succeeded) and `xlb_config_last_reload_success_timestamp_seconds`
/// (when the last successful one was), as Prometheus and Alertmanager
/// export theirs; both absent before the first apply.
fn encode_last_apply(enc: &mut DescriptorEncoder, last: Option<&LastApply>) -> Result<(), std::fmt::Error> {
    let Some(last) = last else { return Ok(()) };
    let g = ConstGauge::new(i64::from(last.ok));
    g.encode(enc.encode_descriptor(
        "xlb_config_last_reload_success",
        "1 when the last configuration apply (start or reload) succeeded, 0 when it failed",
        None,
        g.metric_type(),
    )?)?;
    let g = ConstGauge::new(last.last_ok_unix as i64);
    g.encode(enc.encode_descriptor(
        "xlb_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration apply",
        None,
        g.metric_type(),
    )?)
}

/// Labels of a per-VIP metric.
type VipLabels = Vec<(&'static str, String)>;

/// The L2 announcer's Lease metrics (Kubernetes mode):
/// `xlb_l2_lease_transitions_total{vip, transition}` (`acquired`, `lost`,
/// `released`) and `xlb_l2_lease_held{vip}` (1 while this node holds the
/// VIP's Lease, i.e. announces it).
#[derive(Debug, Default)]
pub struct LeaseMetrics {
    transitions: Family<VipLabels, Counter>,
    held: Family<VipLabels, Gauge>,
}

impl LeaseMetrics {
    /// Counts a transition of `vip`'s Lease (`acquired`, `lost`, `released`).
    pub fn count(&self, vip: std::net::IpAddr, transition: &'static str) {
        self.transitions.get_or_create(&vec![("vip", vip.to_string()), ("transition", transition.to_string())]).inc();
    }

    /// Sets whether this node holds `vip`'s Lease.
    pub fn set_held(&self, vip: std::net::IpAddr, held: bool) {
        self.held.get_or_create(&vec![("vip", vip.to_string())]).set(i64::from(held));
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "xlb_l2_lease_transitions",
            "L2 announcement Lease transitions on this node, by VIP and transition (acquired, lost, released)",
            self.transitions.clone(),
        );
        registry.register(
            "xlb_l2_lease_held",
            "1 while this node holds the VIP's L2 announcement Lease (announces it)",
            self.held.clone(),
        );
    }
}

/// The process's [`LeaseMetrics`] (served by [`serve`]).
pub fn lease_metrics() -> &'static LeaseMetrics {
    static METRICS: std::sync::LazyLock<LeaseMetrics> = std::sync::LazyLock::new(LeaseMetrics::default);
    &METRICS
}

/// `xlb_announced_vips` (`announced`: VIPs whose ARP/NDP this node
/// answers, from the pinned `XLB_ANNOUNCE`; absent when it is not pinned) and
/// `xlb_gratuitous_sent` / `xlb_gratuitous_send_errors` (gratuitous ARP and
/// unsolicited neighbour advertisements, by family).
fn encode_announce(enc: &mut DescriptorEncoder, announced: Option<usize>) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;

    use crate::announce::garp::{GARP_SENT, NA_SENT, SEND_ERRORS};
    if let Some(vips) = announced {
        let g = ConstGauge::new(vips as i64);
        g.encode(enc.encode_descriptor(
            "xlb_announced_vips",
            "VIPs this node announces (--announce l2: answers ARP/NDP for; --announce bgp: routes in --announce-table)",
            None,
            g.metric_type(),
        )?)?;
    }
    let bgp = crate::announce::bgp::metrics();
    let routes = bgp.routes.load(Relaxed);
    if routes >= 0 {
        let g = ConstGauge::new(routes);
        g.encode(enc.encode_descriptor(
            "xlb_bgp_routes",
            "VIP routes this node keeps in --announce-table for its BGP daemon (--announce bgp)",
            None,
            g.metric_type(),
        )?)?;
        let changes = [
            (vec![("change", "added".to_string())], bgp.added.load(Relaxed)),
            (vec![("change", "withdrawn".to_string())], bgp.withdrawn.load(Relaxed)),
        ];
        family(enc, "xlb_bgp_route_changes", "VIP routes added to and withdrawn from --announce-table", &changes)?;
    }
    let sent = [
        (vec![("family", "ipv4".to_string())], GARP_SENT.load(Relaxed)),
        (vec![("family", "ipv6".to_string())], NA_SENT.load(Relaxed)),
    ];
    family(
        enc,
        "xlb_gratuitous_sent",
        "Gratuitous ARP (ipv4) and unsolicited neighbour advertisements (ipv6) sent",
        &sent,
    )?;
    family(
        enc,
        "xlb_gratuitous_send_errors",
        "Gratuitous ARP/NA that could not be sent",
        &[(vec![], SEND_ERRORS.load(Relaxed))],
    )
}

struct AppState {
    registry: Registry,
    health: Arc<Health>,
}

/// Binds `--metrics-addr` (before anything is attached, so a busy or
/// foreign address is refused at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (from [`bind`])
/// in the background.
pub fn serve(listener: tokio::net::TcpListener, pin_path: PathBuf, health: Arc<Health>) {
    let registry = registry(Box::new(MapCollector {
        view: std::sync::Mutex::new(CachedView::new(pin_path.clone())),
        health: health.clone(),
        pin_path,
    }));
    let state = Arc::new(AppState { registry, health });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
}

/// The registry `/metrics` encodes: `maps` (the pinned maps' metrics) and
/// every other metric of the process. The dashboard and docs tests
/// (`metrics/exported.rs`) encode the same registry.
fn registry(maps: Box<dyn Collector>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(maps);
    lease_metrics().register(&mut registry);
    registry
}

async fn metrics(State(s): State<Arc<AppState>>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => {
            (StatusCode::OK, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], e.to_string()),
    }
}

/// Liveness: 200 `ok` when ready; 200 `degraded: WHY` when forwarding on
/// the last known state (the Kubernetes API unreachable, or the last reload
/// failed and the previous configuration stays in force): restarting the
/// agent would not help (a bad file would then refuse to start), so a
/// liveness probe must not fail; 503 `starting` before the first
/// configuration is applied.
async fn healthz(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    health_answer(&s.health, false)
}

/// Readiness: as `/healthz`, but 503 while the last apply failed (the
/// configuration in force is not the one asked for), until one succeeds.
async fn readyz(State(s): State<Arc<AppState>>) -> (StatusCode, String) {
    health_answer(&s.health, true)
}

/// The answer of `/healthz` (`strict`: false) and `/readyz` (`strict`: true).
pub fn health_answer(health: &Health, strict: bool) -> (StatusCode, String) {
    if !health.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into());
    }
    let mut why = Vec::new();
    if let Some(d) = health.degraded() {
        why.push(d);
    }
    let failed = health.last_apply().filter(|l| !l.ok);
    if let Some(l) = &failed {
        let age = unix_now().saturating_sub(l.unix);
        why.push(format!("last reload failed {age}s ago, the previous configuration stays in force: {}", l.message));
    }
    let code = if strict && failed.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    if why.is_empty() {
        (code, "ok\n".into())
    } else {
        (code, format!("degraded: {}\n", why.join("; ")))
    }
}

#[cfg(test)]
mod exported;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_shows_in_healthz_and_fails_readiness() {
        let h = Health::default();
        assert_eq!(health_answer(&h, false).0, StatusCode::SERVICE_UNAVAILABLE);
        h.set_ready(true);
        h.record_apply(Ok("applied".into()));
        assert_eq!(health_answer(&h, false), (StatusCode::OK, "ok\n".into()));
        assert_eq!(health_answer(&h, true), (StatusCode::OK, "ok\n".into()));
        let ok_at = h.last_apply().unwrap().last_ok_unix;
        h.record_apply(Err("x.yaml:3: services[0].port: bad".into()));
        let (code, body) = health_answer(&h, false);
        assert_eq!(code, StatusCode::OK);
        assert!(body.starts_with("degraded: last reload failed") && body.contains("x.yaml:3"), "{body}");
        assert_eq!(health_answer(&h, true).0, StatusCode::SERVICE_UNAVAILABLE);
        let last = h.last_apply().unwrap();
        assert!(!last.ok);
        assert_eq!(last.last_ok_unix, ok_at);
        h.record_apply(Ok("applied".into()));
        assert_eq!(health_answer(&h, true), (StatusCode::OK, "ok\n".into()));
    }
}
