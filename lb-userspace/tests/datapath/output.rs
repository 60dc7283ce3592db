//! What one run returned ([`Out`]) and the assertions on it: verdict,
//! counter deltas, metadata, and the output frame (checked through
//! etherparse, see `frame_decode.rs`).

use lb_common::{stats::STAT_COUNT, ForwardMeta, Stat, META_MAGIC, META_MAGIC_ROUTED};

use super::verdict_name;
use crate::frame::{decode, Csum, Decoded, Pkt};

/// Global counter deltas of one run, by `Stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatDelta(pub Vec<i64>);

impl StatDelta {
    pub fn get(&self, s: Stat) -> i64 {
        self.0[s as usize]
    }
}

impl std::fmt::Display for StatDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Stat::ALL
            .iter()
            .filter(|s| self.get(**s) != 0)
            .map(|s| format!("{}{:+}", s.name(), self.get(*s)))
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// What one `BPF_PROG_TEST_RUN` returned.
pub struct Out {
    pub case: String,
    pub verdict: u32,
    /// XDP metadata in front of the frame (empty when none).
    pub meta: Vec<u8>,
    pub frame: Vec<u8>,
    pub input: Vec<u8>,
    pub delta: StatDelta,
    /// The interface the frame arrived on.
    pub ingress: u32,
    /// `XLB_SETTINGS.node_tag` when the program ran.
    pub node_tag: u32,
}

impl Out {
    fn describe(&self) -> String {
        let show = |f: &[u8]| match decode(f) {
            Some(d) => d.to_string(),
            None => format!("{} bytes (not UDP/TCP)", f.len()),
        };
        format!(
            "[{}] verdict {} ({}), meta {:02x?}, stats {}\n   in:  {}\n   out: {}",
            self.case,
            self.verdict,
            verdict_name(self.verdict),
            self.meta,
            self.delta,
            show(&self.input),
            show(&self.frame)
        )
    }

    /// Asserts the verdict and the global counter deltas: `packets` +1, each
    /// stat in `bumped` +1 per mention, every other counter unchanged.
    pub fn expect(&self, verdict: u32, bumped: &[Stat]) -> &Self {
        assert_eq!(
            self.verdict,
            verdict,
            "expected {} got {}\n{}",
            verdict_name(verdict),
            verdict_name(self.verdict),
            self.describe()
        );
        let mut want = vec![0i64; STAT_COUNT as usize];
        want[Stat::Packets as usize] = 1;
        for s in bumped {
            want[*s as usize] += 1;
        }
        assert_eq!(
            self.delta,
            StatDelta(want.clone()),
            "counter deltas: expected {}\n{}",
            StatDelta(want),
            self.describe()
        );
        self
    }

    /// The frame left exactly as it came, no metadata.
    pub fn untouched(&self) -> &Self {
        assert!(self.meta.is_empty(), "unexpected XDP metadata\n{}", self.describe());
        assert_eq!(self.frame, self.input, "frame was modified\n{}", self.describe());
        self
    }

    /// Metadata asking this node's tc program, on the ingress interface, to
    /// forward out of `ifindex`, the MACs already set from the FIB's
    /// neighbour (the tc program may redirect into a veth's peer).
    pub fn to_tc(&self, ifindex: u32) -> &Self {
        self.handed_off(META_MAGIC_ROUTED, ifindex)
    }

    /// As [`Self::to_tc`], with no neighbour known: the tc program routes
    /// and resolves it (`bpf_redirect_neigh`).
    pub fn to_tc_unresolved(&self, ifindex: u32) -> &Self {
        self.handed_off(META_MAGIC, ifindex)
    }

    fn handed_off(&self, magic: u32, ifindex: u32) -> &Self {
        assert_eq!(self.meta.len(), std::mem::size_of::<ForwardMeta>(), "no forward metadata\n{}", self.describe());
        let word = |i: usize| u32::from_ne_bytes(self.meta[i * 4..i * 4 + 4].try_into().unwrap());
        let got = ForwardMeta { magic: word(0), ifindex: word(1), ingress: word(2), node_tag: word(3) };
        let want = ForwardMeta { magic, ifindex, ingress: self.ingress, node_tag: self.node_tag };
        assert_eq!(got, want, "forward metadata\n{}", self.describe());
        self
    }

    pub fn no_meta(&self) -> &Self {
        assert!(self.meta.is_empty(), "unexpected XDP metadata\n{}", self.describe());
        self
    }

    /// The output frame is exactly `want`.
    pub fn bytes_are(&self, want: &[u8]) -> &Self {
        assert!(
            self.frame == want,
            "output frame differs\n   want: {:02x?}\n   got:  {:02x?}\n{}",
            want,
            self.frame,
            self.describe()
        );
        self
    }

    pub fn decoded(&self) -> Decoded {
        decode(&self.frame).unwrap_or_else(|| panic!("output is not a UDP/TCP frame\n{}", self.describe()))
    }

    /// The output equals `expected` byte for byte, except that the IPv4
    /// header checksum and the L4 checksum are only required to verify by
    /// full recomputation (or, for `Csum::Partial`, to hold the new
    /// pseudo-header sum; for `Csum::Zero`, to stay zero).
    pub fn frame_is(&self, expected: &Pkt) -> &Self {
        let d = self.decoded();
        let want = expected.build();
        let wd = decode(&want).expect("expected frame decodes");
        let ctx = || format!("\n   want: {wd}\n{}", self.describe());
        assert_eq!(
            (d.eth_src, d.eth_dst, d.vlan, d.src_sock(), d.dst_sock()),
            (wd.eth_src, wd.eth_dst, wd.vlan, wd.src_sock(), wd.dst_sock()),
            "(eth src, eth dst, vlan, src, dst){}",
            ctx()
        );
        assert!(d.ip_csum_ok, "IPv4 header checksum does not verify{}", ctx());
        match expected.csum {
            Csum::Full => assert!(d.l4_csum_ok && d.l4_csum != 0, "L4 checksum does not verify{}", ctx()),
            Csum::Partial => {
                assert_eq!(d.l4_csum, d.pseudo, "partial checksum must be the new pseudo-header sum{}", ctx());
            }
            Csum::Zero => assert_eq!(d.l4_csum, 0, "UDP checksum 0 must stay 0{}", ctx()),
        }
        assert_eq!(self.frame.len(), want.len(), "frame length{}", ctx());
        let mut masked = want.clone();
        for off in [Some(d.l4_csum_off), d.ip_csum_off].into_iter().flatten() {
            masked[off..off + 2].copy_from_slice(&self.frame[off..off + 2]);
        }
        assert_eq!(self.frame, masked, "frame bytes differ from the expected rewrite{}", ctx());
        self
    }
}
