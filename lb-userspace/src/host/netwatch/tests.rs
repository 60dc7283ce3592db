//! The watcher in new network namespaces (root: CI runs these as root;
//! without it `unshare` fails and so do they).
use std::time::Duration;

use super::*;

/// Runs `f` on a thread of its own in a new network namespace.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}; these tests need root", io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the test thread")
}

/// `ip ARGS`, with `stdin` fed to it, in the calling thread's namespace.
fn ip(args: &[&str], stdin: &str) {
    use std::io::Write as _;
    let mut child =
        std::process::Command::new("ip").args(args).stdin(std::process::Stdio::piped()).spawn().expect("run ip");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write to ip");
    let st = child.wait().expect("wait for ip");
    assert!(st.success(), "ip {args:?}: {st}");
}

fn rules_only() -> Interest {
    Interest::of(&[Kind::Rule])
}

/// One watcher, one socket, several subscribers: a new link reaches the
/// link and routing subscribers, both by waiting (the reading thread) and
/// by asking at once, and not a subscriber to rules only.
#[test]
fn one_watcher_fans_a_link_event_out_to_its_subscribers() {
    in_new_netns(|| {
        let watcher = Watcher::start().expect("watcher");
        let (mut links, mut routing, mut rules) =
            (watcher.subscribe(Interest::LINKS), watcher.subscribe(Interest::ROUTING), watcher.subscribe(rules_only()));
        let (mut links_now, mut routing_now) = (links.clone(), routing.clone());
        assert!(!links_now.changed_now() && !routing_now.changed_now() && !rules.changed_now(), "nothing happened yet");
        ip(&["link", "add", "xw0", "type", "veth", "peer", "name", "xw1"], "");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            for (name, sub) in [("links", &mut links), ("routing", &mut routing)] {
                let r = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await;
                assert!(matches!(r, Ok(Ok(()))), "{name}: the link event did not arrive within 5 s");
            }
        });
        assert!(links_now.changed_now() && routing_now.changed_now(), "asked at once, the new link is seen too");
        assert!(!rules.changed_now(), "a link event is no rule event");
        assert!(!watcher.inner.stopped());
    });
}

/// When the socket's buffer overflows (ENOBUFS), every subscriber hears
/// that everything changed, whatever it listens to.
#[test]
fn an_overrun_tells_every_subscriber_to_resync() {
    in_new_netns(|| {
        // No reading thread, and the smallest receive buffer: the link
        // events below overflow it before anybody reads.
        let (_, stop) = std::io::pipe().expect("pipe");
        let watcher = Watcher { inner: Arc::new(Inner::open(stop).expect("socket")) };
        watcher.inner.socket.set_rx_buf_sz(1).expect("SO_RCVBUF");
        let (mut rules, mut neighbours) =
            (watcher.subscribe(rules_only()), watcher.subscribe(Interest::of(&[Kind::Neighbour])));
        let batch = (0..64).fold(String::new(), |mut b, i| {
            use std::fmt::Write as _;
            let _ = writeln!(b, "link add xo{i} type veth peer name xp{i}");
            b
        });
        ip(&["-batch", "-"], &batch);
        assert!(rules.changed_now(), "the rules subscriber was told to resync");
        assert!(watcher.inner.counts.borrow().overruns > 0, "the socket overflowed");
        assert!(neighbours.changed_now(), "and so was the neighbours subscriber");
        assert!(!rules.changed_now(), "once told, quiet until the next change");
    });
}

/// Every subscriber of a namespace shares its watcher; another namespace
/// has its own.
#[test]
fn one_shared_watcher_per_namespace() {
    in_new_netns(|| {
        let (a, b) = (Watcher::shared().expect("watcher"), Watcher::shared().expect("watcher"));
        assert!(Arc::ptr_eq(&a.inner, &b.inner), "one watcher in one namespace");
        let other = in_new_netns(|| Watcher::shared().expect("watcher"));
        assert!(!Arc::ptr_eq(&a.inner, &other.inner), "another namespace, another watcher");
    });
}
