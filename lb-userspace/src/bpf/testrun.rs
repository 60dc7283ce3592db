//! One run of an XDP program on a frame (`BPF_PROG_TEST_RUN`), as `xlb
//! trace`, the data-path tests and the data-path benchmark do it: the frame
//! arrives on a given interface (the `xdp_md` context passed in), and what
//! the program left is read back (its XDP action, the metadata and the frame
//! as it would leave).
use std::time::Duration;

use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp};

/// Bytes of the output buffer: room for any frame the data path sends (a
/// jumbo frame is not run through it).
pub const OUT_CAPACITY: usize = 4096;

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes and returns it: `data`,
/// `data_end`, `data_meta`, `ingress_ifindex`, `rx_queue_index`,
/// `egress_ifindex` (six `u32`).
const XDP_MD_WORDS: usize = 6;

/// What one run of the program left.
#[derive(Debug, Clone)]
pub struct XdpRun {
    /// The XDP action the program returned (`XDP_PASS`, `XDP_TX`, ...).
    pub action: u32,
    /// The metadata in front of the frame (`bpf_xdp_adjust_meta`), empty if none.
    pub meta: Vec<u8>,
    /// The frame as it left the program.
    pub frame: Vec<u8>,
    /// The returned context's `data_end` (metadata length plus frame length).
    pub data_end: u32,
    /// The bytes the kernel wrote to the output buffer.
    pub data_size_out: u32,
    /// The kernel's average time per run.
    pub duration: Duration,
}

/// Runs `prog` `repeat` times (at least once) on `frame`, arriving on the
/// interface `ingress_ifindex`, and returns what the last run left. The
/// kernel refusing the run (a frame too short or long, no room for the
/// output) is the error.
pub fn run_xdp(prog: &Xdp, ingress_ifindex: u32, frame: &[u8], repeat: u32) -> Result<XdpRun, ProgramError> {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let md: [u32; XDP_MD_WORDS] = [0, len, 0, ingress_ifindex, 0, 0];
    let ctx_in: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut ctx_out = [0u8; XDP_MD_WORDS * 4];
    let mut data_out = vec![0u8; OUT_CAPACITY];
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut data_out),
        ctx_in: Some(&ctx_in),
        ctx_out: Some(&mut ctx_out),
        repeat: repeat.max(1),
        ..TestRunOptions::new()
    })?;
    let word =
        |i: usize| u32::from_ne_bytes([ctx_out[i * 4], ctx_out[i * 4 + 1], ctx_out[i * 4 + 2], ctx_out[i * 4 + 3]]);
    // The output starts at data_meta: the returned `data` is the metadata
    // length, `data_end` the metadata and frame length.
    let (meta_len, data_end) = (word(0), word(1));
    let end = (data_end as usize).min(data_out.len());
    let meta_len = (meta_len as usize).min(end);
    Ok(XdpRun {
        action: res.return_value,
        meta: data_out[..meta_len].to_vec(),
        frame: data_out[meta_len..end].to_vec(),
        data_end,
        data_size_out: res.data_size_out,
        duration: res.duration,
    })
}
