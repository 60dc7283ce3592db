//! Announcing VIPs (making them reachable without hand-made routes).
//!
//! Kubernetes mode, L2: [`eligible`] says which VIPs this node may announce,
//! [`lease`] elects one announcer per VIP and sends the VIPs this node
//! announces on a `watch` channel.
pub mod eligible;
pub mod lease;
