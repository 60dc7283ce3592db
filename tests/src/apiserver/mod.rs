//! A fake Kubernetes API server for integration tests (the
//! `xlb-fake-apiserver` binary): list/watch with resourceVersions,
//! chunked watch streams (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR), 410 Gone
//! after compaction, label and field selectors, create/get/replace/patch/
//! delete with the status subresource and optimistic concurrency, and
//! enough discovery for `kubectl`.
//!
//! Custom resources are entries of the same table (`resources.rs`): the
//! Gateway API's GatewayClass, Gateway, TCPRoute, UDPRoute (v1) and
//! ReferenceGrant (v1, also v1beta1), each served (paths and discovery)
//! only while its CustomResourceDefinition (`apiextensions.k8s.io/v1`,
//! named `<plural>.<group>`) is stored; deleting the CRD deletes its
//! objects and ends its watches. So a test installs them at runtime by
//! creating the CRDs (`ApiServer::install_gateway_api`).
//!
//! Test-only endpoints: `POST /xlb-test/compact`, `POST
//! /xlb-test/close-watches`, `GET /xlb-test/requests` (counts keyed
//! `"<verb> <apiVersion>/<plural>[/status]"`, e.g. `"watch v1/services"`,
//! or `"<METHOD> <path>"` for other paths), `GET /xlb-test/requests-by-agent`
//! (the resource requests' counts by User-Agent up to its first `/`, e.g.
//! `kube-rs` for the agent, `xlb-tests` for the tests' own client) and `GET
//! /xlb-test/state` (every
//! object, in the `--state` file format `{"objects": [...]}`).

pub mod patch;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod util;
pub mod watch;
