//! Events on Services: what xlb programmed, or why it did not (port claim
//! conflicts, invalid fields, no address). Every agent logs what there is
//! to say about a Service when it changes; only the agent holding the
//! allocator Lease publishes it as an Event, so a cluster of N nodes gets
//! one Event per change, not N.
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client, Resource as _,
};
use tracing::{debug, info, warn};

use super::translate::Note;

/// Logs and publishes the notes of each Service when they change.
pub struct Notifier {
    recorder: Recorder,
    /// What was last logged, per Service.
    logged: HashMap<(String, String), Vec<Note>>,
    /// What was last published, per Service (while holding the Lease).
    published: HashMap<(String, String), Vec<Note>>,
}

/// The notes in `now` that are not in `before`.
fn fresh(before: Option<&Vec<Note>>, now: &[Note]) -> Vec<Note> {
    now.iter().filter(|n| !before.is_some_and(|b| b.contains(n))).cloned().collect()
}

impl Notifier {
    /// A notifier reporting as `xlb` on node `node_name`.
    pub fn new(client: Client, node_name: &str) -> Self {
        let reporter = Reporter { controller: "xlb.io/agent".into(), instance: Some(node_name.into()) };
        Notifier { recorder: Recorder::new(client, reporter), logged: HashMap::new(), published: HashMap::new() }
    }

    /// Logs the notes that are new for each Service and, when `publish`
    /// (this agent holds the Lease), publishes the ones not published yet
    /// as Events in the background. Forgets Services that are gone; losing
    /// the Lease forgets what was published (a later holder publishes the
    /// current notes once).
    pub fn notify(
        &mut self,
        services: &[std::sync::Arc<Service>],
        notes: &BTreeMap<(String, String), Vec<Note>>,
        publish: bool,
    ) {
        let refs = services.iter().map(|svc| {
            let key =
                (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
            (key, svc.object_ref(&()))
        });
        self.notify_refs(refs, notes, publish);
    }

    /// [`Notifier::notify`] for any kind of object: `objects` are the
    /// objects' (`namespace`, `name`) with their references.
    pub fn notify_refs(
        &mut self,
        objects: impl IntoIterator<Item = ((String, String), ObjectReference)>,
        notes: &BTreeMap<(String, String), Vec<Note>>,
        publish: bool,
    ) {
        self.logged.retain(|k, _| notes.contains_key(k));
        self.published.retain(|k, _| publish && notes.contains_key(k));
        for (key, reference) in objects {
            let Some(now) = notes.get(&key) else { continue };
            let service = format!("{}/{}", key.0, key.1);
            for n in fresh(self.logged.get(&key), now) {
                if n.warning {
                    warn!(%service, reason = n.reason, "{}", n.message);
                } else {
                    info!(%service, reason = n.reason, "{}", n.message);
                }
            }
            self.logged.insert(key.clone(), now.clone());
            if !publish {
                continue;
            }
            let fresh = fresh(self.published.get(&key), now);
            self.published.insert(key.clone(), now.clone());
            if fresh.is_empty() {
                continue;
            }
            let recorder = self.recorder.clone();
            tokio::spawn(async move {
                for n in fresh {
                    let ev = Event {
                        type_: if n.warning { EventType::Warning } else { EventType::Normal },
                        reason: n.reason.into(),
                        note: Some(n.message.chars().take(1000).collect()),
                        action: "Reconcile".into(),
                        secondary: None,
                    };
                    match recorder.publish(&ev, &reference).await {
                        Ok(()) => {
                            debug!(service = %format!("{}/{}", key.0, key.1), reason = n.reason, "event published");
                        }
                        Err(e) => {
                            warn!(service = %format!("{}/{}", key.0, key.1), reason = n.reason, error = %e, "could not publish an event");
                        }
                    }
                }
            });
        }
    }
}
