//! Every Kubernetes API call the agent makes, in one place: what
//! `deploy/rbac.yaml` must grant, no more and no less.
//!
//! A unit test compares this list with the rules of `deploy/rbac.yaml`
//! (a verb granted but not listed here, or listed but not granted, fails),
//! and the Kubernetes integration tests check that the requests the agent
//! really sends to the (fake) API server match what the file grants (both
//! read the file with [`granted`]). Add a call here together with the code
//! that makes it.

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlLoader};

/// One (API group, resource, verb) the agent uses; `""` is the core group,
/// subresources are written `resource/sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, `resource/sub` for a subresource.
    pub resource: &'static str,
    /// Verb (`get`, `list`, `watch`, ...).
    pub verb: &'static str,
}

const fn call(group: &'static str, resource: &'static str, verb: &'static str) -> ApiCall {
    ApiCall { group, resource, verb }
}

/// The calls, with where they are made.
pub const API_CALLS: &[ApiCall] = &[
    // watch.rs: reflectors (list, then watch) of Services, EndpointSlices
    // and this node's Node.
    call("", "services", "list"),
    call("", "services", "watch"),
    call("discovery.k8s.io", "endpointslices", "list"),
    call("discovery.k8s.io", "endpointslices", "watch"),
    call("", "nodes", "list"),
    call("", "nodes", "watch"),
    // gateway/watch.rs: reflectors on the Gateway API kinds once served
    // (ReferenceGrants as v1 or v1beta1: one resource for RBAC) and on
    // Namespaces (listeners' namespace selectors) along with Gateways.
    call("gateway.networking.k8s.io", "gatewayclasses", "list"),
    call("gateway.networking.k8s.io", "gatewayclasses", "watch"),
    call("gateway.networking.k8s.io", "gateways", "list"),
    call("gateway.networking.k8s.io", "gateways", "watch"),
    call("gateway.networking.k8s.io", "tcproutes", "list"),
    call("gateway.networking.k8s.io", "tcproutes", "watch"),
    call("gateway.networking.k8s.io", "udproutes", "list"),
    call("gateway.networking.k8s.io", "udproutes", "watch"),
    call("gateway.networking.k8s.io", "referencegrants", "list"),
    call("gateway.networking.k8s.io", "referencegrants", "watch"),
    call("", "namespaces", "list"),
    call("", "namespaces", "watch"),
    // gateway/write.rs: merge patches of the statuses.
    call("gateway.networking.k8s.io", "gatewayclasses/status", "patch"),
    call("gateway.networking.k8s.io", "gateways/status", "patch"),
    call("gateway.networking.k8s.io", "tcproutes/status", "patch"),
    call("gateway.networking.k8s.io", "udproutes/status", "patch"),
    // mod.rs write_status: a merge patch of services/status.
    call("", "services/status", "patch"),
    // lease.rs: get_opt (the allocator), create, replace (update; a
    // release too) of the allocator's and the L2 announcers' Leases.
    call("coordination.k8s.io", "leases", "get"),
    call("coordination.k8s.io", "leases", "create"),
    call("coordination.k8s.io", "leases", "update"),
    // announce/lease.rs: a reflector (list, then watch) on the Leases of
    // the agent's namespace (`--announce l2`).
    call("coordination.k8s.io", "leases", "list"),
    call("coordination.k8s.io", "leases", "watch"),
    // events.rs: kube's Recorder creates events.k8s.io/v1 Events, and
    // patches one to count a repeat within its cache time (a series).
    call("events.k8s.io", "events", "create"),
    call("events.k8s.io", "events", "patch"),
];

/// A (API group, resource, verb) an RBAC rule grants, owned.
pub type Grant = (String, String, String);

/// What [`granted`] cannot read.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// The text is not YAML.
    #[error("the RBAC manifests are not valid YAML ({0}): fix the text at that position")]
    Yaml(#[from] yaml_rust2::ScanError),
    /// A ClusterRole or Role without a `rules` list.
    #[error("{kind} {name:?} has no `rules` list: give it `rules:` with apiGroups, resources and verbs")]
    NoRules {
        /// `ClusterRole` or `Role`.
        kind: String,
        /// Its `metadata.name` (empty if none).
        name: String,
    },
}

/// (group, resource, verb) of every rule of the ClusterRoles and Roles in
/// `manifests` (YAML documents as in `deploy/rbac.yaml`; other kinds are
/// skipped).
pub fn granted(manifests: &str) -> Result<BTreeSet<Grant>, RbacError> {
    let docs = YamlLoader::load_from_str(manifests)?;
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for doc in &docs {
        let Some(kind @ ("ClusterRole" | "Role")) = doc["kind"].as_str() else {
            continue;
        };
        let rules = doc["rules"].as_vec().ok_or_else(|| RbacError::NoRules {
            kind: kind.to_string(),
            name: doc["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        })?;
        for rule in rules {
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeSet<Grant> {
        API_CALLS.iter().map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string())).collect()
    }

    #[test]
    fn rbac_yaml_grants_exactly_the_calls_the_agent_makes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("read deploy/rbac.yaml");
        let granted = granted(&text).expect("deploy/rbac.yaml");
        let declared = declared();
        let unused: Vec<_> = granted.difference(&declared).collect();
        let missing: Vec<_> = declared.difference(&granted).collect();
        assert!(
            unused.is_empty() && missing.is_empty(),
            "deploy/rbac.yaml grants verbs the agent never uses: {unused:?}; \
             and misses verbs it uses: {missing:?}"
        );
    }

    #[test]
    fn the_comparison_sees_both_directions() {
        let text = "kind: ClusterRole\nrules:\n  - apiGroups: [\"\"]\n    resources: [services, nodes]\n    verbs: [get, list]\n---\nkind: ServiceAccount\n";
        let g = granted(text).expect("test manifests");
        assert_eq!(g.len(), 4);
        assert!(g.contains(&(String::new(), "nodes".into(), "get".into())));
        let d = declared();
        assert!(g.difference(&d).any(|(_, r, v)| r == "services" && v == "get"), "granted, unused");
        assert!(d.difference(&g).any(|(_, r, v)| r == "services" && v == "watch"), "used, not granted");
    }

    #[test]
    fn a_role_without_rules_and_bad_yaml_are_errors() {
        let e = granted("kind: Role\nmetadata:\n  name: xlb\n").unwrap_err();
        assert!(matches!(&e, RbacError::NoRules { kind, name } if kind == "Role" && name == "xlb"), "{e:?}");
        assert!(matches!(granted("kind: [Role"), Err(RbacError::Yaml(_))));
    }
}
