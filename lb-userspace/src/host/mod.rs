//! The host's network: interfaces (`iface`), rtnetlink messages
//! (`rtnetlink`) and the one watcher of them (`netwatch`), with its
//! subscribers that follow interfaces (`follow`) and bump the data path's
//! route generation (`routegen`).
pub mod follow;
pub mod iface;
pub mod netwatch;
pub mod routegen;
pub mod rtnetlink;
