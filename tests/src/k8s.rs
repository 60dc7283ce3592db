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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::Netns;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How long [`ApiServer::start`] waits for `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of a non-watch request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `xlb-fake-apiserver` binary: `$XLB_FAKE_APISERVER_BIN` when set, else
/// the one next to the running test executable (`target/<profile>/`, where
/// cargo puts the package's binaries for its integration tests), else the
/// newer of `target/{release,debug}/xlb-fake-apiserver`.
pub fn fake_apiserver_binary() -> Result<PathBuf> {
    const NAME: &str = "xlb-fake-apiserver";
    if let Some(p) = std::env::var_os("XLB_FAKE_APISERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("XLB_FAKE_APISERVER_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join(NAME);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let target = crate::agent::target_dir();
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join(NAME))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max_by_key(|(m, _)| *m)
        .map(|(_, p)| p)
        .ok_or_else(|| {
            anyhow!(
                "no {NAME} binary next to the test executable or in {}/{{release,debug}}: \
                 build it with `cargo build -p xlb-tests --bin {NAME}` (`cargo test -p xlb-tests` \
                 does) or set XLB_FAKE_APISERVER_BIN",
                target.display()
            )
        })
}

/// A running `xlb-fake-apiserver` inside a network namespace, listening on
/// `127.0.0.1:<port>` there, with a kubeconfig pointing at it. Its stderr
/// (one line per request) goes to a log file, see [`ApiServer::log`].
/// Dropping it kills the process and removes its files.
#[derive(Debug)]
pub struct ApiServer {
    ns: Netns,
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl ApiServer {
    /// Starts an empty server (besides the `default` and `kube-system`
    /// namespaces) in `ns` on a free port of `127.0.0.1`.
    pub fn start(ns: &Netns) -> Result<Self> {
        Self::start_with(ns, None, 1)
    }

    /// Starts a server in `ns` preloaded with `state` (`{"objects": [...]}`,
    /// as [`ApiServer::snapshot`] returns; each object with `apiVersion` and
    /// `kind`), whose resourceVersions start at `initial_rv`.
    pub fn start_with(ns: &Netns, state: Option<&Value>, initial_rv: u64) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "{}-apiserver-{}-{n}",
            crate::PREFIX,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut server = ApiServer {
            ns: ns.clone(),
            child: None,
            addr: "127.0.0.1:0".parse().expect("valid literal"),
            kubeconfig: dir.join("kubeconfig"),
            log: dir.join("apiserver.log"),
            dir,
        };
        // Loopback must be up for 127.0.0.1 to work in the namespace.
        let _ = ns.ip(&["link", "set", "lo", "up"]);
        server.spawn(state, initial_rv)?;
        Ok(server)
    }

    fn spawn(&mut self, state: Option<&Value>, initial_rv: u64) -> Result<()> {
        let bin = fake_apiserver_binary()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--kubeconfig-out")
            .arg(&self.kubeconfig)
            .arg("--initial-rv")
            .arg(initial_rv.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(state) = state {
            let p = self.dir.join("state.json");
            std::fs::write(&p, serde_json::to_vec(state)?)
                .with_context(|| format!("cannot write {}", p.display()))?;
            cmd.arg("--state").arg(p);
        }
        let mut child = self.ns.spawn(&mut cmd)?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let got = rx.recv_timeout(START_TIMEOUT);
        let addr = got.ok().and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not print `listening on ADDR` within {START_TIMEOUT:?} in netns {}; its log:\n{}",
                bin.display(),
                self.ns.name,
                self.log()
            );
        };
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    /// Where it listens (inside its namespace).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig file (no auth, namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// A client for it.
    pub fn client(&self) -> KubeClient {
        KubeClient {
            ns: self.ns.clone(),
            addr: self.addr,
        }
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server (connections are reset, the port is free); the
    /// objects are lost unless taken with [`ApiServer::snapshot`] first.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server if it runs and starts it again on the same port,
    /// with `state` (see [`ApiServer::start_with`]) and resourceVersions
    /// from `initial_rv`. To keep the objects, pass the
    /// [`ApiServer::snapshot`] taken before; a high `initial_rv` makes the
    /// new versions unrelated to the old ones (watches from old versions
    /// get 410 Gone and clients list again).
    pub fn restart(&mut self, state: Option<&Value>, initial_rv: u64) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn(state, initial_rv) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("xlb-tests: restarting the fake API server: {e:#}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every stored object, as `{"objects": [...]}`.
    pub fn snapshot(&self) -> Result<Value, ApiError> {
        self.client().request("GET", "/xlb-test/state", None, None)
    }

    /// Forgets the change history: watches from older resourceVersions get
    /// an `ERROR` event with a 410 `Expired` Status.
    pub fn compact(&self) -> Result<(), ApiError> {
        self.client()
            .request("POST", "/xlb-test/compact", None, None)
            .map(drop)
    }

    /// Ends every open watch stream now (clients re-watch).
    pub fn close_watches(&self) -> Result<(), ApiError> {
        self.client()
            .request("POST", "/xlb-test/close-watches", None, None)
            .map(drop)
    }

    /// Request counts since the process started, keyed `"<verb>
    /// <apiVersion>/<plural>[/status]"` (verbs: list, watch, get, create,
    /// update, patch, delete, deletecollection), e.g. `"watch v1/services"`,
    /// `"patch v1/services/status"`, `"list discovery.k8s.io/v1/endpointslices"`;
    /// other paths as `"<METHOD> <path>"`.
    pub fn request_counts(&self) -> Result<BTreeMap<String, u64>, ApiError> {
        let v = self
            .client()
            .request("GET", "/xlb-test/requests", None, None)?;
        Ok(v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The server's stderr so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /xlb-test/requests-by-agent`: resource requests counted by
    /// client (User-Agent up to its first `/`), keyed as in
    /// [`ApiServer::request_counts`].
    pub fn request_counts_by_agent(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>, ApiError> {
        let v = self
            .client()
            .request("GET", "/xlb-test/requests-by-agent", None, None)?;
        Ok(v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(agent, counts)| {
                        let counts = counts
                            .as_object()
                            .map(|c| c.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect())
                            .unwrap_or_default();
                        (agent.clone(), counts)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
        ApiError {
            code: 0,
            body: Value::String(e.to_string()),
        }
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
/// connection inside the server's network namespace (`Connection: close`).
#[derive(Debug, Clone)]
pub struct KubeClient {
    ns: Netns,
    addr: SocketAddr,
}

/// A status line, headers and a body reader.
struct Response {
    code: u16,
    body: Box<dyn BufRead + Send>,
    stream: TcpStream,
}

impl KubeClient {
    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response, ApiError> {
        let addr = self.addr;
        let stream = self
            .ns
            .try_run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .map_err(ApiError::transport)?
            .map_err(|e| ApiError::transport(format!("connect {addr}: {e}")))?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(ApiError::transport)?;
        let payload = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Accept: application/json\r\nUser-Agent: xlb-tests\r\n"
        );
        if let Some(p) = &payload {
            let ct = content_type.unwrap_or("application/json");
            req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                p.len()
            ));
        }
        req.push_str("\r\n");
        let mut w = &stream;
        w.write_all(req.as_bytes())
            .and_then(|()| w.write_all(payload.as_deref().unwrap_or_default()))
            .map_err(ApiError::transport)?;
        let reader_stream = stream.try_clone().map_err(ApiError::transport)?;
        let mut reader = BufReader::new(reader_stream);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(ApiError::transport)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ApiError::transport(format!("bad status line {status:?}")))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).map_err(ApiError::transport)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if k == "content-length" {
                    length = v.parse::<u64>().ok();
                }
            }
        }
        let body: Box<dyn BufRead + Send> = if chunked {
            Box::new(BufReader::new(Chunked::new(reader)))
        } else if let Some(n) = length {
            Box::new(BufReader::new(reader.take(n)))
        } else {
            Box::new(reader)
        };
        Ok(Response { code, body, stream })
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
        let mut resp = self.send(method, path, content_type, body)?;
        let mut text = Vec::new();
        resp.body
            .read_to_end(&mut text)
            .map_err(ApiError::transport)?;
        let v = serde_json::from_slice(&text)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&text).into_owned()));
        if (200..300).contains(&resp.code) {
            Ok(v)
        } else {
            Err(ApiError {
                code: resp.code,
                body: v,
            })
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
        self.request(
            "PATCH",
            path,
            Some("application/merge-patch+json"),
            Some(patch),
        )
    }

    /// Merge-patches `path/status` (the status subresource).
    pub fn patch_status(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.merge_patch(&format!("{path}/status"), patch)
    }

    /// PATCH with `application/json-patch+json` (RFC 6902 operations).
    pub fn json_patch(&self, path: &str, ops: &Value) -> Result<Value, ApiError> {
        self.request(
            "PATCH",
            path,
            Some("application/json-patch+json"),
            Some(ops),
        )
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
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let resp = self.send(
            "GET",
            &format!("{path_and_query}{sep}watch=true"),
            None,
            None,
        )?;
        if resp.code != 200 {
            let mut body = resp.body;
            let mut text = String::new();
            let _ = body.read_to_string(&mut text);
            return Err(ApiError {
                code: resp.code,
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            });
        }
        Ok(WatchStream {
            body: resp.body,
            stream: resp.stream,
            pending: Vec::new(),
            ended: false,
        })
    }
}

/// An open watch: one JSON event (`{"type": ..., "object": ...}`) per line.
pub struct WatchStream {
    body: Box<dyn BufRead + Send>,
    stream: TcpStream,
    pending: Vec<u8>,
    ended: bool,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("ended", &self.ended)
            .finish()
    }
}

impl WatchStream {
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
            self.stream.set_read_timeout(Some(left))?;
            match self.body.read_until(b'\n', &mut self.pending) {
                Ok(_) if self.pending.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.pending);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return serde_json::from_slice(&line).map(Some).with_context(|| {
                        format!("bad watch line {:?}", String::from_utf8_lossy(&line))
                    });
                }
                Ok(_) => self.ended = true,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("no watch event within {timeout:?}")
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the watch stream"),
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

/// A `Transfer-Encoding: chunked` decoder that survives read timeouts
/// (partial size lines are kept).
struct Chunked<R> {
    inner: R,
    remaining: usize,
    line: Vec<u8>,
    state: ChunkState,
}

#[derive(PartialEq)]
enum ChunkState {
    Size,
    Data,
    DataEnd,
    Done,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            remaining: 0,
            line: Vec::new(),
            state: ChunkState::Size,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size | ChunkState::DataEnd => {
                    self.inner.read_until(b'\n', &mut self.line)?;
                    if !self.line.ends_with(b"\n") {
                        self.state = ChunkState::Done;
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    if self.state == ChunkState::DataEnd {
                        self.state = ChunkState::Size;
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    let hex = text.split(';').next().unwrap_or_default().trim();
                    let n = usize::from_str_radix(hex, 16).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad chunk size {hex:?}"),
                        )
                    })?;
                    if n == 0 {
                        self.state = ChunkState::Done;
                    } else {
                        self.remaining = n;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(self.remaining);
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        self.state = ChunkState::Done;
                        return Ok(0);
                    }
                    self.remaining -= n;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    return Ok(n);
                }
            }
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL path of a resource: `/api/v1/...` for `api_version` `v1`, else
/// `/apis/<api_version>/...`, with `namespaces/<ns>/` when `ns` is given and
/// `/<name>` when `name` is.
pub fn api_path(api_version: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    if let Some(ns) = ns {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// `/api/v1[/namespaces/<ns>]/services`.
pub fn services_path(ns: Option<&str>) -> String {
    api_path("v1", "services", ns, None)
}

/// `/api/v1/namespaces/<ns>/services/<name>`.
pub fn service_path(ns: &str, name: &str) -> String {
    api_path("v1", "services", Some(ns), Some(name))
}

/// `/apis/discovery.k8s.io/v1[/namespaces/<ns>]/endpointslices`.
pub fn endpointslices_path(ns: Option<&str>) -> String {
    api_path("discovery.k8s.io/v1", "endpointslices", ns, None)
}

/// `/apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices/<name>`.
pub fn endpointslice_path(ns: &str, name: &str) -> String {
    api_path(
        "discovery.k8s.io/v1",
        "endpointslices",
        Some(ns),
        Some(name),
    )
}

/// `/api/v1/nodes`.
pub fn nodes_path() -> String {
    api_path("v1", "nodes", None, None)
}

/// `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>]`.
pub fn leases_path(ns: &str, name: Option<&str>) -> String {
    api_path("coordination.k8s.io/v1", "leases", Some(ns), name)
}

/// `/apis/events.k8s.io/v1[/namespaces/<ns>]/events`.
pub fn events_path(ns: Option<&str>) -> String {
    api_path("events.k8s.io/v1", "events", ns, None)
}

/// A Service of `type: LoadBalancer` (class `xlb.io/xdp` unless changed),
/// built with chained calls and [`LbService::build`].
#[derive(Debug, Clone)]
pub struct LbService {
    obj: Value,
}

/// Starts a LoadBalancer Service `ns/name` with class `xlb.io/xdp`, no ports,
/// `externalTrafficPolicy: Cluster`, `sessionAffinity: None`.
pub fn lb_service(ns: &str, name: &str) -> LbService {
    LbService {
        obj: json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "xlb.io/xdp",
                "externalTrafficPolicy": "Cluster",
                "sessionAffinity": "None",
                "ports": [],
            },
        }),
    }
}

impl LbService {
    /// `spec.loadBalancerClass` (`None` removes it).
    pub fn class(mut self, class: Option<&str>) -> Self {
        match class {
            Some(c) => self.obj["spec"]["loadBalancerClass"] = json!(c),
            None => {
                self.obj["spec"]
                    .as_object_mut()
                    .map(|m| m.remove("loadBalancerClass"));
            }
        }
        self
    }

    /// `spec.type` (default `LoadBalancer`).
    pub fn service_type(mut self, t: &str) -> Self {
        self.obj["spec"]["type"] = json!(t);
        self
    }

    /// Adds a port (`name` may be empty; `protocol` `UDP` or `TCP`); the
    /// target port is the same number.
    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        let mut p = json!({"port": port, "protocol": protocol, "targetPort": port});
        if !name.is_empty() {
            p["name"] = json!(name);
        }
        self.obj["spec"]["ports"]
            .as_array_mut()
            .expect("ports is an array")
            .push(p);
        self
    }

    /// `spec.externalTrafficPolicy` (`Cluster` or `Local`).
    pub fn external_traffic_policy(mut self, policy: &str) -> Self {
        self.obj["spec"]["externalTrafficPolicy"] = json!(policy);
        self
    }

    /// `sessionAffinity: ClientIP` with `timeoutSeconds`.
    pub fn session_affinity_client_ip(mut self, timeout_seconds: u32) -> Self {
        self.obj["spec"]["sessionAffinity"] = json!("ClientIP");
        self.obj["spec"]["sessionAffinityConfig"] =
            json!({"clientIP": {"timeoutSeconds": timeout_seconds}});
        self
    }

    /// `spec.loadBalancerSourceRanges`.
    pub fn source_ranges(mut self, cidrs: &[&str]) -> Self {
        self.obj["spec"]["loadBalancerSourceRanges"] = json!(cidrs);
        self
    }

    /// Adds `metadata.annotations[key] = value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.obj["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Adds `metadata.labels[key] = value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.obj["metadata"]["labels"][key] = json!(value);
        self
    }

    /// `spec.loadBalancerIP`.
    pub fn load_balancer_ip(mut self, ip: &str) -> Self {
        self.obj["spec"]["loadBalancerIP"] = json!(ip);
        self
    }

    /// `spec.healthCheckNodePort`.
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.obj["spec"]["healthCheckNodePort"] = json!(port);
        self
    }

    /// `metadata.creationTimestamp` (RFC 3339, e.g. `2024-01-01T00:00:00Z`),
    /// kept by the server on create.
    pub fn created(mut self, rfc3339: &str) -> Self {
        self.obj["metadata"]["creationTimestamp"] = json!(rfc3339);
        self
    }

    /// The object.
    pub fn build(&self) -> Value {
        self.obj.clone()
    }
}

/// One endpoint of an [`EndpointSliceBuilder`].
#[derive(Debug, Clone)]
pub struct Endpoint {
    addresses: Vec<String>,
    node_name: Option<String>,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// A ready, serving, not terminating endpoint with one address.
pub fn endpoint(address: impl ToString) -> Endpoint {
    Endpoint {
        addresses: vec![address.to_string()],
        node_name: None,
        ready: true,
        serving: true,
        terminating: false,
    }
}

impl Endpoint {
    /// `nodeName`.
    pub fn node(mut self, name: &str) -> Self {
        self.node_name = Some(name.to_string());
        self
    }

    /// Sets the three conditions.
    pub fn conditions(mut self, ready: bool, serving: bool, terminating: bool) -> Self {
        self.ready = ready;
        self.serving = serving;
        self.terminating = terminating;
        self
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "addresses": self.addresses,
            "conditions": {"ready": self.ready, "serving": self.serving, "terminating": self.terminating},
        });
        if let Some(n) = &self.node_name {
            e["nodeName"] = json!(n);
        }
        e
    }
}

/// An EndpointSlice, built with chained calls and
/// [`EndpointSliceBuilder::build`].
#[derive(Debug, Clone)]
pub struct EndpointSliceBuilder {
    obj: Value,
}

/// Starts an IPv4 EndpointSlice `ns/name` labelled
/// `kubernetes.io/service-name: service`, without endpoints or ports.
pub fn endpoint_slice(ns: &str, name: &str, service: &str) -> EndpointSliceBuilder {
    EndpointSliceBuilder {
        obj: json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": [],
            "ports": [],
        }),
    }
}

impl EndpointSliceBuilder {
    /// `addressType` (`IPv4`, `IPv6`).
    pub fn address_type(mut self, t: &str) -> Self {
        self.obj["addressType"] = json!(t);
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, e: Endpoint) -> Self {
        self.obj["endpoints"]
            .as_array_mut()
            .expect("endpoints is an array")
            .push(e.to_json());
        self
    }

    /// Adds a port (`name` may be empty: the port of an unnamed Service port).
    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        self.obj["ports"]
            .as_array_mut()
            .expect("ports is an array")
            .push(json!({"name": name, "port": port, "protocol": protocol}));
        self
    }

    /// The object.
    pub fn build(&self) -> Value {
        self.obj.clone()
    }
}

/// A Node with one `InternalIP` address.
pub fn node(name: &str, internal_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ]},
    })
}

/// Runs `kubectl --kubeconfig <api's kubeconfig> ARGS...` inside the API
/// server's namespace (`ip netns exec`), with a private cache directory.
/// Fails, telling how to install it, when `kubectl` is missing.
pub fn kubectl(api: &ApiServer, args: &[&str]) -> Result<std::process::Output> {
    let bin = kubectl_binary()?;
    let cache = api.dir.join("kubectl-cache");
    let cache = cache.to_string_lossy();
    let kc = api.kubeconfig.to_string_lossy();
    let bin = bin.to_string_lossy();
    let mut all = vec![
        bin.as_ref(),
        "--kubeconfig",
        kc.as_ref(),
        "--cache-dir",
        cache.as_ref(),
    ];
    all.extend_from_slice(args);
    api.ns.exec(&all)
}

/// The `kubectl` binary on `PATH` (or `$KUBECTL`).
pub fn kubectl_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("kubectl is not installed (not found on PATH): run `cargo xtask setup`, which installs it")
        })
}
