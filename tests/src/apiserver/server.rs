//! The HTTP side: routing of discovery, resource and admin paths, verbs,
//! query parameters, request counting and logging.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::{self, find, RESOURCES};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{PatchKind, Store};
use super::util::ApiError;
use super::watch::{self, WatchRequest};

/// Shared server state.
pub struct App {
    store: Mutex<Store>,
    /// Bumped on every store change; watches wait on it.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Bumped by `POST /xlb-test/close-watches`; every watch ends.
    pub close: tokio::sync::watch::Sender<u64>,
    requests: Mutex<BTreeMap<String, u64>>,
    /// Resource requests by client: User-Agent up to its first `/` (e.g.
    /// `kube-rs`, `xlb-tests`, `kubectl`) → the keys of `requests`.
    by_agent: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl App {
    /// Wraps a store.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(App {
            store: Mutex::new(store),
            changed: tokio::sync::watch::channel(0).0,
            close: tokio::sync::watch::channel(0).0,
            requests: Mutex::default(),
            by_agent: Mutex::default(),
        })
    }

    /// Locks the store.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count_by_agent(&self, headers: &HeaderMap, key: &str) {
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        *self
            .by_agent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(agent)
            .or_default()
            .entry(key.to_string())
            .or_default() += 1;
    }

    fn count(&self, key: String) {
        *self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default() += 1;
    }
}

/// The router: everything goes through [`handle`].
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The single handler.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = route(&app, &method, &uri, &headers, body);
    eprintln!("{method} {uri} {}", resp.status().as_u16());
    resp
}

fn route(app: &Arc<App>, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || error(&ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    let get_only = |v: Option<Value>| -> Response {
        app.count(format!("{method} {}", uri.path()));
        match (method == Method::GET, v) {
            (true, Some(v)) => json_response(200, &v),
            (false, Some(_)) => error(&ApiError::new(405, "MethodNotAllowed", "method not allowed")),
            (_, None) => not_found(),
        }
    };
    let served = |i: usize, v: &str| app.lock().served(i, v);
    match segs.as_slice() {
        ["version"] => get_only(Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-xlb-fake",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64",
        }))),
        ["healthz" | "livez" | "readyz"] => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
        }
        ["api"] => get_only(Some(resources::api_versions())),
        ["apis"] => get_only(Some(resources::api_group_list(&served))),
        ["api", v] => get_only(resources::api_resource_list("", v, &served)),
        ["apis", g] => get_only(resources::api_group(g, &served)),
        ["apis", g, v] => get_only(resources::api_resource_list(g, v, &served)),
        ["api", v, rest @ ..] => resource(app, method, uri, headers, body, "", v, rest),
        ["apis", g, v, rest @ ..] => resource(app, method, uri, headers, body, g, v, rest),
        ["xlb-test", what] => admin(app, method, what),
        _ => {
            app.count(format!("{method} {}", uri.path()));
            not_found()
        }
    }
}

/// `POST /xlb-test/compact`, `POST /xlb-test/close-watches`,
/// `GET /xlb-test/requests`, `GET /xlb-test/requests-by-agent`,
/// `GET /xlb-test/state`.
fn admin(app: &Arc<App>, method: &Method, what: &str) -> Response {
    match (method.as_str(), what) {
        ("POST", "compact") => {
            app.lock().compact();
            json_response(200, &json!({"compacted": true}))
        }
        ("POST", "close-watches") => {
            app.close.send_modify(|g| *g += 1);
            json_response(200, &json!({"closed": true}))
        }
        ("GET", "requests") => {
            let r = app.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            json_response(200, &json!(r))
        }
        ("GET", "requests-by-agent") => {
            let r = app.by_agent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            json_response(200, &json!(r))
        }
        ("GET", "state") => json_response(200, &app.lock().snapshot()),
        _ => error(&ApiError::new(404, "NotFound", "unknown admin endpoint")),
    }
}

/// Which object(s) a resource URL names.
struct Target {
    res: usize,
    /// The version in the URL (one the resource is served as).
    version: String,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let namespaced_res = |p: &str| find(group, version, p).filter(|&i| RESOURCES[i].namespaced);
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, ..] if namespaced_res(plural).is_some() => (Some(ns.to_string()), &rest[2..]),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return None,
    };
    let res = find(group, version, plural)?;
    let r = &RESOURCES[res];
    if (ns.is_some() && !r.namespaced) || (r.namespaced && ns.is_none() && name.is_some()) {
        return None;
    }
    let status = match sub {
        None => false,
        Some("status") if r.status => true,
        Some(_) => return None,
    };
    Some(Target { res, version: version.to_string(), ns, name, status })
}

/// `obj` (stored as its resource's first version) as `version` of it: the
/// same object, its `apiVersion` that version's.
pub fn as_version(mut obj: Value, res: usize, version: &str) -> Value {
    let r = &RESOURCES[res];
    if version != r.version && obj.get("apiVersion").is_some() {
        obj["apiVersion"] = json!(r.api_version_of(version));
    }
    obj
}

#[expect(clippy::too_many_arguments, reason = "one argument per field of the object built")]
fn resource(
    app: &Arc<App>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Response {
    // A custom resource whose CRD is not stored (or does not serve this
    // version) is as unknown as one the server never heard of.
    let Some(t) = parse_target(group, version, rest).filter(|t| app.lock().served(t.res, version)) else {
        app.count(format!("{method} {}", uri.path()));
        return error(&ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    };
    let r = &RESOURCES[t.res];
    let q = query(uri);
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (method.as_str(), t.name.is_some()) {
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unsupported",
    };
    let sub = if t.status { "/status" } else { "" };
    let key = format!("{verb} {}/{}{sub}", r.api_version(), r.plural);
    app.count_by_agent(headers, &key);
    app.count(key);
    match run_verb(app, verb, &t, &q, headers, &body) {
        Ok(resp) => resp,
        Err(e) => error(&e),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn run_verb(
    app: &Arc<App>,
    verb: &str,
    t: &Target,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let r = &RESOURCES[t.res];
    let ns = t.ns.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let ok = |v: Value| Ok(json_response(200, &as_version(v, t.res, &t.version)));
    match verb {
        "list" | "watch" | "deletecollection" => {
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let want_ns = t.ns.clone();
            let filter = move |o: &Value| {
                want_ns.as_deref().is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n))
                    && labels.matches(o)
                    && fields.matches(o)
            };
            if verb == "watch" {
                let from = match q.get("resourceVersion").map(String::as_str) {
                    None | Some("" | "0") => None,
                    Some(v) => Some(
                        v.parse::<u64>()
                            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
                    ),
                };
                let timeout = q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
                let req = WatchRequest {
                    res: t.res,
                    version: t.version.clone(),
                    ns: t.ns.clone(),
                    from,
                    filter: Box::new(filter),
                    bookmarks: q.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
                    timeout,
                };
                let body = watch::start(app.clone(), req);
                return Ok(Response::builder()
                    .status(200)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CACHE_CONTROL, "no-cache, private")
                    .body(body)
                    .unwrap_or_else(|_| Response::new(Body::empty())));
            }
            let mut store = app.lock();
            let (items, rv) = store.list(t.res, t.ns.as_deref(), filter);
            if verb == "deletecollection" {
                for o in &items {
                    let n = o["metadata"]["name"].as_str().unwrap_or_default();
                    let ons = o["metadata"]["namespace"].as_str().unwrap_or_default();
                    store.delete(t.res, ons, n)?;
                }
            }
            drop(store);
            app.changed.send_modify(|g| *g += 1);
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", r.kind),
                    "apiVersion": r.api_version_of(&t.version),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
        "get" => ok(app.lock().get(t.res, &ns, &name)?),
        "create" => {
            let obj = parse_body(body)?;
            let v = app.lock().create(t.res, &ns, obj)?;
            app.changed.send_modify(|g| *g += 1);
            Ok(json_response(201, &as_version(v, t.res, &t.version)))
        }
        "update" => {
            let obj = parse_body(body)?;
            let v = app.lock().replace(t.res, &ns, &name, obj, t.status)?;
            app.changed.send_modify(|g| *g += 1);
            ok(v)
        }
        "patch" => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let kind = match ct.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    PatchKind::Merge
                }
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchKind::Apply,
                "application/json-patch+json" => PatchKind::Json,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"),
                    ))
                }
            };
            let patch = parse_body(body)?;
            let v = app.lock().patch(t.res, &ns, &name, kind, &patch, t.status)?;
            app.changed.send_modify(|g| *g += 1);
            ok(v)
        }
        "delete" => {
            let v = app.lock().delete(t.res, &ns, &name)?;
            app.changed.send_modify(|g| *g += 1);
            ok(v)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({})", r.plural),
        )),
    }
}
