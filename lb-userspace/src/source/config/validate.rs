//! Walks the marked YAML tree, checks every field and builds the [`Config`].
//! Keeps walking after an error so that one run reports all of them.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::IntErrorKind,
};

use super::{
    yaml::{Kind, Node},
    Config, ConfigError,
};
use crate::state::model::{
    self, check_backend, check_backend_addr, check_snat_address, check_source_range_family, check_vip, BackendSpec,
    Claims, ModelError, Protocol, ServiceSpec, SourceMode, AFFINITY_TIMEOUT, IDLE_TIMEOUT,
};

/// Most services one file may hold (the data path's limit).
const MAX_SERVICES: usize = model::rules::MAX_SERVICES;
/// Longest service name.
const MAX_NAME_LEN: usize = 63;
/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

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
    "backends",
];
const BACKEND_KEYS: &[&str] = &["address", "weight"];

const NAME_RULE: &str = "use 1 to 63 characters from a-z, 0-9 and -";
const BACKEND_FORMS: &str = "use ip:port, or [v6addr]:port for IPv6";

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

/// `path.key`, or `key` at the top level.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping value and the line of its key.
struct Entry<'n> {
    key_line: usize,
    value: &'n Node,
}

/// The checked keys of one mapping.
struct Fields<'n> {
    /// Line of the mapping itself (for missing keys).
    line: usize,
    /// Field path of the mapping.
    path: String,
    entries: HashMap<&'n str, Entry<'n>>,
}

impl<'n> Fields<'n> {
    /// The value of `key`, or `None` if it is absent or null.
    fn optional(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).map(|e| e.value).filter(|v| !v.is_null())
    }

    /// The value of `key`; reports it as missing (with `hint`) otherwise.
    fn required(&self, walker: &mut Walker, key: &str, hint: &str) -> Option<&'n Node> {
        let field = join(&self.path, key);
        match self.entries.get(key) {
            None => walker.error(self.line, field, format!("missing required key {key}; {hint}")),
            Some(e) if e.value.is_null() => {
                walker.error(e.key_line, field, format!("{key} has no value; {hint}"));
            }
            Some(e) => return Some(e.value),
        }
        None
    }
}

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
}

/// Collects errors while walking.
struct Walker<'f> {
    file: &'f str,
    errors: Vec<ConfigError>,
}

impl Walker<'_> {
    fn error(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Checks that `node` is a mapping with only `allowed` keys, each once.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str], what: &str) -> Option<Fields<'n>> {
        let Kind::Map(pairs) = &node.kind else {
            let field = if path.is_empty() { "file" } else { path };
            self.error(node.line, field, format!("expected {what}, found {node}"));
            return None;
        };
        let mut fields = Fields { line: node.line, path: path.to_owned(), entries: HashMap::new() };
        for (key, value) in pairs {
            let Some(name) = key.scalar() else {
                let field = if path.is_empty() { "file" } else { path };
                let message = format!("a key must be a plain word, found {key}");
                self.error(key.line, field, message);
                continue;
            };
            let field = join(path, name);
            if !allowed.contains(&name) {
                let message = format!("unknown key {name:?}; allowed keys are {}", allowed.join(", "));
                self.error(key.line, field, message);
            } else if let Some(first) = fields.entries.get(name) {
                let message = format!("{name} is given twice (first on line {}); give each key once", first.key_line);
                self.error(key.line, field, message);
            } else {
                fields.entries.insert(name, Entry { key_line: key.line, value });
            }
        }
        Some(fields)
    }

    /// The text of a non-null scalar; reports other nodes as not `what`.
    fn string<'n>(&mut self, node: &'n Node, field: &str, what: &str) -> Option<&'n str> {
        let text = node.scalar();
        if text.is_none() {
            self.error(node.line, field, format!("expected {what}, found {node}"));
        }
        text
    }

    /// A plain integer in `min..=max`; `what` names it for messages.
    fn integer(&mut self, node: &Node, field: &str, what: &str, min: i128, max: i128) -> Option<i128> {
        let range = format!("{min}..={max}");
        let Kind::Scalar { text, plain } = &node.kind else {
            self.error(node.line, field, format!("expected {what} in {range}, found {node}"));
            return None;
        };
        let message = match text.parse::<i128>() {
            Ok(n) if !plain => {
                format!("\"{n}\" is quoted text; write {what} as a plain integer in {range}")
            }
            Ok(n) if (min..=max).contains(&n) => return Some(n),
            Ok(n) => format!("{n} is outside {range}"),
            Err(e) if matches!(e.kind(), IntErrorKind::PosOverflow | IntErrorKind::NegOverflow) => {
                format!("{text} is outside {range}")
            }
            Err(_) => format!("{node} is not an integer; use {what} in {range}"),
        };
        self.error(node.line, field, message);
        None
    }

    /// An IPv4 or IPv6 address.
    fn ip(&mut self, node: &Node, field: &str) -> Option<IpAddr> {
        let text = self.string(node, field, "an IPv4 or IPv6 address")?;
        let ip = text.parse().ok();
        if ip.is_none() {
            let message = format!(
                "{text:?} is not an IP address; use an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10"
            );
            self.error(node.line, field, message);
        }
        ip
    }

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

    fn interfaces(&mut self, node: &Node) -> Vec<String> {
        let Kind::Seq(items) = &node.kind else {
            let message = format!("expected a list of interface names such as [eth0], found {node}");
            self.error(node.line, "interfaces", message);
            return Vec::new();
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            let Some(name) = self.string(item, &field, "an interface name") else {
                continue;
            };
            if let Some(message) = ifname_problem(name) {
                self.error(item.line, field, message);
            } else if let Some(first) = seen.get(name) {
                let message = format!("{name:?} is already listed as interfaces[{first}]; list each interface once");
                self.error(item.line, field, message);
            } else {
                seen.insert(name, i);
                out.push(name.to_owned());
            }
        }
        out
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

        Some(ServiceSpec {
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
            backends: backends?,
        })
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
        match self.string(node, field, "a protocol (udp or tcp)")? {
            "udp" => Some(Protocol::Udp),
            "tcp" => Some(Protocol::Tcp),
            other => {
                self.error(node.line, field, format!("{other:?} is not a protocol; use udp or tcp"));
                None
            }
        }
    }

    fn source(&mut self, node: &Node, field: &str) -> Option<SourceMode> {
        match self.string(node, field, "a source mode (snat or preserve)")? {
            "snat" => Some(SourceMode::Snat),
            "preserve" => Some(SourceMode::Preserve),
            other => {
                let message = format!("{other:?} is not a source mode; use snat or preserve");
                self.error(node.line, field, message);
                None
            }
        }
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

    /// The `source_ranges` of the service at `path`: CIDRs (or single
    /// addresses) of the VIP's family, without host bits, each once.
    fn source_ranges(&mut self, node: &Node, path: &str, vip: Option<IpAddr>) -> Option<Vec<ipnet::IpNet>> {
        let field = join(path, "source_ranges");
        let Kind::Seq(items) = &node.kind else {
            let message = format!("expected a list of CIDRs such as [203.0.113.0/24, \"2001:db8::/32\"], found {node}");
            self.error(node.line, field, message);
            return None;
        };
        if items.is_empty() {
            let message = "an empty list would admit every client (as Kubernetes' empty \
                 loadBalancerSourceRanges does), which reads as if it admitted none; \
                 remove source_ranges to admit every client, or list the ranges to admit";
            self.error(node.line, field, message);
            return None;
        }
        let mut ok = true;
        let mut seen: Claims<ipnet::IpNet, usize> = Claims::default();
        let mut out = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{j}]");
            let Some(text) = self.string(item, &item_field, "a CIDR such as 203.0.113.0/24") else {
                ok = false;
                continue;
            };
            let net = match parse_cidr(text) {
                Ok(net) => net,
                Err(message) => {
                    self.error(item.line, item_field, message);
                    ok = false;
                    continue;
                }
            };
            if let Some(Err(e)) = vip.map(|vip| check_source_range_family(net, vip)) {
                self.error(item.line, item_field, e.to_string());
                ok = false;
            } else if let Err(first) = seen.claim(net, j) {
                let message = format!("{net} is already listed as {field}[{first}]; list each range once");
                self.error(item.line, item_field, message);
                ok = false;
            } else {
                out.push(net);
            }
        }
        ok.then_some(out)
    }

    /// The backend list of the service at `path`; `vip` (if valid) sets the
    /// family, and with `port` names the one backend that would be a loop.
    fn backends(
        &mut self,
        node: &Node,
        path: &str,
        vip: Option<IpAddr>,
        port: Option<u16>,
    ) -> Option<Vec<BackendSpec>> {
        let field = join(path, "backends");
        let Kind::Seq(items) = &node.kind else {
            let message = format!("expected a list of backends, found {node}");
            self.error(node.line, field, message);
            return None;
        };
        let mut ok = true;
        let mut seen: Claims<SocketAddr, usize> = Claims::default();
        let mut out = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let item_path = format!("{field}[{j}]");
            let Some((backend, line, addr_field)) = self.backend(item, &item_path) else {
                ok = false;
                continue;
            };
            let addr = backend.addr;
            // Without a valid vip, only the address itself is checked (a
            // backend's port is never 0, so no loop without a valid port).
            let checked = match vip {
                Some(vip) => check_backend(addr, vip, port.unwrap_or(0)),
                None => check_backend_addr(addr, addr.ip(), 0),
            };
            if let Err(e) = checked {
                self.error(line, addr_field, e.to_string());
                ok = false;
            } else if let Err(first) = seen.claim(addr, j) {
                let message = format!("{addr} is already listed as {field}[{first}]; list each backend once");
                self.error(line, addr_field, message);
                ok = false;
            } else {
                out.push(backend);
            }
        }
        ok.then_some(out)
    }

    /// One backend, the line of its address and the address's field path.
    fn backend(&mut self, node: &Node, path: &str) -> Option<(BackendSpec, usize, String)> {
        if let Some(text) = node.scalar() {
            let addr = self.backend_addr(text, node.line, path)?;
            return Some((BackendSpec { addr, weight: 1 }, node.line, path.to_owned()));
        }
        let what = "a backend: \"ip:port\" or {address: \"ip:port\", weight: N}";
        match &node.kind {
            Kind::Map(pairs) => {
                if let Some(message) = misread_backend(pairs) {
                    self.error(node.line, path, message);
                    return None;
                }
            }
            Kind::Seq(_) => {
                let message = format!("expected {what}, found a list; quote IPv6 backends, e.g. \"[2001:db8::5]:53\"");
                self.error(node.line, path, message);
                return None;
            }
            Kind::Scalar { .. } => {
                self.error(node.line, path, format!("expected {what}, found {node}"));
                return None;
            }
        }
        let f = self.mapping(node, path, BACKEND_KEYS, what)?;
        let addr_field = join(path, "address");
        let addr = f.required(self, "address", BACKEND_FORMS).and_then(|n| {
            let text = self.string(n, &addr_field, "a backend address (ip:port)")?;
            Some((self.backend_addr(text, n.line, &addr_field)?, n.line))
        });
        let weight = match f.optional("weight") {
            Some(n) => self.integer(n, &join(path, "weight"), "a weight", 0, 65535),
            None => Some(1),
        };
        let (addr, line) = addr?;
        Some((BackendSpec { addr, weight: weight? as u16 }, line, addr_field))
    }

    fn backend_addr(&mut self, text: &str, line: usize, field: &str) -> Option<SocketAddr> {
        match parse_backend_addr(text) {
            Ok(addr) => Some(addr),
            Err(message) => {
                self.error(line, field, message);
                None
            }
        }
    }
}

/// An optional field's outcome: absent (`None`) is fine, given but invalid
/// (`Some(None)`) fails, given and valid yields the value.
#[expect(clippy::option_option, reason = "absent, invalid or valid: three outcomes")]
fn optional_ok<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    match field {
        None => Some(None),
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
    }
}

/// Explains a plain `ip: port` (or `ip:` at a line end), which YAML reads
/// as a one-entry mapping rather than as the string "ip:port".
fn misread_backend(pairs: &[(Node, Node)]) -> Option<String> {
    let [(key, value)] = pairs else {
        return None;
    };
    let ip: IpAddr = key.scalar()?.parse().ok()?;
    let hint = SocketAddr::new(ip, 0).to_string();
    let hint = hint.trim_end_matches('0');
    Some(match value.scalar() {
        None if value.is_null() => format!("\"{ip}:\" has no port; write it as {hint}PORT"),
        Some(port) => {
            format!("\"{ip}: {port}\" is read as a mapping; write the backend as {hint}{port}, without a space")
        }
        None => format!("expected a backend \"ip:port\", found a mapping with key {ip}"),
    })
}

/// Parses "ip:port" / "[v6addr]:port", explaining what is wrong otherwise.
fn parse_backend_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("port 0 in {text:?} is outside 1..=65535"));
        }
        return Ok(addr);
    }
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let with_port = SocketAddr::new(ip, 0).to_string();
        let hint = with_port.trim_end_matches('0');
        return Err(format!("{text:?} has no port; write it as {hint}PORT"));
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => host.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        if host_ok && port.is_empty() {
            return Err(format!("{text:?} has no port; write it as {host}:PORT"));
        }
        if host_ok && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("port {port} in {text:?} is outside 1..=65535"));
        }
    }
    Err(format!("{text:?} is not a backend address; {BACKEND_FORMS}"))
}

/// Parses a source range: "ip/len", or a bare address (one host). Host bits
/// must be zero, so that a typo such as 10.1.2.0/16 is not silently widened.
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let rule = "use a CIDR such as 203.0.113.0/24 or 2001:db8::/32, or a single address";
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    let Some((addr, len)) = text.split_once('/') else {
        return Err(format!("{text:?} is not a CIDR; {rule}"));
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err(format!("{addr:?} in {text:?} is not an IP address; {rule}"));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len.parse::<u8>() {
        Ok(n) if n <= max => n,
        _ => return Err(format!("prefix length {len:?} in {text:?} is outside 0..={max}")),
    };
    let net = ipnet::IpNet::new(ip, len).expect("length checked");
    if net.trunc() != net {
        let host = if ip.is_ipv4() { 32 } else { 128 };
        return Err(format!(
            "{text} has host bits set; write the network {} (or {ip}/{host} for this one address)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Why `name` cannot be a Linux interface name, if it cannot.
fn ifname_problem(name: &str) -> Option<String> {
    let rule = "use a Linux interface name of 1 to 15 bytes without /, : or whitespace";
    if name.is_empty() {
        Some(format!("the interface name is empty; {rule}"))
    } else if name.len() > MAX_IFNAME_LEN {
        Some(format!("{name:?} is {} bytes long; {rule}", name.len()))
    } else if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace()) {
        Some(format!("{name:?} contains {c:?}; {rule}"))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not an interface name; {rule}"))
    } else {
        None
    }
}
