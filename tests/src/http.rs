//! The tests' one HTTP client: `ureq` (blocking, HTTP/1.1, chunked bodies),
//! with every connection opened inside a network namespace.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::Netns;

/// A `ureq` agent for plain HTTP that returns non-2xx answers as responses
/// (not errors), keeps no idle connection (each request connects afresh,
/// inside the namespace of the call) and gives up after `timeout` (`None`:
/// no overall limit, for streams; connecting still has 5 s).
pub fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(timeout)
        .user_agent("xlb-tests")
        .build()
        .into()
}

/// GET `http://addr/path` from inside `ns`: the status code and the body.
pub fn get(ns: &Netns, addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    ns.try_run(|| -> Result<(u16, String)> {
        let mut resp = agent(Some(timeout)).get(&url).call().with_context(|| format!("GET {url}"))?;
        let body = resp.body_mut().read_to_string().with_context(|| format!("reading the body of GET {url}"))?;
        Ok((resp.status().as_u16(), body))
    })?
}
