//! Echo servers with real sockets, each on its own thread in a network
//! namespace.
//!
//! Servers answer `"<tag> <peer ip>"`: the tag names the backend, the peer
//! address is the source the backend saw (the client's address with
//! `source: preserve`, the node's with `source: snat`).

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::Netns;

/// How often server loops look at their stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Per-connection I/O timeout of the TCP servers.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time after which a `tcp_session_server` connection is closed.
const SESSION_IDLE: Duration = Duration::from_mins(2);

/// A running server thread. Dropping it (or [`ServerHandle::stop`]) stops
/// the thread and closes the listening socket.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    tag: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The tag this server answers with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Requests answered so far (datagrams for UDP, requests for TCP).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn reply_text(tag: &str, peer: SocketAddr) -> String {
    format!("{tag} {}", peer.ip().to_canonical())
}

/// A UDP server in `ns` bound to `bind` that answers every datagram with
/// `"<tag> <peer ip>"`. Panics if it cannot bind (see
/// [`try_udp_echo_server`]).
pub fn udp_echo_server(ns: &Netns, bind: SocketAddr, tag: &str) -> ServerHandle {
    try_udp_echo_server(ns, bind, tag)
        .unwrap_or_else(|e| panic!("UDP echo server {tag} on {bind} in {}: {e:#}", ns.name))
}

/// [`udp_echo_server`] returning bind errors.
pub fn try_udp_echo_server(ns: &Netns, bind: SocketAddr, tag: &str) -> Result<ServerHandle> {
    let t_tag = tag.to_string();
    try_udp_server(ns, bind, tag, move |_, peer| reply_text(&t_tag, peer).into_bytes())
}

/// A UDP server that answers every datagram with exactly `reply_len` bytes
/// (or its header, if longer): `"<tag> <received length> <peer ip> "`
/// padded with dots, so that a reply larger than the MTU is fragmented by
/// the sender's kernel. Panics if it cannot bind.
pub fn udp_sized_server(ns: &Netns, bind: SocketAddr, tag: &str, reply_len: usize) -> ServerHandle {
    let t_tag = tag.to_string();
    try_udp_server(ns, bind, tag, move |datagram, peer| {
        let n = datagram.len();
        let mut reply = format!("{t_tag} {n} {} ", peer.ip().to_canonical()).into_bytes();
        reply.resize(reply_len.max(reply.len()), b'.');
        reply
    })
    .unwrap_or_else(|e| panic!("UDP server {tag} on {bind} in {}: {e:#}", ns.name))
}

/// A UDP server in `ns` bound to `bind` that answers every datagram with
/// `reply(datagram, peer)`.
pub fn try_udp_server(
    ns: &Netns,
    bind: SocketAddr,
    tag: &str,
    reply: impl Fn(&[u8], SocketAddr) -> Vec<u8> + Send + 'static,
) -> Result<ServerHandle> {
    let sock = ns.try_run(|| UdpSocket::bind(bind))?.with_context(|| format!("bind UDP {bind}"))?;
    sock.set_read_timeout(Some(POLL))?;
    let addr = sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let (t_stop, t_served) = (stop.clone(), served.clone());
    let thread = std::thread::Builder::new().name(format!("udp-echo-{tag}")).spawn(move || {
        // One datagram of the largest size, on the heap.
        let mut buf = vec![0u8; 65536];
        while !t_stop.load(Ordering::SeqCst) {
            match sock.recv_from(&mut buf) {
                Ok((n, peer)) => {
                    let _ = sock.send_to(&reply(&buf[..n], peer), peer);
                    t_served.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                // ICMP errors from earlier sends surface here; keep serving.
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })?;
    Ok(ServerHandle { addr, tag: tag.to_string(), stop, served, thread: Some(thread) })
}

/// A TCP server in `ns` bound to `bind`: for each connection it reads one
/// request (one read), answers `"<tag> <peer ip>"` and closes. Connections
/// are served on their own threads. Panics if it cannot bind (see
/// [`try_tcp_echo_server`]).
pub fn tcp_echo_server(ns: &Netns, bind: SocketAddr, tag: &str) -> ServerHandle {
    try_tcp_echo_server(ns, bind, tag)
        .unwrap_or_else(|e| panic!("TCP echo server {tag} on {bind} in {}: {e:#}", ns.name))
}

/// [`tcp_echo_server`] returning bind errors.
pub fn try_tcp_echo_server(ns: &Netns, bind: SocketAddr, tag: &str) -> Result<ServerHandle> {
    tcp_server(ns, bind, tag, false)
}

/// A TCP server for long-lived flows: on each connection it answers every
/// chunk it reads with `"<tag> <peer ip>"` until the peer closes (or 120 s
/// of silence, or the handle is dropped). Pair it with [`TcpSession`].
pub fn tcp_session_server(ns: &Netns, bind: SocketAddr, tag: &str) -> ServerHandle {
    try_tcp_session_server(ns, bind, tag)
        .unwrap_or_else(|e| panic!("TCP session server {tag} on {bind} in {}: {e:#}", ns.name))
}

/// [`tcp_session_server`] returning bind errors.
pub fn try_tcp_session_server(ns: &Netns, bind: SocketAddr, tag: &str) -> Result<ServerHandle> {
    tcp_server(ns, bind, tag, true)
}

fn tcp_server(ns: &Netns, bind: SocketAddr, tag: &str, session: bool) -> Result<ServerHandle> {
    let listener = ns.try_run(|| TcpListener::bind(bind))?.with_context(|| format!("bind TCP {bind}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let (t_stop, t_served, t_tag) = (stop.clone(), served.clone(), tag.to_string());
    let thread = std::thread::Builder::new().name(format!("tcp-echo-{tag}")).spawn(move || {
        let mut conns: Vec<JoinHandle<()>> = Vec::new();
        while !t_stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let (c_stop, c_served, c_tag) = (t_stop.clone(), t_served.clone(), t_tag.clone());
                    let spawned = std::thread::Builder::new().name(format!("tcp-conn-{t_tag}")).spawn(move || {
                        let _ = if session {
                            serve_session(stream, peer, &c_tag, &c_stop, &c_served)
                        } else {
                            serve_once(stream, peer, &c_tag, &c_served)
                        };
                    });
                    if let Ok(h) = spawned {
                        conns.push(h);
                    }
                    conns.retain(|h| !h.is_finished());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        for h in conns {
            let _ = h.join();
        }
    })?;
    Ok(ServerHandle { addr, tag: tag.to_string(), stop, served, thread: Some(thread) })
}

fn serve_once(mut stream: TcpStream, peer: SocketAddr, tag: &str, served: &AtomicUsize) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CONN_TIMEOUT))?;
    stream.set_write_timeout(Some(CONN_TIMEOUT))?;
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf)?;
    stream.write_all(reply_text(tag, peer).as_bytes())?;
    served.fetch_add(1, Ordering::SeqCst);
    stream.shutdown(Shutdown::Write)?;
    // Drain until the peer closes so that closing does not send a RST.
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn serve_session(
    mut stream: TcpStream,
    peer: SocketAddr,
    tag: &str,
    stop: &AtomicBool,
    served: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(CONN_TIMEOUT))?;
    let mut buf = [0u8; 4096];
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) && last.elapsed() < SESSION_IDLE {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {
                stream.write_all(reply_text(tag, peer).as_bytes())?;
                served.fetch_add(1, Ordering::SeqCst);
                last = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_uses_canonical_ip() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(reply_text("x", mapped), "x 10.0.0.1");
        let v6: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(reply_text("x", v6), "x fd00::1");
    }
}
