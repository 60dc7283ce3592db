//! `cargo xtask fuzz [--frames N] [--seed S]`: the data-path fuzzer
//! (`lb-userspace/tests/fuzz.rs`) with the full frame count. The same test
//! runs in `cargo xtask test` with a reduced count; here it drives a million
//! frames (by default) through the real XDP program and prints the count,
//! the seed and the number of violations, failing on any.

use anyhow::{bail, Result};

use crate::{setup, util};

/// Frames of a full run.
pub const DEFAULT_FRAMES: u64 = 1_000_000;

/// Flags of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Frames to run through the XDP program.
    #[arg(long, default_value_t = DEFAULT_FRAMES, value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: u64,
    /// Seed of the frame generator, decimal or 0x-hex (default: the test's fixed seed, printed).
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
}

/// A seed: decimal or `0x` hexadecimal, `_` separators allowed.
fn parse_seed(s: &str) -> Result<u64, String> {
    let v = s.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a seed ({e}): give a decimal or 0x-hex number"))
}

/// Runs the fuzzer's test with `XLB_FUZZ_FRAMES` / `XLB_FUZZ_SEED`.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    setup::setup()?;
    if !xlb_tests::is_root() {
        bail!(
            "the fuzzer runs the XDP program with BPF_PROG_TEST_RUN in a network namespace and needs root; \
             run it as root, e.g. `sudo -E cargo xtask fuzz`"
        );
    }
    util::header(&format!("data-path fuzzer: {} frames (cargo test -p lb-userspace --test fuzz)", args.frames));
    let mut cmd = util::cargo();
    cmd.args(["test", "-p", "lb-userspace", "--test", "fuzz", "--", "--exact", "fuzz_datapath", "--nocapture"]);
    cmd.env("XLB_FUZZ_FRAMES", args.frames.to_string());
    if let Some(seed) = args.seed {
        cmd.env("XLB_FUZZ_SEED", seed.to_string());
    }
    util::run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::parse_seed;

    #[test]
    fn seeds_are_decimal_or_hex() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0x786c_62f0_22"), Ok(0x0078_6c62_f022));
        assert!(parse_seed("seed").unwrap_err().contains("not a seed"));
    }
}
