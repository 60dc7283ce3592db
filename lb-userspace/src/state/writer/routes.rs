//! The route lookups behind `source: snat` without `snat_address`, and the
//! routing-change notifications that make the writer look again.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tracing::warn;

use crate::host::netwatch::{Interest, Subscription, Watcher};

/// The source address the kernel would pick for the route to each backend
/// (what `source: snat` without `snat_address` uses), cached until the
/// routing may have changed: a netlink socket subscribed to link, address,
/// route and rule events tells, and [`Routes::refresh`] (at the start of
/// every `apply`) then drops the cache and starts a new epoch, so services
/// resolved in an older epoch are resolved again. That socket is the
/// namespace's [`Watcher`], shared with the agent's other subscribers.
/// Without it nothing is cached and every `apply` resolves every backend
/// again.
pub(super) struct Routes {
    pub(super) watch: Option<Subscription>,
    pub(super) epoch: u64,
    cache: HashMap<IpAddr, IpAddr>,
    /// UDP sockets (IPv4, IPv6) connected to each destination in turn to
    /// learn the source address, then disconnected: three system calls a
    /// backend instead of five with a new socket each time.
    probes: [Option<std::net::UdpSocket>; 2],
}

impl Routes {
    pub(super) fn new() -> Self {
        let watch = Watcher::shared()
            .map(|w| w.subscribe(Interest::ROUTING))
            .map_err(|e| warn!(error = %e, "not watching routing changes (netlink); every reload resolves every backend's route"))
            .ok();
        Self { watch, epoch: 1, cache: HashMap::new(), probes: [None, None] }
    }

    /// Without a notification socket: nothing cached, every refresh a new
    /// epoch (the in-memory writer's, which opens no socket).
    pub(super) fn unwatched() -> Self {
        Self { watch: None, epoch: 1, cache: HashMap::new(), probes: [None, None] }
    }

    /// Whether a link, address, route or rule changed since the last call
    /// (counting every notification queued now); true also when some
    /// were lost, or there is no watcher.
    fn changed(&mut self) -> bool {
        self.watch.as_mut().is_none_or(Subscription::changed_now)
    }

    /// What wakes the agent's loop when the routing changed.
    pub(super) fn changes(&self) -> RouteChanges {
        RouteChanges { watch: self.watch.clone() }
    }

    /// Starts a new epoch (and forgets every answer) when the routing may
    /// have changed since the last call.
    pub(super) fn refresh(&mut self) {
        if self.changed() {
            self.epoch += 1;
            self.cache.clear();
        }
    }

    /// The source address for the route to `dst`.
    pub(super) fn source(&mut self, dst: IpAddr) -> std::io::Result<IpAddr> {
        if let Some(src) = self.cache.get(&dst) {
            return Ok(*src);
        }
        let src = self.resolve(dst)?;
        if self.watch.is_some() {
            self.cache.insert(dst, src);
        }
        Ok(src)
    }

    /// What [`crate::host::iface::route_source`] answers, on a reused socket.
    fn resolve(&mut self, dst: IpAddr) -> std::io::Result<IpAddr> {
        use std::os::fd::AsRawFd as _;
        let i = usize::from(dst.is_ipv6());
        let sock = match &mut self.probes[i] {
            Some(s) => s,
            slot => {
                let any: SocketAddr =
                    if dst.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
                slot.insert(std::net::UdpSocket::bind(any)?)
            }
        };
        sock.connect((dst, 9))?;
        let src = sock.local_addr().map(|a| a.ip());
        // Disconnect (AF_UNSPEC): the socket, bound to the wildcard
        // address, forgets the source address the connect chose.
        // SAFETY: a zeroed sockaddr with family AF_UNSPEC, of its size.
        let rc = unsafe {
            let mut unspec: libc::sockaddr = std::mem::zeroed();
            unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            libc::connect(sock.as_raw_fd(), &raw const unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
        };
        if rc != 0 {
            // Start over with a new socket next time.
            self.probes[i] = None;
        }
        src
    }
}

/// Wakes the agent's loop when the routing may have changed, for
/// [`super::MapWriter::retry_unroutable`]. Needs a Tokio runtime.
pub struct RouteChanges {
    /// A second handle on the writer's subscription, which notes what it
    /// has seen on its own.
    watch: Option<Subscription>,
}

impl RouteChanges {
    /// How often to try again without the notification socket.
    pub const POLL: Duration = Duration::from_secs(5);

    /// Resolves when the routing changed since the last call (possibly
    /// already seen by an `apply` meanwhile: then the retry finds nothing
    /// to do), or after [`Self::POLL`] without the watcher.
    pub async fn next(&mut self) {
        let Some(watch) = &mut self.watch else {
            tokio::time::sleep(Self::POLL).await;
            return;
        };
        if let Err(e) = watch.changed().await {
            warn!(error = %e, "unroutable backends are retried every {:?}", Self::POLL);
            self.watch = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_route_probe_answers_like_a_new_socket() {
        let mut r = Routes { watch: None, epoch: 1, cache: HashMap::new(), probes: [None, None] };
        for a in ["127.0.0.1", "127.0.0.2", "::1", "127.0.0.1", "::1"] {
            let ip: IpAddr = a.parse().unwrap();
            let want = crate::host::iface::route_source(ip).ok();
            assert_eq!(r.source(ip).ok(), want, "{a}");
        }
        // Without a netlink watch nothing is cached and every refresh is a new epoch.
        assert!(r.cache.is_empty());
        r.refresh();
        assert_eq!(r.epoch, 2);
    }
}
