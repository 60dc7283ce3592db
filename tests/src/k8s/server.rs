//! The `xlb-fake-apiserver` process as a fixture, and `kubectl` against it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use super::{ApiError, KubeClient};
use crate::Netns;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How long [`ApiServer::start`] waits for `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
        Self::start_at(ns, "127.0.0.1:0".parse().expect("valid literal"), state, initial_rv)
    }

    /// Starts an empty server in `ns` listening on `listen` (an address of
    /// `ns`, port 0 for a free one), e.g. an address on a bridge that
    /// agents in other namespaces reach; the kubeconfig names that address.
    pub fn start_listening(ns: &Netns, listen: SocketAddr) -> Result<Self> {
        Self::start_at(ns, listen, None, 1)
    }

    fn start_at(ns: &Netns, listen: SocketAddr, state: Option<&Value>, initial_rv: u64) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{}-apiserver-{}-{n}", crate::PREFIX, std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut server = ApiServer {
            ns: ns.clone(),
            child: None,
            addr: listen,
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
            std::fs::write(&p, serde_json::to_vec(state)?).with_context(|| format!("cannot write {}", p.display()))?;
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
        KubeClient::new(self.ns.clone(), self.addr)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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
        self.client().request("POST", "/xlb-test/compact", None, None).map(drop)
    }

    /// Ends every open watch stream now (clients re-watch).
    pub fn close_watches(&self) -> Result<(), ApiError> {
        self.client().request("POST", "/xlb-test/close-watches", None, None).map(drop)
    }

    /// Request counts since the process started, keyed `"<verb>
    /// <apiVersion>/<plural>[/status]"` (verbs: list, watch, get, create,
    /// update, patch, delete, deletecollection), e.g. `"watch v1/services"`,
    /// `"patch v1/services/status"`, `"list discovery.k8s.io/v1/endpointslices"`;
    /// other paths as `"<METHOD> <path>"`.
    pub fn request_counts(&self) -> Result<BTreeMap<String, u64>, ApiError> {
        let v = self.client().request("GET", "/xlb-test/requests", None, None)?;
        Ok(v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default())
    }

    /// Installs the Gateway API: creates its CustomResourceDefinitions
    /// ([`super::gateway_api_crds`]) through the API, as `kubectl apply -f
    /// standard-install.yaml` would; from then on the server serves
    /// GatewayClass, Gateway, TCPRoute, UDPRoute and ReferenceGrant, and
    /// discovery lists them. (To have them from the start, put the CRDs in
    /// the state given to [`ApiServer::start_with`].)
    pub fn install_gateway_api(&self) -> Result<(), ApiError> {
        let c = self.client();
        for crd in super::gateway_api_crds() {
            c.create(&super::crds_path(None), &crd)?;
        }
        Ok(())
    }

    /// Deletes the Gateway API's CustomResourceDefinitions: every Gateway
    /// API object is deleted with them (DELETED events), their watches end,
    /// and the resources are no longer served (404).
    pub fn uninstall_gateway_api(&self) -> Result<(), ApiError> {
        let c = self.client();
        for crd in super::gateway_api_crds() {
            c.delete(&super::crds_path(crd["metadata"]["name"].as_str()))?;
        }
        Ok(())
    }

    /// The server's stderr so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /xlb-test/requests-by-agent`: resource requests counted by
    /// client (User-Agent up to its first `/`), keyed as in
    /// [`ApiServer::request_counts`].
    pub fn request_counts_by_agent(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>, ApiError> {
        let v = self.client().request("GET", "/xlb-test/requests-by-agent", None, None)?;
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

/// Runs `kubectl --kubeconfig <api's kubeconfig> ARGS...` inside the API
/// server's namespace (`ip netns exec`), with a private cache directory.
/// Fails, telling how to install it, when `kubectl` is missing.
pub fn kubectl(api: &ApiServer, args: &[&str]) -> Result<std::process::Output> {
    let bin = kubectl_binary()?;
    let cache = api.dir.join("kubectl-cache");
    let cache = cache.to_string_lossy();
    let kc = api.kubeconfig.to_string_lossy();
    let bin = bin.to_string_lossy();
    let mut all = vec![bin.as_ref(), "--kubeconfig", kc.as_ref(), "--cache-dir", cache.as_ref()];
    all.extend_from_slice(args);
    api.ns.exec(&all)
}

/// The `kubectl` binary on `PATH` (or `$KUBECTL`).
pub fn kubectl_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("kubectl")).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!("kubectl is not installed (not found on PATH): run `cargo xtask setup`, which installs it")
    })
}
