//! Gateway API L4 (v1.6 standard channel): GatewayClasses of our
//! controller, their Gateways' TCP and UDP listeners as xlb services, the
//! TCPRoutes and UDPRoutes attached to them, ReferenceGrants for backends
//! in other namespaces; their statuses written by the agent holding the
//! allocator Lease. Absent CRDs are no error: the kinds are discovered
//! when installed ([`watch`]).
pub mod address;
pub mod backends;
pub mod status;
pub mod translate;
pub mod types;
pub mod watch;
pub mod write;

#[cfg(test)]
mod tests;

/// Default of `--gateway-controller-name`.
pub const DEFAULT_CONTROLLER_NAME: &str = "xlb.io/gateway-controller";
