//! Clients with real sockets: single requests, flows that keep their
//! source port, probes that tell a refusal from silence, and spreads of
//! many requests over a service's backends (servers: `servers.rs`).

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::Netns;

/// Key under which the `spread_*` helpers count requests that got no reply.
pub const NO_REPLY: &str = "<no reply>";
/// Key under which `spread_udp*` count replies that did not come from the
/// address the request went to (a reverse-NAT bug).
pub const WRONG_SOURCE: &str = "<wrong source>";

fn unspecified_for(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Sends one UDP datagram from `ns` (from `from`, or an ephemeral port) to
/// `to` and returns the first reply's text and the address it came from.
/// The socket is not connected, so a reply from a wrong address is returned
/// (tests check it comes from `to`), and an ICMP error shows as a timeout
/// (use [`udp_probe`] to see ICMP port unreachable).
pub fn udp_request(
    ns: &Netns,
    from: Option<SocketAddr>,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<(String, SocketAddr)> {
    let local = from.unwrap_or_else(|| unspecified_for(to));
    let sock = ns.try_run(|| UdpSocket::bind(local))?.with_context(|| format!("bind UDP {local}"))?;
    udp_exchange(&sock, to, payload, timeout)
}

fn udp_exchange(sock: &UdpSocket, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<(String, SocketAddr)> {
    sock.send_to(payload, to).with_context(|| format!("send UDP to {to}"))?;
    let deadline = Instant::now() + timeout;
    #[expect(clippy::large_stack_arrays, reason = "one datagram of the largest size; thread stacks are 2 MiB")]
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no UDP reply from {to} within {timeout:?}");
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => return Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), src)),
            Err(e) if is_timeout(&e) => bail!("no UDP reply from {to} within {timeout:?}"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A stale ICMP error on an unconnected socket: keep waiting.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(anyhow!(e).context(format!("receive UDP reply from {to}"))),
        }
    }
}

/// A UDP socket in `ns` kept open for several requests, so they all belong
/// to one flow (same source port). The socket is not connected.
#[derive(Debug)]
pub struct UdpFlow {
    sock: UdpSocket,
    to: SocketAddr,
}

impl UdpFlow {
    /// Binds a socket in `ns` (to `from`, or an ephemeral port) for
    /// requests to `to`.
    pub fn new(ns: &Netns, from: Option<SocketAddr>, to: SocketAddr) -> Result<Self> {
        let local = from.unwrap_or_else(|| unspecified_for(to));
        let sock = ns.try_run(|| UdpSocket::bind(local))?.with_context(|| format!("bind UDP {local}"))?;
        Ok(UdpFlow { sock, to })
    }

    /// The local (client) address of this flow.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound socket has an address")
    }

    /// Sends `payload` and returns the first reply and where it came from.
    /// The socket is not drained first: a late reply to an earlier request
    /// that timed out is returned as this one's (see [`UdpFlow::drain`]).
    pub fn request(&self, payload: &[u8], timeout: Duration) -> Result<(String, SocketAddr)> {
        udp_exchange(&self.sock, self.to, payload, timeout)
    }

    /// Reads and discards every datagram already queued on the socket (late
    /// replies to earlier requests that timed out), without waiting for
    /// more; returns them, for messages.
    pub fn drain(&self) -> Result<Vec<String>> {
        self.sock.set_nonblocking(true)?;
        #[expect(clippy::large_stack_arrays, reason = "one datagram of the largest size; thread stacks are 2 MiB")]
        let mut buf = [0u8; 65536];
        let mut stale = Vec::new();
        let result = loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => stale.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(stale),
                // A stale ICMP error or a signal: nothing to keep, read on.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::Interrupted) => {}
                Err(e) => break Err(anyhow!(e).context(format!("drain UDP socket for {}", self.to))),
            }
        };
        self.sock.set_nonblocking(false)?;
        result
    }
}

/// A TCP request from `ns`: connect to `to`, send `payload`, half-close,
/// and read the reply until the server closes. Errors carry the
/// `std::io::Error` (e.g. `ConnectionRefused` for a RST).
pub fn tcp_request(ns: &Netns, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = tcp_connect(ns, to, timeout)?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left))?;
    stream.write_all(payload).with_context(|| format!("send to {to}"))?;
    stream.shutdown(Shutdown::Write).with_context(|| format!("half-close to {to}"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("TCP reply from {to} not complete within {timeout:?} (got {:?})", String::from_utf8_lossy(&reply));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                bail!("TCP reply from {to} not complete within {timeout:?} (got {:?})", String::from_utf8_lossy(&reply))
            }
            Err(e) => return Err(anyhow!(e).context(format!("read reply from {to}"))),
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn tcp_connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    ns.try_run(|| TcpStream::connect_timeout(&to, timeout))?.map_err(|e| anyhow!(e).context(format!("connect to {to}")))
}

/// A TCP connection from `ns` kept open for several request/reply rounds
/// (one flow). Use with [`tcp_session_server`].
#[derive(Debug)]
pub struct TcpSession {
    stream: TcpStream,
    to: SocketAddr,
}

impl TcpSession {
    /// Connects from `ns` to `to`.
    pub fn connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> Result<Self> {
        Ok(TcpSession { stream: tcp_connect(ns, to, timeout)?, to })
    }

    /// Connects from `ns` to `to` from the local address `from` (a fixed
    /// client port: the flow a trace of that port predicts).
    pub fn connect_from(ns: &Netns, from: SocketAddr, to: SocketAddr, timeout: Duration) -> Result<Self> {
        let connect = || -> std::io::Result<TcpStream> {
            let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            sock.bind(&from.into())?;
            sock.connect_timeout(&to.into(), timeout)?;
            Ok(sock.into())
        };
        let stream = ns.try_run(connect)?.map_err(|e| anyhow!(e).context(format!("connect from {from} to {to}")))?;
        Ok(TcpSession { stream, to })
    }

    /// The local (client) address of this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("connected socket has an address")
    }

    /// Sends `payload` and returns what one read brings back (the session
    /// server answers each chunk with one short message).
    pub fn request(&mut self, payload: &[u8], timeout: Duration) -> Result<String> {
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.write_all(payload).with_context(|| format!("send to {}", self.to))?;
        let mut buf = [0u8; 4096];
        let n = self.stream.read(&mut buf).map_err(|e| anyhow!(e).context(format!("read reply from {}", self.to)))?;
        if n == 0 {
            bail!("{} closed the connection", self.to);
        }
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A reply with this text.
    Reply(String),
    /// Actively refused: ICMP port unreachable (UDP) or a RST (TCP).
    Refused,
    /// Nothing came back in time.
    Timeout,
}

/// Sends one datagram on a *connected* UDP socket, so that an ICMP (or
/// ICMPv6) port unreachable is seen as [`Probe::Refused`].
pub fn udp_probe(ns: &Netns, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Probe> {
    let sock = ns.try_run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind(unspecified_for(to))?;
        s.connect(to)?;
        Ok(s)
    })??;
    sock.send(payload).with_context(|| format!("send UDP to {to}"))?;
    let deadline = Instant::now() + timeout;
    #[expect(clippy::large_stack_arrays, reason = "one datagram of the largest size; thread stacks are 2 MiB")]
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Probe::Timeout);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(Probe::Reply(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Probe::Refused),
            Err(e) if is_timeout(&e) => return Ok(Probe::Timeout),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow!(e).context(format!("receive UDP reply from {to}"))),
        }
    }
}

/// One TCP request as in [`tcp_request`], classified: a RST on connect is
/// [`Probe::Refused`], no answer is [`Probe::Timeout`].
pub fn tcp_probe(ns: &Netns, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Probe> {
    match tcp_request(ns, to, payload, timeout) {
        Ok(text) => Ok(Probe::Reply(text)),
        Err(e) => {
            let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
            match io.map(std::io::Error::kind) {
                Some(ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset) => Ok(Probe::Refused),
                Some(ErrorKind::TimedOut | ErrorKind::WouldBlock) => Ok(Probe::Timeout),
                _ if e.to_string().contains("within") => Ok(Probe::Timeout),
                _ => Err(e),
            }
        }
    }
}

/// The tag (first word) of a reply: `"pod1 10.1.1.1"` → `"pod1"`.
pub fn reply_tag(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

fn tally_tags(replies: HashMap<String, usize>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (reply, n) in replies {
        let key = if reply.starts_with('<') { reply } else { reply_tag(&reply).to_string() };
        *out.entry(key).or_insert(0) += n;
    }
    out
}

/// Sends `count` UDP requests from `ns` to `to`, each from a different
/// ephemeral source port (so each is a new flow), one after the other, and
/// counts the replies per tag. Unanswered requests count under
/// [`NO_REPLY`], replies from an address other than `to` under
/// [`WRONG_SOURCE`]. Takes at most about `count * timeout`.
pub fn spread_udp(ns: &Netns, to: SocketAddr, count: usize, timeout: Duration) -> HashMap<String, usize> {
    tally_tags(spread_udp_replies(ns, to, count, timeout))
}

/// Like [`spread_udp`] but counts whole reply texts (`"pod0 10.1.0.1"`), so
/// the source address each backend saw shows too.
pub fn spread_udp_replies(ns: &Netns, to: SocketAddr, count: usize, timeout: Duration) -> HashMap<String, usize> {
    ns.run(|| {
        let mut replies = HashMap::new();
        let mut used = HashSet::new();
        for i in 0..count {
            let mut sock = None;
            for _ in 0..20 {
                match UdpSocket::bind(unspecified_for(to)) {
                    Ok(s) => {
                        let port = s.local_addr().map_or(0, |a| a.port());
                        if used.insert(port) {
                            sock = Some(s);
                            break;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            let key = match sock {
                None => NO_REPLY.to_string(),
                Some(s) => match udp_exchange(&s, to, format!("request {i}").as_bytes(), timeout) {
                    Ok((_, src)) if src != to => WRONG_SOURCE.to_string(),
                    Ok((text, _)) => text,
                    Err(_) => NO_REPLY.to_string(),
                },
            };
            *replies.entry(key).or_insert(0) += 1;
        }
        replies
    })
}

/// Sends one UDP request from each of the given source ports (on the
/// unspecified address) to `to` and counts replies per tag, as
/// [`spread_udp`]. Reusing the same ports later sends the same flows again.
pub fn spread_udp_ports(ns: &Netns, to: SocketAddr, ports: &[u16], timeout: Duration) -> HashMap<String, usize> {
    tally_tags(spread_udp_ports_replies(ns, to, ports, timeout))
}

/// Like [`spread_udp_ports`] but counts whole reply texts (`"pod0 10.1.0.1"`),
/// so the source address each backend saw shows too.
pub fn spread_udp_ports_replies(
    ns: &Netns,
    to: SocketAddr,
    ports: &[u16],
    timeout: Duration,
) -> HashMap<String, usize> {
    ns.run(|| {
        let mut replies = HashMap::new();
        for &port in ports {
            let mut local = unspecified_for(to);
            local.set_port(port);
            let key = match UdpSocket::bind(local) {
                Err(_) => NO_REPLY.to_string(),
                Ok(s) => match udp_exchange(&s, to, format!("request from {port}").as_bytes(), timeout) {
                    Ok((_, src)) if src != to => WRONG_SOURCE.to_string(),
                    Ok((text, _)) => text,
                    Err(_) => NO_REPLY.to_string(),
                },
            };
            *replies.entry(key).or_insert(0) += 1;
        }
        replies
    })
}

/// Opens `count` TCP connections from `ns` to `to`, one after the other
/// (each a new flow from a new ephemeral port), makes one request on each
/// and counts the replies per tag; failures count under [`NO_REPLY`].
pub fn spread_tcp(ns: &Netns, to: SocketAddr, count: usize, timeout: Duration) -> HashMap<String, usize> {
    tally_tags(spread_tcp_replies(ns, to, count, timeout))
}

/// Like [`spread_tcp`] but counts whole reply texts.
pub fn spread_tcp_replies(ns: &Netns, to: SocketAddr, count: usize, timeout: Duration) -> HashMap<String, usize> {
    let mut replies = HashMap::new();
    for i in 0..count {
        let key = match tcp_request(ns, to, format!("request {i}\n").as_bytes(), timeout) {
            Ok(text) if !text.is_empty() => text,
            _ => NO_REPLY.to_string(),
        };
        *replies.entry(key).or_insert(0) += 1;
    }
    replies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(reply_tag("pod1 10.1.1.1"), "pod1");
        assert_eq!(reply_tag(""), "");
        let mut m = HashMap::new();
        m.insert("pod0 10.1.0.1".to_string(), 2);
        m.insert("pod0 10.100.0.2".to_string(), 3);
        m.insert(NO_REPLY.to_string(), 1);
        let t = tally_tags(m);
        assert_eq!(t["pod0"], 5);
        assert_eq!(t[NO_REPLY], 1);
    }
}
