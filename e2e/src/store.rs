//! In-memory storage: objects, a global monotonic resourceVersion, per-resource event history
//! with compaction, watch fan-out, finalizers, ownerReference garbage collection and namespace
//! cascading deletion.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::errors::{ApiError, ApiResult};
use crate::registry::GroupResource;
use crate::strategy::{ByResource, Cleanup, DeleteStep};

/// (namespace or "", name)
pub type ObjKey = (String, String);

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// ADDED
    Added,
    /// MODIFIED
    Modified,
    /// DELETED
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A stored change.
#[derive(Debug)]
pub struct StoredEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Type.
    pub kind: EventType,
    /// Object after the change (the last state for DELETED).
    pub obj: Arc<Value>,
    /// Object before the change (for selector transitions).
    pub prev: Option<Arc<Value>>,
    json: OnceLock<Bytes>,
    line: OnceLock<Bytes>,
    line_proto: OnceLock<Result<Bytes, String>>,
}

impl StoredEvent {
    /// The whole watch line `{"type":…,"object":…}\n` with this event's own type (cached:
    /// watchers that see the event unchanged share one buffer).
    pub fn line_json(&self) -> Bytes {
        self.line
            .get_or_init(|| {
                let obj = self.obj_json();
                let mut v = Vec::with_capacity(obj.len() + 32);
                v.extend_from_slice(b"{\"type\":\"");
                v.extend_from_slice(self.kind.as_str().as_bytes());
                v.extend_from_slice(b"\",\"object\":");
                v.extend_from_slice(&obj);
                v.extend_from_slice(b"}\n");
                Bytes::from(v)
            })
            .clone()
    }

    /// The whole protobuf watch frame (length + WatchEvent, see [`crate::proto::watch_frame`])
    /// with this event's own type, cached like [`Self::line_json`] for all protobuf watchers.
    pub fn line_proto(&self) -> Result<Bytes, String> {
        self.line_proto
            .get_or_init(|| {
                crate::proto::watch_frame(self.kind.as_str(), &self.obj).map(Bytes::from)
            })
            .clone()
    }

    /// Serialized object (cached: shared by all watchers).
    pub fn obj_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.obj).unwrap_or_default()))
            .clone()
    }
}

/// How dependents are handled on delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents in the background.
    Background,
    /// Delete dependents first (`foregroundDeletion` finalizer).
    Foreground,
    /// Keep dependents, removing their ownerReferences (`orphan` finalizer).
    Orphan,
}

/// Outcome of a delete.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Gone from storage.
    Deleted(Arc<Value>),
    /// Still present (finalizers, graceful deletion).
    Pending(Arc<Value>),
}

struct Table {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Watches from a resourceVersion lower than this get 410 Gone.
    compacted: u64,
    tx: broadcast::Sender<Arc<StoredEvent>>,
}

impl Table {
    fn new(compacted: u64) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Table {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted,
            tx,
        }
    }
}

enum Work {
    OwnerGone(String),
    Foreground(String),
    Orphan(String),
    Namespace(String),
}

struct Inner {
    rv: u64,
    tables: HashMap<GroupResource, Table>,
    uid_index: HashMap<String, (GroupResource, ObjKey)>,
    dependents: HashMap<String, BTreeSet<(GroupResource, ObjKey)>>,
    work: VecDeque<Work>,
    history_limit: usize,
    /// What is special about deleting an object, by resource (pods, namespaces).
    strategies: ByResource,
}

/// The storage.
pub struct Store {
    inner: Mutex<Inner>,
}

/// `metadata.<field>` as str.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// Object key from metadata.
pub fn key_of(obj: &Value) -> ObjKey {
    (
        meta_str(obj, "namespace").unwrap_or_default().to_string(),
        meta_str(obj, "name").unwrap_or_default().to_string(),
    )
}

/// resourceVersion as number (0 if absent/invalid).
pub fn rv_of(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Mutable metadata map (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let o = obj.as_object_mut().expect("object");
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("object")
}

/// metadata.finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, f: &[String]) {
    let m = meta_mut(obj);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

/// Is metadata.deletionTimestamp set?
pub fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3339 timestamp with second precision, as Kubernetes writes it.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ns_gr() -> GroupResource {
    GroupResource::new("", "namespaces")
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Result of starting a watch.
pub struct WatchStart {
    /// Synthetic ADDED events for the current state (when requested) or the replayed history.
    pub backlog: Vec<Arc<StoredEvent>>,
    /// Live events after `rv`.
    pub rx: broadcast::Receiver<Arc<StoredEvent>>,
    /// resourceVersion the backlog brings the watcher to.
    pub rv: u64,
}

impl Store {
    /// A new store with the given per-resource history limit; `strategies` say what is special
    /// about deleting an object of a resource (one not listed has no special rules).
    pub fn new(history_limit: usize, strategies: ByResource) -> Self {
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: HashMap::new(),
                uid_index: HashMap::new(),
                dependents: HashMap::new(),
                work: VecDeque::new(),
                history_limit: history_limit.max(16),
                strategies,
            }),
        }
    }

    /// Current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        lock(&self.inner).rv
    }

    /// Get one object.
    pub fn get(&self, gr: &GroupResource, key: &ObjKey) -> Option<Arc<Value>> {
        lock(&self.inner)
            .tables
            .get(gr)
            .and_then(|t| t.objects.get(key))
            .cloned()
    }

    /// Find an object by uid.
    pub fn get_by_uid(&self, uid: &str) -> Option<(GroupResource, Arc<Value>)> {
        let g = lock(&self.inner);
        let (gr, key) = g.uid_index.get(uid)?;
        g.tables
            .get(gr)
            .and_then(|t| t.objects.get(key))
            .map(|o| (gr.clone(), o.clone()))
    }

    /// All objects (optionally of one namespace) and the resourceVersion of the snapshot.
    pub fn list(&self, gr: &GroupResource, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let g = lock(&self.inner);
        let items = match g.tables.get(gr) {
            None => vec![],
            Some(t) => match ns {
                None => t.objects.values().cloned().collect(),
                Some(ns) => t
                    .objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, g.rv)
    }

    /// Namespace state: None if missing, Some(true) if terminating.
    pub fn namespace_state(&self, ns: &str) -> Option<bool> {
        self.get(&ns_gr(), &(String::new(), ns.to_string()))
            .map(|o| is_deleting(&o))
    }

    /// Insert a new object (metadata already defaulted). Sets resourceVersion.
    pub fn create(&self, gr: &GroupResource, obj: Value) -> ApiResult<Arc<Value>> {
        self.insert(gr, obj, true)
    }

    /// Create an object loaded from a saved state: owners may be restored after their
    /// dependents, so dangling owner references are not collected here.
    pub fn restore(&self, gr: &GroupResource, obj: Value) -> ApiResult<Arc<Value>> {
        self.insert(gr, obj, false)
    }

    fn insert(&self, gr: &GroupResource, obj: Value, collect: bool) -> ApiResult<Arc<Value>> {
        let key = key_of(&obj);
        let mut g = lock(&self.inner);
        if g.tables
            .get(gr)
            .is_some_and(|t| t.objects.contains_key(&key))
        {
            return Err(ApiError::already_exists(&gr.group, &gr.resource, &key.1));
        }
        let out = g.put(gr, key, obj, None);
        // An object created with owners that no longer exist (a controller acting on a stale
        // cache of its deleted owner) is garbage: the real garbage collector deletes it once it
        // sees the dangling references, and so do we.
        for uid in owner_uids(&out) {
            if collect && !g.uid_index.contains_key(&uid) {
                g.work.push_back(Work::OwnerGone(uid));
            }
        }
        g.process();
        Ok(out)
    }

    /// Replace an object. `expected_rv`: optimistic concurrency precondition.
    /// An object that is being deleted and has no finalizers left is removed.
    pub fn update(
        &self,
        gr: &GroupResource,
        obj: Value,
        expected_rv: Option<u64>,
    ) -> ApiResult<Arc<Value>> {
        let key = key_of(&obj);
        let mut g = lock(&self.inner);
        let Some(cur) = g.tables.get(gr).and_then(|t| t.objects.get(&key)).cloned() else {
            return Err(ApiError::not_found(&gr.group, &gr.resource, &key.1));
        };
        if let Some(rv) = expected_rv
            && rv_of(&cur) != rv
        {
            return Err(ApiError::stale(&gr.group, &gr.resource, &key.1));
        }
        let out =
            if is_deleting(&obj) && finalizers(&obj).is_empty() && !g.removal_blocked(gr, &obj) {
                g.put(gr, key.clone(), obj, Some(cur));
                g.remove(gr, &key).unwrap_or_default()
            } else {
                let out = g.put(gr, key, obj, Some(cur));
                if is_deleting(&out) {
                    let uid = meta_str(&out, "uid").unwrap_or_default().to_string();
                    let f = finalizers(&out);
                    if f.iter().any(|x| x == "foregroundDeletion") {
                        g.work.push_back(Work::Foreground(uid.clone()));
                    }
                    if f.iter().any(|x| x == "orphan") {
                        g.work.push_back(Work::Orphan(uid));
                    }
                }
                out
            };
        g.process();
        Ok(out)
    }

    /// Delete with finalizers / propagation semantics.
    pub fn delete(
        &self,
        gr: &GroupResource,
        key: &ObjKey,
        policy: Propagation,
        grace: Option<i64>,
        precondition: (Option<String>, Option<String>),
    ) -> ApiResult<DeleteOutcome> {
        let mut g = lock(&self.inner);
        let Some(cur) = g.tables.get(gr).and_then(|t| t.objects.get(key)).cloned() else {
            return Err(ApiError::not_found(&gr.group, &gr.resource, &key.1));
        };
        if let Some(uid) = precondition.0
            && meta_str(&cur, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &gr.group,
                &gr.resource,
                &key.1,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    uid,
                    meta_str(&cur, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = precondition.1
            && meta_str(&cur, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(
                &gr.group,
                &gr.resource,
                &key.1,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    rv,
                    meta_str(&cur, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let out = g.delete_inner(gr, key, policy, grace);
        g.process();
        out
    }

    /// Remove every object of a resource (CRD deletion).
    pub fn drop_all(&self, gr: &GroupResource) {
        let mut g = lock(&self.inner);
        let keys: Vec<ObjKey> = g
            .tables
            .get(gr)
            .map(|t| t.objects.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            g.remove(gr, &k);
        }
        g.process();
    }

    /// Start a watch. `from = None` sends the current state as ADDED events first.
    pub fn watch(
        &self,
        gr: &GroupResource,
        from: Option<u64>,
        initial: bool,
    ) -> ApiResult<WatchStart> {
        let mut g = lock(&self.inner);
        let cur_rv = g.rv;
        let t = g.table(gr);
        let rx = t.tx.subscribe();
        if initial || from.is_none() {
            let backlog = t
                .objects
                .values()
                .map(|o| {
                    Arc::new(StoredEvent {
                        rv: rv_of(o),
                        kind: EventType::Added,
                        obj: o.clone(),
                        prev: None,
                        json: OnceLock::new(),
                        line: OnceLock::new(),
                        line_proto: OnceLock::new(),
                    })
                })
                .collect();
            return Ok(WatchStart {
                backlog,
                rx,
                rv: cur_rv,
            });
        }
        let from = from.unwrap_or(0);
        if from < t.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {} ({})",
                from, t.compacted
            )));
        }
        let backlog: Vec<_> = t.history.iter().filter(|e| e.rv > from).cloned().collect();
        Ok(WatchStart {
            backlog,
            rx,
            rv: cur_rv.max(from),
        })
    }

    /// Is `rv` still within the retained history of `gr`?
    pub fn check_not_compacted(&self, gr: &GroupResource, rv: u64) -> bool {
        lock(&self.inner)
            .tables
            .get(gr)
            .is_none_or(|t| rv >= t.compacted)
    }

    /// Drop all history so that every watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut g = lock(&self.inner);
        g.rv += 1;
        let rv = g.rv;
        for t in g.tables.values_mut() {
            t.history.clear();
            t.compacted = rv;
        }
    }

    /// Number of stored objects (all resources).
    pub fn len(&self) -> usize {
        lock(&self.inner)
            .tables
            .values()
            .map(|t| t.objects.len())
            .sum()
    }

    /// Empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn table(&mut self, gr: &GroupResource) -> &mut Table {
        // a new table has lost no history: any resourceVersion may watch it
        self.tables
            .entry(gr.clone())
            .or_insert_with(|| Table::new(0))
    }

    fn removal_blocked(&self, gr: &GroupResource, obj: &Value) -> bool {
        self.strategies
            .get(gr)
            .is_some_and(|st| st.removal_blocked(obj))
    }

    fn emit(&mut self, gr: &GroupResource, ev: StoredEvent) {
        let limit = self.history_limit;
        let t = self.table(gr);
        let ev = Arc::new(ev);
        t.history.push_back(ev.clone());
        while t.history.len() > limit {
            if let Some(old) = t.history.pop_front() {
                t.compacted = old.rv;
            }
        }
        let _ = t.tx.send(ev);
    }

    fn put(
        &mut self,
        gr: &GroupResource,
        key: ObjKey,
        mut obj: Value,
        prev: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        if let Some(p) = &prev {
            for o in owner_uids(p) {
                if let Some(set) = self.dependents.get_mut(&o) {
                    set.remove(&(gr.clone(), key.clone()));
                    if set.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
        }
        for o in owner_uids(&obj) {
            self.dependents
                .entry(o)
                .or_default()
                .insert((gr.clone(), key.clone()));
        }
        if !uid.is_empty() {
            self.uid_index.insert(uid, (gr.clone(), key.clone()));
        }
        let obj = Arc::new(obj);
        self.table(gr).objects.insert(key, obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(
            gr,
            StoredEvent {
                rv,
                kind,
                obj: obj.clone(),
                prev,
                json: OnceLock::new(),
                line: OnceLock::new(),
                line_proto: OnceLock::new(),
            },
        );
        obj
    }

    fn remove(&mut self, gr: &GroupResource, key: &ObjKey) -> Option<Arc<Value>> {
        let cur = self.table(gr).objects.remove(key)?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*cur).clone();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = Arc::new(last);
        let uid = meta_str(&cur, "uid").unwrap_or_default().to_string();
        self.uid_index.remove(&uid);
        for o in owner_uids(&cur) {
            if let Some(set) = self.dependents.get_mut(&o) {
                set.remove(&(gr.clone(), key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&o);
                }
            }
            // an owner waiting for its dependents may now be able to go
            if let Some((ogr, okey)) = self.uid_index.get(&o).cloned()
                && let Some(owner) = self.tables.get(&ogr).and_then(|t| t.objects.get(&okey))
                && finalizers(owner).iter().any(|f| f == "foregroundDeletion")
            {
                self.work.push_back(Work::Foreground(o.clone()));
            }
        }
        if self.dependents.contains_key(&uid) {
            self.work.push_back(Work::OwnerGone(uid));
        }
        if !key.0.is_empty() && *gr != ns_gr() {
            let terminating = self
                .tables
                .get(&ns_gr())
                .and_then(|t| t.objects.get(&(String::new(), key.0.clone())))
                .is_some_and(|n| is_deleting(n));
            if terminating {
                self.work.push_back(Work::Namespace(key.0.clone()));
            }
        }
        self.emit(
            gr,
            StoredEvent {
                rv,
                kind: EventType::Deleted,
                obj: last.clone(),
                prev: Some(cur),
                json: OnceLock::new(),
                line: OnceLock::new(),
                line_proto: OnceLock::new(),
            },
        );
        Some(last)
    }

    fn delete_inner(
        &mut self,
        gr: &GroupResource,
        key: &ObjKey,
        policy: Propagation,
        grace: Option<i64>,
    ) -> ApiResult<DeleteOutcome> {
        let Some(cur) = self
            .tables
            .get(gr)
            .and_then(|t| t.objects.get(key))
            .cloned()
        else {
            return Err(ApiError::not_found(&gr.group, &gr.resource, &key.1));
        };
        let mut obj = (*cur).clone();
        let deleting = is_deleting(&obj);
        let mut fins = finalizers(&obj);
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        let now = now_ts();
        let step = match self.strategies.get(gr) {
            Some(st) => st.delete(&obj, deleting, grace),
            None => DeleteStep::Standard,
        };
        match step {
            DeleteStep::Standard => {}
            DeleteStep::Keep => return Ok(DeleteOutcome::Pending(cur)),
            DeleteStep::Mark { obj, cleanup } => {
                let out = self.put(gr, key.clone(), obj, Some(cur));
                if cleanup == Cleanup::NamespaceContents {
                    self.work.push_back(Work::Namespace(key.1.clone()));
                }
                return Ok(DeleteOutcome::Pending(out));
            }
        }
        if !deleting {
            match policy {
                Propagation::Orphan => {
                    if self.dependents.contains_key(&uid) && !fins.iter().any(|f| f == "orphan") {
                        fins.push("orphan".into());
                    }
                }
                Propagation::Foreground => {
                    if !fins.iter().any(|f| f == "foregroundDeletion") {
                        fins.push("foregroundDeletion".into());
                    }
                }
                Propagation::Background => {}
            }
        }
        if fins.is_empty() {
            let out = self.remove(gr, key).unwrap_or(cur);
            return Ok(DeleteOutcome::Deleted(out));
        }
        if deleting {
            return Ok(DeleteOutcome::Pending(cur));
        }
        set_finalizers(&mut obj, &fins);
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(now));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        let out = self.put(gr, key.clone(), obj, Some(cur));
        if fins.iter().any(|f| f == "foregroundDeletion") {
            self.work.push_back(Work::Foreground(uid.clone()));
        }
        if fins.iter().any(|f| f == "orphan") {
            self.work.push_back(Work::Orphan(uid));
        }
        Ok(DeleteOutcome::Pending(out))
    }

    fn lookup_uid(&self, uid: &str) -> Option<(GroupResource, ObjKey, Arc<Value>)> {
        let (gr, key) = self.uid_index.get(uid)?;
        let o = self.tables.get(gr)?.objects.get(key)?;
        Some((gr.clone(), key.clone(), o.clone()))
    }

    fn drop_finalizer(&mut self, gr: &GroupResource, key: &ObjKey, obj: &Arc<Value>, fin: &str) {
        let mut o = (**obj).clone();
        let f: Vec<String> = finalizers(&o).into_iter().filter(|x| x != fin).collect();
        set_finalizers(&mut o, &f);
        if f.is_empty() && is_deleting(&o) {
            self.put(gr, key.clone(), o, Some(obj.clone()));
            self.remove(gr, key);
        } else {
            self.put(gr, key.clone(), o, Some(obj.clone()));
        }
    }

    fn process(&mut self) {
        let mut guard = 0;
        while let Some(w) = self.work.pop_front() {
            guard += 1;
            if guard > 1_000_000 {
                break;
            }
            match w {
                Work::OwnerGone(uid) => self.owner_gone(uid),
                Work::Foreground(uid) => self.foreground(uid),
                Work::Orphan(uid) => self.orphan(uid),
                Work::Namespace(ns) => self.namespace_sweep(ns),
            }
        }
    }

    /// An owner is gone: drop its references from dependents that have other live owners, delete the rest.
    fn owner_gone(&mut self, uid: String) {
        let deps = self.dependents_of(&uid);
        for (gr, key) in deps {
            let Some(obj) = self.object(&gr, &key) else {
                continue;
            };
            let alive: Vec<String> = owner_uids(&obj)
                .into_iter()
                .filter(|u| *u != uid && self.uid_index.contains_key(u))
                .collect();
            if !alive.is_empty() {
                let mut o = (*obj).clone();
                if let Some(refs) = o
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| alive.iter().any(|a| a == u))
                    });
                }
                self.put(&gr, key, o, Some(obj));
            } else if !is_deleting(&obj) {
                let _ = self.delete_inner(&gr, &key, Propagation::Background, None);
            }
        }
    }

    /// Foreground deletion: delete dependents, drop the owner's finalizer once none blocks it.
    fn foreground(&mut self, uid: String) {
        let Some((gr, key)) = self.finalizing_owner(&uid, "foregroundDeletion") else {
            return;
        };
        let deps = self.dependents_of(&uid);
        let mut blocking = false;
        for (dgr, dkey) in deps {
            let Some(dep) = self.object(&dgr, &dkey) else {
                continue;
            };
            if !is_deleting(&dep) {
                let _ = self.delete_inner(&dgr, &dkey, Propagation::Foreground, None);
            }
            if let Some(dep) = self.tables.get(&dgr).and_then(|t| t.objects.get(&dkey)) {
                let blocks = dep
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                                && r.get("blockOwnerDeletion").and_then(Value::as_bool)
                                    == Some(true)
                        })
                    });
                blocking |= blocks;
            }
        }
        if !blocking && let Some(owner) = self.object(&gr, &key) {
            self.drop_finalizer(&gr, &key, &owner, "foregroundDeletion");
        }
    }

    /// Orphan deletion: strip the owner's references from dependents, then drop its finalizer.
    fn orphan(&mut self, uid: String) {
        let Some((gr, key)) = self.finalizing_owner(&uid, "orphan") else {
            return;
        };
        let deps = self.dependents_of(&uid);
        for (dgr, dkey) in deps {
            let Some(dep) = self.object(&dgr, &dkey) else {
                continue;
            };
            let mut o = (*dep).clone();
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                if refs.is_empty()
                    && let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.remove("ownerReferences");
                }
            }
            self.put(&dgr, dkey, o, Some(dep));
        }
        if let Some(owner) = self.object(&gr, &key) {
            self.drop_finalizer(&gr, &key, &owner, "orphan");
        }
    }

    /// A deleting namespace: delete everything in it, finalize it once nothing remains.
    fn namespace_sweep(&mut self, ns: String) {
        let nskey = (String::new(), ns.clone());
        let Some(nsobj) = self.object(&ns_gr(), &nskey) else {
            return;
        };
        if !is_deleting(&nsobj) {
            return;
        }
        let grs: Vec<GroupResource> = self
            .tables
            .keys()
            .filter(|g| **g != ns_gr())
            .cloned()
            .collect();
        let mut remaining = 0usize;
        for gr in grs {
            let keys: Vec<(ObjKey, bool)> = self
                .tables
                .get(&gr)
                .map(|t| {
                    t.objects
                        .range((ns.clone(), String::new())..)
                        .take_while(|((n, _), _)| *n == ns)
                        .map(|(k, v)| (k.clone(), is_deleting(v)))
                        .collect()
                })
                .unwrap_or_default();
            for (k, deleting) in keys {
                if !deleting {
                    let _ = self.delete_inner(&gr, &k, Propagation::Background, Some(0));
                }
                if self
                    .tables
                    .get(&gr)
                    .is_some_and(|t| t.objects.contains_key(&k))
                {
                    remaining += 1;
                }
            }
        }
        if remaining == 0 {
            let Some(nsobj) = self.object(&ns_gr(), &nskey) else {
                return;
            };
            let mut o = (*nsobj).clone();
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
            if finalizers(&o).is_empty() {
                self.put(&ns_gr(), nskey.clone(), o, Some(nsobj));
                self.remove(&ns_gr(), &nskey);
            } else {
                self.put(&ns_gr(), nskey, o, Some(nsobj));
            }
        }
    }

    /// The stored object at `key` of `gr`, if any.
    fn object(&self, gr: &GroupResource, key: &ObjKey) -> Option<Arc<Value>> {
        self.tables
            .get(gr)
            .and_then(|t| t.objects.get(key))
            .cloned()
    }

    /// Where the owner with `uid` is stored, if it still holds `finalizer`.
    fn finalizing_owner(&self, uid: &str, finalizer: &str) -> Option<(GroupResource, ObjKey)> {
        let (gr, key, owner) = self.lookup_uid(uid)?;
        finalizers(&owner)
            .iter()
            .any(|f| f == finalizer)
            .then_some((gr, key))
    }

    /// The objects that name `uid` as an owner.
    fn dependents_of(&self, uid: &str) -> Vec<(GroupResource, ObjKey)> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}
