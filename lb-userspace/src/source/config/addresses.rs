//! The address-like fields of a service and the top level: backends,
//! source ranges and interface names, with the text forms they are written in.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use super::{
    walk::{join, Walker},
    yaml::{Kind, Node},
};
use crate::state::model::{check_backend, check_backend_addr, check_source_range_family, BackendSpec, Claims};

const BACKEND_KEYS: &[&str] = &["address", "weight"];
const BACKEND_FORMS: &str = "use ip:port, or [v6addr]:port for IPv6";
/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

impl Walker<'_> {
    /// The `interfaces` list: valid Linux interface names, each once.
    pub(super) fn interfaces(&mut self, node: &Node) -> Vec<String> {
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

    /// The `source_ranges` of the service at `path`: CIDRs (or single
    /// addresses) of the VIP's family, without host bits, each once.
    pub(super) fn source_ranges(&mut self, node: &Node, path: &str, vip: Option<IpAddr>) -> Option<Vec<ipnet::IpNet>> {
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
    pub(super) fn backends(
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
