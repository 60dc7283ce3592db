//! The rules of the configuration file: its keys, each service's fields and
//! the uniqueness of names and (vip, port, protocol), checked on the
//! [`Walker`] while it builds the [`Config`]. Backends, source ranges and
//! interface names are in `addresses`.
use std::{
    net::{IpAddr, SocketAddr},
    num::IntErrorKind,
};

use super::{
    walk::{join, optional_ok, Walker},
    yaml::{Kind, Node},
    Config, ConfigError,
};
use crate::state::model::{
    self, check_snat_address, check_untracked_backends, check_vip, Claims, FlowTracking, ModelError, Protocol,
    ServiceSpec, SourceMode, AFFINITY_TIMEOUT, IDLE_TIMEOUT,
};

/// Most services one file may hold (the data path's limit).
const MAX_SERVICES: usize = model::rules::MAX_SERVICES;
/// Longest service name.
const MAX_NAME_LEN: usize = 63;

const TOP_KEYS: &[&str] = &["interfaces", "maglev_seed", "services"];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "vip",
    "port",
    "protocol",
    "source",
    "snat_address",
    "udp_timeout",
    "tcp_timeout",
    "maglev_table_size",
    "session_affinity_timeout",
    "source_ranges",
    "flow_tracking",
    "backends",
];

const NAME_RULE: &str = "use 1 to 63 characters from a-z, 0-9 and -";

/// Where a service's (vip, port, protocol) or name was first seen.
#[derive(Clone)]
struct FirstUse {
    index: usize,
    name: Option<String>,
}

/// Services seen so far, for the uniqueness checks (the model's).
#[derive(Default)]
struct Seen {
    names: Claims<String, usize>,
    keys: Claims<(IpAddr, u16, Protocol), FirstUse>,
    /// Line of each `flow_tracking: none` service's `flow_tracking`, by name.
    untracked: std::collections::HashMap<String, (usize, usize)>,
}

/// Validates the tree (`None`: empty file) and returns the config or every error.
pub(super) fn config(file: &str, root: Option<&Node>) -> Result<Config, Vec<ConfigError>> {
    let mut walker = Walker { file, errors: Vec::new() };
    let config = walker.root(root);
    if walker.errors.is_empty() {
        Ok(config)
    } else {
        Err(walker.errors)
    }
}

impl Walker<'_> {
    fn root(&mut self, root: Option<&Node>) -> Config {
        let mut config = Config::default();
        let Some(root) = root.filter(|r| !r.is_null()) else {
            return config;
        };
        let what = "a mapping with the keys interfaces and services";
        let Some(fields) = self.mapping(root, "", TOP_KEYS, what) else {
            return config;
        };
        if let Some(node) = fields.optional("interfaces") {
            config.interfaces = self.interfaces(node);
        }
        if let Some(node) = fields.optional("maglev_seed") {
            config.maglev_seed = self.integer(node, "maglev_seed", "a seed", 0, i128::from(u32::MAX)).map(|n| n as u32);
        }
        if let Some(node) = fields.optional("services") {
            config.state.services = self.services(node);
        }
        config
    }

    fn services(&mut self, node: &Node) -> Vec<ServiceSpec> {
        let Kind::Seq(items) = &node.kind else {
            let message = format!("expected a list of services, found {node}");
            self.error(node.line, "services", message);
            return Vec::new();
        };
        if items.len() > MAX_SERVICES {
            let message = format!(
                "{} services are listed; at most {MAX_SERVICES} are allowed (this is service number {})",
                items.len(),
                MAX_SERVICES + 1
            );
            self.error(items[MAX_SERVICES].line, "services", message);
        }
        let mut seen = Seen::default();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(service) = self.service(item, i, &mut seen) {
                out.push(service);
            }
        }
        if let Err(e) = check_untracked_backends(&out) {
            let at = match &e {
                ModelError::UntrackedSharedBackend { untracked, .. } => seen.untracked.get(untracked).copied(),
                _ => None,
            };
            let (field, line) = match at {
                Some((index, line)) => (format!("services[{index}].flow_tracking"), line),
                None => ("services".to_owned(), node.line),
            };
            self.error(line, field, e.to_string());
        }
        out
    }

    fn service(&mut self, node: &Node, index: usize, seen: &mut Seen) -> Option<ServiceSpec> {
        let path = format!("services[{index}]");
        let what = "a service: a mapping with at least name, vip, port and protocol";
        let f = self.mapping(node, &path, SERVICE_KEYS, what)?;

        let name = f.required(self, "name", NAME_RULE).and_then(|n| {
            let field = join(&path, "name");
            let name = self.service_name(n, &field)?;
            if let Err(first) = seen.names.claim(name.clone(), index) {
                let message =
                    format!("{name:?} is already the name of services[{first}]; service names must be unique");
                self.error(n.line, field, message);
            }
            Some(name)
        });
        let vip = f.required(self, "vip", "give an IPv4 or IPv6 address").and_then(|n| {
            let field = join(&path, "vip");
            let ip = self.ip(n, &field)?;
            if let Err(problem) = check_vip(ip) {
                let message = format!(
                    "{problem}; use a unicast address that clients send to, such as 192.0.2.10 or 2001:db8::10"
                );
                self.error(n.line, field, message);
                return None;
            }
            Some(ip)
        });
        let port = f
            .required(self, "port", "give a port in 1..=65535")
            .and_then(|n| self.integer(n, &join(&path, "port"), "a port", 1, 65535));
        let protocol =
            f.required(self, "protocol", "use udp or tcp").and_then(|n| self.protocol(n, &join(&path, "protocol")));
        let source_node = f.optional("source");
        let source = match source_node {
            Some(n) => self.source(n, &join(&path, "source")),
            None => Some(SourceMode::default()),
        };
        let snat_address = f.optional("snat_address").map(|n| {
            let field = join(&path, "snat_address");
            let ip = self.ip(n, &field)?;
            // An invalid source was reported already: checked as snat.
            let mode = source.unwrap_or_default();
            let checked = match vip {
                Some(vip) => check_snat_address(ip, vip, mode),
                None if mode == SourceMode::Preserve => Err(ModelError::SnatWithPreserve),
                None => check_vip(ip),
            };
            let message = match checked {
                Ok(()) => return Some(ip),
                Err(ModelError::SnatWithPreserve) => format!(
                    "snat_address applies to source: snat only, and this service has source: preserve (line {}), \
                     which keeps the client's address; remove snat_address or use source: snat",
                    source_node.map_or(0, |s| s.line)
                ),
                Err(e @ ModelError::UnusableVip { .. }) => format!("{e}; use an address of this node"),
                Err(e) => e.to_string(),
            };
            self.error(n.line, field, message);
            None
        });
        let udp_timeout = f.optional("udp_timeout").map(|n| self.timeout(n, &path, "udp_timeout"));
        let tcp_timeout = f.optional("tcp_timeout").map(|n| self.timeout(n, &path, "tcp_timeout"));
        let maglev_table_size =
            f.optional("maglev_table_size").map(|n| self.table_size(n, &join(&path, "maglev_table_size")));
        let affinity_timeout = f.optional("session_affinity_timeout").map(|n| {
            let field = join(&path, "session_affinity_timeout");
            let (min, max) = (i128::from(*AFFINITY_TIMEOUT.start()), i128::from(*AFFINITY_TIMEOUT.end()));
            self.integer(n, &field, "a session-affinity timeout in seconds", min, max).map(|n| n as u32)
        });
        let source_ranges = match f.optional("source_ranges") {
            Some(n) => self.source_ranges(n, &path, vip),
            None => Some(Vec::new()),
        };
        let flow_tracking_node = f.optional("flow_tracking");
        let flow_tracking = match flow_tracking_node {
            Some(n) => self.choice(
                n,
                &join(&path, "flow_tracking"),
                "a flow tracking mode",
                &[("full", FlowTracking::Full), ("none", FlowTracking::None)],
            ),
            None => Some(FlowTracking::Full),
        };
        let port = port.map(|p| p as u16);
        let backends = match f.optional("backends") {
            Some(n) => self.backends(n, &path, vip, port),
            None => Some(Vec::new()),
        };

        if let (Some(vip), Some(port), Some(protocol)) = (vip, port, protocol) {
            let key = (vip, port, protocol);
            let first_use = FirstUse { index, name: name.clone() };
            if let Err(first) = seen.keys.claim(key, first_use) {
                let owner = match &first.name {
                    Some(n) => format!("service {n:?} (services[{}])", first.index),
                    None => format!("services[{}]", first.index),
                };
                let message = format!(
                    "{}/{protocol} is already used by {owner}; each vip, port and protocol may belong to one service",
                    SocketAddr::new(vip, port)
                );
                self.error(node.line, path.as_str(), message);
            }
        }

        let spec = ServiceSpec {
            name: name?,
            vip: vip?,
            port: port?,
            protocol: protocol?,
            source: source?,
            snat_address: optional_ok(snat_address)?,
            udp_timeout: optional_ok(udp_timeout)?,
            tcp_timeout: optional_ok(tcp_timeout)?,
            maglev_table_size: optional_ok(maglev_table_size)?,
            affinity_timeout: optional_ok(affinity_timeout)?,
            source_ranges: source_ranges?,
            flow_tracking: flow_tracking?,
            backends: backends?,
            reject_weight: 0,
        };
        if let Some(n) = flow_tracking_node.filter(|_| spec.flow_tracking == FlowTracking::None) {
            if let Err(e) = spec.check_flow_tracking() {
                self.error(n.line, join(&path, "flow_tracking"), e.to_string());
                return None;
            }
            seen.untracked.insert(spec.name.clone(), (index, n.line));
        }
        Some(spec)
    }

    fn service_name(&mut self, node: &Node, field: &str) -> Option<String> {
        let text = self.string(node, field, "a service name")?;
        let bad = text.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'));
        let message = if text.is_empty() {
            format!("the name is empty; {NAME_RULE}")
        } else if let Some(c) = bad {
            format!("{text:?} contains {c:?}; {NAME_RULE}")
        } else if text.len() > MAX_NAME_LEN {
            format!("{text:?} is {} characters long; {NAME_RULE}", text.len())
        } else {
            return Some(text.to_owned());
        };
        self.error(node.line, field, message);
        None
    }

    fn protocol(&mut self, node: &Node, field: &str) -> Option<Protocol> {
        self.choice(node, field, "a protocol", &[("udp", Protocol::Udp), ("tcp", Protocol::Tcp)])
    }

    fn source(&mut self, node: &Node, field: &str) -> Option<SourceMode> {
        self.choice(node, field, "a source mode", &[("snat", SourceMode::Snat), ("preserve", SourceMode::Preserve)])
    }

    /// A Maglev table size: one of the allowed primes.
    fn table_size(&mut self, node: &Node, field: &str) -> Option<u32> {
        let allowed = crate::state::maglev::sizes_list();
        let message = match &node.kind {
            Kind::Scalar { text, plain } => match text.parse::<i128>() {
                Ok(n) if !plain => {
                    format!("\"{n}\" is quoted text; write the table size as a plain integer, one of {allowed}")
                }
                Ok(n) => match crate::state::maglev::SIZES.iter().find(|s| i128::from(**s) == n) {
                    Some(s) => return Some(*s),
                    None => format!(
                        "{n} is not an allowed table size; use one of {allowed} (primes; default {})",
                        crate::state::maglev::DEFAULT_SIZE
                    ),
                },
                Err(e) if matches!(e.kind(), IntErrorKind::PosOverflow | IntErrorKind::NegOverflow) => {
                    format!("{text} is not an allowed table size; use one of {allowed}")
                }
                Err(_) => format!("{node} is not an integer; use a table size, one of {allowed}"),
            },
            _ => format!("expected a table size (one of {allowed}), found {node}"),
        };
        self.error(node.line, field, message);
        None
    }

    fn timeout(&mut self, node: &Node, path: &str, key: &str) -> Option<u32> {
        let what = "a timeout in seconds";
        let (min, max) = (i128::from(*IDLE_TIMEOUT.start()), i128::from(*IDLE_TIMEOUT.end()));
        self.integer(node, &join(path, key), what, min, max).map(|n| n as u32)
    }
}
