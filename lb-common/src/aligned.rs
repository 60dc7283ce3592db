//! 16-byte addresses stored 8-byte aligned, as a type.
//!
//! The data path reads and writes addresses as two `u64` words (`lb-ebpf`'s
//! `words`: the BPF backend turns copies of byte arrays it cannot prove
//! aligned into byte-at-a-time `memmove`/`memset` calls). That is sound only
//! for an address at an 8-byte aligned position: [`AlignedAddr`] is such an
//! address, and [`aligned_addrs!`](crate::aligned_addrs) gives views of the
//! `[u8; 16]` address fields of the map types as `AlignedAddr`, each checked
//! at compile time to sit at a multiple of 8 in a type of alignment 8 or
//! more. The map types keep `[u8; 16]` fields (their layout and userspace's
//! view of them do not change).
use core::mem::{align_of, offset_of, size_of};

use crate::{frag::FragValue, AffinityKey, Backend, FlowKey, Reverse};

/// A 16-byte address (IPv6, or IPv4-mapped) stored 8-byte aligned: readable
/// and writable as two `u64` words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlignedAddr(pub [u8; 16]);

const _: () = assert!(size_of::<AlignedAddr>() == 16 && align_of::<AlignedAddr>() == 8);

/// Compile-time check behind [`aligned_addrs!`](crate::aligned_addrs): a
/// field at `offset` in a type of alignment `align` is 8-byte aligned.
pub const fn assert_aligned_field(align: usize, offset: usize) {
    assert!(align >= 8 && offset.is_multiple_of(8), "address field not 8-byte aligned: it cannot be an AlignedAddr");
}

/// Implements, for the `[u8; 16]` address fields of an `align(8)` type,
/// `fn $get(&self) -> &AlignedAddr` and `fn $get_mut(&mut self) -> &mut
/// AlignedAddr`, and asserts at compile time that each field is 8-byte
/// aligned (the cast to `AlignedAddr` relies on it).
///
/// ```
/// #[repr(C, align(8))]
/// struct Rewrite { src: [u8; 16], dst: [u8; 16], sport: u16 }
/// lb_common::aligned_addrs!(Rewrite { src: src_aligned, src_aligned_mut; dst: dst_aligned, dst_aligned_mut; });
/// let mut r = Rewrite { src: [1; 16], dst: [2; 16], sport: 0 };
/// *r.dst_aligned_mut() = *r.src_aligned();
/// assert_eq!(r.dst, [1; 16]);
/// ```
///
/// A field that is not 8-byte aligned does not compile:
///
/// ```compile_fail
/// #[repr(C, align(8))]
/// struct Key { id: u32, addr: [u8; 16] }
/// lb_common::aligned_addrs!(Key { addr: addr_aligned, addr_aligned_mut; });
/// ```
///
/// Nor does a type whose alignment is below 8:
///
/// ```compile_fail
/// #[repr(C)]
/// struct Key { addr: [u8; 16] }
/// lb_common::aligned_addrs!(Key { addr: addr_aligned, addr_aligned_mut; });
/// ```
#[macro_export]
macro_rules! aligned_addrs {
    ($ty:ty { $($field:ident: $get:ident, $get_mut:ident;)* }) => {
        $(
            const _: () = $crate::aligned::assert_aligned_field(
                ::core::mem::align_of::<$ty>(),
                ::core::mem::offset_of!($ty, $field),
            );
        )*
        impl $ty {
            $(
                #[doc = concat!("`", stringify!($field), "` as an aligned address (two `u64` words).")]
                #[inline(always)]
                #[expect(clippy::cast_ptr_alignment, reason = "the field's 8-byte alignment is asserted above")]
                pub fn $get(&self) -> &$crate::aligned::AlignedAddr {
                    let f: &[u8; 16] = &self.$field;
                    // SAFETY: 16 bytes at an 8-byte aligned position (asserted
                    // above), AlignedAddr is 16 bytes of align 8, every bit
                    // pattern valid.
                    unsafe { &*core::ptr::from_ref(f).cast::<$crate::aligned::AlignedAddr>() }
                }

                #[doc = concat!("`", stringify!($field), "` as a mutable aligned address (two `u64` words).")]
                #[inline(always)]
                #[expect(clippy::cast_ptr_alignment, reason = "the field's 8-byte alignment is asserted above")]
                pub fn $get_mut(&mut self) -> &mut $crate::aligned::AlignedAddr {
                    let f: &mut [u8; 16] = &mut self.$field;
                    // SAFETY: as in the shared view.
                    unsafe { &mut *core::ptr::from_mut(f).cast::<$crate::aligned::AlignedAddr>() }
                }
            )*
        }
    };
}

crate::aligned_addrs!(FlowKey { src: src_aligned, src_aligned_mut; dst: dst_aligned, dst_aligned_mut; });
crate::aligned_addrs!(Backend { addr: addr_aligned, addr_aligned_mut; snat_addr: snat_addr_aligned, snat_addr_aligned_mut; });
crate::aligned_addrs!(Reverse { client: client_aligned, client_aligned_mut; vip: vip_aligned, vip_aligned_mut; });
crate::aligned_addrs!(AffinityKey { client: client_aligned, client_aligned_mut; });
crate::aligned_addrs!(FragValue { src: src_aligned, src_aligned_mut; dst: dst_aligned, dst_aligned_mut; });

// The data path also reads a `FlowKey` as five `u64` words (the flow cache)
// and writes its last word (ports, protocol, padding) with one store.
const _: () = assert!(size_of::<FlowKey>() == 40 && align_of::<FlowKey>() == 8 && offset_of!(FlowKey, sport) == 32);
