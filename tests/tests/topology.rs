//! Smoke test of the fixtures alone: the topology routes client traffic to
//! pods with plain kernel forwarding (no xlb involved).

use std::net::SocketAddr;
use std::time::Duration;

use xlb_tests::{tcp_echo_server, tcp_probe, tcp_request, udp_echo_server, udp_probe, udp_request, Probe, Topology};

const T: Duration = Duration::from_secs(3);

#[test]
fn topology_routes_without_xlb() {
    let topo = Topology::new(2).expect("build topology (needs root)");
    assert_eq!(topo.node_interfaces(), vec!["c0", "p0", "p1"]);

    let pod0_v4 = SocketAddr::new(Topology::pod_addr_v4(0).into(), 5353);
    let pod1_v6 = SocketAddr::new(Topology::pod_addr_v6(1).into(), 5353);
    let _udp4 = udp_echo_server(&topo.pods[0], pod0_v4, "pod0");
    let _udp6 = udp_echo_server(&topo.pods[1], pod1_v6, "pod1");
    let _tcp4 = tcp_echo_server(&topo.pods[0], Topology::pod_sock_v4(0, 8080), "pod0");
    let _tcp6 = tcp_echo_server(&topo.pods[1], Topology::pod_sock_v6(1, 8080), "pod1");

    // UDP, IPv4 and IPv6: the pod sees the client's own address.
    let (reply, from) = udp_request(&topo.client, None, pod0_v4, b"hello", T).expect("UDP over IPv4");
    assert_eq!(reply, format!("pod0 {}", Topology::CLIENT_V4));
    assert_eq!(from, pod0_v4);
    let (reply, from) = udp_request(&topo.client, None, pod1_v6, b"hello", T).expect("UDP over IPv6");
    assert_eq!(reply, format!("pod1 {}", Topology::CLIENT_V6));
    assert_eq!(from, pod1_v6);

    // TCP, IPv4 and IPv6.
    let reply = tcp_request(&topo.client, Topology::pod_sock_v4(0, 8080), b"GET\n", T).expect("TCP over IPv4");
    assert_eq!(reply, format!("pod0 {}", Topology::CLIENT_V4));
    let reply = tcp_request(&topo.client, Topology::pod_sock_v6(1, 8080), b"GET\n", T).expect("TCP over IPv6");
    assert_eq!(reply, format!("pod1 {}", Topology::CLIENT_V6));

    // Pods reach the client too (return routes via the node).
    let _client_srv = udp_echo_server(&topo.client, SocketAddr::new(Topology::CLIENT_V4.into(), 7000), "client");
    let (reply, _) = udp_request(&topo.pods[1], None, SocketAddr::new(Topology::CLIENT_V4.into(), 7000), b"hi", T)
        .expect("pod to client");
    assert_eq!(reply, format!("client {}", Topology::pod_addr_v4(1)));

    // A closed port answers ICMP port unreachable, which udp_probe reports.
    let closed = SocketAddr::new(Topology::pod_addr_v4(1).into(), 9);
    assert_eq!(udp_probe(&topo.client, closed, b"x", T).unwrap(), Probe::Refused);
    assert_eq!(tcp_probe(&topo.client, closed, b"x", T).unwrap(), Probe::Refused);
    let open = SocketAddr::new(Topology::pod_addr_v4(0).into(), 5353);
    assert_eq!(udp_probe(&topo.client, open, b"x", T).unwrap(), Probe::Reply(format!("pod0 {}", Topology::CLIENT_V4)));

    // The VIP is routed to the node, which owns no VIP and has no route
    // onward, so without xlb nothing answers.
    let vip = SocketAddr::new(Topology::VIP_V4.into(), 53);
    assert!(udp_request(&topo.client, None, vip, b"x", Duration::from_millis(300)).is_err());
}

#[test]
fn namespaces_are_removed_on_drop() {
    let topo = Topology::new(1).expect("build topology (needs root)");
    let names: Vec<String> = topo.namespaces().iter().map(|n| n.name.clone()).collect();
    let spawned = topo.node.spawn(std::process::Command::new("sleep").arg("30")).expect("spawn sleep");
    drop(spawned);
    drop(topo);
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(n.as_str())), "{n} left behind");
    }
}

#[test]
fn spawned_processes_see_the_namespace_sysfs_and_host_bpffs() {
    let topo = Topology::new(1).expect("build topology (needs root)");
    // /sys/class/net reflects the node namespace.
    let out = topo
        .node
        .spawn(std::process::Command::new("ls").arg("/sys/class/net").stdout(std::process::Stdio::piped()))
        .expect("spawn ls")
        .wait_with_output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<&str> = names.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, vec!["c0", "lo", "p0"]);

    // bpffs pins made on the host are visible (and the reverse).
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.contains("/sys/fs/bpf bpf"));
    if !mounted {
        eprintln!("bpffs is not mounted at /sys/fs/bpf (cargo xtask setup mounts it); skipping that part");
        return;
    }
    let pins = xlb_tests::PinDir::new().unwrap();
    std::fs::create_dir(pins.path()).unwrap();
    std::fs::create_dir(pins.path().join("from-host")).unwrap();
    let status = topo
        .node
        .spawn(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("test -d {0}/from-host && mkdir {0}/from-node", pins.path().display())),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.success(), "the node namespace's process does not see the host's bpffs");
    assert!(pins.path().join("from-node").is_dir());
    drop(pins);
}
