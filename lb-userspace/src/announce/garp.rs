//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6,
//! to all-nodes, override flag) for the announced VIPs, on every announce
//! interface, from an `AF_PACKET` socket: [`FAST_COUNT`] times
//! [`FAST_INTERVAL`] apart when a VIP starts being announced (one frame can
//! be lost), then every [`REFRESH_INTERVAL`], so that switches' MAC tables
//! and neighbours' caches keep pointing at this node.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use lb_common::csum;
use tokio::{sync::watch, time::Instant};
use tracing::{debug, warn};

use super::iface::L2Interface;

/// Announcements sent when a VIP starts being announced.
pub const FAST_COUNT: u32 = 3;
/// Time between those.
pub const FAST_INTERVAL: Duration = Duration::from_secs(1);
/// Time between later announcements (switch MAC tables age out after 300 s
/// by default, neighbour caches sooner).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Gratuitous ARP frames sent (for `/metrics`).
pub static GARP_SENT: AtomicU64 = AtomicU64::new(0);
/// Unsolicited neighbour advertisements sent (for `/metrics`).
pub static NA_SENT: AtomicU64 = AtomicU64::new(0);
/// Frames that could not be sent (for `/metrics`).
pub static SEND_ERRORS: AtomicU64 = AtomicU64::new(0);

/// When each announced VIP is due to be announced again.
#[derive(Debug, Default)]
pub struct Schedule {
    /// VIP → (fast announcements still to send, when the next is due).
    due: BTreeMap<IpAddr, (u32, Instant)>,
}

impl Schedule {
    /// Follows a new set of announced VIPs: new ones are due now, gone ones
    /// are forgotten, the others keep their time.
    pub fn update(&mut self, vips: &BTreeSet<IpAddr>, now: Instant) {
        self.due.retain(|v, _| vips.contains(v));
        for v in vips {
            self.due.entry(*v).or_insert((FAST_COUNT, now));
        }
    }

    /// The VIPs due at `now`, each rescheduled.
    pub fn take_due(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for (vip, (fast, at)) in &mut self.due {
            if *at <= now {
                out.push(*vip);
                *fast = fast.saturating_sub(1);
                *at = now + if *fast > 0 { FAST_INTERVAL } else { REFRESH_INTERVAL };
            }
        }
        out
    }

    /// When the next VIP is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }
}

/// Sends announcements for the VIPs on `effective` out of `ifaces` until
/// aborted.
pub async fn run(mut effective: watch::Receiver<BTreeSet<IpAddr>>, ifaces: Vec<L2Interface>) {
    if ifaces.is_empty() {
        return;
    }
    let sock = match PacketSocket::open() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "no gratuitous ARP/NA (AF_PACKET socket refused): neighbours learn the VIPs only by asking");
            return;
        }
    };
    let mut schedule = Schedule::default();
    schedule.update(&effective.borrow_and_update(), Instant::now());
    loop {
        for vip in schedule.take_due(Instant::now()) {
            for i in &ifaces {
                announce(&sock, i, vip);
            }
        }
        let next = schedule.next().unwrap_or_else(|| Instant::now() + REFRESH_INTERVAL);
        tokio::select! {
            changed = effective.changed() => {
                if changed.is_err() {
                    return;
                }
                schedule.update(&effective.borrow_and_update(), Instant::now());
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Sends one announcement of `vip` out of `i`.
fn announce(sock: &PacketSocket, i: &L2Interface, vip: IpAddr) {
    let (frame, counter) = match vip {
        IpAddr::V4(v) => (gratuitous_arp(&i.mac, v.octets()).to_vec(), &GARP_SENT),
        IpAddr::V6(v) => (unsolicited_na(&i.mac, v.octets()).to_vec(), &NA_SENT),
    };
    match sock.send(i.ifindex, &frame) {
        Ok(()) => {
            counter.fetch_add(1, Ordering::Relaxed);
            debug!(%vip, iface = %i.name, "gratuitous announcement sent");
        }
        Err(e) => {
            SEND_ERRORS.fetch_add(1, Ordering::Relaxed);
            warn!(%vip, iface = %i.name, error = %e, "gratuitous announcement not sent");
        }
    }
}

/// An ARP announcement (RFC 5227): a broadcast request from `mac` whose
/// sender and target address are both `vip`.
pub fn gratuitous_arp(mac: &[u8; 6], vip: [u8; 4]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(mac);
    f[28..32].copy_from_slice(&vip);
    f[38..42].copy_from_slice(&vip);
    f
}

/// An unsolicited neighbour advertisement of `vip` with `mac` (override
/// flag, target link-layer address option) to all-nodes (ff02::1).
pub fn unsolicited_na(mac: &[u8; 6], vip: [u8; 16]) -> [u8; 86] {
    let all_nodes: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14..22].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
    f[22..38].copy_from_slice(&vip);
    f[38..54].copy_from_slice(&all_nodes);
    f[54..62].copy_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    f[62..78].copy_from_slice(&vip);
    f[78..80].copy_from_slice(&[2, 1]);
    f[80..86].copy_from_slice(mac);
    let sum = csum::sum_bytes(csum::pseudo_sum(&vip, &all_nodes, 58, 32), &f[54..86]);
    f[56..58].copy_from_slice(&(!csum::fold(sum)).to_ne_bytes());
    f
}

/// A raw `AF_PACKET` socket that only sends.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; protocol 0 receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by no one else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends a whole Ethernet frame out of `ifindex`.
    fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto(2) reads `frame` and `sa`, both alive and of the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::test_support::ip;

    #[test]
    fn new_vips_are_announced_three_times_a_second_apart_then_every_30_s() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.update(&[ip("192.0.2.10")].into_iter().collect(), t0);
        let mut sent = Vec::new();
        let mut t = t0;
        // Step through 70 s in 250 ms steps.
        while t <= t0 + Duration::from_secs(70) {
            if !s.take_due(t).is_empty() {
                sent.push((t - t0).as_millis());
            }
            t += Duration::from_millis(250);
        }
        assert_eq!(sent, vec![0, 1000, 2000, 32000, 62000]);
        // A second VIP starts its own fast round; the first keeps its time;
        // a VIP gone is no longer announced.
        let t1 = t0 + Duration::from_secs(40);
        s.update(&[ip("192.0.2.10"), ip("2001:db8::10")].into_iter().collect(), t1);
        assert_eq!(s.take_due(t1), vec![ip("2001:db8::10")]);
        s.update(&[ip("2001:db8::10")].into_iter().collect(), t1);
        assert_eq!(s.take_due(t0 + Duration::from_secs(63)), vec![ip("2001:db8::10")]);
        s.update(&BTreeSet::new(), t1);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn frames_are_well_formed() {
        let mac = [2, 0, 0, 0, 0, 0xa0];
        let a = gratuitous_arp(&mac, [192, 0, 2, 10]);
        assert_eq!(&a[0..6], &[0xff; 6]);
        assert_eq!(&a[20..22], &[0, 1], "a request");
        assert_eq!((&a[28..32], &a[38..42]), (&[192, 0, 2, 10][..], &[192, 0, 2, 10][..]));
        let vip: [u8; 16] = "2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let na = unsolicited_na(&mac, vip);
        // The checksum over pseudo header and message verifies.
        let all: [u8; 16] = "ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let sum = csum::sum_bytes(csum::pseudo_sum(&vip, &all, 58, 32), &na[54..86]);
        assert_eq!(csum::fold(sum), 0xffff);
        assert_ne!(&na[56..58], &[0, 0]);
        assert_eq!(na[58], 0x20, "override, not solicited");
    }
}
