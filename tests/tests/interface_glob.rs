//! `--interface-glob`: the agent attaches to the interfaces matching a
//! pattern at start and to new ones as they appear (the host ends of pod
//! veths a CNI creates), so that replies of pods added later pass XDP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xlb_tests::{spread_udp_replies, udp_echo_server, Agent, ConfigFile, Netns, PinDir, Topology};

const T: Duration = Duration::from_secs(2);

fn config(backends: &[&str]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("      - {b}\n")).collect();
    format!(
        "services:\n  - name: dns\n    vip: {}\n    port: 53\n    protocol: udp\n    source: preserve\n    backends:\n{}",
        Topology::VIP_V4,
        list.concat()
    )
}

/// A pod namespace added after the agent started: veth `p7` in the node.
struct LatePod {
    ns: Netns,
}

impl LatePod {
    fn add(topo: &Topology) -> LatePod {
        let ns = Netns::existing(format!("{}-late", topo.prefix));
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &ns.name]);
        let pod = LatePod { ns };
        let n = &pod.ns.name;
        let node = &topo.node.name;
        run(&["-n", n, "link", "set", "lo", "up"]);
        run(&["-n", node, "link", "add", "p7", "type", "veth", "peer", "name", "eth0", "netns", n]);
        run(&["-n", node, "addr", "add", "10.1.7.1/24", "dev", "p7"]);
        run(&["-n", node, "link", "set", "p7", "up"]);
        run(&["-n", n, "addr", "add", "10.1.7.2/24", "dev", "eth0"]);
        run(&["-n", n, "link", "set", "eth0", "up"]);
        run(&["-n", n, "route", "add", "default", "via", "10.1.7.1"]);
        pod
    }
}

impl Drop for LatePod {
    fn drop(&mut self) {
        self.ns.stop_children(Duration::from_secs(2));
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns.name]).status();
    }
}

#[test]
fn pods_veths_are_followed_by_pattern_including_ones_created_later() {
    xlb_tests::require_root().expect("root");
    let topo = Topology::new(1).expect("topology");
    let _s0 = udp_echo_server(&topo.pods[0], SocketAddr::from((Topology::pod_addr_v4(0), 5353)), "pod0");
    let pod0 = format!("{}:5353", Topology::pod_addr_v4(0));
    let cfg = ConfigFile::new(&topo, &config(&[&pod0])).expect("config");
    let pins = PinDir::new().expect("pins");
    // only the client side by name; the pods' side by pattern
    let args: Vec<String> =
        ["agent", "--config", &cfg.path().display().to_string(), "--interface", "c0", "--interface-glob", "p*"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
    let mut agent = Agent::spawn_args(&topo.node, pins.path(), &args).expect("agent");
    agent.wait_healthy(Duration::from_secs(30)).expect("healthy");
    let vip = SocketAddr::from((Topology::VIP_V4, 53));
    // preserve: pod0's replies only look like the VIP's if XDP on p0 translates them
    let r = spread_udp_replies(&topo.client, vip, 5, T);
    let want = format!("pod0 {}", Topology::CLIENT_V4);
    assert_eq!(r.get(&want), Some(&5), "{r:?}\n{}", agent.log());

    // a pod created now, its veth p7 matching the pattern
    let late = LatePod::add(&topo);
    let s7 = udp_echo_server(&late.ns, "10.1.7.2:5353".parse().unwrap(), "late");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.log().contains("XDP attached iface=p7") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.log().contains("XDP attached iface=p7"), "attached to the new veth:\n{}", agent.log());
    cfg.write(&config(&["10.1.7.2:5353"])).expect("write config");
    agent.reload().expect("reload");
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = format!("late {}", Topology::CLIENT_V4);
    let mut r = std::collections::HashMap::default();
    while Instant::now() < deadline {
        r = spread_udp_replies(&topo.client, vip, 5, Duration::from_millis(500));
        if r.get(&want) == Some(&5) {
            break;
        }
    }
    assert_eq!(r.get(&want), Some(&5), "the late pod answers as the VIP: {r:?}\n{}", agent.log());

    // the pod goes (its server's socket held the namespace): its interface
    // is forgotten, the agent stays healthy
    s7.stop();
    drop(late);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.log().contains("interface gone iface=p7") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.log().contains("interface gone iface=p7"), "{}", agent.log());
    assert!(agent.is_healthy());
    let status = agent.stop().expect("stop");
    assert!(status.success(), "{}", agent.log());
}
