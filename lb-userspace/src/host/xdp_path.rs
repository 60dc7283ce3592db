//! Which way the data path sends packets out of an interface, and why:
//! XDP_REDIRECT (zero-copy, the frame goes straight to the device) where the
//! kernel says redirected frames are delivered, else the safe fallback
//! (XDP_PASS with a hand-off to the tc program, which sends the packet with
//! `bpf_redirect_neigh`). A pure decision ([`decide`]) from what the agent
//! knows about the interface; the agent re-decides when the kernel announces
//! a change (`agent::xdp_paths`).
use lb_common::{IF_F_REDIRECT, IF_F_TX};

/// What is known about an egress interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// How xlb's XDP program is attached: `Some(true)` native (driver),
    /// `Some(false)` generic (skb), `None` not known (a link taken over
    /// from the previous agent).
    pub native: Option<bool>,
    /// Named by `--xdp-transmit`.
    pub forced: bool,
    /// The kernel's `NDO_XMIT` XDP feature; `None` when the kernel does not
    /// say (no `netdev` generic-netlink family: before Linux 6.3).
    pub ndo_xmit: Option<bool>,
    /// The interface is a veth (its `NDO_XMIT` follows the peer).
    pub veth: bool,
    /// Its driver is not one of those known to need the other side's help
    /// (used only when the kernel does not say).
    pub driver_capable: bool,
}

/// The path chosen for an interface, with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Path {
    /// Not known (an agent record without it).
    Unknown = 0,
    /// XDP_REDIRECT: the kernel reports `ndo_xmit`.
    XdpNdoXmit = 1,
    /// XDP_REDIRECT: a veth whose peer has an XDP program or NAPI.
    XdpNdoXmitVeth = 2,
    /// XDP_REDIRECT: `--xdp-transmit` says so.
    XdpForced = 3,
    /// XDP_REDIRECT: the kernel does not say; the driver is not one that
    /// needs help.
    XdpDriver = 4,
    /// tc: the kernel reports no `ndo_xmit`.
    TcNoNdoXmit = 5,
    /// tc: a veth whose peer has neither an XDP program nor NAPI.
    TcNoNdoXmitVeth = 6,
    /// tc: xlb's XDP program is attached in generic mode.
    TcGeneric = 7,
    /// tc: the kernel does not say; the driver needs the other side's help.
    TcDriver = 8,
    /// tc: the attach mode is not known (link taken over).
    TcModeUnknown = 9,
}

impl Path {
    /// Every path, for decoding.
    const ALL: [Self; 10] = [
        Self::Unknown,
        Self::XdpNdoXmit,
        Self::XdpNdoXmitVeth,
        Self::XdpForced,
        Self::XdpDriver,
        Self::TcNoNdoXmit,
        Self::TcNoNdoXmitVeth,
        Self::TcGeneric,
        Self::TcDriver,
        Self::TcModeUnknown,
    ];

    /// The code kept in the agent record (`AgentIface::path`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The path of a code; [`Path::Unknown`] for codes of a newer xlb.
    pub fn from_code(code: u32) -> Self {
        Self::ALL.into_iter().find(|p| p.code() == code).unwrap_or(Self::Unknown)
    }

    /// Whether XDP transmits into the interface itself.
    pub fn xdp(self) -> bool {
        matches!(self, Self::XdpNdoXmit | Self::XdpNdoXmitVeth | Self::XdpForced | Self::XdpDriver)
    }

    /// The interface's `IF_F_*` capabilities in the data path.
    pub fn caps(self) -> u32 {
        if self.xdp() {
            IF_F_TX | IF_F_REDIRECT
        } else {
            0
        }
    }

    /// `xdp-redirect`, `tc-redirect` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            p if p.xdp() => "xdp-redirect",
            _ => "tc-redirect",
        }
    }

    /// Why.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "not recorded",
            Self::XdpNdoXmit => "kernel reports ndo_xmit",
            Self::XdpNdoXmitVeth => "kernel reports ndo_xmit: peer has XDP or NAPI",
            Self::XdpForced => "forced by --xdp-transmit",
            Self::XdpDriver => "driver transmits XDP frames; kernel does not report xdp-features",
            Self::TcNoNdoXmit => "no ndo_xmit",
            Self::TcNoNdoXmitVeth => "no ndo_xmit: peer has neither XDP nor NAPI",
            Self::TcGeneric => "attached in generic mode",
            Self::TcDriver => "driver needs the peer's help; kernel does not report xdp-features",
            Self::TcModeUnknown => "attach mode not known: link taken over from the previous agent",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.reason())
    }
}

/// The path for an interface with these facts. XDP transmits only from a
/// native attachment; there `--xdp-transmit` wins, else the kernel's
/// `ndo_xmit` decides, else (old kernel) the driver.
pub fn decide(f: &Facts) -> Path {
    match (f.native, f.forced, f.ndo_xmit) {
        (None, ..) => Path::TcModeUnknown,
        (Some(false), ..) => Path::TcGeneric,
        (Some(true), true, _) => Path::XdpForced,
        (Some(true), false, Some(true)) if f.veth => Path::XdpNdoXmitVeth,
        (Some(true), false, Some(true)) => Path::XdpNdoXmit,
        (Some(true), false, Some(false)) if f.veth => Path::TcNoNdoXmitVeth,
        (Some(true), false, Some(false)) => Path::TcNoNdoXmit,
        (Some(true), false, None) if f.driver_capable => Path::XdpDriver,
        (Some(true), false, None) => Path::TcDriver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(native: Option<bool>, forced: bool, ndo_xmit: Option<bool>) -> Facts {
        Facts { native, forced, ndo_xmit, veth: false, driver_capable: false }
    }

    #[test]
    fn the_kernel_decides_on_a_native_attachment() {
        assert_eq!(decide(&facts(Some(true), false, Some(true))), Path::XdpNdoXmit);
        assert_eq!(decide(&facts(Some(true), false, Some(false))), Path::TcNoNdoXmit);
        let veth = |ndo| Facts { veth: true, ..facts(Some(true), false, Some(ndo)) };
        assert_eq!(decide(&veth(true)), Path::XdpNdoXmitVeth);
        assert_eq!(decide(&veth(false)), Path::TcNoNdoXmitVeth);
        // The driver list is not asked when the kernel says.
        let capable = Facts { driver_capable: true, ..facts(Some(true), false, Some(false)) };
        assert_eq!(decide(&capable), Path::TcNoNdoXmit);
    }

    #[test]
    fn forced_wins_on_native_only() {
        for ndo in [Some(true), Some(false), None] {
            assert_eq!(decide(&facts(Some(true), true, ndo)), Path::XdpForced, "{ndo:?}");
            assert_eq!(decide(&facts(Some(false), true, ndo)), Path::TcGeneric, "{ndo:?}");
            assert_eq!(decide(&facts(None, true, ndo)), Path::TcModeUnknown, "{ndo:?}");
            assert_eq!(decide(&facts(Some(false), false, ndo)), Path::TcGeneric, "{ndo:?}");
        }
    }

    #[test]
    fn without_the_kernel_s_word_the_driver_list_decides() {
        let f = |capable| Facts { driver_capable: capable, ..facts(Some(true), false, None) };
        assert_eq!(decide(&f(true)), Path::XdpDriver);
        assert_eq!(decide(&f(false)), Path::TcDriver);
    }

    #[test]
    fn only_xdp_paths_get_capabilities_and_codes_round_trip() {
        for p in Path::ALL {
            assert_eq!(Path::from_code(p.code()), p);
            assert_eq!(p.caps() != 0, p.name() == "xdp-redirect", "{p:?}");
        }
        assert_eq!(Path::from_code(999), Path::Unknown);
        assert_eq!(Path::TcGeneric.caps(), 0);
        assert_eq!(Path::XdpNdoXmitVeth.caps(), IF_F_TX | IF_F_REDIRECT);
        assert_eq!(Path::XdpNdoXmitVeth.to_string(), "xdp-redirect (kernel reports ndo_xmit: peer has XDP or NAPI)");
        assert_eq!(Path::TcNoNdoXmit.to_string(), "tc-redirect (no ndo_xmit)");
        assert_eq!(Path::XdpForced.to_string(), "xdp-redirect (forced by --xdp-transmit)");
        assert_eq!(Path::TcGeneric.to_string(), "tc-redirect (attached in generic mode)");
    }
}
