//! `XLB_ANNOUNCE` and `XLB_L2_IFACES` (`--announce l2`): which VIPs the data
//! path answers ARP and neighbour solicitations for, and on which interfaces.
//!
//! The announcer (`crate::announce`) asks for a set of VIPs
//! ([`MapWriter::set_announced`]); the map holds those of them that are
//! programmed (the VIP of some service), and every [`MapWriter::apply`]
//! brings it to that again. So a VIP removed from the configuration, or a
//! deleted Service, stops being answered in the same apply, before the
//! announcer hears of it; a VIP is answered only once its services are
//! programmed.
use std::{collections::BTreeSet, net::IpAddr};

use lb_common::L2Iface;

use super::{encode::addr16, ip_from16, MapOps, MapWriter, Op, WriteError};

impl<M: MapOps> MapWriter<M> {
    /// Asks for `vips` to be announced (replacing what was asked before):
    /// those of them that are programmed enter `XLB_ANNOUNCE`, the others
    /// when they are; VIPs not in `vips` leave it at once.
    pub fn set_announced(&mut self, vips: impl IntoIterator<Item = IpAddr>) -> Result<(), WriteError> {
        self.announce_wanted = vips.into_iter().map(addr16).collect();
        self.sync_announced()
    }

    /// The VIPs in `XLB_ANNOUNCE` (asked for and programmed), sorted.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.announced.iter().copied().map(ip_from16).collect()
    }

    /// Brings `XLB_ANNOUNCE` to the asked VIPs that are programmed:
    /// deletions first, then additions.
    pub(super) fn sync_announced(&mut self) -> Result<(), WriteError> {
        let want: BTreeSet<[u8; 16]> =
            self.announce_wanted.iter().filter(|v| self.vips.contains_key(*v)).copied().collect();
        let gone: Vec<[u8; 16]> = self.announced.difference(&want).copied().collect();
        let new: Vec<[u8; 16]> = want.difference(&self.announced).copied().collect();
        for vip in gone {
            self.maps.exec(&Op::Unannounce(vip))?;
            self.announced.remove(&vip);
        }
        for vip in new {
            self.maps.exec(&Op::Announce(vip))?;
            self.announced.insert(vip);
        }
        Ok(())
    }

    /// Makes `ifindex` an announce interface with MAC `mac`.
    pub fn set_l2_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), WriteError> {
        self.maps.exec(&Op::SetL2Iface(ifindex, L2Iface { mac, _pad: [0; 2], flags: 0 })).map(drop)
    }

    /// Removes `ifindex` from the announce interfaces.
    pub fn remove_l2_interface(&mut self, ifindex: u32) -> Result<(), WriteError> {
        self.maps.exec(&Op::DeleteL2Iface(ifindex)).map(drop)
    }

    /// Removes every announce interface not in `keep` (those a previous
    /// agent left pinned); returns how many.
    pub fn retain_l2_interfaces(&mut self, keep: &BTreeSet<u32>) -> Result<usize, WriteError> {
        let stale: Vec<u32> = self.maps.read_l2_ifaces().difference(keep).copied().collect();
        for i in &stale {
            self.remove_l2_interface(*i)?;
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        state::model::{
            test_support::{backends, ip, service},
            DesiredState, Protocol, ServiceSpec, SourceMode,
        },
        state::writer::{addr16, MapWriter, Op},
    };

    fn svc(name: &str, vip: &str, port: u16, protocol: Protocol) -> ServiceSpec {
        ServiceSpec {
            source: SourceMode::Preserve,
            maglev_table_size: Some(251),
            backends: backends(&["10.1.0.2:80"]),
            ..service(name, vip, port, protocol)
        }
    }

    #[test]
    fn only_programmed_vips_are_announced_and_a_removed_vip_leaves_in_the_same_apply() {
        let mut w = MapWriter::in_memory(1 << 20, 0);
        let both = DesiredState {
            services: vec![
                svc("a", "192.0.2.10", 80, Protocol::Tcp),
                svc("a-udp", "192.0.2.10", 80, Protocol::Udp),
                svc("b", "2001:db8::10", 80, Protocol::Tcp),
            ],
        };
        w.apply(&both).unwrap();
        // 192.0.2.99 is no VIP: asked for, not announced.
        w.set_announced([ip("192.0.2.10"), ip("2001:db8::10"), ip("192.0.2.99")]).unwrap();
        let want = [addr16(ip("192.0.2.10")), addr16(ip("2001:db8::10"))].into_iter().collect();
        assert_eq!(w.memory().announce, want);
        assert_eq!(w.announced(), [ip("192.0.2.10"), ip("2001:db8::10")].into_iter().collect());
        // One of two services on 192.0.2.10 goes: still announced. The IPv6 VIP goes: not.
        w.memory().log.clear();
        w.apply(&DesiredState { services: vec![svc("a", "192.0.2.10", 80, Protocol::Tcp)] }).unwrap();
        assert_eq!(w.memory().announce, [addr16(ip("192.0.2.10"))].into_iter().collect());
        assert!(w.memory().log.contains(&Op::Unannounce(addr16(ip("2001:db8::10")))));
        // Programmed again while still asked for: announced again.
        w.apply(&both).unwrap();
        assert_eq!(w.memory().announce.len(), 2);
        // Asked for no more: gone.
        w.set_announced([]).unwrap();
        assert!(w.memory().announce.is_empty());
        assert!(w.announced().is_empty());
    }

    #[test]
    fn a_vip_asked_before_it_is_programmed_is_announced_once_it_is() {
        let mut w = MapWriter::in_memory(1 << 20, 0);
        w.set_announced([ip("192.0.2.10")]).unwrap();
        assert!(w.memory().announce.is_empty(), "no service yet");
        w.apply(&DesiredState { services: vec![svc("a", "192.0.2.10", 80, Protocol::Tcp)] }).unwrap();
        assert_eq!(w.memory().announce, [addr16(ip("192.0.2.10"))].into_iter().collect());
        // The VIP enters XLB_ANNOUNCE after its service value.
        let log = &w.memory().log;
        let svc_at = log.iter().position(|o| matches!(o, Op::SetService(..))).unwrap();
        let ann_at = log.iter().position(|o| matches!(o, Op::Announce(_))).unwrap();
        assert!(svc_at < ann_at, "{log:?}");
    }

    #[test]
    fn unchanged_announcements_write_nothing() {
        let mut w = MapWriter::in_memory(1 << 20, 0);
        w.apply(&DesiredState { services: vec![svc("a", "192.0.2.10", 80, Protocol::Tcp)] }).unwrap();
        w.set_announced([ip("192.0.2.10")]).unwrap();
        w.memory().log.clear();
        w.set_announced([ip("192.0.2.10")]).unwrap();
        w.apply(&DesiredState { services: vec![svc("a", "192.0.2.10", 80, Protocol::Tcp)] }).unwrap();
        assert!(!w.memory().log.iter().any(|o| matches!(o, Op::Announce(_) | Op::Unannounce(_))));
    }

    #[test]
    fn l2_interfaces_are_written_and_removed() {
        let mut w = MapWriter::in_memory(1 << 20, 0);
        w.set_l2_interface(7, [2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(w.memory().l2_ifaces[&7].mac, [2, 0, 0, 0, 0, 1]);
        w.remove_l2_interface(7).unwrap();
        assert!(w.memory().l2_ifaces.is_empty());
    }
}
