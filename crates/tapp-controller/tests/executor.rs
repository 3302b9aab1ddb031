//! The executor against a small in-memory API (an axum Router behind `kube::Client::new`) and
//! a simulated kubelet: the seed walkthrough (create, pin, roll with maxUnavailable 1, kill,
//! scale), adoption of pods written by the Go controller, and the status/events written.
//! (The full emulated API server and e2e tests through kubectl live in the `e2e` crate.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_common::admin::Health;
use addon_common::api::tapp::TApp;
use addon_common::events::EventRecorder;
use addon_common::guard::DeserializeGuard;
use addon_common::k8s_openapi::api::core::v1::Pod;
use addon_common::kube;
use addon_common::kube::runtime::reflector::{self, store::Writer};
use addon_common::kube::runtime::watcher::Event;
use addon_common::runtime::Deps;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{OriginalUri, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tapp_controller::controller::{COMPONENT, ClaimMeta, Context, Stores, reconcile};
use tapp_controller::index::OwnerIndex;
use tapp_controller::metrics::Metrics;
use tapp_controller::plan::Flags;

#[derive(Default)]
struct Api {
    objects: BTreeMap<(String, String), Value>, // (collection path, name) -> object
    rv: u64,
    uid: u64,
    events: Vec<Value>,
    writes: Vec<String>,
    /// Holds Event POSTs until this many are in flight (see [`Overlap`]).
    event_overlap: Option<Arc<Overlap>>,
    /// Holds pod PATCHes (not subresources) likewise.
    pod_patch_overlap: Option<Arc<Overlap>>,
}

/// Shows whether requests are sent concurrently: each one is held until `want` of them are in
/// flight at once (or a second has passed, when they come one after another), and the largest
/// number seen in flight together is kept.
struct Overlap {
    want: usize,
    in_flight: AtomicUsize,
    max: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Overlap {
    fn new(want: usize) -> Arc<Self> {
        Arc::new(Self {
            want,
            in_flight: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
        })
    }

    async fn hold(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.notify.notify_waiters();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let notified = self.notify.notified();
                if self.max.load(Ordering::SeqCst) >= self.want {
                    return;
                }
                notified.await;
            }
        })
        .await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

type Shared = Arc<Mutex<Api>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message});
    (StatusCode::from_u16(code).expect("code"), Json(body)).into_response()
}

/// Splits `/api/v1/namespaces/ns/pods/name/status` into (collection, name, subresource).
fn split(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ns_at = parts
        .iter()
        .position(|p| *p == "namespaces")
        .expect("namespaced path");
    let collection = parts[..ns_at + 3].join("/");
    (
        collection,
        parts.get(ns_at + 3).map(|s| s.to_string()),
        parts.get(ns_at + 4).map(|s| s.to_string()),
    )
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (collection, name, sub) = split(uri.path());
    let overlap = {
        let api = s.lock().expect("lock");
        if collection.ends_with("/events") && method == Method::POST {
            api.event_overlap.clone()
        } else if collection == PODS && method == Method::PATCH && sub.is_none() {
            api.pod_patch_overlap.clone()
        } else {
            None
        }
    };
    if let Some(o) = overlap {
        o.hold().await;
    }
    let mut api = s.lock().expect("lock");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if collection.ends_with("/events") {
        api.events.push(body.clone());
        return (StatusCode::CREATED, Json(body)).into_response();
    }
    api.writes.push(format!("{method} {}", uri.path()));
    match (method.as_str(), name) {
        ("POST", None) => {
            let name = body["metadata"]["name"].as_str().expect("name").to_string();
            if api
                .objects
                .contains_key(&(collection.clone(), name.clone()))
            {
                return status(409, "AlreadyExists", "exists");
            }
            api.rv += 1;
            api.uid += 1;
            let mut obj = body;
            obj["metadata"]["uid"] = json!(format!("uid-{}", api.uid));
            obj["metadata"]["resourceVersion"] = json!(api.rv.to_string());
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            api.objects.insert((collection, name), obj.clone());
            (StatusCode::CREATED, Json(obj)).into_response()
        }
        ("GET", Some(name)) => match api.objects.get(&(collection, name)) {
            Some(o) => Json(o.clone()).into_response(),
            None => status(404, "NotFound", "not found"),
        },
        ("PATCH", Some(name)) => {
            let key = (collection, name);
            let Some(mut obj) = api.objects.get(&key).cloned() else {
                return status(404, "NotFound", "not found");
            };
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.contains("json-patch") {
                let patch: json_patch::Patch = serde_json::from_value(body).expect("json patch");
                if let Err(e) = json_patch::patch(&mut obj, &patch) {
                    return status(422, "Invalid", &e.to_string());
                }
            } else {
                json_patch::merge(&mut obj, &body);
            }
            if sub.as_deref() == Some("resize") {
                obj["metadata"]["annotations"]["test/resized"] = json!("true");
            }
            api.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(api.rv.to_string());
            api.objects.insert(key, obj.clone());
            Json(obj).into_response()
        }
        ("DELETE", Some(name)) => {
            let key = (collection, name);
            let Some(mut obj) = api.objects.get(&key).cloned() else {
                return status(404, "NotFound", "not found");
            };
            if let Some(uid) = body.pointer("/preconditions/uid")
                && obj["metadata"]["uid"] != *uid
            {
                return status(409, "Conflict", "uid precondition");
            }
            if body["gracePeriodSeconds"] == json!(0) {
                api.objects.remove(&key);
            } else {
                obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                api.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(api.rv.to_string());
                api.objects.insert(key, obj.clone());
            }
            Json(obj).into_response()
        }
        _ => status(405, "MethodNotAllowed", "unsupported"),
    }
}

const PODS: &str = "api/v1/namespaces/default/pods";
const TAPPS: &str = "apis/apps.tkestack.io/v1/namespaces/default/tapps";

/// A TApp as the controller's watch delivers it (decoded).
fn guarded(tapp: TApp) -> Arc<DeserializeGuard<TApp>> {
    Arc::new(DeserializeGuard(Ok(tapp)))
}

struct Harness {
    api: Shared,
    ctx: Arc<Context>,
    pods: OwnerIndex,
    pvcs: Writer<ClaimMeta>,
    max_unavailable: usize,
}

impl Harness {
    fn new() -> Self {
        let api: Shared = Arc::default();
        let router = Router::new().fallback(handle).with_state(api.clone());
        let client = kube::Client::new(router, "default");
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).expect("metrics");
        let pods = OwnerIndex::new();
        let (pvc_store, pvcs) = reflector::store();
        let deps = Deps {
            client: client.clone(),
            health: Health::default(),
            events: EventRecorder::new(client, COMPONENT),
        };
        let ctx = Arc::new(Context::new(
            &deps,
            metrics,
            Flags::default(),
            Stores {
                pods: pods.clone(),
                pvcs: pvc_store,
                nodes: None,
            },
        ));
        Self {
            api,
            ctx,
            pods,
            pvcs,
            max_unavailable: 0,
        }
    }

    fn apply_tapp(&self, yaml: &str) {
        let mut obj: Value = serde_yaml::from_str(yaml).expect("yaml");
        let mut api = self.api.lock().expect("lock");
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        obj["metadata"]["namespace"] = json!("default");
        let key = (TAPPS.to_string(), name);
        api.rv += 1;
        let rv = api.rv.to_string();
        match api.objects.get(&key).cloned() {
            Some(mut live) => {
                // kubectl apply: spec fields from the file replace the live ones they name.
                for (k, v) in obj["spec"].as_object().expect("spec") {
                    live["spec"][k] = v.clone();
                }
                let generation = live["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                live["metadata"]["generation"] = json!(generation);
                live["metadata"]["resourceVersion"] = json!(rv);
                api.objects.insert(key, live);
            }
            None => {
                obj["metadata"]["uid"] = json!("tapp-uid");
                obj["metadata"]["generation"] = json!(1);
                obj["metadata"]["resourceVersion"] = json!(rv);
                api.objects.insert(key, obj);
            }
        }
    }

    fn tapp(&self) -> TApp {
        let api = self.api.lock().expect("lock");
        serde_json::from_value(
            api.objects[&(TAPPS.to_string(), "example-tapp".to_string())].clone(),
        )
        .expect("tapp")
    }

    fn pods(&self) -> BTreeMap<String, Pod> {
        let api = self.api.lock().expect("lock");
        api.objects
            .iter()
            .filter(|((c, _), _)| c == PODS)
            .map(|((_, n), v)| (n.clone(), serde_json::from_value(v.clone()).expect("pod")))
            .collect()
    }

    fn resync_stores(&mut self) {
        let pods: Vec<Pod> = self.pods().into_values().collect();
        self.pods.apply_watcher_event(Event::Init);
        for p in pods {
            // Through the wire format, as the controller's watch decodes it.
            let slim = serde_json::to_string(&p)
                .and_then(|text| serde_json::from_str(&text))
                .expect("slim pod");
            self.pods.apply_watcher_event(Event::InitApply(slim));
        }
        self.pods.apply_watcher_event(Event::InitDone);
        self.pvcs.apply_watcher_event(&Event::Init);
        self.pvcs.apply_watcher_event(&Event::InitDone);
    }

    /// The kubelet: removes terminating pods, runs pods with their spec images (a changed image
    /// restarts the container), Ready = containers run spec images and the gate is True.
    fn kubelet(&self) {
        let mut api = self.api.lock().expect("lock");
        let keys: Vec<_> = api
            .objects
            .keys()
            .filter(|(c, _)| c == PODS)
            .cloned()
            .collect();
        for key in keys {
            let original = api.objects[&key].clone();
            let mut pod = original.clone();
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                api.objects.remove(&key);
                continue;
            }
            let containers = pod["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let old = pod["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| {
                    let prev = old.iter().find(|s| s["name"] == c["name"]);
                    let restarts = prev.map_or(0, |p| {
                        p["restartCount"].as_i64().unwrap_or(0) + i64::from(p["image"] != c["image"])
                    });
                    json!({"name": c["name"], "image": c["image"], "imageID": format!("sha-{}", c["image"].as_str().unwrap_or("")),
                           "ready": true, "restartCount": restarts, "state": {"running": {}}})
                })
                .collect();
            let gate = pod["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "tkestack.io/InPlaceUpdate"))
                .is_some_and(|c| c["status"] == "True");
            let mut conditions: Vec<Value> = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["type"] != "Ready")
                .collect();
            conditions
                .push(json!({"type": "Ready", "status": if gate { "True" } else { "False" }}));
            pod["status"]["phase"] = json!("Running");
            pod["status"]["containerStatuses"] = json!(statuses);
            pod["status"]["conditions"] = json!(conditions);
            pod["spec"]["nodeName"] = json!("node-1");
            if pod == original {
                continue;
            }
            api.rv += 1;
            pod["metadata"]["resourceVersion"] = json!(api.rv.to_string());
            api.objects.insert(key, pod);
        }
    }

    fn unavailable(&self) -> usize {
        let t = self.tapp();
        let pods = self.pods();
        (0..t.spec.replicas)
            .filter(|id| !t.spec.is_killed(&id.to_string()))
            .filter(|id| {
                pods.get(&format!("example-tapp-{id}")).is_none_or(|p| {
                    p.metadata.deletion_timestamp.is_some()
                        || !p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
            })
            .count()
    }

    /// Reconciles and runs the kubelet until nothing changes; checks the unavailability.
    async fn converge(&mut self) {
        for _ in 0..40 {
            let before = self.api.lock().expect("lock").rv;
            self.resync_stores();
            let tapp = guarded(self.tapp());
            reconcile(tapp, self.ctx.clone()).await.expect("reconcile");
            self.max_unavailable = self.max_unavailable.max(self.unavailable());
            self.kubelet();
            self.max_unavailable = self.max_unavailable.max(self.unavailable());
            if self.api.lock().expect("lock").rv == before {
                return;
            }
        }
        panic!("did not converge");
    }

    fn reasons(&self) -> Vec<(String, String)> {
        self.api
            .lock()
            .expect("lock")
            .events
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["note"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

const CREATE: &str = "
apiVersion: apps.tkestack.io/v1
kind: TApp
metadata:
  name: example-tapp
spec:
  replicas: 3
  template:
    metadata:
      labels:
        app: example-tapp
    spec:
      containers:
      - name: nginx
        image: nginx:1.7.9
";

const POOL: &str = "
  templatePool:
    \"test\":
      metadata:
        labels:
          app: example-tapp
      spec:
        containers:
        - name: nginx
          image: nginx:latest
";

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn seed_walkthrough() {
    let mut h = Harness::new();
    h.apply_tapp(CREATE);
    h.converge().await;
    let t = h.tapp();
    let status = t.status.clone().expect("status");
    assert_eq!(status.app_status.map(|s| s.as_str()), Some("Running"));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(
        status.scale_label_selector.as_deref(),
        Some("app=example-tapp")
    );
    assert_eq!(
        t.metadata.labels.as_ref().expect("labels")["app"],
        "example-tapp"
    );
    assert!(
        t.spec.selector.is_some(),
        "selector defaulted and written back"
    );
    let creates: Vec<_> = h
        .reasons()
        .into_iter()
        .filter(|(r, _)| r == "SuccessfulCreate")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(creates.len(), 3);
    assert!(
        creates.contains(&"Instance: example-tapp-1".to_string()),
        "{creates:?} {:?}",
        h.api.lock().expect("lock").events.first()
    );

    // Pin instance 1 to "test": in place, same UID, one restart, nginx:latest.
    let uid_before = h.pods()["example-tapp-1"].metadata.uid.clone();
    h.apply_tapp(&format!(
        "{CREATE}{POOL}  templates:\n    \"1\": \"test\"\n"
    ));
    h.converge().await;
    let pod1 = &h.pods()["example-tapp-1"];
    assert_eq!(pod1.metadata.uid, uid_before);
    assert_eq!(image(pod1), "nginx:latest");
    let restarts = pod1
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c[0].restart_count);
    assert_eq!(restarts, Some(1));
    assert!(
        h.reasons()
            .contains(&("SuccessfulUpdate".into(), "Instance: example-tapp-1".into()))
    );

    // Roll everything to "test" with maxUnavailable 1.
    h.max_unavailable = 0;
    h.apply_tapp(&format!(
        "{CREATE}{POOL}  templates:\n    \"1\": \"test\"\n    \"2\": \"test\"\n    \"0\": \"test\"\n  updateStrategy:\n    template: test\n    maxUnavailable: 1\n"
    ));
    h.converge().await;
    assert!(h.pods().values().all(|p| image(p) == "nginx:latest"));
    assert!(
        h.max_unavailable <= 1,
        "budget exceeded: {}",
        h.max_unavailable
    );

    // Kill instance 1.
    h.apply_tapp(&format!(
        "{CREATE}{POOL}  templates:\n    \"1\": \"test\"\n    \"2\": \"test\"\n    \"0\": \"test\"\n  updateStrategy:\n    template: test\n    maxUnavailable: 1\n  statuses:\n    \"1\": \"Killed\"\n"
    ));
    h.converge().await;
    assert!(!h.pods().contains_key("example-tapp-1"));
    let status = h.tapp().status.expect("status");
    assert_eq!(status.statuses["1"].as_str(), "Killed");
    assert_eq!(status.replicas, 3, "Killed counts in status.replicas");
    assert!(
        h.reasons()
            .contains(&("SuccessfulDelete".into(), "instance: example-tapp-1".into()))
    );

    // Scale to 5 (as `kubectl scale` writes spec.replicas).
    {
        let mut api = h.api.lock().expect("lock");
        let key = (TAPPS.to_string(), "example-tapp".to_string());
        api.objects.get_mut(&key).expect("tapp")["spec"]["replicas"] = json!(5);
    }
    h.converge().await;
    let names: Vec<String> = h.pods().keys().cloned().collect();
    assert_eq!(
        names,
        [
            "example-tapp-0",
            "example-tapp-2",
            "example-tapp-3",
            "example-tapp-4"
        ]
    );
    // Unpinned new ids use the default template.
    assert_eq!(image(&h.pods()["example-tapp-3"]), "nginx:1.7.9");
}

#[tokio::test]
async fn pods_of_the_go_controller_are_adopted_without_restart() {
    let mut h = Harness::new();
    h.apply_tapp(CREATE);
    h.converge().await;
    // Pretend the Go controller wrote these pods: its decimal hash labels, no annotations.
    {
        let mut api = h.api.lock().expect("lock");
        for ((c, _), pod) in api.objects.iter_mut() {
            if c == PODS {
                pod["metadata"]["labels"]["tapp_template_hash_key"] = json!("17685766981161034909");
                pod["metadata"]["labels"]["tapp_uniq_hash_key"] = json!("3226707109688322824");
                pod["metadata"]["annotations"] = json!({});
            }
        }
        api.writes.clear();
    }
    let uids: Vec<_> = h.pods().values().map(|p| p.metadata.uid.clone()).collect();
    h.converge().await;
    let after: Vec<_> = h.pods().values().map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(uids, after, "no pod recreated");
    assert!(h.pods().values().all(|p| {
        p.metadata.labels.as_ref().expect("l")["tapp_template_hash_key"].starts_with("v2-")
    }));
    let writes = h.api.lock().expect("lock").writes.clone();
    assert!(
        writes.iter().all(|w| !w.starts_with("DELETE")),
        "{writes:?}"
    );
    assert!(h.pods().values().all(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| c[0].restart_count == 0)
    }));
}

/// A reconcile sends its Events, like its creates, concurrently, and its in-place updates
/// too: one round trip each instead of one per pod before the worker is free.
#[tokio::test]
async fn a_reconcile_sends_its_events_and_in_place_updates_concurrently() {
    let mut h = Harness::new();
    let events = Overlap::new(3);
    h.api.lock().expect("lock").event_overlap = Some(events.clone());
    h.apply_tapp(CREATE);
    h.converge().await;
    assert_eq!(h.tapp().status.expect("status").ready_replicas, 3);
    assert_eq!(
        events.max.load(Ordering::SeqCst),
        3,
        "the three SuccessfulCreate events were not in flight together"
    );

    let updates = Overlap::new(3);
    h.api.lock().expect("lock").pod_patch_overlap = Some(updates.clone());
    h.apply_tapp(
        &(CREATE.replace("nginx:1.7.9", "nginx:1.8")
            + "  updateStrategy:\n    maxUnavailable: 3\n"),
    );
    h.converge().await;
    assert!(h.pods().values().all(|p| image(p) == "nginx:1.8"));
    assert_eq!(
        updates.max.load(Ordering::SeqCst),
        3,
        "the three in-place updates were not in flight together"
    );
}

#[tokio::test]
async fn recreate_on_non_image_change_respects_the_budget() {
    let mut h = Harness::new();
    h.apply_tapp(&CREATE.replace("replicas: 3", "replicas: 6"));
    h.converge().await;
    h.max_unavailable = 0;
    let uids: Vec<_> = h.pods().values().map(|p| p.metadata.uid.clone()).collect();
    // An env change cannot be applied in place.
    h.apply_tapp(
        &(CREATE.replace("replicas: 3", "replicas: 6").replace(
            "image: nginx:1.7.9",
            "image: nginx:1.7.9\n        env:\n        - name: A\n          value: \"1\"",
        ) + "  updateStrategy:\n    maxUnavailable: 2\n"),
    );
    h.converge().await;
    let after: Vec<_> = h.pods().values().map(|p| p.metadata.uid.clone()).collect();
    assert!(
        uids.iter().zip(&after).all(|(a, b)| a != b),
        "every pod recreated"
    );
    assert!(
        h.max_unavailable <= 2,
        "budget exceeded: {}",
        h.max_unavailable
    );
    assert!(h.pods().values().all(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.containers[0].env.clone())
            .is_some()
    }));
}

/// The watch cache lags the controller's own writes: a reconcile on a cache that does not show
/// them yet writes nothing (no second create, condition or status patch), and the next one on
/// a cache that shows them carries on.
#[tokio::test]
async fn a_cache_that_lags_our_writes_repeats_no_write() {
    let mut h = Harness::new();
    h.apply_tapp(CREATE);
    let writes = |h: &Harness| h.api.lock().expect("lock").writes.clone();
    // Defaults, then the pods.
    h.resync_stores();
    reconcile(guarded(h.tapp()), h.ctx.clone())
        .await
        .expect("defaults");
    let stale_tapp = guarded(h.tapp());
    h.resync_stores();
    reconcile(stale_tapp.clone(), h.ctx.clone())
        .await
        .expect("creates");
    let after_create = writes(&h);
    let posts = after_create
        .iter()
        .filter(|w| w.starts_with("POST") && w.ends_with("/pods"))
        .count();
    assert_eq!(posts, 3, "{after_create:?}");

    // Neither the pods nor our status patch are in the caches yet.
    reconcile(stale_tapp.clone(), h.ctx.clone())
        .await
        .expect("stale");
    assert_eq!(writes(&h), after_create, "nothing written on a stale cache");
    // The TApp's status is fresh but the pods are not.
    reconcile(guarded(h.tapp()), h.ctx.clone())
        .await
        .expect("stale pods");
    assert_eq!(
        writes(&h),
        after_create,
        "nothing written on a stale pod cache"
    );

    // Pods visible, kubelet ran: the readiness gates are set, once each.
    h.kubelet();
    h.resync_stores();
    reconcile(guarded(h.tapp()), h.ctx.clone())
        .await
        .expect("gates");
    let gates = |w: &[String]| {
        w.iter()
            .filter(|w| w.starts_with("PATCH") && w.contains("/pods/") && w.ends_with("/status"))
            .count()
    };
    let after_gates = writes(&h);
    assert_eq!(gates(&after_gates), 3, "{after_gates:?}");
    // Gate patches not in the cache yet: nothing again.
    reconcile(guarded(h.tapp()), h.ctx.clone())
        .await
        .expect("stale gates");
    assert_eq!(writes(&h), after_gates);
    h.converge().await;
    assert_eq!(gates(&writes(&h)), 3, "one gate write per pod in total");
    let status = h.tapp().status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
}
