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
/// program or NAPI on its peer, which lives in a pod's namespace). Asked
/// only on kernels that do not report XDP features (`host::xdp_features`,
/// before Linux 6.3).
const SKB_ONLY_DRIVERS: &[&str] =
    &["veth", "bridge", "tun", "dummy", "vxlan", "macvlan", "ipvlan", "bonding", "geneve", "wireguard", ""];

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
    let mut found: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(sin) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(sin.ip()));
            }
            let ip = addr.as_sockaddr_in6()?.ip();
            (ip.segments()[0] & 0xffc0 != 0xfe80).then_some(IpAddr::V6(ip))
        })
        .collect();
    found.sort_by_key(IpAddr::is_ipv6);
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

    /// IPv4 before IPv6, link-local IPv6 skipped, nothing for an unknown
    /// interface (root: in a new network namespace).
    #[test]
    fn first_address_prefers_ipv4_and_skips_link_local() {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}; this test needs root", std::io::Error::last_os_error());
            let ip = |args: &str| {
                let st = std::process::Command::new("ip").args(args.split(' ')).status().expect("run ip");
                assert!(st.success(), "ip {args}: {st}");
            };
            ip("link add fa0 type veth peer name fa1");
            ip("addr add fe80::5/64 dev fa0 nodad");
            assert_eq!(first_address("fa0"), None, "only link-local");
            ip("addr add 2001:db8::5/64 dev fa0 nodad");
            assert_eq!(first_address("fa0"), Some("2001:db8::5".parse().unwrap()));
            ip("addr add 10.0.0.5/24 dev fa0");
            assert_eq!(first_address("fa0"), Some("10.0.0.5".parse().unwrap()));
            assert_eq!(first_address("no-such-if0"), None);
        })
        .join()
        .expect("the test thread");
    }
}
