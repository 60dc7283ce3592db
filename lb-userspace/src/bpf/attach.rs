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

/// Opens a pinned link left by a previous agent. The pin stays until this
/// agent's program is in the link ([`settle_pin`]): if swapping the program
/// fails, the pin keeps the old program attached.
fn take_pinned(path: &Path) -> Result<Option<FdLink>> {
    match PinnedLink::from_pin(path) {
        Ok(p) => Ok(Some(FdLink::from(p))),
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
    links: Links,
}

/// How this process holds the two attachments of one interface.
enum Links {
    /// Links pinned under the pin path since they were attached: they
    /// outlive this process until the pins are removed.
    Pinned { xdp: PinnedLink, tc: PinnedLink },
    /// Attachments only this process holds (kernels without tcx, where the
    /// tc program is attached through netlink): they go with the process.
    Owned { xdp: aya::programs::xdp::XdpLinkId, tc: aya::programs::tc::SchedClassifierLinkId },
}

/// Whether links can be pinned at attach time: XDP links (5.9) and tcx
/// links (6.6); before 6.6 the tc program is attached through netlink.
fn links_pinnable() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
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

/// Attaches the (loaded) programs to one interface: tc ingress for packets
/// XDP hands to the kernel, then XDP. A link pinned by a previous agent
/// on this interface (stopped with `--keep-on-exit`, or dead) is taken over
/// instead (no gap). The links are pinned at once, so the programs stay
/// attached if this agent dies.
pub fn attach_one(ebpf: &mut Ebpf, iface: &str, mode: XdpModeArg, pin_path: &Path) -> Result<Attached> {
    // tc first: this agent's tc program reads the hand-offs of an earlier
    // agent's XDP program as well as its own, while an earlier tc program
    // would leave this XDP program's routed hand-offs (`META_MAGIC_ROUTED`)
    // to the kernel during the swap.
    let tc: &mut SchedClassifier =
        ebpf.program_mut(TC_PROG).context("tc program missing from the object")?.try_into()?;
    let tc_pin = link_pin(pin_path, "tc", iface);
    let tc_id = match take_pinned(&tc_pin)? {
        Some(fd) => {
            let link = SchedClassifierLink::try_from(fd).context("pinned tc link")?;
            tc.attach_to_link(link)
                .with_context(|| format!("replacing the program of the pinned tc link on {iface}"))?
        }
        None => tc
            .attach(iface, TcAttachType::Ingress)
            .with_context(|| format!("attaching the tc ingress program to {iface}"))?,
    };
    let xdp: &mut Xdp = ebpf.program_mut(XDP_PROG).context("XDP program missing from the object")?.try_into()?;
    let xdp_pin = link_pin(pin_path, "xdp", iface);
    let (m, xdp_id) = if let Some(fd) = take_pinned(&xdp_pin)? {
        let link = XdpLink::try_from(fd).context("pinned XDP link")?;
        let id = xdp
            .attach_to_link(link)
            .with_context(|| format!("replacing the program of the pinned XDP link on {iface}"))?;
        let m = crate::status::recorded_mode(pin_path, iface).unwrap_or(XdpMode::Default);
        info!(%iface, mode = ?m, "took over the XDP link of the previous agent");
        (m, id)
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
    let links = if links_pinnable() {
        std::fs::create_dir_all(pin_path.join("links")).context("creating the links pin directory")?;
        Links::Pinned { xdp: pin_xdp(ebpf, xdp_id, &xdp_pin)?, tc: pin_tc(ebpf, tc_id, &tc_pin)? }
    } else {
        // Not pinnable here: the links are this agent's alone.
        settle_pin(&xdp_pin)?;
        settle_pin(&tc_pin)?;
        Links::Owned { xdp: xdp_id, tc: tc_id }
    };
    Ok(Attached { iface: iface.to_owned(), mode: m, links })
}

/// Drops the pin a taken-over link had (now that this agent's program is
/// in it and this agent holds it); it is pinned again at once when links
/// are pinnable.
fn settle_pin(pin: &Path) -> Result<()> {
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the previous agent's pin {}", pin.display()))
        }
        _ => Ok(()),
    }
}

/// Takes the XDP link out of the program and pins it.
fn pin_xdp(ebpf: &mut Ebpf, id: aya::programs::xdp::XdpLinkId, pin: &Path) -> Result<PinnedLink> {
    let xdp: &mut Xdp = ebpf.program_mut(XDP_PROG).context("XDP program")?.try_into()?;
    let fd = FdLink::try_from(xdp.take_link(id)?).context("XDP was attached through netlink, not a link")?;
    settle_pin(pin)?;
    fd.pin(pin).with_context(|| format!("pinning the XDP link at {}", pin.display()))
}

/// Takes the tc link out of the program and pins it.
fn pin_tc(ebpf: &mut Ebpf, id: aya::programs::tc::SchedClassifierLinkId, pin: &Path) -> Result<PinnedLink> {
    let tc: &mut SchedClassifier = ebpf.program_mut(TC_PROG).context("tc program")?.try_into()?;
    let fd = FdLink::try_from(tc.take_link(id)?).context("tc was attached through netlink, not a tcx link")?;
    settle_pin(pin)?;
    fd.pin(pin).with_context(|| format!("pinning the tc link at {}", pin.display()))
}

/// Loads both programs and attaches them to every interface.
pub fn attach_all(ebpf: &mut Ebpf, ifaces: &[String], mode: XdpModeArg, pin_path: &Path) -> Result<Vec<Attached>> {
    load(ebpf)?;
    ifaces.iter().map(|i| attach_one(ebpf, i, mode, pin_path)).collect()
}

/// Removes the link pins a previous agent left on interfaces this agent did
/// not attach to (an interface taken out of its command line): those
/// programs detach instead of forwarding with state nobody updates.
pub fn release_stale(pin_path: &Path, attached: &[Attached]) {
    let Ok(entries) = std::fs::read_dir(pin_path.join("links")) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = attached.iter().any(|a| ["xdp", "tc"].iter().any(|k| name == format!("{k}-{}", a.iface)));
        if !ours {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    info!(pin = %e.path().display(), "released a link a previous agent left on an interface not attached now");
                }
                Err(err) => warn!(pin = %e.path().display(), error = %err, "cannot remove a stale link pin"),
            }
        }
    }
}

/// Detaches from an interface (that may be gone already: errors ignored):
/// the pins are removed and the last reference to each link closed.
pub fn detach(ebpf: &mut Ebpf, a: Attached) {
    match a.links {
        Links::Pinned { xdp, tc } => {
            // unpin() removes the pin file; dropping the returned fd drops
            // the last reference, which detaches the program.
            drop(xdp.unpin());
            drop(tc.unpin());
        }
        Links::Owned { xdp, tc } => {
            if let Some(Ok(p)) = ebpf.program_mut(XDP_PROG).map(<&mut Xdp>::try_from) {
                let _ = p.detach(xdp);
            }
            if let Some(Ok(p)) = ebpf.program_mut(TC_PROG).map(<&mut SchedClassifier>::try_from) {
                let _ = p.detach(tc);
            }
        }
    }
}

/// Leaves the programs attached after this process exits (the pins stay).
pub fn keep(ebpf: &mut Ebpf, attached: Vec<Attached>, pin_path: &Path) -> Result<()> {
    for a in attached {
        match a.links {
            Links::Pinned { .. } => {}
            Links::Owned { xdp, tc } => {
                std::fs::create_dir_all(pin_path.join("links")).context("creating the links pin directory")?;
                pin_xdp(ebpf, xdp, &link_pin(pin_path, "xdp", &a.iface))?;
                pin_tc(ebpf, tc, &link_pin(pin_path, "tc", &a.iface))?;
            }
        }
        info!(iface = %a.iface, "programs left attached (--keep-on-exit)");
    }
    Ok(())
}
