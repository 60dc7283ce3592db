//! The in-memory object store: one global, monotonically increasing
//! resourceVersion, a bounded history of changes for watches, and the
//! create / update / patch / delete semantics of the real API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

use super::patch;
use super::resources::{crd_resource, find_kind, Resource, RESOURCES};
use super::util::{new_uid, now_rfc3339, random_suffix, ApiError};

/// (index into [`RESOURCES`], namespace or `""`, name).
pub type Key = (usize, String, String);

/// The kind of a stored change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

/// One change, as kept in the history.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Index into [`RESOURCES`].
    pub res: usize,
    /// What happened.
    pub change: Change,
    /// The object after the change (before it, with the deletion's
    /// resourceVersion, for a deletion).
    pub object: Value,
    /// The object before a modification (for selector transitions).
    pub old: Option<Value>,
}

/// How a PATCH body is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` and `strategic-merge-patch+json`.
    Merge,
    /// `application/apply-patch+yaml` (JSON body; merged; creates if absent).
    Apply,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

/// The store. Not thread-safe by itself: wrap it in a mutex.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Every change up to this resourceVersion is forgotten.
    compacted: u64,
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty())
}

/// The object without metadata and status, to detect spec changes.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

impl Store {
    /// An empty store whose first change gets resourceVersion `initial_rv`;
    /// keeps the last `history_limit` changes.
    pub fn new(initial_rv: u64, history_limit: usize) -> Self {
        let rv = initial_rv.saturating_sub(1);
        Store {
            rv,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: rv,
        }
    }

    /// Loads objects (each with `apiVersion` and `kind`), giving them fresh
    /// resourceVersions, and forgets the history (older watches get 410).
    pub fn load(&mut self, objects: &[Value]) -> Result<(), String> {
        for obj in objects {
            let api_version = obj["apiVersion"].as_str().unwrap_or_default();
            let kind = obj["kind"].as_str().unwrap_or_default();
            let res =
                find_kind(api_version, kind).ok_or_else(|| format!("unknown apiVersion/kind {api_version}/{kind}"))?;
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            self.insert(res, &ns, obj.clone(), false).map_err(|e| e.message)?;
        }
        self.compact();
        Ok(())
    }

    /// Whether resource `res` is served as `version`: a built-in one
    /// always (in its versions); a custom one while its
    /// CustomResourceDefinition (`<plural>.<group>`) is stored, in the
    /// versions whose `spec.versions[]` entry is `served` (all of its own
    /// when the CRD lists none).
    pub fn served(&self, res: usize, version: &str) -> bool {
        let r = &RESOURCES[res];
        if !r.has_version(version) {
            return false;
        }
        if !r.crd {
            return true;
        }
        let Some(crd) = self.objects.get(&(crd_resource(), String::new(), r.crd_name())) else { return false };
        match crd["spec"]["versions"].as_array() {
            Some(vs) => vs.iter().any(|v| v["name"] == version && v["served"].as_bool() != Some(false)),
            None => true,
        }
    }

    /// Every stored object (for `--state` files).
    pub fn snapshot(&self) -> Value {
        json!({"objects": self.objects.values().collect::<Vec<_>>()})
    }

    /// Forgets all history: watches from any resourceVersion older than
    /// the current one get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn commit(&mut self, key: Key, change: Change, mut object: Value, old: Option<Value>) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        match change {
            Change::Deleted => {
                self.objects.remove(&key);
            }
            _ => {
                self.objects.insert(key.clone(), object.clone());
            }
        }
        self.history.push_back(Arc::new(Event { rv: self.rv, res: key.0, change, object: object.clone(), old }));
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        object
    }

    /// Objects of resource `res` (in namespace `ns`, or all) that `keep`
    /// accepts, sorted by namespace and name, and the current resourceVersion.
    pub fn list(&self, res: usize, ns: Option<&str>, keep: impl Fn(&Value) -> bool) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|((r, n, _), o)| *r == res && ns.is_none_or(|ns| ns == n) && keep(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, self.rv)
    }

    /// One object.
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(res, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
    }

    /// The changes after `rv` and the current resourceVersion, or 410
    /// Expired when some of them are forgotten (or `rv` is in the future,
    /// which the client should treat the same: list again).
    pub fn changes_after(&self, rv: u64) -> Result<(Vec<Arc<Event>>, u64), ApiError> {
        if rv < self.compacted || rv > self.rv {
            return Err(ApiError::expired(format!("too old resource version: {rv} ({})", self.compacted + 1)));
        }
        let skip = self.history.partition_point(|e| e.rv <= rv);
        Ok((self.history.iter().skip(skip).cloned().collect(), self.rv))
    }

    /// Creates an object (POST). `keep_status` is false for API creates of
    /// resources that clear `.status` on create.
    fn insert(&mut self, res: usize, ns: &str, mut obj: Value, api: bool) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        check_type(r, &obj)?;
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        if r.namespaced {
            match meta["namespace"].as_str() {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => meta["namespace"] = json!(ns),
            }
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => format!("{g}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(r, "", "metadata.name: Required value: name or generateName is required"))
            }
        };
        meta["name"] = json!(name);
        let key = (res, if r.namespaced { ns.to_string() } else { String::new() }, name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(r, &name));
        }
        if api || meta["uid"].as_str().is_none_or(str::is_empty) {
            meta["uid"] = json!(new_uid());
        }
        if meta["creationTimestamp"].as_str().is_none_or(str::is_empty) {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        if api {
            meta["generation"] = json!(1);
        }
        if api && r.clear_status_on_create {
            obj["status"] = json!({"loadBalancer": {}});
        }
        // A custom resource with a status subresource ignores the status
        // of a create, as the real server does.
        if api && r.crd && r.status {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        Ok(self.commit(key, Change::Added, obj, None))
    }

    /// POST to a collection.
    pub fn create(&mut self, res: usize, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.insert(res, ns, obj, true)
    }

    /// Replaces `old` (stored under `key`) by `new`, keeping what the server
    /// owns; `status` is true for the status subresource. No change, no
    /// new resourceVersion.
    fn update_with(&mut self, key: Key, old: Value, mut new: Value, status: bool) -> Result<Value, ApiError> {
        let r = &RESOURCES[key.0];
        check_type(r, &new)?;
        if status {
            let mut s = old.clone();
            match new.get("status") {
                Some(st) if !st.is_null() => s["status"] = st.clone(),
                _ => {
                    s.as_object_mut().map(|m| m.remove("status"));
                }
            }
            new = s;
        } else if r.status {
            match old.get("status") {
                Some(st) => new["status"] = st.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        new["apiVersion"] = json!(r.api_version());
        new["kind"] = json!(r.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        for field in ["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().map(|m| m.remove(field));
                }
            }
        }
        if spec_part(&new) != spec_part(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == old {
            return Ok(old);
        }
        Ok(self.commit(key, Change::Modified, new, Some(old)))
    }

    /// PUT (`status`: to the status subresource), with optimistic concurrency
    /// on `metadata.resourceVersion`.
    pub fn replace(&mut self, res: usize, ns: &str, name: &str, obj: Value, status: bool) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
        }
        let old = self.get(res, ns, name)?;
        match rv_of(&obj) {
            Some(rv) if Some(rv) != rv_of(&old) => return Err(ApiError::conflict(r, name)),
            None if r.require_rv_on_update => {
                return Err(ApiError::invalid(
                    r,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ))
            }
            _ => {}
        }
        self.update_with((res, ns.to_string(), name.to_string()), old, obj, status)
    }

    /// PATCH. A `metadata.resourceVersion` in a merge/apply patch is a
    /// precondition (409 on mismatch). An apply patch creates a missing object.
    pub fn patch(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let r = &RESOURCES[res];
        let old = match self.get(res, ns, name) {
            Ok(o) => o,
            Err(_) if kind == PatchKind::Apply && !status => {
                let mut obj = body.clone();
                obj["metadata"]["name"] = json!(name);
                return self.create(res, ns, obj);
            }
            Err(e) => return Err(e),
        };
        let mut new = old.clone();
        match kind {
            PatchKind::Merge | PatchKind::Apply => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                if let Some(rv) = rv_of(body) {
                    if Some(rv) != rv_of(&old) {
                        return Err(ApiError::conflict(r, name));
                    }
                }
                patch::merge(&mut new, body);
            }
            PatchKind::Json => {
                patch::json_patch(&mut new, body).map_err(|e| ApiError::invalid(r, name, e))?;
                if rv_of(&new) != rv_of(&old) {
                    return Err(ApiError::conflict(r, name));
                }
            }
        }
        if new["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::invalid(r, name, "metadata.name: the name cannot be changed"));
        }
        self.update_with((res, ns.to_string(), name.to_string()), old, new, status)
    }

    /// DELETE: removes the object and returns it (with the deletion's
    /// resourceVersion). Deleting a CustomResourceDefinition deletes every
    /// object of its resource (each a DELETED event), as the real server does.
    pub fn delete(&mut self, res: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        let gone = self.commit((res, ns.to_string(), name.to_string()), Change::Deleted, old, None);
        if res == crd_resource() {
            let custom: Vec<usize> =
                (0..RESOURCES.len()).filter(|i| RESOURCES[*i].crd && RESOURCES[*i].crd_name() == name).collect();
            let keys: Vec<Key> = self.objects.keys().filter(|k| custom.contains(&k.0)).cloned().collect();
            for key in keys {
                if let Some(o) = self.objects.get(&key).cloned() {
                    self.commit(key, Change::Deleted, o, None);
                }
            }
        }
        Ok(gone)
    }
}

/// 400 when the body names another apiVersion/kind than the URL (any
/// version the resource is served as will do: the object is stored as its
/// first).
fn check_type(r: &Resource, obj: &Value) -> Result<(), ApiError> {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let k = obj["kind"].as_str().unwrap_or_default();
    if (!av.is_empty() && !r.versions().any(|v| r.api_version_of(v) == av)) || (!k.is_empty() && k != r.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) and kind ({k}) do not match the expected {}/{}",
            r.api_version(),
            r.kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::resources::find;
    use super::*;

    fn svc() -> usize {
        find("", "v1", "services").unwrap()
    }

    #[test]
    fn custom_resources_served_while_their_crd_is_stored() {
        let gw = find("gateway.networking.k8s.io", "v1", "gateways").unwrap();
        let rg = find("gateway.networking.k8s.io", "v1beta1", "referencegrants").unwrap();
        let crd = crd_resource();
        let mut s = Store::new(1, 100);
        assert!(!s.served(gw, "v1") && !s.served(rg, "v1") && !s.served(rg, "v1beta1"));
        assert!(s.served(svc(), "v1") && !s.served(svc(), "v1beta1"), "built-ins always, in their versions");
        let def = |plural: &str, versions: Value| json!({"metadata": {"name": format!("{plural}.gateway.networking.k8s.io")}, "spec": {"versions": versions}});
        s.create(crd, "", def("gateways", json!([{"name": "v1", "served": true}]))).unwrap();
        s.create(
            crd,
            "",
            def("referencegrants", json!([{"name": "v1", "served": true}, {"name": "v1beta1", "served": false}])),
        )
        .unwrap();
        assert!(s.served(gw, "v1"));
        assert!(s.served(rg, "v1") && !s.served(rg, "v1beta1"), "only the versions the CRD serves");
        // Stored as v1 whatever version it came as; status and generation
        // as for any resource with a status subresource.
        let g = s
            .create(
                gw,
                "d",
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "a"}, "spec": {"gatewayClassName": "xlb"}, "status": {"x": 1}}),
            )
            .unwrap();
        assert_eq!((g["metadata"]["generation"].as_i64(), g.get("status")), (Some(1), None), "create ignores status");
        let st = s.patch(gw, "d", "a", PatchKind::Merge, &json!({"status": {"y": 2}, "spec": {"z": 1}}), true).unwrap();
        assert_eq!((st["metadata"]["generation"].as_i64(), st["spec"].get("z")), (Some(1), None));
        let r = s
            .create(
                rg,
                "d",
                json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "r"}}),
            )
            .unwrap();
        assert_eq!(r["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(s.create(gw, "d", json!({"apiVersion": "v1", "metadata": {"name": "b"}})).unwrap_err().code, 400);
        // Deleting the CRD deletes its objects (DELETED events), not others'.
        let before = s.rv;
        s.delete(crd, "", "gateways.gateway.networking.k8s.io").unwrap();
        assert!(!s.served(gw, "v1"));
        assert!(s.get(gw, "d", "a").is_err());
        assert!(s.get(rg, "d", "r").is_ok());
        let (evs, _) = s.changes_after(before).unwrap();
        let gone: Vec<(usize, Change)> = evs.iter().map(|e| (e.res, e.change)).collect();
        assert_eq!(gone, [(crd, Change::Deleted), (gw, Change::Deleted)]);
    }

    #[test]
    fn create_update_status_conflict_delete() {
        let mut s = Store::new(100, 10);
        let o = s.create(svc(), "d", json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"y": 1}})).unwrap();
        assert_eq!(o["metadata"]["resourceVersion"], "100");
        assert_eq!(o["status"], json!({"loadBalancer": {}}));
        assert_eq!(s.create(svc(), "d", json!({"metadata": {"name": "a"}})).unwrap_err().code, 409);
        // Main-resource PUT keeps the status; status PUT keeps the spec.
        let mut put = o.clone();
        put["spec"]["x"] = json!(2);
        put["status"] = json!({"z": 1});
        let o2 = s.replace(svc(), "d", "a", put.clone(), false).unwrap();
        assert_eq!(o2["spec"]["x"], 2);
        assert_eq!(o2["status"], json!({"loadBalancer": {}}));
        assert_eq!(o2["metadata"]["generation"], 2);
        assert_eq!(s.replace(svc(), "d", "a", put, false).unwrap_err().code, 409);
        let o3 =
            s.patch(svc(), "d", "a", PatchKind::Merge, &json!({"spec": {"x": 9}, "status": {"q": 1}}), true).unwrap();
        assert_eq!(o3["spec"]["x"], 2);
        assert_eq!(o3["status"]["q"], 1);
        // A no-op patch makes no new version.
        let same = s.patch(svc(), "d", "a", PatchKind::Merge, &json!({"status": {"q": 1}}), true).unwrap();
        assert_eq!(same["metadata"]["resourceVersion"], o3["metadata"]["resourceVersion"]);
        let (evs, rv) = s.changes_after(100).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(rv, 102);
        let d = s.delete(svc(), "d", "a").unwrap();
        assert_eq!(d["metadata"]["resourceVersion"], "103");
        assert!(s.changes_after(98).is_err());
        s.compact();
        assert_eq!(s.changes_after(102).unwrap_err().code, 410);
        assert!(s.changes_after(103).unwrap().0.is_empty());
    }
}
