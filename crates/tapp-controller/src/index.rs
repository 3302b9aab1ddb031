//! A watch cache of pods indexed by their controller owner's UID.
//!
//! `kube::runtime::reflector::Store` has no indexes: finding one TApp's pods means cloning and
//! filtering every pod of the cluster, O(all pods) per reconcile. [`OwnerIndex`] is fed the
//! same watcher events and answers "the pods controlled by UID u" in O(pods of u). It replaces
//! the reflector store for pods (holding the objects twice would double the controller's
//! memory). It holds [`SlimPod`]s, the part of each pod the controller reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::slim::SlimPod;
use addon_common::api::tapp::{API_VERSION, KIND as TAPP_KIND, TApp};
use addon_common::guard::DeserializeGuard;
use addon_common::kube::runtime::reflector::ObjectRef;
use addon_common::kube::runtime::watcher::Event;
use tokio::sync::watch;

/// (namespace, name).
type Key = (String, String);

/// The TApp a pod event triggers (the controller watches TApps through a guard: see
/// `controller::GuardedTApp`).
pub type TAppRef = ObjectRef<DeserializeGuard<TApp>>;

#[derive(Default)]
struct State {
    /// Controller owner UID -> (namespace, name) -> pod.
    by_owner: HashMap<String, BTreeMap<Key, Arc<SlimPod>>>,
    /// (namespace, name) -> controller owner UID, for pods that have one.
    owner_of: HashMap<Key, String>,
    /// Objects of a relist in progress (`Init` .. `InitDone`).
    relist: Option<Vec<SlimPod>>,
    /// Number of pods held.
    len: usize,
}

/// Pods by controller owner UID; cheap to clone (a shared handle).
#[derive(Clone)]
pub struct OwnerIndex {
    state: Arc<RwLock<State>>,
    ready: watch::Sender<bool>,
}

impl Default for OwnerIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(pod: &SlimPod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// The TApp controlling `pod`: the one reconcile a change of the pod triggers. (Built here from
/// the controller reference with two small copies; kube-runtime's `owns` mapping would also
/// copy the pod's metadata, describe the pod as the trigger's cause and format the owner's
/// apiVersion, for every pod watch event.)
fn owning_tapp(pod: &SlimPod) -> Option<TAppRef> {
    let owner = controller_ref(pod)?;
    (owner.kind == TAPP_KIND && owner.api_version == API_VERSION).then(|| {
        let tapp = ObjectRef::new(&owner.name);
        match &pod.metadata.namespace {
            Some(ns) => tapp.within(ns),
            None => tapp,
        }
    })
}

fn controller_ref(pod: &SlimPod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

fn controller_uid(pod: &SlimPod) -> Option<String> {
    controller_ref(pod).map(|r| r.uid.clone())
}

impl State {
    fn remove(&mut self, key: &Key) {
        if let Some(owner) = self.owner_of.remove(key)
            && let Some(set) = self.by_owner.get_mut(&owner)
        {
            if set.remove(key).is_some() {
                self.len -= 1;
            }
            if set.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    fn insert(&mut self, pod: SlimPod) {
        let key = key_of(&pod);
        // Most events change a pod the index holds under the same owner: replace it in place.
        if let Some(owner) = controller_ref(&pod).map(|r| r.uid.as_str())
            && self.owner_of.get(&key).is_some_and(|o| o == owner)
            && let Some(slot) = self
                .by_owner
                .get_mut(owner)
                .and_then(|set| set.get_mut(&key))
        {
            *slot = Arc::new(pod);
            return;
        }
        self.remove(&key);
        if let Some(owner) = controller_uid(&pod) {
            self.owner_of.insert(key.clone(), owner.clone());
            self.by_owner
                .entry(owner)
                .or_default()
                .insert(key, Arc::new(pod));
            self.len += 1;
        }
    }
}

impl OwnerIndex {
    /// An empty index, not ready until its first `InitDone`.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            ready: watch::Sender::new(false),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watcher event (a relist replaces the whole content at its `InitDone`) and
    /// returns it with each pod replaced by the TApp its change triggers (none for a pod no
    /// TApp controls, nor for the pods of a relist, which trigger every TApp once done): the
    /// pod itself moves into the index, nothing is cloned.
    pub fn apply_watcher_event(&self, event: Event<SlimPod>) -> Event<Option<TAppRef>> {
        let mut s = self.write();
        match event {
            Event::Apply(pod) => {
                let tapp = owning_tapp(&pod);
                s.insert(pod);
                Event::Apply(tapp)
            }
            Event::Delete(pod) => {
                s.remove(&key_of(&pod));
                Event::Delete(owning_tapp(&pod))
            }
            Event::Init => {
                s.relist = Some(Vec::new());
                Event::Init
            }
            Event::InitApply(pod) => {
                if let Some(list) = s.relist.as_mut() {
                    list.push(pod);
                }
                Event::InitApply(None)
            }
            Event::InitDone => {
                let list = s.relist.take().unwrap_or_default();
                let mut fresh = State::default();
                for pod in list {
                    fresh.insert(pod);
                }
                *s = fresh;
                drop(s);
                self.ready.send_replace(true);
                Event::InitDone
            }
        }
    }

    /// The pods whose controller owner has `uid`, in (namespace, name) order (shared, not
    /// copied).
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<SlimPod>> {
        self.read()
            .by_owner
            .get(uid)
            .map(|set| set.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of pods held (only pods with a controller owner are kept).
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits for the first list to complete.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner: Option<&str>) -> SlimPod {
        let refs = owner.map(|uid| {
            json!([{"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "name": "t",
                    "uid": uid, "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}
        }))
        .expect("pod")
    }

    fn names(index: &OwnerIndex, uid: &str) -> Vec<String> {
        index
            .controlled_by(uid)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn indexes_by_controller_owner_and_follows_changes() {
        let index = OwnerIndex::new();
        assert!(!index.is_ready());
        index.apply_watcher_event(Event::Init);
        index.apply_watcher_event(Event::InitApply(pod("a-0", Some("a"))));
        index.apply_watcher_event(Event::InitApply(pod("b-0", Some("b"))));
        index.apply_watcher_event(Event::InitApply(pod("orphan", None)));
        assert!(
            names(&index, "a").is_empty(),
            "nothing visible before InitDone"
        );
        index.apply_watcher_event(Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(names(&index, "a"), ["a-0"]);
        assert_eq!(
            index.len(),
            2,
            "pods without a controller owner are not kept"
        );

        index.apply_watcher_event(Event::Apply(pod("a-1", Some("a"))));
        assert_eq!(names(&index, "a"), ["a-0", "a-1"]);
        // A change under the same owner replaces the held pod.
        let mut changed = pod("a-1", Some("a"));
        changed.metadata.resource_version = Some("7".into());
        index.apply_watcher_event(Event::Apply(changed));
        let held = index.controlled_by("a");
        assert_eq!(held.len(), 2);
        assert_eq!(held[1].metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(index.len(), 3);
        // Ownership moves (released and adopted by another controller).
        index.apply_watcher_event(Event::Apply(pod("a-1", Some("b"))));
        assert_eq!(names(&index, "a"), ["a-0"]);
        assert_eq!(names(&index, "b"), ["a-1", "b-0"]);
        index.apply_watcher_event(Event::Apply(pod("a-1", None)));
        assert_eq!(names(&index, "b"), ["b-0"]);
        index.apply_watcher_event(Event::Delete(pod("b-0", Some("b"))));
        assert!(names(&index, "b").is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_pod_event_triggers_the_tapp_controlling_the_pod() {
        let index = OwnerIndex::new();
        let tapp = |event: Event<Option<TAppRef>>| match event {
            Event::Apply(t) | Event::Delete(t) | Event::InitApply(t) => t,
            Event::Init | Event::InitDone => None,
        };
        let t = Some(TAppRef::new("t").within("ns"));
        assert_eq!(
            tapp(index.apply_watcher_event(Event::Apply(pod("a-0", Some("a"))))),
            t
        );
        assert_eq!(
            tapp(index.apply_watcher_event(Event::Delete(pod("a-0", Some("a"))))),
            t
        );
        assert_eq!(
            tapp(index.apply_watcher_event(Event::Apply(pod("orphan", None)))),
            None
        );
        // Controlled by another kind (a ReplicaSet), or owned by a TApp that is not its
        // controller: indexed by its controller, no TApp triggered.
        let mut foreign = pod("rs-0", Some("a"));
        for r in foreign.metadata.owner_references.iter_mut().flatten() {
            r.api_version = "apps/v1".into();
            r.kind = "ReplicaSet".into();
        }
        assert_eq!(tapp(index.apply_watcher_event(Event::Apply(foreign))), None);
        assert_eq!(names(&index, "a"), ["rs-0"]);
        let mut not_controller = pod("a-1", Some("a"));
        for r in not_controller
            .metadata
            .owner_references
            .iter_mut()
            .flatten()
        {
            r.controller = Some(false);
        }
        assert_eq!(
            tapp(index.apply_watcher_event(Event::Apply(not_controller))),
            None
        );
        // The pods of a relist trigger nothing one by one (every TApp is triggered once the
        // relist is done).
        index.apply_watcher_event(Event::Init);
        assert_eq!(
            tapp(index.apply_watcher_event(Event::InitApply(pod("a-2", Some("a"))))),
            None
        );
        index.apply_watcher_event(Event::InitDone);
        assert_eq!(names(&index, "a"), ["a-2"]);
    }

    #[test]
    fn a_relist_replaces_everything_at_init_done() {
        let index = OwnerIndex::new();
        index.apply_watcher_event(Event::Init);
        index.apply_watcher_event(Event::InitApply(pod("a-0", Some("a"))));
        index.apply_watcher_event(Event::InitApply(pod("a-1", Some("a"))));
        index.apply_watcher_event(Event::InitDone);
        // A 410 and a relist: a-1 was deleted meanwhile, a-2 created.
        index.apply_watcher_event(Event::Init);
        index.apply_watcher_event(Event::InitApply(pod("a-0", Some("a"))));
        assert_eq!(names(&index, "a"), ["a-0", "a-1"], "old content until done");
        index.apply_watcher_event(Event::InitApply(pod("a-2", Some("a"))));
        index.apply_watcher_event(Event::InitDone);
        assert_eq!(names(&index, "a"), ["a-0", "a-2"]);
        assert_eq!(index.len(), 2);
    }

    #[tokio::test]
    async fn waiting_for_readiness_ends_at_the_first_init_done() {
        let index = OwnerIndex::new();
        let waiter = {
            let index = index.clone();
            tokio::spawn(async move { index.wait_until_ready().await })
        };
        index.apply_watcher_event(Event::Init);
        index.apply_watcher_event(Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("ready seen")
            .expect("task");
    }
}
