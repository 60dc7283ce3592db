//! xlb data path: one XDP program (parse → lookup → pick → rewrite → send)
//! and one tc ingress program that forwards packets XDP rewrote but could
//! not transmit itself.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: they live in the
// per-CPU scratch or the caller's frame, and by-value arguments would copy
// them again onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args, reason = "keeps map keys off the BPF stack")]

mod affinity;
mod clock;
mod flowcache;
mod forward;
mod frag;
mod guard;
mod icmp;
mod l2;
mod log;
mod maps;
mod nat;
mod nexthop;
mod notes;
mod packet;
mod prefilter;
mod ranges;
mod reject;
mod runtime;
mod scratch;
mod stats;
mod trace;
mod untracked;
mod words;
mod xdp;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// The XDP entry point, attached to every `--interface`.
#[xdp]
pub fn xlb_xdp(ctx: XdpContext) -> u32 {
    match xdp::process(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

/// The tc ingress entry point: forwards what XDP marked in its metadata.
#[classifier]
pub fn xlb_tc(ctx: TcContext) -> i32 {
    forward::tc_forward(&ctx).unwrap_or(TC_ACT_OK)
}
