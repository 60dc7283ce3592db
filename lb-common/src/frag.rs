//! IP fragment tracking: the first fragment of a datagram picks the
//! translation, later fragments (which carry no ports) follow it.

/// Key: the fragment's addresses as it arrives, its protocol and IP ID
/// (IPv4: 16 bits; IPv6: the fragment header's 32-bit identification).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address as the fragment arrives, IPv4-mapped when IPv4.
    pub src: [u8; 16],
    /// Destination address as the fragment arrives, IPv4-mapped when IPv4.
    pub dst: [u8; 16],
    /// IP identification of the datagram.
    pub id: u32,
    /// IP protocol (`PROTO_TCP` or `PROTO_UDP`).
    pub proto: u8,
    /// Explicit padding, zero.
    pub _pad: [u8; 3],
}

/// The translation the first fragment got.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragValue {
    /// New source address.
    pub src: [u8; 16],
    /// New destination address.
    pub dst: [u8; 16],
    /// Service counted for client→backend fragments, `NO_SERVICE` for replies.
    pub service_id: u32,
    /// Backend counted for client→backend fragments.
    pub backend_id: u32,
    /// `bpf_ktime_get_ns` of the first fragment.
    pub created_ns: u64,
}

/// `FragValue::service_id` of reply fragments (not counted per service).
pub const NO_SERVICE: u32 = u32::MAX;
/// Fragments of one datagram must arrive within this many seconds.
pub const FRAG_TIMEOUT: u64 = 30;
/// Entries of the fragment table.
pub const FRAG_ENTRIES: u32 = 65536;

#[cfg(feature = "user")]
mod pod {
    use super::{FragKey, FragValue};
    // SAFETY: repr(C), Copy, every bit pattern valid.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
    unsafe impl aya::Pod for FragValue {}
}
