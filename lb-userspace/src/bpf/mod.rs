//! The kernel side's objects: loading the eBPF object (`datapath`), its maps
//! (`maps`, and the read-only `view` readers use, both opened through the
//! one table of names and handle types in `handles`), the pinned layout
//! (`pins`) and attaching the programs to interfaces (`attach`).
pub mod attach;
pub mod datapath;
pub mod handles;
pub mod maps;
pub mod pins;
pub mod view;
