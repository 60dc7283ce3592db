//! Global counters (the `XLB_STATS` per-CPU array), one slot per reason.

macro_rules! stats {
    ($($variant:ident = $name:literal: $doc:literal,)*) => {
        /// Index of a global counter.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat {
            $(#[doc = $doc] $variant,)*
        }

        impl Stat {
            /// Every counter, in index order.
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)*];

            /// The counter's name in `xlb stats` and `/metrics`.
            pub const fn name(self) -> &'static str {
                match self { $(Stat::$variant => $name,)* }
            }
        }
    };
}

stats! {
    Packets = "packets": "Packets seen by the XDP program.",
    FlowNew = "flow_new": "New flows (backend picked).",
    FlowHit = "flow_hit": "Packets of an existing flow.",
    Reply = "reply_translated": "Backend replies translated back to the client.",
    FwdTx = "fwd_xdp_tx": "Forwarded with XDP_TX.",
    FwdRedirect = "fwd_xdp_redirect": "Forwarded with XDP_REDIRECT.",
    FwdKernel = "fwd_kernel": "Rewritten and handed to the kernel/tc for forwarding.",
    PassNotVip = "pass_not_vip": "Passed untouched: not for a VIP.",
    PassNonIp = "pass_non_ip": "Passed untouched: not IPv4/IPv6.",
    PassVipOtherPort = "pass_vip_unknown_port": "Passed untouched: VIP address but no service on that port/protocol.",
    PassFragment = "pass_fragment": "Passed untouched: IP fragment whose first fragment was not seen (yet).",
    Fragment = "fragment_translated": "Non-first IP fragments translated like their first fragment.",
    IcmpError = "icmp_error_translated": "ICMP/ICMPv6 errors about a translated flow, translated and delivered.",
    IcmpEcho = "icmp_echo_reply": "ICMP/ICMPv6 echo requests to a VIP answered.",
    DropMalformed = "drop_malformed": "Dropped: malformed or truncated headers.",
    DropNoBackend = "drop_no_backend": "Dropped: service has no usable backend (not UDP, not a TCP SYN).",
    Reject = "reject_no_backend": "Answered with ICMP port unreachable / TCP RST: service has no usable backend.",
    DropTableFull = "drop_table_full": "Flows not inserted: connection table update failed.",
    FloodGuard = "flow_not_recorded_flood": "New flows forwarded by hash but not recorded: new-flow rate above --max-new-flows-per-cpu.",
    DropRstNoFlow = "drop_rst_no_flow": "Dropped: TCP RST for a SNAT connection not in the table (no port to deliver it on).",
    DropSnatExhausted = "drop_snat_exhausted": "Dropped: no free SNAT port.",
    FwdFragment = "fwd_kernel_fragment": "Larger than the egress MTU, fragmenting allowed: passed to the kernel to fragment.",
    TooBig = "icmp_too_big_sent": "Larger than the egress MTU with DF / IPv6: ICMP fragmentation needed / packet too big sent to the sender.",
    FibFail = "fib_lookup_failed": "No route to the backend or client (passed to the kernel).",
    RedirectFail = "redirect_failed": "XDP_REDIRECT refused by the devmap (passed to the kernel).",
    TcForward = "tc_forward": "Forwarded by the tc program on behalf of XDP.",
    DropSourceRange = "drop_source_range": "Dropped: client address outside the service's source_ranges (loadBalancerSourceRanges).",
    TcForeignMeta = "tc_foreign_meta": "Left to the kernel by the tc program: xlb forward metadata written by another node or for another ingress device.",
    ArpReply = "arp_reply": "ARP requests for an announced VIP answered (--announce l2).",
    NdpAdvert = "ndp_advert": "IPv6 neighbour solicitations for an announced VIP answered (--announce l2).",
    RejectShare = "reject_share": "New flows whose lookup-table pick was the service's reject share (a Gateway backendRef that does not resolve): each then rejected (reject_no_backend) or dropped (drop_no_backend) as for a service without a usable backend.",
    PassOtherHost = "pass_other_host": "Passed untouched: a packet for a VIP on an announce interface (--announce l2) whose Ethernet destination is another host's unicast MAC (a switch flooding unknown unicast); the kernel drops it.",
    TcPeer = "tc_redirect_peer": "Of tc_forward: sent straight into the peer of a pod's veth (bpf_redirect_peer) instead of out of the host side (bpf_redirect_neigh); see IF_F_PEER.",
}

// New counters go last: the pinned per-CPU array is indexed by position,
// and an agent carries the old counters over into a larger array.

/// Number of global counters.
pub const STAT_COUNT: u32 = Stat::ALL.len() as u32;
