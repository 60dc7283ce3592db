//! URL paths of the resources the tests use.

/// Percent-encodes a query value (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL path of a resource: `/api/v1/...` for `api_version` `v1`, else
/// `/apis/<api_version>/...`, with `namespaces/<ns>/` when `ns` is given and
/// `/<name>` when `name` is.
pub fn api_path(api_version: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = if api_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{api_version}") };
    if let Some(ns) = ns {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// `/api/v1[/namespaces/<ns>]/services`.
pub fn services_path(ns: Option<&str>) -> String {
    api_path("v1", "services", ns, None)
}

/// `/api/v1/namespaces/<ns>/services/<name>`.
pub fn service_path(ns: &str, name: &str) -> String {
    api_path("v1", "services", Some(ns), Some(name))
}

/// `/apis/discovery.k8s.io/v1[/namespaces/<ns>]/endpointslices`.
pub fn endpointslices_path(ns: Option<&str>) -> String {
    api_path("discovery.k8s.io/v1", "endpointslices", ns, None)
}

/// `/apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices/<name>`.
pub fn endpointslice_path(ns: &str, name: &str) -> String {
    api_path("discovery.k8s.io/v1", "endpointslices", Some(ns), Some(name))
}

/// `/api/v1/nodes`.
pub fn nodes_path() -> String {
    api_path("v1", "nodes", None, None)
}

/// `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>]`.
pub fn leases_path(ns: &str, name: Option<&str>) -> String {
    api_path("coordination.k8s.io/v1", "leases", Some(ns), name)
}

/// `/apis/events.k8s.io/v1[/namespaces/<ns>]/events`.
pub fn events_path(ns: Option<&str>) -> String {
    api_path("events.k8s.io/v1", "events", ns, None)
}
