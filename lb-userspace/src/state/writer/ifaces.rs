//! `XLB_IFACES` and the devmap: what the data path may do with each
//! interface. Two sources set the bits, and the writer merges them per
//! interface: the transmit path of each attached interface
//! (`IF_F_TX`/`IF_F_REDIRECT`, `agent::xdp_paths`) and the pods' veths the
//! tc program may redirect straight into (`IF_F_PEER`, `host::peer_veth`).
//! An interface with neither has no entry.
use std::collections::{BTreeSet, HashMap};

use lb_common::{IF_F_PEER, IF_F_REDIRECT};

use super::{map_err, MapWriter, WriteError};

/// The writer's mirror of `XLB_IFACES`, by source.
#[derive(Debug, Default)]
pub struct IfaceCaps {
    /// Attached interfaces → their transmit path's `IF_F_*` bits.
    paths: HashMap<u32, u32>,
    /// Veths that get [`IF_F_PEER`].
    peers: BTreeSet<u32>,
}

impl IfaceCaps {
    /// The bits of `ifindex`'s entry; `None`: no entry.
    fn bits(&self, ifindex: u32) -> Option<u32> {
        let path = self.paths.get(&ifindex).copied();
        let peer = self.peers.contains(&ifindex);
        (path.is_some() || peer).then(|| path.unwrap_or(0) | if peer { IF_F_PEER } else { 0 })
    }
}

impl MapWriter {
    /// Records what XDP may do on attached interface `ifindex` (`IF_F_TX`,
    /// `IF_F_REDIRECT`, from its transmit path); with `IF_F_REDIRECT` the
    /// interface also enters the devmap (`XLB_TX_PORTS`) that redirects into
    /// it, without it the interface leaves the devmap. The devmap changes
    /// first when the interface gains the bit and last when it loses it: the
    /// next-hop cache may still hold the old bits for a moment, and a
    /// redirect into an interface that is not in the devmap fails over to
    /// the kernel's path.
    pub fn set_interface_caps(&mut self, ifindex: u32, caps: u32) -> Result<(), WriteError> {
        let before = self.ifaces.paths.insert(ifindex, caps);
        let written = self.write_iface(ifindex);
        if written.is_err() {
            match before {
                Some(b) => self.ifaces.paths.insert(ifindex, b),
                None => self.ifaces.paths.remove(&ifindex),
            };
        }
        written
    }

    /// Makes `peers` the veths with [`IF_F_PEER`]: writes the entries of
    /// those that gain or lose it (their other bits kept). An entry that
    /// fails to write keeps its old state in the mirror, so the next call
    /// with the same set retries it.
    pub fn set_peer_veths(&mut self, peers: &BTreeSet<u32>) -> Result<(), WriteError> {
        let changed: Vec<u32> = self.ifaces.peers.symmetric_difference(peers).copied().collect();
        let mut result = Ok(());
        for ifindex in changed {
            let gains = peers.contains(&ifindex);
            if gains {
                self.ifaces.peers.insert(ifindex);
            } else {
                self.ifaces.peers.remove(&ifindex);
            }
            if let Err(e) = self.write_iface(ifindex) {
                if gains {
                    self.ifaces.peers.remove(&ifindex);
                } else {
                    self.ifaces.peers.insert(ifindex);
                }
                result = Err(e);
            }
        }
        result
    }

    /// The veths with [`IF_F_PEER`], as written.
    pub fn peer_veths(&self) -> &BTreeSet<u32> {
        &self.ifaces.peers
    }

    /// Deletes the entries this writer did not set (an earlier agent's:
    /// interfaces no longer attached, veths that may be gone, their index
    /// reused). Called once the start's paths and veths are written.
    pub fn drop_stale_interfaces(&mut self) -> Result<(), WriteError> {
        let stale: Vec<u32> =
            self.maps.ifaces.keys().filter_map(Result::ok).filter(|i| self.ifaces.bits(*i).is_none()).collect();
        for ifindex in stale {
            self.write_iface(ifindex)?;
        }
        Ok(())
    }

    /// Writes `ifindex`'s entry and devmap slot from the mirror.
    fn write_iface(&mut self, ifindex: u32) -> Result<(), WriteError> {
        let Some(caps) = self.ifaces.bits(ifindex) else {
            remove_quietly(self.maps.ifaces.remove(&ifindex)).map_err(map_err(lb_common::names::IFACES))?;
            return remove_quietly(self.maps.tx_ports.remove(ifindex)).map_err(|e| WriteError::Devmap(e.into()));
        };
        if caps & IF_F_REDIRECT != 0 {
            self.maps.tx_ports.insert(ifindex, ifindex, None, 0).map_err(WriteError::Devmap)?;
            return self.maps.ifaces.insert(ifindex, caps, 0).map_err(map_err(lb_common::names::IFACES));
        }
        self.maps.ifaces.insert(ifindex, caps, 0).map_err(map_err(lb_common::names::IFACES))?;
        remove_quietly(self.maps.tx_ports.remove(ifindex)).map_err(|e| WriteError::Devmap(e.into()))
    }
}

/// A removal's result, "not there" counted as done.
fn remove_quietly(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::IF_F_TX;

    #[test]
    fn an_entry_merges_the_path_bits_and_the_peer_bit() {
        let mut c = IfaceCaps::default();
        assert_eq!(c.bits(3), None);
        c.paths.insert(3, IF_F_TX | IF_F_REDIRECT);
        c.peers.insert(3);
        c.peers.insert(9);
        c.paths.insert(4, 0);
        assert_eq!(c.bits(3), Some(IF_F_TX | IF_F_REDIRECT | IF_F_PEER));
        assert_eq!(c.bits(9), Some(IF_F_PEER), "a pod's veth: the peer bit alone");
        assert_eq!(c.bits(4), Some(0), "an attached interface on the tc path keeps an entry");
        c.peers.remove(&9);
        assert_eq!(c.bits(9), None);
    }
}
