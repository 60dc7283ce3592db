//! The fake Kubernetes API server (`xlb-fake-apiserver`) as a test fixture,
//! a small blocking JSON client for it, and builders for the objects xlb
//! reads (LoadBalancer Services, EndpointSlices, Nodes).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use xlb_tests::k8s::{self, ApiServer};
//! let topo = xlb_tests::Topology::new(0)?;
//! let api = ApiServer::start(&topo.node)?;
//! let c = api.client();
//! c.create(&k8s::services_path(Some("default")),
//!          &k8s::lb_service("default", "dns").port("dns", 53, "UDP").build())?;
//! // xlb agent --kubernetes --kubeconfig api.kubeconfig() ...
//! # Ok(()) }
//! ```
//!
//! Modules: `server` (the fixture process and `kubectl`), `client` (the JSON
//! client and watch streams, on `ureq`), `paths` (resource URLs), `builders`
//! (Services, EndpointSlices, Nodes), `gateway` (the Gateway API's CRDs,
//! paths and builders: GatewayClass, Gateway, TCPRoute, UDPRoute,
//! ReferenceGrant).

mod builders;
mod client;
mod gateway;
mod paths;
mod server;

pub use builders::*;
pub use client::{ApiError, KubeClient, WatchStream};
pub use gateway::*;
pub use paths::*;
pub use server::{fake_apiserver_binary, kubectl, kubectl_binary, ApiServer};
