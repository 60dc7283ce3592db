//! The host's network: interfaces (`iface`), the default routes'
//! interfaces (`defroute`), rtnetlink messages
//! (`rtnetlink`) and the one watcher of them (`netwatch`), with its
//! subscribers that follow interfaces (`follow`) and bump the data path's
//! route generation (`routegen`).
pub mod defroute;
pub mod follow;
pub mod iface;
pub mod netwatch;
pub mod peer_veth;
pub mod routegen;
pub mod rtnetlink;
pub mod xdp_features;
pub mod xdp_path;
