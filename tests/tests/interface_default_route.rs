//! `--interface-default-route`: the agent attaches to the interfaces of the
//! node's default routes whatever their names (`ens3`, `eno1`, `bond0`... on
//! real nodes; `uplink0` here), and refuses to start (exit 2, saying what to
//! do) on a node without a default route.

use std::net::SocketAddr;
use std::time::Duration;

use xlb_tests::{run_xlb, spread_udp_replies, udp_echo_server, Agent, ConfigFile, PinDir, Topology};

const T: Duration = Duration::from_secs(2);

fn config() -> String {
    format!(
        "services:\n  - name: dns\n    vip: {}\n    port: 53\n    protocol: udp\n    source: preserve\n    backends:\n      - {}:5353\n",
        Topology::VIP_V4,
        Topology::pod_addr_v4(0)
    )
}

/// The node's client-side veth becomes `uplink0`, the interface of its
/// default routes (IPv4 and IPv6) toward the client, which plays the router.
fn make_uplink(topo: &Topology) {
    let node = &topo.node;
    node.ip(&["link", "set", "c0", "down"]).expect("c0 down");
    node.ip(&["link", "set", "c0", "name", "uplink0"]).expect("rename c0");
    node.ip(&["link", "set", "uplink0", "up"]).expect("uplink0 up");
    node.ip(&["route", "add", "default", "via", &Topology::CLIENT_V4.to_string(), "dev", "uplink0"])
        .expect("v4 default");
    // onlink: the IPv6 prefix route comes back only once DAD is over
    node.ip(&["-6", "route", "add", "default", "via", &Topology::CLIENT_V6.to_string(), "dev", "uplink0", "onlink"])
        .expect("v6 default");
}

#[test]
fn attaches_to_the_default_route_interface_and_forwards() {
    xlb_tests::require_root().expect("root");
    let topo = Topology::new(1).expect("topology");
    make_uplink(&topo);
    let _s0 = udp_echo_server(&topo.pods[0], SocketAddr::from((Topology::pod_addr_v4(0), 5353)), "pod0");
    let cfg = ConfigFile::new(&topo, &config()).expect("config");
    let pins = PinDir::new().expect("pins");
    // no --interface: the client side only through the default route, the
    // pods' side through the CNI pattern
    let args: Vec<String> =
        ["agent", "--config", &cfg.path().display().to_string(), "--interface-default-route", "--interface-glob", "p*"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
    let mut agent = Agent::spawn_args(&topo.node, pins.path(), &args).expect("agent");
    agent.wait_healthy(Duration::from_secs(30)).expect("healthy");
    let log = agent.log();
    assert!(log.contains("interfaces of the default routes"), "{log}");
    assert!(log.contains("XDP attached iface=uplink0"), "attached to the default route's interface:\n{log}");
    // the VIP is reached only if XDP on uplink0 takes the client's packets
    let vip = SocketAddr::from((Topology::VIP_V4, 53));
    let r = spread_udp_replies(&topo.client, vip, 5, T);
    let want = format!("pod0 {}", Topology::CLIENT_V4);
    assert_eq!(r.get(&want), Some(&5), "{r:?}\n{}", agent.log());

    // a later change of default route is not followed, but logged
    topo.node.ip(&["route", "del", "default"]).expect("v4 default gone");
    topo.node.ip(&["-6", "route", "del", "default"]).expect("v6 default gone");
    topo.node
        .ip(&["route", "add", "default", "via", &Topology::pod_addr_v4(0).to_string(), "dev", "p0"])
        .expect("default via p0");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !agent.log().contains("the default routes changed interface") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log();
    assert!(log.contains("the default routes changed interface"), "{log}");
    assert!(log.contains("restart the agent"), "{log}");
    assert!(agent.is_healthy());
    let status = agent.stop().expect("stop");
    assert!(status.success(), "{}", agent.log());
}

#[test]
fn no_default_route_is_bad_usage_saying_what_to_do() {
    xlb_tests::require_root().expect("root");
    let topo = Topology::new(1).expect("topology");
    let cfg = ConfigFile::new(&topo, &config()).expect("config");
    let pins = PinDir::new().expect("pins");
    let args: Vec<String> = [
        "agent",
        "--config",
        &cfg.path().display().to_string(),
        "--interface-default-route",
        "--pin-path",
        &pins.path().display().to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    let out = run_xlb(&topo.node, &args, Duration::from_secs(20)).expect("run xlb");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no default route"), "{err}");
    assert!(err.contains("--interface IF"), "says what to do instead: {err}");
}
