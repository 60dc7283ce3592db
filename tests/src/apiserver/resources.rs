//! The resource types the fake API server knows, and the discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]`) built from them.
//!
//! Custom resources (`crd`: the Gateway API's) are generic table entries
//! like the built-in ones, served only while their
//! CustomResourceDefinition (`apiextensions.k8s.io/v1`, named
//! `<plural>.<group>`) is stored: "installing the CRDs" is creating those
//! objects (see `Store::served`), and discovery reflects it.

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
    /// A custom resource: served only while its CustomResourceDefinition
    /// ([`Resource::crd_name`]) is stored, for the versions it serves.
    pub crd: bool,
    /// Other versions served with the same schema (`version` first, the
    /// preferred and stored one; an object read through another has that
    /// version in its `apiVersion`).
    pub also: &'static [&'static str],
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        self.api_version_of(self.version)
    }

    /// `version` or `group/version`.
    pub fn api_version_of(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Every version it is served as, the stored one first.
    pub fn versions(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.version).chain(self.also.iter().copied())
    }

    /// Whether it is served as `version` (when installed).
    pub fn has_version(&self, version: &str) -> bool {
        self.versions().any(|v| v == version)
    }

    /// The name of its CustomResourceDefinition: `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// The Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The group of CustomResourceDefinitions.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

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
        crd: false,
        also: &[],
    }
}

/// `r` as a custom resource (served while its CRD is stored).
const fn custom(r: Resource) -> Resource {
    Resource { crd: true, ..r }
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
    res(
        CRD_GROUP,
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
    ),
    // Gateway API v1.6 standard channel (L4): ReferenceGrant is v1 since
    // v1.5, v1beta1 still served.
    custom(res(GATEWAY_GROUP, "v1", "gatewayclasses", "gatewayclass", "GatewayClass", false, &["gc"], true)),
    custom(res(GATEWAY_GROUP, "v1", "gateways", "gateway", "Gateway", true, &["gtw"], true)),
    custom(res(GATEWAY_GROUP, "v1", "tcproutes", "tcproute", "TCPRoute", true, &[], true)),
    custom(res(GATEWAY_GROUP, "v1", "udproutes", "udproute", "UDPRoute", true, &[], true)),
    Resource {
        also: &["v1beta1"],
        ..custom(res(
            GATEWAY_GROUP,
            "v1",
            "referencegrants",
            "referencegrant",
            "ReferenceGrant",
            true,
            &["refgrant"],
            false,
        ))
    },
];

/// Index into [`RESOURCES`] of the CustomResourceDefinitions.
pub fn crd_resource() -> usize {
    find(CRD_GROUP, "v1", "customresourcedefinitions").expect("customresourcedefinitions are in the table")
}

/// Whether resource `res` (an index into [`RESOURCES`]) is served as
/// `version` now (`Store::served`).
pub type Served<'a> = &'a dyn Fn(usize, &str) -> bool;

/// Index into [`RESOURCES`] of `group/version/plural` (any version it is
/// served as, installed or not).
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.group == group && r.has_version(version) && r.plural == plural)
}

/// Index into [`RESOURCES`] of an object's `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.kind == kind && r.versions().any(|v| r.api_version_of(v) == api_version))
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

/// The groups served now, each with its versions served (the preferred first).
fn groups(served: Served<'_>) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (i, r) in RESOURCES.iter().enumerate().filter(|(_, r)| !r.group.is_empty()) {
        for v in r.versions().filter(|v| served(i, v)) {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) if !vs.contains(&v) => vs.push(v),
                Some(_) => {}
                None => out.push((r.group, vec![v])),
            }
        }
    }
    out
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let all: Vec<Value> = versions.iter().map(|v| gv(v)).collect();
    json!({"name": group, "versions": all, "preferredVersion": gv(versions[0])})
}

/// `/apis`: the APIGroupList (of the groups served now).
pub fn api_group_list(served: Served<'_>) -> Value {
    let gs: Vec<Value> = groups(served).into_iter().map(|(g, v)| group_json(g, &v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/{group}`: one APIGroup, if served.
pub fn api_group(group: &str, served: Served<'_>) -> Option<Value> {
    let (g, v) = groups(served).into_iter().find(|(g, _)| *g == group)?;
    let mut j = group_json(g, &v);
    j["kind"] = json!("APIGroup");
    j["apiVersion"] = json!("v1");
    Some(j)
}

/// `/api/v1` or `/apis/{group}/{version}`: the APIResourceList, if served.
pub fn api_resource_list(group: &str, version: &str, served: Served<'_>) -> Option<Value> {
    let mut list = Vec::new();
    let here = |(i, r): &(usize, &Resource)| r.group == group && r.has_version(version) && served(*i, version);
    for (_, r) in RESOURCES.iter().enumerate().filter(here) {
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
