//! Every Kubernetes API call the agent makes, in one place: what
//! `deploy/rbac.yaml` must grant, no more and no less.
//!
//! A unit test compares this list with the rules of `deploy/rbac.yaml`
//! (a verb granted but not listed here, or listed but not granted, fails),
//! and the Kubernetes integration tests check that the requests the agent
//! really sends to the (fake) API server stay within the list. Add a call
//! here together with the code that makes it.

/// One (API group, resource, verb) the agent uses; `""` is the core group,
/// subresources are written `resource/sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
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
    // mod.rs write_status: a merge patch of services/status.
    call("", "services/status", "patch"),
    // lease.rs: get_opt, create, replace (update) of the allocator Lease.
    call("coordination.k8s.io", "leases", "get"),
    call("coordination.k8s.io", "leases", "create"),
    call("coordination.k8s.io", "leases", "update"),
    // events.rs: kube's Recorder creates events.k8s.io/v1 Events, and
    // patches one to count a repeat within its cache time (a series).
    call("events.k8s.io", "events", "create"),
    call("events.k8s.io", "events", "patch"),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use yaml_rust2::{Yaml, YamlLoader};

    use super::*;

    /// (group, resource, verb) of every rule of the ClusterRoles and Roles
    /// in `text`.
    fn granted(text: &str) -> BTreeSet<(String, String, String)> {
        let docs = YamlLoader::load_from_str(text).expect("rbac.yaml parses");
        let strings = |y: &Yaml| -> Vec<String> {
            y.as_vec()
                .map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mut out = BTreeSet::new();
        for doc in &docs {
            if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
                continue;
            }
            for rule in doc["rules"].as_vec().expect("rules") {
                for g in strings(&rule["apiGroups"]) {
                    for r in strings(&rule["resources"]) {
                        for v in strings(&rule["verbs"]) {
                            out.insert((g.clone(), r.clone(), v));
                        }
                    }
                }
            }
        }
        out
    }

    fn declared() -> BTreeSet<(String, String, String)> {
        API_CALLS
            .iter()
            .map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string()))
            .collect()
    }

    #[test]
    fn rbac_yaml_grants_exactly_the_calls_the_agent_makes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("read deploy/rbac.yaml");
        let granted = granted(&text);
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
        let g = granted(text);
        assert_eq!(g.len(), 4);
        assert!(g.contains(&(String::new(), "nodes".into(), "get".into())));
        let d = declared();
        assert!(g.difference(&d).any(|(_, r, v)| r == "services" && v == "get"), "granted, unused");
        assert!(d.difference(&g).any(|(_, r, v)| r == "services" && v == "watch"), "used, not granted");
    }
}
