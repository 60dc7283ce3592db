//! An announce interface: its index and MAC (which XDP cannot read from the
//! device, so the agent writes it into `XLB_L2_IFACES`).
use std::{io, net::UdpSocket, os::fd::AsRawFd as _};

/// An interface L2 answers are given on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Interface {
    /// Its name.
    pub name: String,
    /// Its index in the agent's network namespace.
    pub ifindex: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
}

impl L2Interface {
    /// Looks the interface up in the current network namespace.
    pub fn resolve(name: &str) -> io::Result<Self> {
        let ifindex = crate::host::iface::ifindex(name)?;
        let mac = hw_address(name)?;
        if mac == [0; 6] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it has no MAC address (not an Ethernet interface): L2 announcements need one",
            ));
        }
        Ok(Self { name: name.to_string(), ifindex, mac })
    }
}

/// `SIOCGIFHWADDR`.
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;

/// The MAC of an Ethernet interface, asked through an ioctl so it answers
/// for the current network namespace (`/sys/class/net` may show another).
pub fn hw_address(name: &str) -> io::Result<[u8; 6]> {
    let sock = UdpSocket::bind("0.0.0.0:0").or_else(|_| UdpSocket::bind("[::]:0"))?;
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes a sockaddr into the ifreq we own.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR as _, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_hwaddr for this request.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an Ethernet interface (hardware type {}): L2 announcements need one", sa.sa_family),
        ));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_refused_and_macs_are_printed() {
        assert!(hw_address("lo").is_err(), "lo is no Ethernet interface");
        assert!(hw_address("no-such-if0").is_err());
        assert_eq!(mac_str(&[2, 0, 0, 0xa, 0xbc, 0xff]), "02:00:00:0a:bc:ff");
    }
}
