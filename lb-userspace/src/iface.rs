//! Facts about the node's interfaces and routes that the agent needs:
//! interface indexes, whether XDP can transmit into a device, and which
//! source address the kernel would use towards a backend.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
};

/// Index of an interface in the current network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// The kernel driver behind an interface (`veth`, `virtio_net`, …), asked
/// through the ethtool ioctl so it answers for the current network namespace.
pub fn driver(name: &str) -> io::Result<String> {
    let sock = UdpSocket::bind("0.0.0.0:0").or_else(|_| UdpSocket::bind("[::]:0"))?;
    // SAFETY: plain-old-data structs, zero is a valid value.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live drvinfo.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), SIOCETHTOOL as _, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Drivers whose native XDP transmit (XDP_TX / XDP_REDIRECT into them)
/// depends on setup the agent cannot see or make (e.g. a veth needs an XDP
/// program or NAPI on its peer, which lives in a pod's namespace).
const SKB_ONLY_DRIVERS: &[&str] = &["veth", "bridge", "tun", "dummy", "vxlan", "macvlan", "ipvlan", "bonding", "geneve", "wireguard", ""];

/// Whether the agent may transmit into this interface from XDP.
pub fn xdp_transmit_capable(name: &str) -> bool {
    match driver(name) {
        Ok(d) => !SKB_ONLY_DRIVERS.contains(&d.as_str()),
        Err(_) => false,
    }
}

/// The source address the kernel would pick for the route to `dst` (no
/// packet is sent: a UDP socket is only connected).
pub fn route_source(dst: IpAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match dst {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect((dst, 9))?;
    Ok(sock.local_addr()?.ip())
}

/// The first address (IPv4 before IPv6, link-local IPv6 skipped) of
/// interface `name`, if it has one.
pub fn first_address(name: &str) -> Option<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut ifap) } != 0 {
        return None;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: the family is AF_INET, so ifa_addr points to a sockaddr_in
                // (getifaddrs allocates it with that type's alignment).
                #[expect(clippy::cast_ptr_alignment, reason = "getifaddrs allocates the address as its family's type")]
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                found.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
            }
            libc::AF_INET6 => {
                // SAFETY: the family is AF_INET6, so ifa_addr points to a sockaddr_in6
                // (getifaddrs allocates it with that type's alignment).
                #[expect(clippy::cast_ptr_alignment, reason = "getifaddrs allocates the address as its family's type")]
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    found.push(IpAddr::V6(ip));
                }
            }
            _ => {}
        }
    }
    // SAFETY: ifap came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    found.sort_by_key(std::net::IpAddr::is_ipv6);
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        assert!(ifindex("lo").unwrap() > 0);
        assert!(ifindex("no-such-if0").is_err());
        assert_eq!(route_source("127.0.0.1".parse().unwrap()).unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(!xdp_transmit_capable("lo"), "loopback has no driver info: treated as skb-only");
    }
}
