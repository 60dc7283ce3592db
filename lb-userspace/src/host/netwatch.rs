//! The routing-netlink watcher: one socket per network namespace, member of
//! every group the agent follows (links, qdiscs, addresses, routes,
//! neighbours, rules; IPv4 and IPv6), read by one thread that counts the notifications
//! by [`Kind`] and fans them out to its subscribers: the interface follower
//! (`follow`, links), the next-hop cache's route generation (`routegen`,
//! everything) and the writer's route epoch (`writer::routes`, links,
//! addresses, routes and rules).
//!
//! A subscriber holds a [`Subscription`] with the kinds it cares about and
//! asks whether any of them changed since it last asked, at once
//! ([`Subscription::changed_now`], which first reads whatever the socket
//! holds, so a change the kernel announced before the call is never missed)
//! or by waiting ([`Subscription::changed`]). When the socket's buffer
//! overflows (ENOBUFS: notifications were lost) every subscriber is told
//! that everything changed.
use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, OwnedFd},
    sync::{Arc, Mutex, Weak},
};

use tokio::sync::watch;
use tracing::warn;

use crate::host::rtnetlink::{self, Kind, Read};

/// A set of [`Kind`]s a subscriber listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest(u8);

impl Interest {
    /// Links only (the interface follower).
    pub const LINKS: Self = Self::of(&[Kind::Link]);
    /// Links and qdiscs (the transmit paths, `host::peer_veth`).
    pub const LINKS_AND_QDISCS: Self = Self::of(&[Kind::Link, Kind::Qdisc]);
    /// What changes the route to an address: links, addresses, routes,
    /// rules (the writer's route epoch).
    pub const ROUTING: Self = Self::of(&[Kind::Link, Kind::Address, Kind::Route, Kind::Rule]);
    /// Everything routing and neighbours depend on (the next-hop cache;
    /// not qdiscs).
    pub const ALL: Self = Self::of(&[Kind::Link, Kind::Address, Kind::Route, Kind::Neighbour, Kind::Rule]);

    /// The set of these kinds.
    pub const fn of(kinds: &[Kind]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i] as u8;
            i += 1;
        }
        Self(bits)
    }

    fn has(self, kind: usize) -> bool {
        self.0 & (1 << kind) != 0
    }
}

/// What the watcher has seen so far: notifications by kind, overruns, and
/// whether it stopped.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    by_kind: [u64; Kind::COUNT],
    /// Times notifications were lost (each counts for every kind).
    overruns: u64,
    /// The socket failed: nothing more will be counted.
    stopped: bool,
}

impl Counts {
    /// A number that grows whenever something of `interest` happens.
    fn total(&self, interest: Interest) -> u64 {
        let kinds: u64 = self.by_kind.iter().enumerate().filter(|(k, _)| interest.has(*k)).map(|(_, n)| n).sum();
        kinds + self.overruns
    }
}

/// The socket, the read lock and the counts' channel, shared by the
/// subscriptions and (weakly) the reading thread.
struct Inner {
    socket: rtnetlink::Socket,
    /// Held while reading the socket and until what was read is counted,
    /// so that whoever takes it next sees every notification read before.
    buf: Mutex<Vec<u8>>,
    counts: watch::Sender<Counts>,
    /// Dropped with the watcher: the reading thread then stops.
    _stop: std::io::PipeWriter,
}

impl Inner {
    /// The socket; `stop` is the write end of the reading thread's stop pipe.
    fn open(stop: std::io::PipeWriter) -> io::Result<Self> {
        let socket = rtnetlink::subscribe(rtnetlink::ALL_GROUPS, &[rtnetlink::GROUP_NR_IPV6_RULE])?;
        let (counts, _) = watch::channel(Counts::default());
        Ok(Self { socket, buf: Mutex::new(vec![0; 64 * 1024]), counts, _stop: stop })
    }

    /// Reads and counts every notification queued now.
    fn pump(&self) {
        let mut buf = self.buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut delta = Counts::default();
        let mut any = false;
        loop {
            match rtnetlink::read(&self.socket, &mut buf) {
                Ok(Read::Batch(n)) => {
                    for kind in rtnetlink::message_types(&buf[..n]).filter_map(Kind::of) {
                        delta.by_kind[kind as usize] += 1;
                        any = true;
                    }
                }
                Ok(Read::Overrun) => {
                    delta.overruns += 1;
                    any = true;
                }
                Ok(Read::Empty) => break,
                Err(e) => {
                    warn!(error = %e, "routing notifications: stopped listening");
                    delta.stopped = true;
                    any = true;
                    break;
                }
            }
        }
        // Counted before the read lock is released.
        if any {
            self.counts.send_modify(|c| {
                for (total, n) in c.by_kind.iter_mut().zip(delta.by_kind) {
                    *total += n;
                }
                c.overruns += delta.overruns;
                c.stopped |= delta.stopped;
            });
        }
    }

    fn stopped(&self) -> bool {
        self.counts.borrow().stopped
    }
}

/// The routing-netlink watcher of one network namespace (cheap to clone:
/// clones share the socket and the thread). The thread stops and the socket
/// closes when the last clone and the last subscription are dropped.
#[derive(Clone)]
pub struct Watcher {
    inner: Arc<Inner>,
}

/// The watchers of the namespaces where one runs, by namespace (device,
/// inode of `/proc/thread-self/ns/net`).
type Registry = HashMap<(u64, u64), Weak<Inner>>;
static SHARED: Mutex<Option<Registry>> = Mutex::new(None);

impl Watcher {
    /// The watcher of the calling thread's network namespace, started on
    /// first use: every subscriber in one namespace shares one socket.
    pub fn shared() -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let ns = std::fs::metadata("/proc/thread-self/ns/net")?;
        let key = (ns.dev(), ns.ino());
        let mut shared = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = shared.get_or_insert_with(HashMap::new);
        shared.retain(|_, w| w.strong_count() > 0);
        if let Some(inner) = shared.get(&key).and_then(Weak::upgrade) {
            return Ok(Self { inner });
        }
        let watcher = Self::start()?;
        shared.insert(key, Arc::downgrade(&watcher.inner));
        Ok(watcher)
    }

    /// A new watcher of the calling thread's network namespace, with its
    /// own socket and thread (see [`Self::shared`]).
    pub fn start() -> io::Result<Self> {
        let (stop, stop_tx) = std::io::pipe()?;
        let inner = Arc::new(Inner::open(stop_tx)?);
        let socket = inner.socket.as_fd().try_clone_to_owned()?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("xlb-netwatch".into())
            .spawn(move || read_forever(&socket, &stop.into(), &weak))?;
        Ok(Self { inner })
    }

    /// A subscription to `interest`, which sees the changes from now on.
    pub fn subscribe(&self, interest: Interest) -> Subscription {
        let rx = self.inner.counts.subscribe();
        let seen = rx.borrow().total(interest);
        Subscription { inner: self.inner.clone(), rx, interest, seen }
    }
}

/// The reading thread: waits for the socket to become readable and counts
/// what it holds, until the watcher is dropped (the stop pipe closes) or
/// the socket fails.
fn read_forever(socket: &OwnedFd, stop: &OwnedFd, inner: &Weak<Inner>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "routing notifications: stopped listening");
                return;
            }
        }
        if fds[1].any() != Some(false) {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.pump();
        if inner.stopped() {
            return;
        }
    }
}

/// The watcher stopped: no more notifications will come.
#[derive(Debug, thiserror::Error)]
#[error("routing notifications stopped (the netlink socket failed)")]
pub struct Stopped;

/// One subscriber's view of a [`Watcher`]: whether something it listens
/// to changed since it last asked. A clone asks on its own.
#[derive(Clone)]
pub struct Subscription {
    inner: Arc<Inner>,
    rx: watch::Receiver<Counts>,
    interest: Interest,
    seen: u64,
}

impl Subscription {
    /// Whether something of interest changed since the last call (or the
    /// subscription), counting every notification queued now first. Always
    /// true once the watcher stopped: then anything may have changed.
    pub fn changed_now(&mut self) -> bool {
        self.inner.pump();
        let counts = *self.rx.borrow_and_update();
        self.take(counts)
    }

    /// Resolves when something of interest changed since the last call
    /// (at once if it already did); an error once the watcher stopped.
    pub async fn changed(&mut self) -> Result<(), Stopped> {
        loop {
            let counts = *self.rx.borrow_and_update();
            if counts.stopped {
                return Err(Stopped);
            }
            if self.take(counts) {
                return Ok(());
            }
            // The sender lives as long as this subscription's Inner.
            self.rx.changed().await.map_err(|_| Stopped)?;
        }
    }

    fn take(&mut self, counts: Counts) -> bool {
        let total = counts.total(self.interest);
        let changed = counts.stopped || total != self.seen;
        self.seen = total;
        changed
    }
}

#[cfg(test)]
mod tests;
