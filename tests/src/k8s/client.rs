//! A blocking JSON client for the fake API server and its watch streams, on
//! `ureq` (see [`crate::http`]); every connection is opened inside the
//! server's network namespace.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::query_escape;
use crate::Netns;

/// Overall time limit of a non-watch request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP error from the API server (or `code` 0 for a transport error),
/// with the body (a `Status` object for API errors).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code; 0 when no response was received.
    pub code: u16,
    /// The response body (JSON when it parsed, else a string).
    pub body: Value,
}

impl ApiError {
    fn transport(e: impl fmt::Display) -> Self {
        ApiError { code: 0, body: Value::String(e.to_string()) }
    }

    /// The Status `reason` (e.g. `Conflict`, `NotFound`), if any.
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == 0 {
            write!(f, "request to the fake API server failed: {}", self.body)
        } else {
            write!(f, "HTTP {}: {}", self.code, self.body)
        }
    }
}

impl std::error::Error for ApiError {}

/// A blocking JSON client for the fake API server; every request opens a
/// connection inside the server's network namespace.
#[derive(Debug, Clone)]
pub struct KubeClient {
    ns: Netns,
    addr: SocketAddr,
}

/// JSON text or a string: how a body is reported.
fn json_or_string(text: &[u8]) -> Value {
    serde_json::from_slice(text).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(text).into_owned()))
}

impl KubeClient {
    pub(crate) fn new(ns: Netns, addr: SocketAddr) -> Self {
        KubeClient { ns, addr }
    }

    /// Sends a request from inside the namespace; returns the status and the
    /// body, read by `read` there (the whole body, or a stream's reader).
    fn send<T: Send>(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
        timeout: Option<Duration>,
        read: impl FnOnce(ureq::Body) -> Result<T, ApiError> + Send,
    ) -> Result<(u16, T), ApiError> {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("Accept", "application/json");
        let payload = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.ns
            .try_run(move || {
                let agent = crate::http::agent(timeout);
                let resp = match payload {
                    Some(p) => agent.run(
                        req.header("Content-Type", content_type.unwrap_or("application/json"))
                            .body(p)
                            .map_err(ApiError::transport)?,
                    ),
                    None => agent.run(req.body(()).map_err(ApiError::transport)?),
                }
                .map_err(ApiError::transport)?;
                let code = resp.status().as_u16();
                Ok((code, read(resp.into_body())?))
            })
            .map_err(ApiError::transport)?
    }

    /// Any request; a non-2xx answer is an [`ApiError`]. `body` is sent as
    /// JSON with `content_type` (default `application/json`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let (code, text) = self.send(method, path, content_type, body, Some(REQUEST_TIMEOUT), |mut b| {
            b.with_config().limit(u64::MAX).read_to_vec().map_err(ApiError::transport)
        })?;
        let v = json_or_string(&text);
        if (200..300).contains(&code) {
            Ok(v)
        } else {
            Err(ApiError { code, body: v })
        }
    }

    /// POST `obj` to the collection `path`.
    pub fn create(&self, path: &str, obj: &Value) -> Result<Value, ApiError> {
        self.request("POST", path, None, Some(obj))
    }

    /// GET an object (or a list).
    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.request("GET", path, None, None)
    }

    /// GET a collection (`path` may carry a query such as `?labelSelector=`,
    /// percent-encoded, see [`query_escape`]).
    pub fn list(&self, path: &str) -> Result<Value, ApiError> {
        self.request("GET", path, None, None)
    }

    /// PUT `obj` (409 when its `metadata.resourceVersion` is stale).
    pub fn replace(&self, path: &str, obj: &Value) -> Result<Value, ApiError> {
        self.request("PUT", path, None, Some(obj))
    }

    /// PATCH with `application/merge-patch+json`.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.request("PATCH", path, Some("application/merge-patch+json"), Some(patch))
    }

    /// Merge-patches `path/status` (the status subresource).
    pub fn patch_status(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.merge_patch(&format!("{path}/status"), patch)
    }

    /// PATCH with `application/json-patch+json` (RFC 6902 operations).
    pub fn json_patch(&self, path: &str, ops: &Value) -> Result<Value, ApiError> {
        self.request("PATCH", path, Some("application/json-patch+json"), Some(ops))
    }

    /// Server-side apply (`application/apply-patch+yaml`, JSON body).
    pub fn apply(&self, path: &str, obj: &Value, field_manager: &str) -> Result<Value, ApiError> {
        let p = format!("{path}?fieldManager={}", query_escape(field_manager));
        self.request("PATCH", &p, Some("application/apply-patch+yaml"), Some(obj))
    }

    /// DELETE; returns the deleted object.
    pub fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.request("DELETE", path, None, None)
    }

    /// Starts a watch: `path_and_query` is a collection path; `watch=true`
    /// is added. A non-200 answer is an error.
    pub fn watch(&self, path_and_query: &str) -> Result<WatchStream, ApiError> {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let path = format!("{path_and_query}{sep}watch=true");
        let (code, body) = self.send("GET", &path, None, None, None, Ok)?;
        if code != 200 {
            let text = body.into_with_config().limit(u64::MAX).read_to_vec().unwrap_or_default();
            return Err(ApiError { code, body: json_or_string(&text) });
        }
        Ok(WatchStream::new(body))
    }
}

/// An open watch: one JSON event (`{"type": ..., "object": ...}`) per line.
///
/// A thread reads the stream and hands over complete lines; it ends with the
/// stream (the server ends it, or dies with its [`super::ApiServer`]) or at
/// the first line after the `WatchStream` was dropped.
pub struct WatchStream {
    lines: Receiver<std::io::Result<Vec<u8>>>,
    ended: bool,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl WatchStream {
    fn new(body: ureq::Body) -> Self {
        let (tx, lines) = mpsc::channel();
        let mut reader = BufReader::new(body.into_with_config().limit(u64::MAX).reader());
        std::thread::spawn(move || loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                // A line cut short by the end of the stream is no event.
                Ok(_) if !line.ends_with(b"\n") => return,
                Ok(_) => {
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The connection closed mid-stream (no closing chunk): the
                // server went away, which ends the stream.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        WatchStream { lines, ended: false }
    }

    /// The next event, `Ok(None)` when the server ended the stream, an error
    /// when none came within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ended {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no watch event within {timeout:?}");
            }
            match self.lines.recv_timeout(left) {
                Ok(Ok(line)) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return serde_json::from_slice(&line)
                        .map(Some)
                        .with_context(|| format!("bad watch line {:?}", String::from_utf8_lossy(&line)));
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e).context("reading the watch stream");
                }
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
                Err(RecvTimeoutError::Timeout) => bail!("no watch event within {timeout:?}"),
            }
        }
    }

    /// Every event that arrives within `window` (stops early at the end of
    /// the stream).
    pub fn events_for(&mut self, window: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match self.next_event(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(_) if Instant::now() >= deadline => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads events until one satisfies `pred` (returned), failing after
    /// `timeout` or at the end of the stream.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Some(e) if pred(&e) => return Ok(e),
                Some(_) => {}
                None => bail!("the watch stream ended before the expected event"),
            }
        }
    }
}
