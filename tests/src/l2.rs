//! Looking at a segment from one of its hosts, for `--announce l2`: an
//! interface's MAC, a host's neighbour entry, and a raw packet socket
//! ([`Capture`]) that sees every frame arriving on an interface (gratuitous
//! ARP included) and sends whole frames (ARP requests).
//!
//! Used by `tests/tests/l2_announce.rs` and by `cargo xtask demo --l2`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use etherparse::{ArpOperation, NetSlice, SlicedPacket};

use crate::Netns;

/// The MAC address of `ifname` in `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`ip -j link show {ifname}` in netns {} printed no JSON", ns.name))?;
    let addr = v[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("netns {}: `ip -j link show {ifname}` has no address: {v}", ns.name))?;
    parse_mac(addr)
}

/// `aa:bb:cc:dd:ee:ff` as six bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bytes = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<Vec<u8>, _>>()
        .with_context(|| format!("{s:?} is not a MAC address"))?;
    bytes.try_into().map_err(|_| anyhow!("{s:?} is not a MAC address (six bytes)"))
}

/// Six bytes as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `ns`'s neighbour entry for `ip` on `dev`, as (MAC, states joined by
/// commas), or `None` when there is none or it has no MAC (e.g. FAILED).
pub fn neighbour(ns: &Netns, dev: &str, ip: IpAddr) -> Result<Option<([u8; 6], String)>> {
    let out = ns.ip(&["-j", "neigh", "show", &ip.to_string(), "dev", dev])?;
    // An empty table prints nothing rather than `[]` with older iproute2.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let Some(e) = v.get(0) else { return Ok(None) };
    let Some(mac) = e.get("lladdr").and_then(serde_json::Value::as_str) else { return Ok(None) };
    let state = e["state"].as_array().map(|s| s.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","));
    Ok(Some((parse_mac(mac)?, state.unwrap_or_default())))
}

/// An ARP frame's (operation, sender MAC, sender IP, target IP).
pub type Arp = (ArpOperation, [u8; 6], [u8; 4], [u8; 4]);

/// The ARP message in Ethernet frame `f`, if it is one (IPv4 over Ethernet).
pub fn arp_of(f: &[u8]) -> Option<Arp> {
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(NetSlice::Arp(a)) = p.net else { return None };
    Some((
        a.operation(),
        a.sender_hw_addr().try_into().ok()?,
        a.sender_protocol_addr().try_into().ok()?,
        a.target_protocol_addr().try_into().ok()?,
    ))
}

/// Whether `f` is a gratuitous ARP for `vip` sent by `mac`: a request or a
/// reply whose sender and target addresses are both `vip`.
pub fn is_gratuitous_arp(f: &[u8], vip: Ipv4Addr, mac: [u8; 6]) -> bool {
    arp_of(f).is_some_and(|(op, sha, spa, tpa)| {
        (op == ArpOperation::REQUEST || op == ArpOperation::REPLY)
            && sha == mac
            && spa == vip.octets()
            && tpa == vip.octets()
    })
}

/// The sender MAC of `f` if it is an ARP reply for `ip` (sender address `ip`).
pub fn arp_reply_for(f: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    arp_of(f).and_then(|(op, sha, spa, _)| (op == ArpOperation::REPLY && spa == ip.octets()).then_some(sha))
}

/// A raw packet socket (`AF_PACKET`, every protocol) bound to one interface
/// of a namespace: sees every frame that arrives there or leaves from it,
/// from the moment it is opened, and sends whole frames. Closed on drop.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
    ifindex: i32,
}

impl Capture {
    /// Opens the socket on `ifname` in `ns` (reads time out after 100 ms, so
    /// every wait below stays bounded).
    pub fn open(ns: &Netns, ifname: &str) -> Result<Capture> {
        let name = ifname.to_string();
        ns.try_run(move || -> Result<Capture> {
            let c = std::ffi::CString::new(name.clone()).context("an interface name without NUL")?;
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {name}: {}", std::io::Error::last_os_error());
            }
            let ifindex = i32::try_from(ifindex).context("interface index")?;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: socket(2) with constant arguments.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket (needs CAP_NET_RAW)");
            }
            // SAFETY: a new descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a zeroed sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = ifindex;
            // SAFETY: bind(2) with a sockaddr_ll of its size.
            let rc = unsafe {
                libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| format!("bind to {name}"));
            }
            let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            // SAFETY: setsockopt with a timeval of its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
            }
            Ok(Capture { fd, ifindex })
        })?
        .with_context(|| format!("opening a packet socket on {ifname} in netns {}", ns.name))
    }

    /// Reads frames until `pred` holds for one (returned) or `limit` passes.
    pub fn wait_for(&self, limit: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: recv(2) into a buffer we own, of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                if n > 0 && pred(&buf[..n]) {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        None
    }

    /// Reads frames for `window` and returns those for which `pred` holds.
    pub fn collect(&self, window: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        self.wait_for(window, |f| {
            if pred(f) {
                found.push(f.to_vec());
            }
            false
        });
        found
    }

    /// Sends one whole Ethernet frame (at least its two MAC addresses).
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        if frame.len() < 14 {
            bail!("a frame of {} bytes is no Ethernet frame", frame.len());
        }
        // SAFETY: a zeroed sockaddr_ll is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto(2) with a frame and a sockaddr_ll we own.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if usize::try_from(n).ok() != Some(frame.len()) {
            return Err(std::io::Error::last_os_error()).context("sendto on the packet socket");
        }
        Ok(())
    }

    /// Asks who has `ip` (an ARP request from `mac`/`from`, broadcast);
    /// returns the MAC that answers within 2 s, if any.
    pub fn arp_ask(&self, mac: [u8; 6], from: Ipv4Addr, ip: Ipv4Addr) -> Result<Option<[u8; 6]>> {
        // Frames queued since the last read (the kernel's own ARP traffic) are no answer.
        self.wait_for(Duration::from_millis(300), |_| false);
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&from.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ip.octets());
        self.send(&f)?;
        let reply = self.wait_for(Duration::from_secs(2), |fr| arp_reply_for(fr, ip).is_some());
        Ok(reply.and_then(|r| arp_reply_for(&r, ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u8, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("02:de:ad:be:ef:01").unwrap();
        assert_eq!(m, [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01]);
        assert_eq!(format_mac(m), "02:de:ad:be:ef:01");
        assert!(parse_mac("02:de:ad").is_err());
        assert!(parse_mac("zz:de:ad:be:ef:01").is_err());
    }

    #[test]
    fn gratuitous_arp_is_recognised() {
        let vip = Ipv4Addr::new(10, 100, 0, 100);
        let other = Ipv4Addr::new(10, 100, 0, 2);
        let mac = [2, 0, 0, 0, 0, 1];
        assert!(is_gratuitous_arp(&arp(1, mac, vip, vip), vip, mac));
        assert!(is_gratuitous_arp(&arp(2, mac, vip, vip), vip, mac));
        assert!(!is_gratuitous_arp(&arp(1, mac, other, vip), vip, mac), "an ordinary request");
        assert!(!is_gratuitous_arp(&arp(1, [2, 0, 0, 0, 0, 2], vip, vip), vip, mac), "another sender");
        assert!(!is_gratuitous_arp(&arp(1, mac, other, other), vip, mac), "another address");
        assert_eq!(arp_of(&arp(1, mac, other, vip)), Some((ArpOperation::REQUEST, mac, other.octets(), vip.octets())));
        assert_eq!(arp_of(&[0u8; 10]), None);
        assert_eq!(arp_reply_for(&arp(2, mac, vip, other), vip), Some(mac));
        assert_eq!(arp_reply_for(&arp(1, mac, vip, other), vip), None, "a request");
        assert_eq!(arp_reply_for(&arp(2, mac, other, vip), vip), None, "another address");
    }
}
