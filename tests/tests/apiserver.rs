//! The fake Kubernetes API server (`xlb-fake-apiserver`) against the
//! protocol: list/watch with resourceVersions, selectors, bookmarks, 410
//! after compaction, optimistic concurrency, the status subresource; and
//! against the real client, `kubectl`. Needs root (network namespaces).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xlb_tests::k8s::{
    self, endpoint, endpoint_slice, kubectl, lb_service, query_escape, service_path, services_path, ApiServer,
    KubeClient, WatchStream,
};
use xlb_tests::Topology;

const WAIT: Duration = Duration::from_secs(5);

fn setup() -> (Topology, ApiServer, KubeClient) {
    xlb_tests::require_root().expect("root");
    let topo = Topology::new(0).expect("topology");
    let api = ApiServer::start(&topo.node).expect("start the fake API server");
    let client = api.client();
    (topo, api, client)
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {obj}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn next(w: &mut WatchStream) -> Value {
    w.next_event(WAIT).expect("watch event").expect("the stream ended early")
}

/// Next event that is not a bookmark.
fn next_change(w: &mut WatchStream) -> Value {
    loop {
        let e = next(w);
        if e["type"] != "BOOKMARK" {
            return e;
        }
    }
}

#[test]
fn watch_sees_added_modified_deleted_in_order() {
    let (_topo, _api, c) = setup();
    let list = c.list(&services_path(None)).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["apiVersion"], "v1");
    let start = rv(&list);
    let mut w = c.watch(&format!("{}?resourceVersion={start}", services_path(None))).unwrap();
    let svc = lb_service("default", "dns").port("dns", 53, "UDP").build();
    let created = c.create(&services_path(Some("default")), &svc).unwrap();
    assert!(rv(&created) > start);
    assert!(!created["metadata"]["uid"].as_str().unwrap().is_empty());
    let patched = c.merge_patch(&service_path("default", "dns"), &json!({"metadata": {"labels": {"a": "b"}}})).unwrap();
    let deleted = c.delete(&service_path("default", "dns")).unwrap();
    let evs: Vec<Value> = (0..3).map(|_| next_change(&mut w)).collect();
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    let rvs: Vec<u64> = evs.iter().map(|e| rv(&e["object"])).collect();
    assert_eq!(rvs, [rv(&created), rv(&patched), rv(&deleted)]);
    assert!(rvs.windows(2).all(|p| p[0] < p[1]), "{rvs:?}");
    assert_eq!(evs[0]["object"]["kind"], "Service");
    assert_eq!(evs[1]["object"]["metadata"]["labels"]["a"], "b");
    assert_eq!(c.get(&service_path("default", "dns")).unwrap_err().code, 404);

    // A watch without resourceVersion starts with the current objects.
    c.create(&services_path(Some("ns1")), &lb_service("ns1", "x").build()).unwrap();
    let mut w = c.watch(&services_path(None)).unwrap();
    let e = next_change(&mut w);
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("x")));
    // A namespaced watch sees only its namespace.
    let mut w2 = c.watch(&services_path(Some("ns2"))).unwrap();
    c.create(&services_path(Some("ns1")), &lb_service("ns1", "y").build()).unwrap();
    c.create(&services_path(Some("ns2")), &lb_service("ns2", "z").build()).unwrap();
    assert_eq!(next_change(&mut w2)["object"]["metadata"]["name"], "z");
    assert_eq!(next_change(&mut w)["object"]["metadata"]["name"], "y");
}

#[test]
fn selectors_filter_lists_and_watches() {
    let (_topo, _api, c) = setup();
    let slices = k8s::endpointslices_path(Some("default"));
    for (name, svc) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b")] {
        let s = endpoint_slice("default", name, svc)
            .endpoint(endpoint("10.1.0.2").node("node1"))
            .port("dns", 53, "UDP")
            .build();
        c.create(&slices, &s).unwrap();
    }
    let sel = |s: &str| {
        let all = k8s::endpointslices_path(None);
        names(&c.list(&format!("{all}?labelSelector={}", query_escape(s))).unwrap())
    };
    assert_eq!(sel("kubernetes.io/service-name=a"), ["a-1", "a-2"]);
    assert_eq!(sel("kubernetes.io/service-name==b"), ["b-1"]);
    assert_eq!(sel("kubernetes.io/service-name!=a"), ["b-1"]);
    assert_eq!(sel("kubernetes.io/service-name in (a, b)"), ["a-1", "a-2", "b-1"]);
    assert_eq!(sel("kubernetes.io/service-name notin (a)"), ["b-1"]);
    assert_eq!(sel("kubernetes.io/service-name"), ["a-1", "a-2", "b-1"]);
    assert!(sel("!kubernetes.io/service-name").is_empty());
    assert_eq!(c.list(&format!("{slices}?labelSelector={}", query_escape("a b"))).unwrap_err().code, 400);

    // Watch with a selector: relabelling out is DELETED, back in is ADDED.
    let list = c.list(&slices).unwrap();
    let q = query_escape("kubernetes.io/service-name=a");
    let mut w = c.watch(&format!("{slices}?labelSelector={q}&resourceVersion={}", rv(&list))).unwrap();
    let path = k8s::endpointslice_path("default", "a-2");
    let relabel =
        |to: &str| c.merge_patch(&path, &json!({"metadata": {"labels": {"kubernetes.io/service-name": to}}})).unwrap();
    relabel("b");
    c.merge_patch(&k8s::endpointslice_path("default", "b-1"), &json!({"metadata": {"labels": {"x": "1"}}})).unwrap();
    relabel("a");
    c.merge_patch(
        &k8s::endpointslice_path("default", "a-1"),
        &json!({"addressType": "IPv4", "metadata": {"labels": {"y": "1"}}}),
    )
    .unwrap();
    let got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let e = next_change(&mut w);
            (e["type"].as_str().unwrap().to_string(), e["object"]["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    let want = [("DELETED", "a-2"), ("ADDED", "a-2"), ("MODIFIED", "a-1")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));

    // Field selectors on a cluster-scoped resource.
    c.create(&k8s::nodes_path(), &k8s::node("node1", "10.100.0.1")).unwrap();
    c.create(&k8s::nodes_path(), &k8s::node("node2", "10.100.0.9")).unwrap();
    let l = c.list(&format!("{}?fieldSelector={}", k8s::nodes_path(), query_escape("metadata.name=node2"))).unwrap();
    assert_eq!(names(&l), ["node2"]);
    assert_eq!(l["items"][0]["status"]["addresses"][0]["address"], "10.100.0.9");
    let mut w =
        c.watch(&format!("{}?fieldSelector={}", k8s::nodes_path(), query_escape("metadata.name=node1"))).unwrap();
    assert_eq!(next_change(&mut w)["object"]["metadata"]["name"], "node1");
    c.merge_patch(&format!("{}/node2", k8s::nodes_path()), &json!({"metadata": {"labels": {"z": "1"}}})).unwrap();
    c.merge_patch(&format!("{}/node1", k8s::nodes_path()), &json!({"metadata": {"labels": {"z": "1"}}})).unwrap();
    let e = next_change(&mut w);
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("MODIFIED"), Some("node1")));
}

#[test]
fn bookmarks_timeouts_and_closed_watches() {
    let (_topo, api, c) = setup();
    let list = c.list(&services_path(None)).unwrap();
    let mut w =
        c.watch(&format!("{}?allowWatchBookmarks=true&resourceVersion={}", services_path(None), rv(&list))).unwrap();
    let first = next(&mut w);
    assert_eq!(first["type"], "BOOKMARK");
    assert_eq!(first["object"]["kind"], "Service");
    assert_eq!(first["object"]["apiVersion"], "v1");
    assert_eq!(rv(&first["object"]), rv(&list));
    let created = c.create(&services_path(Some("default")), &lb_service("default", "s").build()).unwrap();
    assert_eq!(next(&mut w)["type"], "ADDED");
    // The periodic bookmark carries the latest version.
    let t0 = Instant::now();
    let bm = next(&mut w);
    assert_eq!(bm["type"], "BOOKMARK");
    // Bookmarks come every second; the bound allows for the server thread
    // being scheduled late on a loaded 2-core machine (it measures the
    // machine, not the server), and still tells a periodic bookmark from
    // none (the read waits `WAIT`).
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(3), "the periodic bookmark came after {waited:?}");
    assert_eq!(rv(&bm["object"]), rv(&created));

    // timeoutSeconds ends the stream.
    let mut t = c.watch(&format!("{}?timeoutSeconds=1", services_path(None))).unwrap();
    let t0 = Instant::now();
    assert_eq!(next(&mut t)["type"], "ADDED");
    assert!(t.next_event(WAIT).unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_secs(3));

    // close-watches ends every stream.
    api.close_watches().unwrap();
    let end = loop {
        match w.next_event(WAIT).unwrap() {
            Some(e) if e["type"] == "BOOKMARK" => {}
            other => break other,
        }
    };
    assert!(end.is_none(), "{end:?}");
    let counts = api.request_counts().unwrap();
    assert_eq!(counts.get("watch v1/services"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("list v1/services"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("create v1/services"), Some(&1), "{counts:?}");
}

#[test]
fn compaction_and_restart_give_410_gone() {
    let (_topo, mut api, c) = setup();
    let ns = services_path(Some("default"));
    let old = rv(&c.list(&services_path(None)).unwrap());
    c.create(&ns, &lb_service("default", "a").build()).unwrap();
    // Before compaction the old version can still be watched from.
    let mut w = c.watch(&format!("{}?resourceVersion={old}", services_path(None))).unwrap();
    assert_eq!(next(&mut w)["type"], "ADDED");
    api.compact().unwrap();
    let expired = |c: &KubeClient, from: u64| {
        let mut w = c.watch(&format!("{}?resourceVersion={from}", services_path(None))).unwrap();
        let e = next(&mut w);
        assert_eq!(e["type"], "ERROR", "{e}");
        assert_eq!(e["object"]["kind"], "Status");
        assert_eq!(e["object"]["code"], 410);
        assert_eq!(e["object"]["reason"], "Expired");
        assert!(e["object"]["message"].as_str().unwrap().starts_with("too old resource version"));
        assert!(w.next_event(WAIT).unwrap().is_none(), "the stream must end after the 410");
    };
    expired(&c, old);
    // From the current version it works.
    let now = rv(&c.list(&services_path(None)).unwrap());
    let mut w = c.watch(&format!("{}?resourceVersion={now}", services_path(None))).unwrap();
    c.create(&ns, &lb_service("default", "b").build()).unwrap();
    assert_eq!(next(&mut w)["object"]["metadata"]["name"], "b");

    // A restart keeps the objects (given the snapshot) with new versions.
    let snap = api.snapshot().unwrap();
    let port = api.addr().port();
    let before = c.get(&service_path("default", "a")).unwrap();
    api.restart(Some(&snap), 1000).unwrap();
    assert_eq!(api.addr().port(), port);
    assert!(w.next_event(WAIT).unwrap().is_none(), "a killed server ends the stream");
    let after = c.get(&service_path("default", "a")).unwrap();
    assert!(rv(&after) >= 1000);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["metadata"]["creationTimestamp"], before["metadata"]["creationTimestamp"]);
    assert_eq!(names(&c.list(&ns).unwrap()), ["a", "b"]);
    expired(&c, now);
    // A stopped server refuses connections.
    api.stop();
    assert_eq!(c.get(&ns).unwrap_err().code, 0);
    api.restart(None, 1).unwrap();
    assert!(names(&c.list(&ns).unwrap()).is_empty());
}

#[test]
fn optimistic_concurrency_and_create_semantics() {
    let (_topo, _api, c) = setup();
    let ns = services_path(Some("default"));
    let path = service_path("default", "a");
    let created = c.create(&ns, &lb_service("default", "a").created("2020-01-02T03:04:05Z").build()).unwrap();
    assert_eq!(created["metadata"]["creationTimestamp"], "2020-01-02T03:04:05Z");
    assert_eq!(created["metadata"]["namespace"], "default");
    let dup = c.create(&ns, &lb_service("default", "a").build()).unwrap_err();
    assert_eq!((dup.code, dup.reason()), (409, "AlreadyExists"));
    let mut put = created.clone();
    put["spec"]["sessionAffinity"] = json!("ClientIP");
    let updated = c.replace(&path, &put).unwrap();
    assert!(rv(&updated) > rv(&created));
    assert_eq!(updated["metadata"]["generation"], 2);
    let stale = c.replace(&path, &put).unwrap_err();
    assert_eq!((stale.code, stale.reason()), (409, "Conflict"));
    assert_eq!(stale.body["kind"], "Status");
    assert_eq!(stale.body["details"]["name"], "a");
    // A merge patch with a stale resourceVersion is refused too.
    let p = json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"x": "y"}}});
    assert_eq!(c.merge_patch(&path, &p).unwrap_err().code, 409);
    // JSON patch and server-side apply.
    let j = c
        .json_patch(
            &path,
            &json!([{"op": "add", "path": "/metadata/labels", "value": {"j": "1"}},
                                   {"op": "replace", "path": "/spec/sessionAffinity", "value": "None"}]),
        )
        .unwrap();
    assert_eq!(j["metadata"]["labels"]["j"], "1");
    assert_eq!(j["spec"]["sessionAffinity"], "None");
    let applied = c.apply(&service_path("default", "new"), &lb_service("default", "new").build(), "xlb").unwrap();
    assert_eq!(applied["metadata"]["name"], "new");
    // generateName.
    let g = c
        .create(
            &k8s::events_path(Some("default")),
            &json!({"metadata": {"generateName": "ev-"}, "reason": "R", "note": "n",
                        "eventTime": "2020-01-01T00:00:00.000000Z", "action": "A",
                        "reportingController": "x", "reportingInstance": "y"}),
        )
        .unwrap();
    assert!(g["metadata"]["name"].as_str().unwrap().starts_with("ev-"));
    assert_eq!(g["kind"], "Event");
    assert_eq!(g["apiVersion"], "events.k8s.io/v1");
    // Not found, wrong namespace, bad JSON, unknown resource, wrong method.
    assert_eq!(c.get(&service_path("default", "zz")).unwrap_err().reason(), "NotFound");
    assert_eq!(c.create(&ns, &lb_service("other", "q").build()).unwrap_err().code, 400);
    assert_eq!(c.request("POST", &ns, None, Some(&json!("x"))).unwrap_err().code, 400);
    assert_eq!(c.get("/api/v1/frobs").unwrap_err().code, 404);
    assert_eq!(c.request("PUT", &ns, None, Some(&json!({}))).unwrap_err().code, 405);

    // Leases: PUT needs the resourceVersion, and a stale one conflicts.
    let leases = k8s::leases_path("xlb-system", None);
    let lease_path = k8s::leases_path("xlb-system", Some("xlb-vip-allocator"));
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "xlb-vip-allocator"},
        "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 15}});
    let l1 = c.create(&leases, &lease).unwrap();
    let mut no_rv = l1.clone();
    no_rv["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    assert_eq!(c.replace(&lease_path, &no_rv).unwrap_err().code, 422);
    let mut take = l1.clone();
    take["spec"]["holderIdentity"] = json!("node2");
    let l2 = c.replace(&lease_path, &take).unwrap();
    assert_eq!(l2["spec"]["holderIdentity"], "node2");
    let mut steal = l1.clone();
    steal["spec"]["holderIdentity"] = json!("node3");
    assert_eq!(c.replace(&lease_path, &steal).unwrap_err().reason(), "Conflict");
    assert_eq!(c.get(&lease_path).unwrap()["spec"]["holderIdentity"], "node2");
}

#[test]
fn status_subresource_semantics() {
    let (_topo, _api, c) = setup();
    let path = service_path("default", "a");
    let mut svc = lb_service("default", "a").port("", 80, "TCP").build();
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
    let created = c.create(&services_path(Some("default")), &svc).unwrap();
    assert_eq!(created["status"], json!({"loadBalancer": {}}), "create clears the status");
    let mut w = c.watch(&format!("{}?resourceVersion={}", services_path(None), rv(&created))).unwrap();
    // PUT and PATCH of the main resource keep the stored status.
    let mut put = created.clone();
    put["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}});
    put["spec"]["loadBalancerIP"] = json!("192.0.2.3");
    let u = c.replace(&path, &put).unwrap();
    assert_eq!(u["status"], json!({"loadBalancer": {}}));
    assert_eq!(u["spec"]["loadBalancerIP"], "192.0.2.3");
    // The status subresource changes only the status.
    let s = c
        .patch_status(
            &path,
            &json!({"spec": {"loadBalancerIP": "192.0.2.99"},
                                     "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.4"}]}}}),
        )
        .unwrap();
    assert_eq!(s["spec"]["loadBalancerIP"], "192.0.2.3");
    assert_eq!(s["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.4");
    assert_eq!(s["metadata"]["generation"], u["metadata"]["generation"]);
    let mut sput = s.clone();
    sput["status"]["loadBalancer"]["ingress"][0]["ip"] = json!("192.0.2.5");
    sput["spec"]["loadBalancerIP"] = json!("192.0.2.98");
    let s2 = c.replace(&format!("{path}/status"), &sput).unwrap();
    assert_eq!(s2["spec"]["loadBalancerIP"], "192.0.2.3");
    assert_eq!(s2["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.5");
    assert_eq!(c.get(&format!("{path}/status")).unwrap(), s2);
    // Writing the same status again is not a change.
    let same = c.patch_status(&path, &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.5"}]}}})).unwrap();
    assert_eq!(rv(&same), rv(&s2));
    let evs = w.events_for(Duration::from_millis(500)).unwrap();
    let rvs: Vec<u64> = evs.iter().map(|e| rv(&e["object"])).collect();
    assert_eq!(rvs, [rv(&u), rv(&s), rv(&s2)]);
    assert!(evs.iter().all(|e| e["type"] == "MODIFIED"));
    // Resources without a status subresource have no /status path.
    let eps = k8s::endpointslice_path("default", "x");
    assert_eq!(c.get(&format!("{eps}/status")).unwrap_err().code, 404);
}

/// Runs kubectl and returns its stdout, failing with its stderr.
fn kubectl_ok(api: &ApiServer, args: &[&str]) -> String {
    let out = kubectl(api, args).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.status.success(),
        "kubectl {} failed ({}): {}\nserver log:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        api.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_agrees_with_the_fake_server() {
    let kubectl_bin = k8s::kubectl_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let (_topo, api, c) = setup();
    let dir = api.kubeconfig().parent().unwrap().to_path_buf();
    let svc = lb_service("default", "dns")
        .port("dns", 53, "UDP")
        .port("tcp", 53, "TCP")
        .external_traffic_policy("Local")
        .health_check_node_port(30053)
        .annotation("xlb.io/vip", "192.0.2.10")
        .build();
    std::fs::write(dir.join("svc.json"), serde_json::to_vec_pretty(&svc).unwrap()).unwrap();
    std::fs::write(
        dir.join("eps.yaml"),
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: dns-abc\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: dns\naddressType: IPv4\n\
         endpoints:\n- addresses: [\"10.1.0.2\"]\n  nodeName: node1\n  conditions: {ready: true, serving: true, terminating: false}\n\
         ports:\n- name: dns\n  port: 53\n  protocol: UDP\n",
    )
    .unwrap();
    let svc_file = dir.join("svc.json");
    let eps_file = dir.join("eps.yaml");
    let out = kubectl_ok(
        &api,
        &["create", "--validate=false", "-f", svc_file.to_str().unwrap(), "-f", eps_file.to_str().unwrap()],
    );
    assert!(out.contains("service/dns created"), "{out}");
    assert!(out.contains("endpointslice.discovery.k8s.io/dns-abc created"), "{out}");

    // kubectl sees what the server stores, and the server what kubectl sent.
    let got: Value = serde_json::from_str(&kubectl_ok(&api, &["get", "svc", "-A", "-o", "json"])).unwrap();
    assert_eq!(got["items"].as_array().unwrap().len(), 1);
    let item = &got["items"][0];
    let stored = c.get(&service_path("default", "dns")).unwrap();
    assert_eq!(item, &stored);
    assert_eq!(stored["spec"], svc["spec"]);
    assert_eq!(stored["metadata"]["annotations"], svc["metadata"]["annotations"]);
    let slice = c.get(&k8s::endpointslice_path("default", "dns-abc")).unwrap();
    assert_eq!(slice["endpoints"][0]["addresses"][0], "10.1.0.2");
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(slice["ports"][0]["port"], 53);
    let out = kubectl_ok(&api, &["get", "endpointslices", "-l", "kubernetes.io/service-name=dns", "-o", "name"]);
    assert_eq!(out.trim(), "endpointslice.discovery.k8s.io/dns-abc");
    let out =
        kubectl_ok(&api, &["get", "endpointslices", "-A", "-l", "kubernetes.io/service-name=other", "-o", "name"]);
    assert_eq!(out.trim(), "");
    let out = kubectl_ok(&api, &["get", "svc", "dns", "-o", "jsonpath={.spec.ports[1].protocol}"]);
    assert_eq!(out, "TCP");

    // The status subresource through kubectl: `patch --subresource` needs
    // kubectl >= 1.24; older ones (Debian's kubernetes-client is 1.20) PUT
    // the status with `replace --raw`.
    let help = kubectl_ok(&api, &["patch", "--help"]);
    if help.contains("--subresource") {
        let out = kubectl_ok(
            &api,
            &[
                "patch",
                "svc",
                "dns",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}}"#,
            ],
        );
        assert!(out.contains("service/dns patched"), "{out}");
    } else {
        let mut obj = c.get(&service_path("default", "dns")).unwrap();
        obj["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}});
        let f = dir.join("status.json");
        std::fs::write(&f, serde_json::to_vec(&obj).unwrap()).unwrap();
        let raw = format!("{}/status", service_path("default", "dns"));
        let f = f.to_str().unwrap();
        kubectl_ok(&api, &["replace", "--validate=false", "--raw", &raw, "-f", f]);
    }
    let stored = c.get(&service_path("default", "dns")).unwrap();
    assert_eq!(stored["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.10");
    assert_eq!(stored["spec"], svc["spec"]);
    kubectl_ok(&api, &["label", "svc", "dns", "team=net"]);
    assert_eq!(c.get(&service_path("default", "dns")).unwrap()["metadata"]["labels"]["team"], "net");

    // A bounded kubectl watch sees a change made meanwhile.
    let kc = api.kubeconfig().to_str().unwrap().to_string();
    let cache = dir.join("kubectl-cache");
    let mut cmd = Command::new("timeout");
    cmd.args(["10", kubectl_bin.to_str().unwrap(), "--kubeconfig", &kc, "--cache-dir"])
        .arg(&cache)
        .args(["get", "svc", "-A", "--watch-only", "-o", "name"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = api.netns().spawn(&mut cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while !api.request_counts().unwrap().contains_key("watch v1/services") {
        assert!(Instant::now() < deadline, "kubectl never watched; log:\n{}", api.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.create(&services_path(Some("other")), &lb_service("other", "late").build()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("service/late") {
                break;
            }
        }
        seen
    });
    let seen = reader.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("service/late"), "kubectl --watch-only printed {seen:?}");
    assert!(!seen.contains("service/dns"), "--watch-only must not list: {seen:?}");

    // Deletion.
    let out = kubectl_ok(&api, &["delete", "svc", "dns", "--wait=false"]);
    assert!(out.contains("service \"dns\" deleted"), "{out}");
    assert_eq!(c.get(&service_path("default", "dns")).unwrap_err().code, 404);
    let err = kubectl(&api, &["get", "svc", "dns"]).unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("NotFound"), "{err:?}");
}

/// Paths of the Gateway API discovery documents.
const GATEWAY_GROUP_PATH: &str = "/apis/gateway.networking.k8s.io";
const GATEWAY_V1_PATH: &str = "/apis/gateway.networking.k8s.io/v1";

/// The group names in `/apis`.
fn group_names(c: &KubeClient) -> Vec<String> {
    let l = c.get("/apis").unwrap();
    l["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn gateway_api_served_only_while_its_crds_are_installed() {
    let (_topo, api, c) = setup();
    // Absent: no group in discovery, every path unknown (as an API server
    // without the CRDs answers), whatever the verb.
    assert!(!group_names(&c).contains(&"gateway.networking.k8s.io".to_string()));
    assert_eq!(c.get(GATEWAY_GROUP_PATH).unwrap_err().code, 404);
    assert_eq!(c.get(GATEWAY_V1_PATH).unwrap_err().code, 404);
    assert_eq!(c.list(&k8s::gateways_path(None)).unwrap_err().code, 404);
    let gw = k8s::gateway("default", "gw", "xlb").listener("dns", "UDP", 53).build();
    assert_eq!(c.create(&k8s::gateways_path(Some("default")), &gw).unwrap_err().code, 404);
    assert_eq!(c.watch(&k8s::gateways_path(None)).err().map(|e| e.code), Some(404));

    // Installed at runtime: discovery lists the group, its versions (v1
    // preferred; ReferenceGrant also v1beta1) and resources.
    api.install_gateway_api().unwrap();
    assert!(group_names(&c).contains(&"gateway.networking.k8s.io".to_string()));
    let g = c.get(GATEWAY_GROUP_PATH).unwrap();
    assert_eq!(g["preferredVersion"]["version"], "v1");
    let versions: Vec<&str> =
        g["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["v1", "v1beta1"]);
    let list = c.get(GATEWAY_V1_PATH).unwrap();
    let res: Vec<(String, bool)> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["namespaced"].as_bool().unwrap()))
        .collect();
    for (name, namespaced) in [
        ("gatewayclasses", false),
        ("gatewayclasses/status", false),
        ("gateways", true),
        ("gateways/status", true),
        ("tcproutes", true),
        ("tcproutes/status", true),
        ("udproutes", true),
        ("udproutes/status", true),
        ("referencegrants", true),
    ] {
        assert!(res.contains(&(name.to_string(), namespaced)), "{name} in {res:?}");
    }
    assert!(!res.iter().any(|(n, _)| n == "referencegrants/status"));
    let beta = c.get(&format!("{GATEWAY_GROUP_PATH}/v1beta1")).unwrap();
    let beta: Vec<&str> = beta["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(beta, ["referencegrants"]);

    // A watch of every namespace's Gateways, from the current version.
    let start = rv(&c.list(&k8s::gateways_path(None)).unwrap());
    let mut w = c.watch(&format!("{}?resourceVersion={start}", k8s::gateways_path(None))).unwrap();
    let class =
        c.create(&k8s::gateway_classes_path(), &k8s::gateway_class("xlb", "xlb.io/gateway-controller")).unwrap();
    assert!(class["metadata"].get("namespace").is_none(), "GatewayClass is cluster-scoped");
    let mut with_status = gw.clone();
    with_status["status"] = json!({"conditions": [{"type": "Programmed", "status": "True"}]});
    let created = c.create(&k8s::gateways_path(Some("default")), &with_status).unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created.get("status").is_none(), "a create ignores the status: {created}");
    let path = k8s::gateway_path("default", "gw");

    // Status through the subresource only: the spec in the patch is
    // ignored, the generation stays.
    let st = c
        .patch_status(
            &path,
            &json!({"spec": {"gatewayClassName": "other"}, "status": {"addresses": [{"type": "IPAddress", "value": "192.0.2.10"}]}}),
        )
        .unwrap();
    assert_eq!(st["status"]["addresses"][0]["value"], "192.0.2.10");
    assert_eq!(
        (st["spec"]["gatewayClassName"].as_str(), st["metadata"]["generation"].as_i64()),
        (Some("xlb"), Some(1))
    );
    assert!(rv(&st) > rv(&created));
    // A main-resource update keeps the status and bumps the generation on
    // a spec change only.
    let mut put = st.clone();
    put["status"] = json!({});
    put["metadata"]["labels"] = json!({"team": "net"});
    let labelled = c.replace(&path, &put).unwrap();
    assert_eq!((labelled["metadata"]["generation"].as_i64(), &labelled["status"]), (Some(1), &st["status"]));
    let mut put = labelled.clone();
    put["spec"]["listeners"][0]["port"] = json!(5353);
    let respec = c.replace(&path, &put).unwrap();
    assert_eq!(respec["metadata"]["generation"], 2);
    assert_eq!(respec["status"], st["status"]);
    // Optimistic concurrency, on the main resource and on status.
    assert_eq!(c.replace(&path, &put).unwrap_err().code, 409, "stale resourceVersion");
    let mut stale = labelled.clone();
    stale["status"] = json!({"addresses": []});
    assert_eq!(c.replace(&format!("{path}/status"), &stale).unwrap_err().code, 409);
    // Label selectors.
    c.create(&k8s::gateways_path(Some("other")), &k8s::gateway("other", "gw2", "xlb").label("team", "web").build())
        .unwrap();
    let sel =
        |s: &str| names(&c.list(&format!("{}?labelSelector={}", k8s::gateways_path(None), query_escape(s))).unwrap());
    assert_eq!(sel("team=net"), ["gw"]);
    assert_eq!(sel("team in (net,web)"), ["gw", "gw2"]);
    assert_eq!(sel("team!=net"), ["gw2"]);
    let evs: Vec<Value> = (0..5).map(|_| next_change(&mut w)).collect();
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "ADDED"]);
    assert_eq!(evs[1]["object"]["status"]["addresses"][0]["value"], "192.0.2.10");
    assert!(evs.iter().all(|e| e["object"]["apiVersion"] == "gateway.networking.k8s.io/v1"));

    // Routes and grants; a ReferenceGrant read as v1beta1 is the same object.
    let route = k8s::udp_route("default", "dns").parent("gw", Some("dns")).backend("dns", 53, Some(70)).build();
    let r = c.create(&k8s::routes_path("UDPRoute", Some("default")), &route).unwrap();
    assert_eq!(r["spec"], route["spec"]);
    c.patch_status(
        &k8s::route_path("UDPRoute", "default", "dns"),
        &json!({"status": {"parents": [{"controllerName": "xlb.io/gateway-controller", "parentRef": {"name": "gw"}, "conditions": []}]}}),
    )
    .unwrap();
    c.create(&k8s::routes_path("TCPRoute", Some("default")), &k8s::tcp_route("default", "web").build()).unwrap();
    let grant = k8s::reference_grant("backends", "from-default", "default", None);
    c.create(&k8s::reference_grants_path(Some("backends")), &grant).unwrap();
    let beta_path = "/apis/gateway.networking.k8s.io/v1beta1/namespaces/backends/referencegrants/from-default";
    let as_beta = c.get(beta_path).unwrap();
    assert_eq!(as_beta["apiVersion"], "gateway.networking.k8s.io/v1beta1");
    assert_eq!(as_beta["spec"], grant["spec"]);
    let beta_list = c.list("/apis/gateway.networking.k8s.io/v1beta1/referencegrants").unwrap();
    assert_eq!(
        (beta_list["apiVersion"].as_str(), names(&beta_list)),
        (Some("gateway.networking.k8s.io/v1beta1"), vec!["from-default".to_string()])
    );
    assert_eq!(c.get(&format!("{beta_path}/status")).unwrap_err().code, 404, "no status subresource");

    // Uninstalled: the objects go (DELETED), the watch ends, 404 again.
    api.uninstall_gateway_api().unwrap();
    let mut deleted = Vec::new();
    let deadline = Instant::now() + WAIT;
    while let Some(e) = w.next_event(WAIT).unwrap() {
        assert!(Instant::now() < deadline, "the watch did not end");
        if e["type"] == "DELETED" {
            deleted.push(e["object"]["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    deleted.sort();
    assert_eq!(deleted, ["gw", "gw2"]);
    assert_eq!(c.list(&k8s::gateways_path(None)).unwrap_err().code, 404);
    assert_eq!(c.get(beta_path).unwrap_err().code, 404);
    assert!(!group_names(&c).contains(&"gateway.networking.k8s.io".to_string()));
    // Installed again: empty.
    api.install_gateway_api().unwrap();
    assert!(names(&c.list(&k8s::routes_path("UDPRoute", None)).unwrap()).is_empty());
}

#[test]
fn kubectl_sees_the_gateway_api_installed_and_manages_gateways() {
    let (_topo, api, c) = setup();
    let dir = api.kubeconfig().parent().unwrap().to_path_buf();
    let resources = |api: &ApiServer| kubectl_ok(api, &["api-resources", "-o", "name"]);
    let before = resources(&api);
    assert!(before.lines().any(|l| l == "services"), "{before}");
    assert!(!before.contains("gateway.networking.k8s.io"), "{before}");
    let out = kubectl(&api, &["get", "gateways", "-A"]).unwrap();
    assert!(!out.status.success(), "no such resource before the CRDs");

    api.install_gateway_api().unwrap();
    let after = resources(&api);
    for name in ["gatewayclasses", "gateways", "tcproutes", "udproutes", "referencegrants"] {
        let full = format!("{name}.gateway.networking.k8s.io");
        assert!(after.lines().any(|l| l == full), "{full} not in\n{after}");
    }
    let crds = kubectl_ok(&api, &["get", "crd", "-o", "name"]);
    assert!(
        crds.contains("customresourcedefinition.apiextensions.k8s.io/udproutes.gateway.networking.k8s.io"),
        "{crds}"
    );

    std::fs::write(
        dir.join("gw.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: xlb\nspec:\n  \
         controllerName: xlb.io/gateway-controller\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata:\n  name: dns\n  namespace: default\nspec:\n  gatewayClassName: xlb\n  listeners:\n  - name: dns\n    \
         protocol: UDP\n    port: 53\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata:\n  \
         name: dns\n  namespace: default\nspec:\n  parentRefs:\n  - name: dns\n    sectionName: dns\n  rules:\n  - \
         backendRefs:\n    - name: dns\n      port: 5353\n      weight: 70\n",
    )
    .unwrap();
    let f = dir.join("gw.yaml");
    let f = f.to_str().unwrap();
    let out = kubectl_ok(&api, &["apply", "--validate=false", "-f", f]);
    for created in [
        "gatewayclass.gateway.networking.k8s.io/xlb created",
        "gateway.gateway.networking.k8s.io/dns created",
        "udproute.gateway.networking.k8s.io/dns created",
    ] {
        assert!(out.contains(created), "{created} in {out}");
    }
    let stored = c.get(&k8s::gateway_path("default", "dns")).unwrap();
    assert_eq!(stored["spec"]["listeners"][0]["port"], 53);
    let got: Value = serde_json::from_str(&kubectl_ok(&api, &["get", "gtw", "dns", "-o", "json"])).unwrap();
    assert_eq!(got, stored, "kubectl reads what the server stores (short name gtw)");
    let route = c.get(&k8s::route_path("UDPRoute", "default", "dns")).unwrap();
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 70);

    // Applying a change patches the object: a new generation.
    std::fs::write(dir.join("gw.yaml"), std::fs::read_to_string(f).unwrap().replace("port: 53\n", "port: 5300\n"))
        .unwrap();
    let out = kubectl_ok(&api, &["apply", "--validate=false", "-f", f]);
    assert!(out.contains("gateway.gateway.networking.k8s.io/dns configured"), "{out}");
    let changed = c.get(&k8s::gateway_path("default", "dns")).unwrap();
    assert_eq!(
        (changed["spec"]["listeners"][0]["port"].as_i64(), changed["metadata"]["generation"].as_i64()),
        (Some(5300), Some(2))
    );

    // Status through kubectl's --subresource: only the status changes.
    let out = kubectl_ok(
        &api,
        &[
            "patch",
            "gateway",
            "dns",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"addresses":[{"type":"IPAddress","value":"192.0.2.53"}]},"spec":{"gatewayClassName":"x"}}"#,
        ],
    );
    assert!(out.contains("patched"), "{out}");
    let out = kubectl_ok(
        &api,
        &[
            "get",
            "gateway",
            "dns",
            "-o",
            "jsonpath={.status.addresses[0].value} {.spec.gatewayClassName} {.metadata.generation}",
        ],
    );
    assert_eq!(out, "192.0.2.53 xlb 2");
    let out = kubectl_ok(&api, &["get", "gatewayclasses", "-o", "name"]);
    assert_eq!(out.trim(), "gatewayclass.gateway.networking.k8s.io/xlb");
    let out = kubectl_ok(&api, &["delete", "udproute", "dns", "--wait=false"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(c.get(&k8s::route_path("UDPRoute", "default", "dns")).unwrap_err().code, 404);
}
