//! What every BPF object built from this crate carries besides its
//! programs: the license the kernel checks GPL-only helpers against, and a
//! panic handler (`no_std`). Included by `main.rs` and, through `#[path]`,
//! by `bin/xlb-bench.rs`.

// On the host (`cargo clippy --workspace --all-targets` checks every crate
// for it) a dependency brings std and its panic handler.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
