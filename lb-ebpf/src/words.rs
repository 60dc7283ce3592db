//! Word-sized copies of addresses and key tails.
//!
//! The BPF backend turns copies and zeroing of byte arrays whose alignment
//! it cannot prove (`[u8; 16]` fields, `[u8; 3]` padding, the ten zero bytes
//! of an IPv4-mapped address) into calls of byte-at-a-time `memset` /
//! `memmove` sub-programs. These helpers move the same bytes as one or two
//! aligned `u64` (or `u32`) loads and stores instead. Addresses come as
//! `lb_common::AlignedAddr` (16 bytes, align 8: the views `aligned_addrs!`
//! gives of the address fields, checked at compile time to be 8-byte
//! aligned); whole keys and values as `align(8)` types (`FlowKey`'s layout
//! is asserted in `lb_common::aligned`, `copy_value` asserts its own).
use lb_common::{AlignedAddr, FlowKey};

/// A 16-byte address as two native-endian words.
pub type Addr = [u64; 2];

/// Reads an address stored 8-byte aligned.
#[inline(always)]
pub fn get(a: &AlignedAddr) -> Addr {
    let p = core::ptr::from_ref::<AlignedAddr>(a).cast::<u64>();
    // Two scalar loads (an aggregate load + store becomes a `memmove` call).
    // SAFETY: an AlignedAddr is 16 readable bytes, 8-byte aligned.
    unsafe { [p.read(), p.add(1).read()] }
}

/// Writes an address stored 8-byte aligned.
#[inline(always)]
pub fn put(a: &mut AlignedAddr, w: Addr) {
    let p = core::ptr::from_mut::<AlignedAddr>(a).cast::<u64>();
    // SAFETY: an AlignedAddr is 16 writable bytes, 8-byte aligned.
    unsafe {
        p.write(w[0]);
        p.add(1).write(w[1]);
    }
}

/// Copies an address between 8-byte aligned fields.
#[inline(always)]
pub fn copy(dst: &mut AlignedAddr, src: &AlignedAddr) {
    put(dst, get(src));
}

/// True when two addresses stored 8-byte aligned are equal.
#[inline(always)]
pub fn eq(a: &AlignedAddr, b: &AlignedAddr) -> bool {
    let (a, b) = (get(a), get(b));
    a[0] == b[0] && a[1] == b[1]
}

/// The IPv4-mapped form (`::ffff:a.b.c.d`) of the 4 address bytes at `b`
/// (packet memory: read byte by byte, its alignment is unknown).
#[inline(always)]
pub fn v4(b: &[u8; 4]) -> Addr {
    [0, u64::from_ne_bytes([0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3]])]
}

/// The 16 address bytes at `b` (packet memory, read byte by byte).
#[inline(always)]
pub fn v6(b: &[u8; 16]) -> Addr {
    [
        u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
    ]
}

/// Writes a flow key's last 8 bytes (ports in network byte order, protocol,
/// zero padding) with one store.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "offset 32 of the align(8) FlowKey is 8-aligned")]
pub fn set_tail(k: &mut FlowKey, sport: u16, dport: u16, proto: u8) {
    let w = u64::from(sport) | u64::from(dport) << 16 | u64::from(proto) << 32;
    // SAFETY: bytes 32..40 of an align(8) FlowKey: sport, dport, proto, _pad
    // (layout asserted in `lb_common::aligned`).
    unsafe { *core::ptr::from_mut::<FlowKey>(k).cast::<u8>().add(32).cast::<u64>() = w }
}

/// Fills a whole flow key with word stores.
#[inline(always)]
pub fn set_key(k: &mut FlowKey, src: Addr, dst: Addr, sport: u16, dport: u16, proto: u8) {
    put(k.src_aligned_mut(), src);
    put(k.dst_aligned_mut(), dst);
    set_tail(k, sport, dport, proto);
}

/// The service key of (VIP, port, protocol), built from words (`ServiceKey`
/// is 20 bytes, align(4): five `u32`s).
#[inline(always)]
pub fn service_key(vip: Addr, port: u16, proto: u8) -> lb_common::ServiceKey {
    let w: [u32; 5] = [
        vip[0] as u32,
        (vip[0] >> 32) as u32,
        vip[1] as u32,
        (vip[1] >> 32) as u32,
        u32::from(port) | u32::from(proto) << 16,
    ];
    // SAFETY: same size and alignment; every bit pattern is a valid
    // ServiceKey (addr, then port, proto, _pad = 0 in the last word).
    unsafe { core::mem::transmute::<[u32; 5], lb_common::ServiceKey>(w) }
}

/// True when two service keys are equal, compared as five `u32`s.
#[inline(always)]
pub fn service_key_eq(a: &lb_common::ServiceKey, b: &lb_common::ServiceKey) -> bool {
    let (a, b) = (core::ptr::from_ref(a).cast::<u32>(), core::ptr::from_ref(b).cast::<u32>());
    // SAFETY: ServiceKey is 20 bytes, align(4): five u32s, no padding bytes
    // left undefined (`_pad` is a field).
    unsafe {
        *a == *b && *a.add(1) == *b.add(1) && *a.add(2) == *b.add(2) && *a.add(3) == *b.add(3) && *a.add(4) == *b.add(4)
    }
}

/// Copies a whole map value of an `align(8)` type whose size is a multiple
/// of 8 (`Flow`, `Reverse`) as `u64` words: an in-place rewrite of an entry.
#[inline(always)]
pub fn copy_value<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() >= 8) };
    let (d, s) = (core::ptr::from_mut::<T>(dst).cast::<u64>(), core::ptr::from_ref::<T>(src).cast::<u64>());
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: i < size/8 words of two valid, 8-aligned `T`s. Volatile
        // keeps LLVM from turning the loop back into a `memcpy` call.
        unsafe { core::ptr::write_volatile(d.add(i), s.add(i).read()) }
    }
}
