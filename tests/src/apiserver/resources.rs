//! The resource types the fake API server knows, and the discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]`) built from them.

use serde_json::{json, Value};

/// One kind of object the server stores.
#[derive(Debug)]
pub struct Resource {
    /// API group, `""` for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name as in URLs.
    pub plural: &'static str,
    /// Singular name (discovery).
    pub singular: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Namespaced (`true`) or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Has a `status` subresource (`PUT`/`PATCH .../status` change only
    /// `.status`; the main resource keeps the stored `.status`).
    pub status: bool,
    /// Create clears `.status` (Services do, as the real server does).
    pub clear_status_on_create: bool,
    /// `PUT` must carry `metadata.resourceVersion` (Leases).
    pub require_rv_on_update: bool,
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one argument per field of the object built")]
const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        status,
        clear_status_on_create: false,
        require_rv_on_update: false,
    }
}

/// Every resource served.
pub static RESOURCES: &[Resource] = &[
    Resource { clear_status_on_create: true, ..res("", "v1", "services", "service", "Service", true, &["svc"], true) },
    res("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], false),
    res("", "v1", "nodes", "node", "Node", false, &["no"], true),
    res("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], true),
    res("", "v1", "events", "event", "Event", true, &["ev"], false),
    res("", "v1", "pods", "pod", "Pod", true, &["po"], true),
    res("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false),
    res("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, &[], false),
    res("events.k8s.io", "v1", "events", "event", "Event", true, &["ev"], false),
    Resource {
        require_rv_on_update: true,
        ..res("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, &[], false)
    },
];

/// Index into [`RESOURCES`] of `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Index into [`RESOURCES`] of an object's `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind)
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// `/api`: the core APIVersions.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`: the APIGroupList.
pub fn api_group_list() -> Value {
    let gs: Vec<Value> = groups().into_iter().map(|(g, v)| group_json(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/{group}`: one APIGroup, if served.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let mut j = group_json(g, v);
    j["kind"] = json!("APIGroup");
    j["apiVersion"] = json!("v1");
    Some(j)
}

/// `/api/v1` or `/apis/{group}/{version}`: the APIResourceList, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
        }));
        if r.status {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}
