//! Packet bytes for the tests that send their own (raw and `AF_PACKET`
//! sockets): checksums, headers and ICMP messages built with `etherparse`,
//! so no test computes an Internet checksum by hand.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    checksum::Sum16BitWords, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6FlowLabel,
    Ipv6Header, UdpHeader,
};

/// The Internet checksum (RFC 1071) of `data`: the value of a checksum
/// field, to be written big-endian. For headers that etherparse will not
/// build (deliberately malformed ones); well-formed headers get theirs from
/// the etherparse types below.
pub fn inet_csum(data: &[u8]) -> u16 {
    Sum16BitWords::new().add_slice(data).ones_complement().to_be()
}

/// The first bytes of a UDP packet `src -> dst` as an ICMP error quotes
/// them: the IP header (IPv4: id 0x1234, DF, TTL 64, as if the packet were
/// `ip_len` bytes long; IPv6: hop limit 64) and the UDP header, whose
/// checksum is an arbitrary non-zero 0x5a5a (only its translation matters).
pub fn quoted_udp(src: SocketAddr, dst: SocketAddr, ip_len: u16) -> Vec<u8> {
    let mut q = Vec::new();
    let udp_len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let udp_len = ip_len - 20;
            let mut h = Ipv4Header::new(udp_len, 64, IpNumber::UDP, s.octets(), d.octets()).expect("IPv4 length");
            h.identification = 0x1234;
            h.write(&mut q).expect("writing to a Vec");
            udp_len
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let udp_len = ip_len - 40;
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: udp_len,
                next_header: IpNumber::UDP,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            };
            h.write(&mut q).expect("writing to a Vec");
            udp_len
        }
        _ => panic!("quoted_udp: mixed families {src} -> {dst}"),
    };
    let udp = UdpHeader { source_port: src.port(), destination_port: dst.port(), length: udp_len, checksum: 0x5a5a };
    q.extend_from_slice(&udp.to_bytes());
    q
}

/// An ICMP "fragmentation needed" (type 3 code 4, with its checksum) or,
/// for IPv6, an ICMPv6 "packet too big" (type 2, checksum left 0: a raw
/// ICMPv6 socket has the kernel fill it) with next-hop MTU `mtu`, quoting
/// `quoted`.
pub fn frag_needed(v6: bool, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let mut msg = if v6 {
        Icmpv6Header::new(Icmpv6Type::PacketTooBig { mtu: u32::from(mtu) }).to_bytes().to_vec()
    } else {
        let t = Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        });
        Icmpv4Header::with_checksum(t, quoted).to_bytes().to_vec()
    };
    msg.extend_from_slice(quoted);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_csum_is_rfc1071() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(inet_csum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        // An odd tail is padded with a zero byte.
        assert_eq!(inet_csum(&[0x12]), !0x1200);
    }

    #[test]
    fn quoted_udp_headers_verify() {
        let q = quoted_udp("10.0.0.1:53".parse().unwrap(), "10.0.0.2:4000".parse().unwrap(), 1500);
        assert_eq!(q.len(), 28);
        assert_eq!(inet_csum(&q[..20]), 0, "the IPv4 header checksum verifies");
        assert_eq!(u16::from_be_bytes([q[2], q[3]]), 1500);
        assert_eq!(&q[20..28], &[0, 53, 0x0f, 0xa0, 0x05, 0xc8, 0x5a, 0x5a]);
        let q6 = quoted_udp("[fd00::1]:53".parse().unwrap(), "[fd00::2]:4000".parse().unwrap(), 1500);
        assert_eq!(q6.len(), 48);
        assert_eq!((q6[0], u16::from_be_bytes([q6[4], q6[5]]), q6[6]), (0x60, 1460, 17));
    }

    #[test]
    fn frag_needed_messages() {
        let quoted = quoted_udp("10.0.0.1:53".parse().unwrap(), "10.0.0.2:4000".parse().unwrap(), 1500);
        let m = frag_needed(false, 1280, &quoted);
        assert_eq!(&m[..2], &[3, 4]);
        assert_eq!(&m[4..8], &[0, 0, 0x05, 0x00]);
        assert_eq!(inet_csum(&m), 0, "the ICMP checksum verifies");
        assert_eq!(&m[8..], &quoted[..]);
        let m6 = frag_needed(true, 1280, &quoted);
        assert_eq!(&m6[..8], &[2, 0, 0, 0, 0, 0, 0x05, 0x00]);
    }
}
