//! `xlb-fake-apiserver`: an in-memory Kubernetes API server speaking the
//! list/watch protocol over plain HTTP, for xlb's integration tests.
//!
//! ```text
//! xlb-fake-apiserver [--listen ADDR:PORT] [--kubeconfig-out PATH]
//!                    [--state FILE] [--initial-rv N] [--history N]
//! ```
//!
//! Prints `listening on ADDR:PORT` on stdout once bound. See
//! `tests/src/apiserver/mod.rs` for what is served.

#[path = "../apiserver/mod.rs"]
mod apiserver;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use apiserver::server::{router, App};
use apiserver::store::Store;

const USAGE: &str = "usage: xlb-fake-apiserver [--listen ADDR:PORT] [--kubeconfig-out PATH] \
                     [--state FILE] [--initial-rv N] [--history N]";

struct Args {
    listen: SocketAddr,
    kubeconfig_out: Option<PathBuf>,
    state: Option<PathBuf>,
    initial_rv: u64,
    history: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:0".parse().expect("valid literal"),
        kubeconfig_out: None,
        state: None,
        initial_rv: 1,
        history: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value {val:?} for {flag}: {e}");
        match flag.as_str() {
            "--listen" => a.listen = val.parse().map_err(|e| bad(&e))?,
            "--kubeconfig-out" => a.kubeconfig_out = Some(val.into()),
            "--state" => a.state = Some(val.into()),
            "--initial-rv" => a.initial_rv = val.parse().map_err(|e| bad(&e))?,
            "--history" => a.history = val.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.initial_rv == 0 {
        return Err("--initial-rv must be at least 1".into());
    }
    Ok(a)
}

/// A kubeconfig for `server`, without authentication.
fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n"
    )
}

fn initial_objects(state: Option<&PathBuf>) -> Result<Vec<serde_json::Value>, String> {
    let mut objects = Vec::new();
    if let Some(p) = state {
        let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
        let list = match v {
            serde_json::Value::Array(a) => a,
            mut o => match o["objects"].take() {
                serde_json::Value::Array(a) => a,
                _ => return Err(format!("{}: expected {{\"objects\": [...]}}", p.display())),
            },
        };
        objects.extend(list);
    }
    for ns in ["default", "kube-system"] {
        let present = objects.iter().any(|o| o["kind"] == "Namespace" && o["metadata"]["name"].as_str() == Some(ns));
        if !present {
            objects.insert(
                0,
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"}}),
            );
        }
    }
    Ok(objects)
}

async fn run(args: Args) -> Result<(), String> {
    let mut store = Store::new(args.initial_rv, args.history);
    store.load(&initial_objects(args.state.as_ref())?)?;
    let app = App::new(store);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(p) = &args.kubeconfig_out {
        std::fs::write(p, kubeconfig(addr)).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    axum::serve(listener, router(app)).await.map_err(|e| format!("server failed: {e}"))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xlb-fake-apiserver: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xlb-fake-apiserver: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("xlb-fake-apiserver: {e}");
        std::process::exit(1);
    }
}
