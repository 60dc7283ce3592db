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
