//! Events on Services: what xlb programmed, or why it did not (port claim
//! conflicts, invalid fields, no address). An Event is published when what
//! there is to say about a Service changes, not on every reconcile.
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Service;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client, Resource as _,
};
use tracing::{debug, info, warn};

use super::translate::Note;

/// Publishes the notes of each Service when they change.
pub struct Notifier {
    recorder: Recorder,
    last: HashMap<(String, String), Vec<Note>>,
}

impl Notifier {
    /// A notifier reporting as `xlb` on node `node_name`.
    pub fn new(client: Client, node_name: &str) -> Self {
        let reporter = Reporter { controller: "xlb.io/agent".into(), instance: Some(node_name.into()) };
        Notifier { recorder: Recorder::new(client, reporter), last: HashMap::new() }
    }

    /// Publishes, in the background, the notes that are new for each
    /// Service; forgets Services that are gone.
    pub fn publish(&mut self, services: &[std::sync::Arc<Service>], notes: &BTreeMap<(String, String), Vec<Note>>) {
        self.last.retain(|k, _| notes.contains_key(k));
        for svc in services {
            let key = (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
            let Some(now) = notes.get(&key) else { continue };
            let before = self.last.get(&key);
            let fresh: Vec<Note> = now.iter().filter(|n| !before.is_some_and(|b| b.contains(n))).cloned().collect();
            self.last.insert(key.clone(), now.clone());
            if fresh.is_empty() {
                continue;
            }
            for n in &fresh {
                let service = format!("{}/{}", key.0, key.1);
                if n.warning {
                    warn!(%service, reason = n.reason, "{}", n.message);
                } else {
                    info!(%service, reason = n.reason, "{}", n.message);
                }
            }
            let reference = svc.object_ref(&());
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
                        Ok(()) => debug!(service = %format!("{}/{}", key.0, key.1), reason = n.reason, "event published"),
                        Err(e) => warn!(service = %format!("{}/{}", key.0, key.1), reason = n.reason, error = %e, "could not publish an event"),
                    }
                }
            });
        }
    }
}
