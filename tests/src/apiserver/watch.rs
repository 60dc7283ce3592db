//! Watch streams: one JSON event per line, sent as it happens, with
//! selector transitions, bookmarks, timeouts, 410 for expired versions and
//! an admin switch that ends every stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::resources::RESOURCES;
use super::server::{as_version, App};
use super::store::Change;
use super::util::ApiError;

/// What a watch asks for.
pub struct WatchRequest {
    /// Index into [`RESOURCES`].
    pub res: usize,
    /// The version watched (objects are sent as that version).
    pub version: String,
    /// Namespace, or all.
    pub ns: Option<String>,
    /// `resourceVersion`: `None` (absent, `""` or `"0"`) starts with the
    /// current objects as ADDED events.
    pub from: Option<u64>,
    /// Label and field selectors and the namespace, as one predicate.
    pub filter: Box<dyn Fn(&Value) -> bool + Send + Sync>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
}

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Starts the watch task and returns the streaming body it feeds.
pub fn start(app: Arc<App>, req: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        if let Err(e) = run(&app, &req, &tx).await {
            let _ = tx.send(line("ERROR", &e.status())).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Body::from_stream(stream)
}

/// Sends the events; returns `Ok` when the stream should just end.
async fn run(app: &App, req: &WatchRequest, tx: &mpsc::Sender<Bytes>) -> Result<(), ApiError> {
    let r = &RESOURCES[req.res];
    let mut changed = app.changed.subscribe();
    let mut close = app.close.subscribe();
    close.borrow_and_update();
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let bookmark = |rv: u64| {
        line(
            "BOOKMARK",
            &json!({"kind": r.kind, "apiVersion": r.api_version_of(&req.version),
                    "metadata": {"resourceVersion": rv.to_string()}}),
        )
    };
    let (initial, mut last) = {
        let store = app.lock();
        match req.from {
            None => store.list(req.res, req.ns.as_deref(), |o| (req.filter)(o)),
            Some(rv) => {
                store.changes_after(rv)?;
                (Vec::new(), rv)
            }
        }
    };
    changed.borrow_and_update();
    for o in initial {
        if tx.send(line("ADDED", &as_version(o, req.res, &req.version))).await.is_err() {
            return Ok(());
        }
    }
    if req.bookmarks && tx.send(bookmark(last)).await.is_err() {
        return Ok(());
    }
    let mut next_bookmark = Instant::now() + BOOKMARK_EVERY;
    loop {
        let (events, now) = app.lock().changes_after(last)?;
        for e in events.iter().filter(|e| e.res == req.res) {
            let new_m = (req.filter)(&e.object);
            let old_m = e.old.as_ref().is_some_and(|o| (req.filter)(o));
            let kind = match (e.change, old_m, new_m) {
                (Change::Added, _, true) => "ADDED",
                (Change::Modified, true, true) => "MODIFIED",
                (Change::Modified, false, true) => "ADDED",
                (Change::Modified, true, false) => "DELETED",
                (Change::Deleted, _, true) => "DELETED",
                _ => continue,
            };
            if tx.send(line(kind, &as_version(e.object.clone(), req.res, &req.version))).await.is_err() {
                return Ok(());
            }
        }
        last = now;
        // A custom resource whose CRD went: the stream ends (after its
        // objects' DELETED events), as the real server ends it.
        if !app.lock().served(req.res, &req.version) {
            return Ok(());
        }
        let sleep_bookmark = tokio::time::sleep_until(next_bookmark);
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(()) },
            _ = close.changed() => return Ok(()),
            () = tx.closed() => return Ok(()),
            () = sleep_deadline => return Ok(()),
            () = sleep_bookmark, if req.bookmarks => {
                if tx.send(bookmark(last)).await.is_err() {
                    return Ok(());
                }
                next_bookmark = Instant::now() + BOOKMARK_EVERY;
            }
        }
    }
}
