//! What the kernel says XDP can do with an interface: the generic-netlink
//! family `netdev` (Linux 6.3 and later) answers `DEV_GET` with the
//! interface's `xdp-features`. The bit that matters to the agent is
//! [`NDO_XMIT`]: XDP_REDIRECT into the interface delivers. For a veth the
//! kernel sets it exactly while the peer (in whatever namespace) has an XDP
//! program or NAPI (GRO) enabled; a physical NIC with `ndo_xdp_xmit` has it
//! always. The family's multicast group `mgmt` announces every change
//! (`DEV_CHANGE_NTF`): [`Notifications`] listens to it.
use std::io;

use netlink_packet_core::{
    emit_u32, emit_u64, parse_u32, parse_u64, DecodeError, DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, Nla,
    NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    ctrl::{
        nlas::{GenlCtrlAttrs, McastGrpAttrs},
        GenlCtrl, GenlCtrlCmd,
    },
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device takes redirected XDP frames.
pub const NDO_XMIT: u64 = 1 << 2;
/// `NETDEV_CMD_DEV_GET`.
const CMD_DEV_GET: u8 = 1;
/// `NETDEV_A_DEV_IFINDEX`.
const A_DEV_IFINDEX: u16 = 1;
/// `NETDEV_A_DEV_XDP_FEATURES`.
const A_DEV_XDP_FEATURES: u16 = 3;
/// The family's notification group.
const MGMT_GROUP: &str = "mgmt";

/// An attribute of a `netdev` device message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevAttr {
    /// `NETDEV_A_DEV_IFINDEX`.
    Ifindex(u32),
    /// `NETDEV_A_DEV_XDP_FEATURES` (`NETDEV_XDP_ACT_*` bits).
    XdpFeatures(u64),
    /// Any other attribute, kept as it came.
    Other(DefaultNla),
}

impl Nla for DevAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Ifindex(_) => 4,
            Self::XdpFeatures(_) => 8,
            Self::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Ifindex(_) => A_DEV_IFINDEX,
            Self::XdpFeatures(_) => A_DEV_XDP_FEATURES,
            Self::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        // The buffer is value_len() long (Nla::emit sizes it).
        match self {
            Self::Ifindex(v) => emit_u32(buffer, *v).unwrap_or(()),
            Self::XdpFeatures(v) => emit_u64(buffer, *v).unwrap_or(()),
            Self::Other(n) => n.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DevAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        Ok(match buf.kind() {
            A_DEV_IFINDEX => Self::Ifindex(parse_u32(buf.value())?),
            A_DEV_XDP_FEATURES => Self::XdpFeatures(parse_u64(buf.value())?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A message of the `netdev` family: a command and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netdev {
    /// `NETDEV_CMD_*`.
    pub cmd: u8,
    /// The attributes.
    pub attrs: Vec<DevAttr>,
}

impl Netdev {
    /// `DEV_GET` of one interface.
    pub fn dev_get(ifindex: u32) -> Self {
        Self { cmd: CMD_DEV_GET, attrs: vec![DevAttr::Ifindex(ifindex)] }
    }

    /// The `xdp-features` the message carries.
    pub fn xdp_features(&self) -> Option<u64> {
        self.attrs.iter().find_map(|a| match a {
            DevAttr::XdpFeatures(f) => Some(*f),
            _ => None,
        })
    }
}

impl GenlFamily for Netdev {
    fn family_name() -> &'static str {
        "netdev"
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for Netdev {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for Netdev {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf).map(|n| n.and_then(|n| DevAttr::parse(&n))).collect::<Result<_, _>>()?;
        Ok(Self { cmd: header.cmd, attrs })
    }
}

/// The `netdev` family as this kernel registered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family id (dynamic).
    pub id: u16,
    /// The id of the `mgmt` multicast group, if the kernel has it.
    pub mgmt_group: Option<u32>,
}

/// Why the features could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// The netlink socket failed.
    #[error("generic netlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered with an error (e.g. no such interface).
    #[error("generic netlink: the kernel answered error {0}")]
    Kernel(i32),
    /// The answer could not be decoded.
    #[error("generic netlink: undecodable answer: {0}")]
    Decode(String),
}

/// Sends one request and returns the one answer's payload.
fn request<F>(socket: &Socket, msg: GenlMessage<F>) -> Result<F, FeaturesError>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = NLM_F_REQUEST;
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 16 * 1024];
    let n = socket.recv(&mut &mut rx[..], 0)?;
    decode_answer(&rx[..n.min(rx.len())])
}

/// The payload of an answer datagram, or the kernel's error.
fn decode_answer<F>(datagram: &[u8]) -> Result<F, FeaturesError>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let msg =
        NetlinkMessage::<GenlMessage<F>>::deserialize(datagram).map_err(|e| FeaturesError::Decode(e.to_string()))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(g) => Ok(g.payload),
        NetlinkPayload::Error(e) => Err(FeaturesError::Kernel(e.code.map_or(0, |c| -c.get()))),
        other => Err(FeaturesError::Decode(format!("unexpected answer {other:?}"))),
    }
}

fn socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_GENERIC)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

/// Reads the `netdev` family's XDP features of interfaces, in the calling
/// thread's network namespace.
pub struct Features {
    socket: Socket,
    family: Family,
}

impl Features {
    /// `Ok(None)` when the kernel has no `netdev` family (before 6.3).
    pub fn open() -> Result<Option<Self>, FeaturesError> {
        let socket = socket()?;
        let ask = GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![GenlCtrlAttrs::FamilyName("netdev".into())] };
        let answer = match request(&socket, GenlMessage::from_payload(ask)) {
            Ok(a) => a,
            Err(FeaturesError::Kernel(libc::ENOENT)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let family = family_of(&answer).ok_or_else(|| FeaturesError::Decode("no family id".into()))?;
        Ok(Some(Self { socket, family }))
    }

    /// The family as registered.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The `NETDEV_XDP_ACT_*` bits of interface `ifindex`.
    pub fn of(&self, ifindex: u32) -> Result<u64, FeaturesError> {
        let mut msg = GenlMessage::from_payload(Netdev::dev_get(ifindex));
        msg.set_resolved_family_id(self.family.id);
        let answer: Netdev = request(&self.socket, msg)?;
        answer.xdp_features().ok_or_else(|| FeaturesError::Decode("no xdp-features attribute".into()))
    }

    /// Whether XDP_REDIRECT into `ifindex` delivers ([`NDO_XMIT`]).
    pub fn ndo_xmit(&self, ifindex: u32) -> Result<bool, FeaturesError> {
        Ok(self.of(ifindex)? & NDO_XMIT != 0)
    }
}

/// The family id and `mgmt` group of a `GETFAMILY` answer.
fn family_of(answer: &GenlCtrl) -> Option<Family> {
    let id = answer.nlas.iter().find_map(|a| match a {
        GenlCtrlAttrs::FamilyId(id) => Some(*id),
        _ => None,
    })?;
    let mgmt_group = answer
        .nlas
        .iter()
        .filter_map(|a| match a {
            GenlCtrlAttrs::McastGroups(groups) => Some(groups),
            _ => None,
        })
        .flatten()
        .find(|g| g.contains(&McastGrpAttrs::Name(MGMT_GROUP.into())))
        .and_then(|g| {
            g.iter().find_map(|a| match a {
                McastGrpAttrs::Id(id) => Some(*id),
                McastGrpAttrs::Name(_) => None,
            })
        });
    Some(Family { id, mgmt_group })
}

/// A socket in the `netdev` family's `mgmt` group: a datagram arrives
/// whenever a device of this namespace changes (its XDP features among
/// other things).
pub struct Notifications {
    socket: Socket,
}

impl Notifications {
    /// Joins `family`'s `mgmt` group; `None` if the kernel has no such group.
    pub fn join(family: Family) -> io::Result<Option<Self>> {
        let Some(group) = family.mgmt_group else { return Ok(None) };
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.add_membership(group)?;
        Ok(Some(Self { socket }))
    }

    /// Blocks until at least one notification came (or some were lost:
    /// the same to the caller, who re-reads everything), then reads what
    /// else is queued.
    pub fn wait(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut flags = 0;
        loop {
            match self.socket.recv(&mut &mut buf[..], flags) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if flags != 0 && e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
            flags = libc::MSG_DONTWAIT;
        }
    }
}

#[cfg(test)]
mod tests;
