//! A fake Kubernetes API server for integration tests (the
//! `xlb-fake-apiserver` binary): list/watch with resourceVersions,
//! chunked watch streams (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR), 410 Gone
//! after compaction, label and field selectors, create/get/replace/patch/
//! delete with the status subresource and optimistic concurrency, and
//! enough discovery for `kubectl`.
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
