//! Attaching the XDP and tc programs to the interfaces, with link pins so an
//! agent started with `--keep-on-exit` can hand its programs to the next one
//! without a gap (the new agent swaps its program into the pinned links).
use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};
use clap::ValueEnum;
use tracing::{info, warn};

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    /// Native, falling back to generic with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Name of the XDP program in the object.
pub const XDP_PROG: &str = "xlb_xdp";
/// Name of the tc program in the object.
pub const TC_PROG: &str = "xlb_tc";

fn link_pin(pin_path: &Path, kind: &str, iface: &str) -> PathBuf {
    pin_path.join("links").join(format!("{kind}-{iface}"))
}

/// Takes over a pinned link left by a previous agent, removing its pin.
fn take_pinned(path: &Path) -> Result<Option<FdLink>> {
    match PinnedLink::from_pin(path) {
        Ok(p) => Ok(Some(p.unpin().with_context(|| format!("unpinning {}", path.display()))?)),
        Err(aya::programs::links::LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("opening pinned link {}", path.display())),
    }
}

/// Programs attached to one interface.
pub struct Attached {
    /// Interface name.
    pub iface: String,
    /// The mode the programs were attached in.
    pub mode: XdpMode,
    xdp: aya::programs::xdp::XdpLinkId,
    tc: aya::programs::tc::SchedClassifierLinkId,
}

/// Loads both programs into the kernel (once, before any attach).
pub fn load(ebpf: &mut Ebpf) -> Result<()> {
    let xdp: &mut Xdp = ebpf.program_mut(XDP_PROG).context("XDP program missing from the object")?.try_into()?;
    xdp.load().context("loading the XDP program (the verifier refused it; run with --log-level debug)")?;
    let tc: &mut SchedClassifier =
        ebpf.program_mut(TC_PROG).context("tc program missing from the object")?.try_into()?;
    tc.load().context("loading the tc program")?;
    Ok(())
}

/// Attaches the (loaded) programs to one interface: XDP, and tc ingress
/// for packets XDP hands to the kernel. A link pinned by a previous agent
/// on this interface is taken over instead (no gap).
pub fn attach_one(ebpf: &mut Ebpf, iface: &str, mode: XdpModeArg, pin_path: &Path) -> Result<Attached> {
    let xdp: &mut Xdp = ebpf.program_mut(XDP_PROG).context("XDP program missing from the object")?.try_into()?;
    let pinned = link_pin(pin_path, "xdp", iface);
    let (m, xdp_id) = if let Some(fd) = take_pinned(&pinned)? {
        let link = XdpLink::try_from(fd).context("pinned XDP link")?;
        let id = xdp
            .attach_to_link(link)
            .with_context(|| format!("replacing the program of the pinned XDP link on {iface}"))?;
        info!(%iface, "took over the XDP link of the previous agent");
        (XdpMode::Default, id)
    } else {
        let (m, id) = match mode {
            XdpModeArg::Native => (XdpMode::Driver, xdp.attach(iface, XdpMode::Driver)),
            XdpModeArg::Generic => (XdpMode::Skb, xdp.attach(iface, XdpMode::Skb)),
            XdpModeArg::Auto => match xdp.attach(iface, XdpMode::Driver) {
                Ok(id) => (XdpMode::Driver, Ok(id)),
                Err(e) => {
                    warn!(%iface, error = %e, "native XDP failed; falling back to generic (slower)");
                    (XdpMode::Skb, xdp.attach(iface, XdpMode::Skb))
                }
            },
        };
        let id = id.with_context(|| {
            format!(
                "attaching XDP to {iface} (does it exist in this network namespace? is another XDP program attached?)"
            )
        })?;
        info!(%iface, mode = ?m, "XDP attached");
        (m, id)
    };
    let tc: &mut SchedClassifier =
        ebpf.program_mut(TC_PROG).context("tc program missing from the object")?.try_into()?;
    let pinned = link_pin(pin_path, "tc", iface);
    let tc_id = match take_pinned(&pinned)? {
        Some(fd) => {
            let link = SchedClassifierLink::try_from(fd).context("pinned tc link")?;
            tc.attach_to_link(link)
                .with_context(|| format!("replacing the program of the pinned tc link on {iface}"))?
        }
        None => tc
            .attach(iface, TcAttachType::Ingress)
            .with_context(|| format!("attaching the tc ingress program to {iface}"))?,
    };
    Ok(Attached { iface: iface.to_owned(), mode: m, xdp: xdp_id, tc: tc_id })
}

/// Loads both programs and attaches them to every interface.
pub fn attach_all(ebpf: &mut Ebpf, ifaces: &[String], mode: XdpModeArg, pin_path: &Path) -> Result<Vec<Attached>> {
    load(ebpf)?;
    ifaces.iter().map(|i| attach_one(ebpf, i, mode, pin_path)).collect()
}

/// Detaches from an interface (that may be gone already: errors ignored).
pub fn detach(ebpf: &mut Ebpf, a: Attached) {
    if let Some(Ok(xdp)) = ebpf.program_mut(XDP_PROG).map(<&mut Xdp>::try_from) {
        let _ = xdp.detach(a.xdp);
    }
    if let Some(Ok(tc)) = ebpf.program_mut(TC_PROG).map(<&mut SchedClassifier>::try_from) {
        let _ = tc.detach(a.tc);
    }
}

/// Pins the links so the programs stay attached after this process exits.
pub fn keep(ebpf: &mut Ebpf, attached: Vec<Attached>, pin_path: &Path) -> Result<()> {
    std::fs::create_dir_all(pin_path.join("links")).context("creating the links pin directory")?;
    for a in attached {
        let xdp: &mut Xdp = ebpf.program_mut(XDP_PROG).context("XDP program")?.try_into()?;
        let link = xdp.take_link(a.xdp)?;
        let fd = FdLink::try_from(link).context("XDP was attached through netlink, not a link; cannot keep it")?;
        fd.pin(link_pin(pin_path, "xdp", &a.iface)).context("pinning the XDP link")?;
        let tc: &mut SchedClassifier = ebpf.program_mut(TC_PROG).context("tc program")?.try_into()?;
        let link = tc.take_link(a.tc)?;
        let fd = FdLink::try_from(link).context("tc was attached through netlink, not a link; cannot keep it")?;
        fd.pin(link_pin(pin_path, "tc", &a.iface)).context("pinning the tc link")?;
        info!(iface = %a.iface, "programs left attached (--keep-on-exit)");
    }
    Ok(())
}
