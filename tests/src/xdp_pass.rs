//! A minimal XDP program that passes every packet (`r0 = XDP_PASS; exit`),
//! loaded with the `bpf` system call and attached through a BPF link to an
//! interface of a namespace: what a pod that runs XDP looks like to the
//! node (its veth then takes redirected XDP frames). Closing the link (on
//! drop or [`XdpPass::detach`]) detaches it.
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{bail, Context as _, Result};

use crate::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;

/// `bpf(cmd, attr)` with a zero-padded attribute block; the new fd.
fn bpf(cmd: libc::c_long, attr: &[u8]) -> std::io::Result<OwnedFd> {
    let mut block = [0u8; 128];
    block[..attr.len()].copy_from_slice(attr);
    // SAFETY: the block is 128 valid bytes, at least the size of every
    // attribute this command reads.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, block.as_mut_ptr(), block.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An XDP_PASS program attached to an interface.
pub struct XdpPass {
    link: OwnedFd,
}

impl XdpPass {
    /// Loads the program and attaches it to `ifname` in `ns` (native mode
    /// where the driver has it, as for a veth).
    pub fn attach(ns: &Netns, ifname: &str) -> Result<Self> {
        // mov64 r0, XDP_PASS; exit
        let mut insns = Vec::new();
        insns.extend_from_slice(&[0xb7, 0, 0, 0]);
        insns.extend_from_slice(&XDP_PASS.to_ne_bytes());
        insns.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
        let license = c"GPL";
        let mut attr = Vec::new();
        attr.extend_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
        attr.extend_from_slice(&2u32.to_ne_bytes());
        attr.extend_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr.extend_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &attr).context("loading an XDP_PASS program (root?)")?;
        let name = ifname.to_owned();
        let link = ns.run(move || -> Result<OwnedFd> {
            let c = std::ffi::CString::new(name.clone())?;
            // SAFETY: c is a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {name}: {}", std::io::Error::last_os_error());
            }
            let mut attr = Vec::new();
            attr.extend_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(&prog) as u32).to_ne_bytes());
            attr.extend_from_slice(&ifindex.to_ne_bytes());
            attr.extend_from_slice(&BPF_XDP.to_ne_bytes());
            attr.extend_from_slice(&0u32.to_ne_bytes());
            bpf(BPF_LINK_CREATE, &attr).with_context(|| format!("attaching XDP_PASS to {name}"))
        })?;
        Ok(Self { link })
    }

    /// Detaches the program.
    pub fn detach(self) {
        drop(self.link);
    }
}
