//! The kernel side's objects: loading the eBPF object (`datapath`), its maps
//! (`maps`, and the read-only `view` readers use), the pinned layout
//! (`pins`) and attaching the programs to interfaces (`attach`).
pub mod attach;
pub mod datapath;
pub mod maps;
pub mod pins;
pub mod view;
