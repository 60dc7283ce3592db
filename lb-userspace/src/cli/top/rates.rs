//! The rates of `xlb top`: two samples of the counters the maps hold and
//! the time between them give packets/s and bytes/s per service and per
//! backend, drops/s by reason and new flows/s. Pure: no map is read here.
use std::{collections::HashMap, time::Duration};

use serde::Serialize;

/// Packets and bytes counted so far (monotonic while the counter lives).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A backend's counters in one sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSample {
    /// `ip:port`, as `xlb backends` prints it.
    pub address: String,
    /// Its counters.
    pub counts: Counts,
}

/// A service's counters in one sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSample {
    /// Its name, as `xlb services` prints it.
    pub name: String,
    /// Its counters (client-to-backend direction).
    pub counts: Counts,
    /// Its backends.
    pub backends: Vec<BackendSample>,
}

/// Everything `xlb top` reads at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// The services, in the order they are shown.
    pub services: Vec<ServiceSample>,
    /// The global counters (`xlb stats`), by name.
    pub stats: Vec<(&'static str, u64)>,
}

/// A backend's rates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendRate {
    /// `ip:port`.
    pub address: String,
    /// Packets per second forwarded to it.
    pub packets_per_second: f64,
    /// Bytes per second forwarded to it.
    pub bytes_per_second: f64,
}

/// A service's rates and its backends'.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRate {
    /// The service's name.
    pub service: String,
    /// Packets per second to its VIP:port.
    pub packets_per_second: f64,
    /// Bytes per second to its VIP:port.
    pub bytes_per_second: f64,
    /// Its backends' rates.
    pub backends: Vec<BackendRate>,
}

/// One drop reason's rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropRate {
    /// The counter's name in `xlb stats` (`drop_no_backend`, ...).
    pub reason: String,
    /// Packets per second dropped for it.
    pub packets_per_second: f64,
}

/// What `xlb top` shows (and `xlb top --once -o json` prints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// Seconds between the two samples.
    pub interval_seconds: f64,
    /// Packets per second seen by the XDP program (`packets`).
    pub packets_per_second: f64,
    /// New flows per second (`flow_new`: a backend picked for a new flow).
    pub new_flows_per_second: f64,
    /// Per service, in the order of the second sample.
    pub services: Vec<ServiceRate>,
    /// Per drop reason (every `drop_*` counter), in `xlb stats` order.
    pub drops: Vec<DropRate>,
}

/// How far a counter moved from `before` to `after`. A counter that went
/// back (a new agent, a service removed and added again) was reset and has
/// counted `after` since; one that did not exist before (`None`) was
/// created at zero, so it too has counted `after`.
pub fn delta(before: Option<u64>, after: u64) -> u64 {
    match before {
        Some(b) if b <= after => after - b,
        _ => after,
    }
}

/// `delta / elapsed`, 0 for an empty interval.
#[expect(clippy::cast_precision_loss, reason = "rates are shown, not summed back into counters")]
fn per_second(delta: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        delta as f64 / secs
    } else {
        0.0
    }
}

/// The rates between two samples taken `elapsed` apart. Services and
/// backends are matched by name and address; those only in `after` are new
/// (counted from zero), those only in `before` are gone and not shown.
pub fn rates(before: &Sample, after: &Sample, elapsed: Duration) -> Rates {
    let old_svcs: HashMap<&str, &ServiceSample> = before.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let old_stats: HashMap<&str, u64> = before.stats.iter().copied().collect();
    let rate = |old: Option<Counts>, new: Counts| {
        (
            per_second(delta(old.map(|c| c.packets), new.packets), elapsed),
            per_second(delta(old.map(|c| c.bytes), new.bytes), elapsed),
        )
    };
    let services = after
        .services
        .iter()
        .map(|s| {
            let old = old_svcs.get(s.name.as_str());
            let old_backends: HashMap<&str, Counts> =
                old.map(|o| o.backends.iter().map(|b| (b.address.as_str(), b.counts)).collect()).unwrap_or_default();
            let (packets_per_second, bytes_per_second) = rate(old.map(|o| o.counts), s.counts);
            let backends = s
                .backends
                .iter()
                .map(|b| {
                    let (packets_per_second, bytes_per_second) =
                        rate(old_backends.get(b.address.as_str()).copied(), b.counts);
                    BackendRate { address: b.address.clone(), packets_per_second, bytes_per_second }
                })
                .collect();
            ServiceRate { service: s.name.clone(), packets_per_second, bytes_per_second, backends }
        })
        .collect();
    let stat = |name: &str| {
        let now = after.stats.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
        per_second(delta(old_stats.get(name).copied(), now), elapsed)
    };
    let drops = after
        .stats
        .iter()
        .filter(|(n, _)| n.starts_with("drop_"))
        .map(|(n, _)| DropRate { reason: (*n).to_owned(), packets_per_second: stat(n) })
        .collect();
    Rates {
        interval_seconds: elapsed.as_secs_f64(),
        packets_per_second: stat(lb_common::Stat::Packets.name()),
        new_flows_per_second: stat(lb_common::Stat::FlowNew.name()),
        services,
        drops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, packets: u64, backends: &[(&str, u64)]) -> ServiceSample {
        ServiceSample {
            name: name.into(),
            counts: Counts { packets, bytes: packets * 100 },
            backends: backends
                .iter()
                .map(|(a, p)| BackendSample { address: (*a).into(), counts: Counts { packets: *p, bytes: p * 100 } })
                .collect(),
        }
    }

    fn sample(services: Vec<ServiceSample>, stats: &[(&'static str, u64)]) -> Sample {
        Sample { services, stats: stats.to_vec() }
    }

    const B1: &str = "10.1.0.2:53";
    const B2: &str = "10.1.1.2:53";

    #[test]
    fn deltas_over_the_interval() {
        let before = sample(
            vec![svc("dns", 1000, &[(B1, 600), (B2, 400)])],
            &[("packets", 5000), ("flow_new", 10), ("drop_no_backend", 7), ("drop_malformed", 0)],
        );
        let after = sample(
            vec![svc("dns", 1400, &[(B1, 1000), (B2, 400)])],
            &[("packets", 6000), ("flow_new", 30), ("drop_no_backend", 11), ("drop_malformed", 0)],
        );
        let r = rates(&before, &after, Duration::from_secs(2));
        assert!((r.interval_seconds - 2.0).abs() < f64::EPSILON);
        assert!((r.packets_per_second - 500.0).abs() < 1e-9, "{r:?}");
        assert!((r.new_flows_per_second - 10.0).abs() < 1e-9, "{r:?}");
        let dns = &r.services[0];
        assert_eq!(dns.service, "dns");
        assert!((dns.packets_per_second - 200.0).abs() < 1e-9);
        assert!((dns.bytes_per_second - 20_000.0).abs() < 1e-9);
        assert_eq!(dns.backends.len(), 2);
        assert!((dns.backends[0].packets_per_second - 200.0).abs() < 1e-9);
        assert!(dns.backends[1].packets_per_second.abs() < 1e-9, "an idle backend is 0");
        let drops: Vec<(&str, f64)> = r.drops.iter().map(|d| (d.reason.as_str(), d.packets_per_second)).collect();
        assert_eq!(drops, [("drop_no_backend", 2.0), ("drop_malformed", 0.0)], "only drop_* counters, in order");
    }

    #[test]
    fn resets_and_new_services_count_from_zero() {
        let before = sample(vec![svc("dns", 1000, &[(B1, 1000)]), svc("gone", 50, &[])], &[("packets", 9000)]);
        // A new agent reset every counter; `web` and backend B2 are new; `gone` was removed.
        let after = sample(vec![svc("dns", 30, &[(B1, 10), (B2, 20)]), svc("web", 8, &[(B1, 8)])], &[("packets", 40)]);
        let r = rates(&before, &after, Duration::from_secs(1));
        let names: Vec<&str> = r.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["dns", "web"], "the removed service is gone");
        let pps: Vec<f64> = r.services.iter().map(|s| s.packets_per_second).collect();
        assert_eq!(pps, [30.0, 8.0]);
        let dns: Vec<f64> = r.services[0].backends.iter().map(|b| b.packets_per_second).collect();
        assert_eq!(dns, [10.0, 20.0]);
        assert!((r.packets_per_second - 40.0).abs() < 1e-9);
        assert!(r.new_flows_per_second.abs() < 1e-9, "a counter in neither sample is 0");
        for s in &r.services {
            assert!(s.packets_per_second >= 0.0 && s.bytes_per_second >= 0.0);
        }
    }

    #[test]
    fn an_empty_interval_or_no_change_is_zero() {
        let s = sample(vec![svc("dns", 5, &[(B1, 5)])], &[("packets", 5), ("drop_malformed", 1)]);
        for elapsed in [Duration::ZERO, Duration::from_secs(1)] {
            let r = rates(&s, &s, elapsed);
            let all = [r.services[0].packets_per_second, r.services[0].backends[0].bytes_per_second];
            assert!(all.iter().chain([&r.drops[0].packets_per_second]).all(|v| v.abs() < f64::EPSILON), "{r:?}");
        }
        let grown = sample(vec![svc("dns", 50, &[(B1, 50)])], &[("packets", 50)]);
        let r = rates(&s, &grown, Duration::ZERO);
        assert!(r.services[0].packets_per_second.abs() < f64::EPSILON, "no division by zero: {r:?}");
        let r = rates(&Sample::default(), &Sample::default(), Duration::from_secs(1));
        assert!(r.services.is_empty() && r.drops.is_empty());
    }

    #[test]
    fn delta_never_goes_negative() {
        assert_eq!(delta(Some(10), 15), 5);
        assert_eq!(delta(Some(10), 10), 0);
        assert_eq!(delta(Some(10), 3), 3, "reset: counted from zero");
        assert_eq!(delta(None, 7), 7, "new: counted from zero");
        assert_eq!(delta(Some(u64::MAX), 0), 0);
    }
}
