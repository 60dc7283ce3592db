//! The kernel side's objects: loading the eBPF object (`datapath`), its maps
//! (`maps`, and the read-only `view` readers use, both opened through the
//! one table of names and handle types in `handles`), the pinned layout
//! (`pins`) and carrying an older layout's maps over (`migrate`), attaching the programs to interfaces (`attach`) and running
//! the XDP program once on a frame (`testrun`).
pub mod attach;
pub mod datapath;
pub mod handles;
pub mod maps;
pub mod migrate;
pub mod pins;
pub mod testrun;
pub mod view;

/// Helpers for the unit tests that need kernel objects of their own.
#[cfg(test)]
pub(crate) mod test_support {
    use std::{io, path::Path};

    /// Creates a map (`map_type`: the kernel's `BPF_MAP_TYPE_*` number) by
    /// the raw system call, as an xlb of another layout would have left it,
    /// and pins it at `path`.
    pub(crate) fn pin_new_map(path: &Path, map_type: u32, key_size: u32, value_size: u32, entries: u32) {
        use std::os::unix::ffi::OsStrExt as _;
        let mut attr = [0u8; 128];
        for (i, v) in [map_type, key_size, value_size, entries].iter().enumerate() {
            attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        // SAFETY: bpf(2) BPF_MAP_CREATE with a zero-padded attribute buffer of its size.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
        assert!(fd >= 0, "BPF_MAP_CREATE: {}", io::Error::last_os_error());
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut attr = [0u8; 128];
        attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
        attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        // SAFETY: BPF_OBJ_PIN with a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
        assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", io::Error::last_os_error());
        // SAFETY: closing the fd we created.
        unsafe { libc::close(fd as i32) };
    }
}
