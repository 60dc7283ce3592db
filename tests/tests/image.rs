//! The image `cargo xtask image` builds, run as the DaemonSet runs it:
//! `cargo xtask image --no-build` packages the `xlb` under test (`$XLB_BIN`)
//! under a tag of this run's own, then podman runs the agent from it in the
//! node namespace of a topology (`--network ns:`, as `hostNetwork`), with
//! the host's bpffs mounted (propagation HostToContainer), a read-only
//! configuration file, and the security context of deploy/daemonset.yaml
//! translated flag by flag (capabilities dropped and added, read-only root,
//! no privilege escalation, not privileged, uid 0, seccomp, AppArmor,
//! SELinux type). Real UDP and TCP from the client namespace through the VIP
//! reach every backend and come back from the VIP; `xlb status` and `xlb
//! services` from the image (`podman exec`) show the service. Needs root
//! (CI runs it as root).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{backends, config, svc, vip4, wait_bounded, workspace_root, T, TCP_BACKEND_PORT, UDP_BACKEND_PORT};
use xlb_tests::{
    spread_tcp, spread_udp, tcp_echo_server, udp_echo_server, ConfigFile, Netns, PinDir, Topology, PREFIX,
};

/// `podman ARGS...`, bounded by `limit` (killed past it).
fn podman(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run podman (`cargo xtask setup` installs it): {e}"));
    let (out_t, err_t) = xlb_tests::read_pipes(&mut child).expect("pipes");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            eprintln!("podman {} did not finish within {limit:?}; killed", args.join(" "));
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The pid in a name `xlbt<pid>-...`, when it is one of ours.
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the containers and test image tags of earlier runs whose process
/// is gone (never those of a live run).
fn remove_stale() {
    let dead = |name: &str| owner(name).is_some_and(|pid| !xlb_tests::pid_alive(pid));
    let names = podman(&["ps", "-a", "--format", "{{.Names}}"], Duration::from_secs(30));
    for n in String::from_utf8_lossy(&names.stdout).lines().filter(|n| dead(n)) {
        podman(&["rm", "-f", "-t", "0", n], Duration::from_secs(30));
    }
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"], Duration::from_secs(30));
    for i in String::from_utf8_lossy(&images.stdout).lines() {
        if i.strip_prefix("localhost/xlb-test:").is_some_and(dead) {
            podman(&["rmi", "-f", i], Duration::from_secs(30));
        }
    }
}

/// This run's image tag; untagged (and the image removed, as nothing else
/// tags it) on drop.
struct ImageTag(String);

impl Drop for ImageTag {
    fn drop(&mut self) {
        let o = podman(&["rmi", &self.0], Duration::from_mins(1));
        if !o.status.success() {
            eprintln!("xlb-tests: podman rmi {}: {}", self.0, text(&o));
        }
    }
}

/// A container of this run, removed (stopped first) on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let o = podman(&["rm", "-f", "-t", "10", &self.0], Duration::from_mins(1));
        if !o.status.success() {
            eprintln!("xlb-tests: podman rm -f {}: {}", self.0, text(&o));
        }
    }
}

/// `cargo xtask image --no-build --tag TAG` on `$XLB_BIN`, as a user runs it.
fn build_image(tag: &str) -> ImageTag {
    let xlb = xlb_tests::xlb_binary().expect("the xlb binary to package");
    let started = Instant::now();
    let child = xlb_tests::cargo::cargo(&workspace_root())
        .args(["xtask", "image", "--no-build", "--tag", tag])
        .env("XLB_BIN", &xlb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo xtask image");
    let (ok, out, err) = wait_bounded(child, Duration::from_mins(5), "cargo xtask image");
    let image = ImageTag(tag.to_string());
    assert!(ok, "`cargo xtask image --no-build --tag {tag}` failed\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("image id ") && out.contains(&format!("tagged   {tag}")), "{out}");
    eprintln!("cargo xtask image: {:.1} s", started.elapsed().as_secs_f64());
    image
}

/// The flags that make podman run at all on this machine, found by trying
/// `IMAGE --version` with none, then with explicit limits, then with runc:
/// crun refuses hybrid cgroup hierarchies (v1 controllers plus a cgroup2
/// mount), and where podman itself lacks CAP_SYS_RESOURCE the runtime
/// cannot raise the container's RLIMIT_NOFILE/NPROC to podman's defaults
/// (nor RLIMIT_NPROC above `kernel.pid_max`, as seen here): the limits are
/// then this process's own. None of these touches the security settings
/// under test.
fn runtime_flags(image: &str, want_version: &str) -> Vec<String> {
    let hard = |res| {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into `r`.
        unsafe { libc::getrlimit(res, &raw mut r) };
        r.rlim_max
    };
    let pid_max: u64 =
        std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768);
    let nofile = hard(libc::RLIMIT_NOFILE);
    let nproc = hard(libc::RLIMIT_NPROC).min(pid_max);
    let limits = vec![format!("--ulimit=nofile={nofile}:{nofile}"), format!("--ulimit=nproc={nproc}:{nproc}")];
    let mut with_runc = vec!["--runtime=runc".to_string()];
    with_runc.extend(limits.clone());
    let mut tried = Vec::new();
    for flags in [vec![], limits, with_runc] {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([image, "--version"]);
        let o = podman(&args, Duration::from_mins(1));
        if o.status.success() {
            let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert_eq!(version, want_version, "the image's `xlb --version` is not the binary under test's");
            eprintln!("podman runs containers here with {flags:?}");
            return flags;
        }
        tried.push(format!("{flags:?}: {}", text(&o).trim()));
    }
    panic!("podman cannot run {image} here:\n{}", tried.join("\n"));
}

/// The capabilities this process may pass on (its bounding set), by name.
fn bounding_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd").trim();
    u64::from_str_radix(hex, 16).expect("CapBnd is hex")
}

/// The bit of a capability the DaemonSet names (`BPF`, `NET_ADMIN`, ...).
fn cap_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        "SYS_ADMIN" => 21,
        "NET_RAW" => 13,
        other => panic!("capability {other} of the DaemonSet: add its bit to this test"),
    }
}

/// deploy/daemonset.yaml's agent container, as podman flags: the security
/// context and the bpffs volume. Returns (flags, capabilities added,
/// capabilities this machine cannot grant).
fn daemonset_flags() -> (Vec<String>, Vec<String>, Vec<String>) {
    let path = workspace_root().join("deploy/daemonset.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(&path).expect("daemonset.yaml"))
        .expect("daemonset.yaml is YAML");
    let pod = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true), "the test runs the agent in the node's network namespace");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut flags = Vec::new();
    assert_eq!(sc["privileged"].as_bool(), Some(false), "not privileged");
    let drop: Vec<&str> =
        sc["capabilities"]["drop"].as_vec().expect("drop").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(drop, vec!["ALL"], "the DaemonSet drops every capability");
    flags.push("--cap-drop=all".to_string());
    let add: Vec<String> =
        sc["capabilities"]["add"].as_vec().expect("add").iter().filter_map(|v| v.as_str().map(String::from)).collect();
    let bounding = bounding_caps();
    let (grantable, missing): (Vec<String>, Vec<String>) =
        add.iter().cloned().partition(|cap| bounding & (1 << cap_bit(cap)) != 0);
    for cap in &grantable {
        flags.push(format!("--cap-add={cap}"));
    }
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        // Kubernetes mounts no tmpfs on a read-only root; podman would.
        flags.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
        flags.push("--security-opt=no-new-privileges".into());
    }
    let uid = sc["runAsUser"].as_i64().expect("runAsUser");
    let gid = sc["runAsGroup"].as_i64().expect("runAsGroup");
    flags.push(format!("--user={uid}:{gid}"));
    match sc["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") | None => {}
        Some("Unconfined") => flags.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => panic!("seccompProfile {other}: translate it for podman in this test"),
    }
    match sc["appArmorProfile"]["type"].as_str() {
        Some("RuntimeDefault") | None => {}
        Some("Unconfined") => flags.push("--security-opt=apparmor=unconfined".into()),
        Some(other) => panic!("appArmorProfile {other}: translate it for podman in this test"),
    }
    if let Some(t) = sc["seLinuxOptions"]["type"].as_str() {
        flags.push(format!("--security-opt=label=type:{t}"));
    }
    // The bpffs hostPath volume, with its mount propagation.
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    assert_eq!(mounts.len(), 1, "one volume (bpffs): {mounts:?}");
    assert_eq!(mounts[0]["mountPath"].as_str(), Some("/sys/fs/bpf"));
    assert_eq!(pod["volumes"][0]["hostPath"]["path"].as_str(), Some("/sys/fs/bpf"));
    let propagation = match mounts[0]["mountPropagation"].as_str() {
        Some("HostToContainer") => "rslave",
        Some("Bidirectional") => "rshared",
        _ => "rprivate",
    };
    flags.push(format!("--volume=/sys/fs/bpf:/sys/fs/bpf:{propagation}"));
    (flags, add, missing)
}

/// Waits (bounded) for the agent's /healthz in the node namespace; the
/// container's log on failure.
fn wait_healthy(node: &Netns, metrics: std::net::SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = xlb_tests::http::get(node, metrics, "/healthz", Duration::from_secs(1)) {
            return;
        }
        let state = podman(&["inspect", "--format", "{{.State.Status}}", name], Duration::from_secs(30));
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        if state != "running" || Instant::now() >= deadline {
            let logs = podman(&["logs", name], Duration::from_secs(30));
            panic!("the agent in container {name} is not healthy (state {state:?}); its log:\n{}", text(&logs));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_image_runs_the_agent_with_the_daemonsets_security_context_and_forwards() {
    xlb_tests::require_root().expect("this test runs podman and builds namespaces: root");
    let started = Instant::now();
    remove_stale();
    let topo = Topology::new(3).expect("topology");
    let tag = format!("localhost/xlb-test:{}-image", topo.prefix);
    let image = build_image(&tag);

    let host_version =
        xlb_tests::run_cmd(xlb_tests::xlb_binary().unwrap().to_str().unwrap(), &["--version"]).expect("xlb --version");
    let host_version = String::from_utf8_lossy(&host_version.stdout).trim().to_string();
    let runtime = runtime_flags(&image.0, &host_version);
    let (security, caps, missing) = daemonset_flags();
    assert!(
        missing.iter().all(|c| c == "SYS_RESOURCE"),
        "this machine cannot grant {missing:?}, which the agent needs; only SYS_RESOURCE (memlock, kernels < 5.11) may be missing"
    );
    if !missing.is_empty() {
        eprintln!(
            "note: the DaemonSet adds {caps:?}; this machine's bounding set lacks {missing:?}, so no runtime here can \
             grant it (the agent needs it only on kernels < 5.11)"
        );
    }

    let yaml = config(&[
        svc("dns", Topology::VIP_V4.into(), 53, "udp", "snat", &backends(common::Fam::V4, 0..3, UDP_BACKEND_PORT)),
        svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &backends(common::Fam::V4, 0..3, TCP_BACKEND_PORT)),
    ]);
    let cfg = ConfigFile::new(&topo, &yaml).expect("config file");
    let pin = PinDir::new().expect("pin dir");
    let _servers: Vec<_> = (0..3)
        .flat_map(|i| {
            [
                udp_echo_server(&topo.pods[i], Topology::pod_sock_v4(i, UDP_BACKEND_PORT), &format!("pod{i}")),
                tcp_echo_server(&topo.pods[i], Topology::pod_sock_v4(i, TCP_BACKEND_PORT), &format!("pod{i}")),
            ]
        })
        .collect();

    let name = topo.unique_name("agent");
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], 9464));
    let netns = format!("--network=ns:{}", topo.node.path().display());
    let cfg_mount = format!("--volume={}:/etc/xlb/config.yaml:ro", cfg.path().display());
    let mut args: Vec<String> = vec!["run".into(), "--detach".into(), format!("--name={name}"), netns, cfg_mount];
    args.extend(runtime.iter().cloned());
    args.extend(security.iter().cloned());
    args.push(image.0.clone());
    args.extend(["agent", "--config", "/etc/xlb/config.yaml"].map(String::from));
    for ifname in topo.node_interfaces() {
        args.extend(["--interface".to_string(), ifname]);
    }
    args.extend(["--pin-path".into(), pin.path().display().to_string(), "--metrics-addr".into(), metrics.to_string()]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("podman {}", arg_refs.join(" "));
    let run = podman(&arg_refs, Duration::from_mins(1));
    let container = Container(name.clone());
    assert!(run.status.success(), "podman run failed: {}", text(&run));
    wait_healthy(&topo.node, metrics, &name);

    // The agent runs with exactly the capabilities granted, no new
    // privileges, and a read-only root.
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &name], Duration::from_secs(30));
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's /proc status");
    let field = |k: &str| proc_status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or_default();
    let granted = caps.iter().filter(|c| !missing.contains(c)).fold(0u64, |m, c| m | (1 << cap_bit(c)));
    assert_eq!(u64::from_str_radix(field("CapEff:"), 16).unwrap(), granted, "effective capabilities of the agent");
    assert_eq!(u64::from_str_radix(field("CapBnd:"), 16).unwrap(), granted, "bounding set of the agent");
    assert_eq!(field("NoNewPrivs:"), "1", "allowPrivilegeEscalation: false");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("the agent's mountinfo");
    let root = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("a root mount");
    assert!(
        root.split_whitespace().nth(5).is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "root not read-only: {root}"
    );
    eprintln!("agent pid {pid}: CapEff {}, Seccomp {}", field("CapEff:"), field("Seccomp:"));

    // Real traffic through the VIP, every reply from the VIP.
    let udp = spread_udp(&topo.client, vip4(53), 60, T);
    let tcp = spread_tcp(&topo.client, vip4(80), 30, T);
    let logs = || text(&podman(&["logs", &name], Duration::from_secs(30)));
    for (what, spread, n) in [("UDP", &udp, 60), ("TCP", &tcp, 30)] {
        assert_eq!(spread.values().sum::<usize>(), n, "{what}: {spread:?}");
        for i in 0..3 {
            assert!(
                spread.get(&format!("pod{i}")).is_some_and(|c| *c > 0),
                "{what} through the VIP: {spread:?}\n{}",
                logs()
            );
        }
    }

    // The CLI in the image reads the agent's pins.
    let pin_path = pin.path().display().to_string();
    let mut want_ifaces = topo.node_interfaces();
    want_ifaces.sort();
    let check_status = |where_: &str, out: &Output| {
        assert!(out.status.success(), "xlb status {where_}: {}", text(out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("xlb status -o json");
        assert_eq!(v["running"], true, "{where_}: {v}");
        assert_eq!(v["last_apply"]["result"], "ok", "{where_}: {v}");
        let mut ifaces: Vec<String> =
            v["interfaces"].as_array().into_iter().flatten().filter_map(|i| i.as_str().map(String::from)).collect();
        ifaces.sort();
        assert_eq!(ifaces, want_ifaces, "{where_}: attached interfaces: {v}");
    };
    let status =
        podman(&["exec", &name, "/xlb", "status", "-o", "json", "--pin-path", &pin_path], Duration::from_mins(1));
    check_status("in the container", &status);
    // The pins are on the host's bpffs: the host's xlb reads them as well.
    let args: Vec<String> = ["status", "-o", "json", "--pin-path", &pin_path].map(String::from).to_vec();
    let host = xlb_tests::run_xlb(&topo.node, &args, Duration::from_mins(1)).expect("xlb status on the host");
    check_status("on the host", &host);
    let services =
        podman(&["exec", &name, "/xlb", "services", "-o", "json", "--pin-path", &pin_path], Duration::from_mins(1));
    assert!(services.status.success(), "xlb services in the container: {}", text(&services));
    let v: serde_json::Value = serde_json::from_slice(&services.stdout).expect("xlb services -o json");
    for s in ["dns", "web"] {
        let svc = v.as_array().into_iter().flatten().find(|x| x["name"] == s);
        assert!(svc.is_some_and(|x| x["backends"].as_array().is_some_and(|b| b.len() == 3)), "{s} in {v:#}");
    }

    // Stopped like a pod: SIGTERM, a clean exit, XDP detached.
    let stop = podman(&["stop", "-t", "20", &name], Duration::from_mins(1));
    assert!(stop.status.success(), "podman stop: {}", text(&stop));
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name], Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "exit code; log:\n{}", logs());
    let link = topo.node.ip(&["link", "show", "dev", "c0"]).expect("ip link");
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "XDP still attached after the agent stopped");
    drop(container);
    eprintln!("image test: {:.1} s in all", started.elapsed().as_secs_f64());
}
