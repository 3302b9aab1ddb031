//! The real controller (`controller::run`, as `main.rs` starts it) against the in-process
//! emulated API server and the simulated cluster (scheduler, kubelets that run pods through
//! their lifecycle, readiness gates and in-place image restarts, ownerReference GC).
//!
//! - the seed walkthrough with the seed YAML verbatim (applied server-side, as
//!   `kubectl apply --server-side` does): create, pin, roll, kill, scale (`/scale`), delete;
//! - batch semantics: containers that exit 0/1 under each restartPolicy, and an evicted pod of
//!   an `Always` instance being migrated;
//! - reliability: the controller aborted (like `kill -9`) at several points of a 30-pod rolling
//!   update, and a recreate rollout under injected API faults (500s, conflicts, dropped
//!   watches, compacted history → 410).
//!
//! A pod watcher runs during every rollout and checks the budget at every observed state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_common::admin::Health;
use addon_common::api::{
    all_crds,
    tapp::{IN_PLACE_UPDATE_READY_CONDITION, IN_PLACE_UPDATE_STATE_ANNOTATION, TApp},
};
use addon_common::events::EventRecorder;
use addon_common::k8s_openapi::{
    api::core::v1::{Event, PersistentVolumeClaim, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use addon_common::kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use addon_common::runtime::Deps;
use e2e::cluster::{ClusterConfig, SimCluster};
use e2e::wait::until as until_within;
use futures::StreamExt;
use serde_json::{Value, json};
use tapp_controller::{
    controller::{self, Config},
    metrics::Metrics,
    plan::Flags,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SEED_CREATE: &str = include_str!("../../addon-common/tests/fixtures/tapp-create.yaml");
const SEED_PIN: &str = include_str!("../../addon-common/tests/fixtures/tapp-pin-instance.yaml");
const SEED_ROLL: &str = include_str!("../../addon-common/tests/fixtures/tapp-rolling-update.yaml");
const SEED_KILL: &str = include_str!("../../addon-common/tests/fixtures/tapp-kill-instance.yaml");
const NAME: &str = "example-tapp";
const DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Environment: API server + simulated cluster + the controller.

struct Env {
    server: e2e::ApiServer,
    cluster: SimCluster,
    client: Client,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cluster.cancellation_token().cancel();
    }
}

async fn env(nodes: usize) -> Env {
    if let Ok(f) = std::env::var("TEST_LOG") {
        let _ = addon_common::telemetry::init(
            &addon_common::cli::LogArgs {
                log_filter: f,
                ..Default::default()
            },
            "test",
            "0",
        );
    }
    let server = e2e::ApiServer::new(e2e::Config {
        graceful_pod_deletion: true,
        ..Default::default()
    });
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let cluster = SimCluster::start_with_server(&server, ClusterConfig::with_nodes(nodes))
        .await
        .expect("simulated cluster");
    Env {
        server,
        cluster,
        client,
    }
}

/// A simulated cluster of `nodes` nodes with the controller running (default flags).
async fn running(nodes: usize) -> (Env, Client, Controller) {
    let env = env(nodes).await;
    let client = env.client.clone();
    let controller = Controller::start(&client);
    (env, client, controller)
}

/// One running controller, started as `main.rs` does (minus the admin server and leader
/// election, which `Process` adds around it).
struct Controller {
    stop: CancellationToken,
    handle: JoinHandle<()>,
    health: Health,
}

impl Controller {
    fn start(client: &Client) -> Self {
        Self::start_with(client, Flags::default())
    }

    fn start_with(client: &Client, flags: Flags) -> Self {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).expect("metrics");
        let config = Config {
            flags,
            namespace: None,
            watch_nodes: true,
            workers: 0,
        };
        let stop = CancellationToken::new();
        let health = Health::default();
        let deps = Deps {
            client: client.clone(),
            health: health.clone(),
            events: EventRecorder::new(client.clone(), controller::COMPONENT),
        };
        let handle = tokio::spawn(controller::run(deps, config, metrics, stop.clone()));
        Self {
            stop,
            handle,
            health,
        }
    }

    /// Like `kill -9`: the task is dropped wherever it is (no graceful shutdown); the token is
    /// cancelled afterwards only to stop the helper tasks `run` spawned.
    fn kill(self) {
        self.handle.abort();
        self.stop.cancel();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn until<F, Fut, T>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_within(what, DEADLINE, probe).await
}

/// `kubectl apply --server-side --force-conflicts -f <yaml>`: creates or merges the object.
async fn apply(client: &Client, yaml: &str) {
    let mut obj: Value = serde_yaml::from_str(yaml).expect("fixture parses");
    // The documentation's kill example has no apiVersion; kubectl needs it (docs/tapp.md).
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!("apps.tkestack.io/v1");
    }
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    tapps(client)
        .patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply");
}

fn tapps(client: &Client) -> Api<TApp> {
    Api::default_namespaced(client.clone())
}

fn pods(client: &Client) -> Api<Pod> {
    Api::default_namespaced(client.clone())
}

// ---------------------------------------------------------------------------------------------
// Pod and TApp helpers.

fn condition(p: &Pod, kind: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn is_ready(p: &Pod) -> bool {
    condition(p, "Ready").as_deref() == Some("True") && p.metadata.deletion_timestamp.is_none()
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The running image as the kubelet reports it.
fn status_image(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

async fn pod_map(client: &Client, selector: &str) -> BTreeMap<String, Pod> {
    pods(client)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect()
}

fn status_json(t: &TApp) -> Value {
    serde_json::to_value(&t.status).expect("status serializes")
}

fn statuses(t: &TApp) -> BTreeMap<String, String> {
    serde_json::from_value(status_json(t)["statuses"].clone()).unwrap_or_default()
}

fn app_status(t: &TApp) -> String {
    status_json(t)["appStatus"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The status was computed for the current generation.
fn observed(t: &TApp) -> bool {
    t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
}

fn expect_statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until the TApp's status is current and `ok` holds for it.
async fn tapp_until(client: &Client, name: &str, what: &str, ok: impl Fn(&TApp) -> bool) -> TApp {
    until(what, || async {
        let t = tapps(client).get(name).await.ok()?;
        (observed(&t) && ok(&t)).then_some(t)
    })
    .await
}

/// Events the controller recorded about a TApp (events.k8s.io/v1, read as core/v1).
async fn tapp_events(client: &Client, reason: &str) -> Vec<String> {
    Api::<Event>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("TApp") && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The pod monitor: every observed state of the pods, checked against the budget.

#[derive(Default)]
struct Seen {
    /// The pods as of the last event (after the first complete list).
    pods: BTreeMap<String, Pod>,
    /// Pods that must be available when nothing is being changed.
    desired: BTreeSet<String>,
    /// Highest number of desired pods missing, terminating or not Ready at one moment.
    max_unavailable: usize,
    /// Highest number of pods at one moment.
    max_pods: usize,
    /// Every pod name seen.
    names: BTreeSet<String>,
    /// Every (name, uid) seen.
    uids: BTreeSet<(String, String)>,
    /// Pods seen with the in-place gate condition False.
    gate_false: BTreeSet<String>,
    /// Pods seen terminating.
    terminating: BTreeSet<String>,
    /// States evaluated.
    states: usize,
}

impl Seen {
    fn evaluate(&mut self) {
        let unavailable = self
            .desired
            .iter()
            .filter(|n| !self.pods.get(*n).is_some_and(is_ready))
            .count();
        self.max_unavailable = self.max_unavailable.max(unavailable);
        self.max_pods = self.max_pods.max(self.pods.len());
        self.states += 1;
    }

    fn note(&mut self, p: &Pod) {
        let name = p.name_any();
        if condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref() == Some("False") {
            self.gate_false.insert(name.clone());
        }
        if p.metadata.deletion_timestamp.is_some() {
            self.terminating.insert(name.clone());
        }
        self.uids.insert((name.clone(), uid(p)));
        self.names.insert(name);
    }
}

struct Monitor {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Watches the pods matching `selector`; `desired` pods should all be available now.
    async fn start(client: &Client, selector: &str, desired: &[String]) -> Self {
        let seen = Arc::new(Mutex::new(Seen {
            desired: desired.iter().cloned().collect(),
            ..Seen::default()
        }));
        let stream = watcher(pods(client), watcher::Config::default().labels(selector));
        let state = seen.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut started = Some(started_tx);
            let mut stream = std::pin::pin!(stream);
            let mut buffer: BTreeMap<String, Pod> = BTreeMap::new();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut s = state.lock().expect("lock");
                match event {
                    watcher::Event::Init => buffer.clear(),
                    watcher::Event::InitApply(p) => {
                        s.note(&p);
                        buffer.insert(p.name_any(), p);
                    }
                    watcher::Event::InitDone => {
                        s.pods = std::mem::take(&mut buffer);
                        s.evaluate();
                        if let Some(tx) = started.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(p) => {
                        s.note(&p);
                        s.pods.insert(p.name_any(), p);
                        s.evaluate();
                    }
                    watcher::Event::Delete(p) => {
                        s.pods.remove(&p.name_any());
                        s.evaluate();
                    }
                }
            }
        });
        started_rx.await.expect("monitor listed the pods");
        Self { seen, task }
    }

    fn check<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("lock"))
    }

    fn reset(&self, desired: &[String]) {
        let mut s = self.seen.lock().expect("lock");
        s.desired = desired.iter().cloned().collect();
        s.max_unavailable = 0;
        s.gate_false.clear();
        s.terminating.clear();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn names(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter().map(|i| format!("{prefix}-{i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// 1–6: the seed walkthrough.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_walkthrough_create_pin_roll_kill_scale_delete() {
    let env = env(3).await;
    let client = env.client.clone();
    let controller = Controller::start(&client);
    let sel = "app=example-tapp";

    // 1. Create 3 replicas → all Running.
    apply(&client, SEED_CREATE).await;
    let t = tapp_until(&client, NAME, "3 instances Running", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running"), ("2", "Running")])
            && app_status(t) == "Running"
    })
    .await;
    let st = status_json(&t);
    assert_eq!(st["replicas"], 3, "{st}");
    assert_eq!(st["readyReplicas"], 3, "{st}");
    assert_eq!(st["scaleLabelSelector"], sel, "{st}");
    let spec = serde_json::to_value(&t.spec).expect("spec");
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"app": "example-tapp"}}),
        "selector defaulted from the template labels"
    );
    assert_eq!(spec["updateStrategy"]["template"], "default", "{spec}");
    assert_eq!(spec["updateStrategy"]["maxUnavailable"], 1, "{spec}");
    let initial = pod_map(&client, sel).await;
    assert_eq!(
        initial.keys().cloned().collect::<Vec<_>>(),
        names(NAME, 0..3)
    );
    for (name, p) in &initial {
        assert_eq!(phase(p), "Running", "{name}");
        assert!(is_ready(p), "{name} ready");
        assert_eq!(image(p), "nginx:1.7.9");
        let labels = p.labels();
        assert_eq!(
            labels.get("tapp_instance_key").map(String::as_str),
            name.strip_prefix("example-tapp-")
        );
        assert!(labels.contains_key("tapp_template_hash_key"), "{name}");
        assert!(labels.contains_key("tapp_uniq_hash_key"), "{name}");
        let owner = &p.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("TApp", NAME, Some(true))
        );
        let gates = p.spec.as_ref().and_then(|s| s.readiness_gates.clone());
        assert_eq!(
            gates.map(|g| g.into_iter().map(|g| g.condition_type).collect::<Vec<_>>()),
            Some(vec![IN_PLACE_UPDATE_READY_CONDITION.to_string()]),
            "{name} carries the in-place readiness gate"
        );
        assert_eq!(
            condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref(),
            Some("True")
        );
    }
    let health = controller.health.clone();
    until("/readyz: the controller's caches synced", || async {
        health.is_ready().then_some(())
    })
    .await;
    let created = until("one SuccessfulCreate event per pod", || async {
        let mut m = tapp_events(&client, "SuccessfulCreate").await;
        m.sort();
        (m.len() >= 3).then_some(m)
    })
    .await;
    assert_eq!(
        created,
        vec![
            "Instance: example-tapp-0",
            "Instance: example-tapp-1",
            "Instance: example-tapp-2"
        ]
    );

    // 2. Pin instance 1 to the pool template `test`: updated in place.
    let monitor = Monitor::start(&client, sel, &names(NAME, 0..3)).await;
    apply(&client, SEED_PIN).await;
    let after_pin = until("pod 1 running nginx:latest in place", || async {
        let m = pod_map(&client, sel).await;
        let p = m.get("example-tapp-1")?;
        (image(p) == "nginx:latest"
            && status_image(p) == "nginx:latest"
            && is_ready(p)
            && condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref() == Some("True"))
        .then_some(m)
    })
    .await;
    let p1 = &after_pin["example-tapp-1"];
    assert_eq!(
        uid(p1),
        uid(&initial["example-tapp-1"]),
        "pod 1 kept its UID"
    );
    assert_eq!(restarts(p1), 1, "pod 1's container restarted once");
    assert_eq!(
        p1.annotations()
            .get(IN_PLACE_UPDATE_STATE_ANNOTATION)
            .map(String::as_str),
        Some("true")
    );
    for other in ["example-tapp-0", "example-tapp-2"] {
        let p = &after_pin[other];
        assert_eq!(uid(p), uid(&initial[other]), "{other} untouched");
        assert_eq!((image(p).as_str(), restarts(p)), ("nginx:1.7.9", 0));
    }
    monitor.check(|s| {
        assert!(
            s.gate_false.contains("example-tapp-1"),
            "the in-place protocol set the gate False during the update (saw {:?})",
            s.gate_false
        );
        assert_eq!(s.gate_false.len(), 1, "only pod 1 was touched");
        assert!(s.max_unavailable <= 1, "{} unavailable", s.max_unavailable);
    });
    tapp_until(&client, NAME, "status back to 3 Running", |t| {
        statuses(t).values().all(|s| s == "Running") && statuses(t).len() == 3
    })
    .await;
    until("a SuccessfulUpdate event for pod 1", || async {
        tapp_events(&client, "SuccessfulUpdate")
            .await
            .contains(&"Instance: example-tapp-1".to_string())
            .then_some(())
    })
    .await;

    // 3. Roll every instance to `test` with maxUnavailable 1.
    monitor.reset(&names(NAME, 0..3));
    apply(&client, SEED_ROLL).await;
    let rolled = until("every pod on nginx:latest and ready", || async {
        let m = pod_map(&client, sel).await;
        (m.len() == 3
            && m.values().all(|p| {
                image(p) == "nginx:latest"
                    && status_image(p) == "nginx:latest"
                    && is_ready(p)
                    && condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref() == Some("True")
            }))
        .then_some(m)
    })
    .await;
    tapp_until(&client, NAME, "status Running after the roll", |t| {
        statuses(t).values().all(|s| s == "Running") && statuses(t).len() == 3
    })
    .await;
    for (name, p) in &rolled {
        assert_eq!(uid(p), uid(&initial[name]), "{name} updated in place");
        assert_eq!(restarts(p), 1, "{name} restarted once in all");
    }
    monitor.check(|s| {
        assert_eq!(
            s.max_unavailable, 1,
            "never more than 1 unavailable (and the roll did take pods out)"
        );
        assert_eq!(
            s.gate_false,
            ["example-tapp-0", "example-tapp-2"]
                .map(String::from)
                .into(),
            "pods 0 and 2 went through the in-place protocol"
        );
        assert!(s.states > 5, "the monitor saw the rollout: {}", s.states);
    });

    // 4. Kill instance 1: the pod terminates, its slot stays.
    monitor.reset(&names(NAME, [0, 2]));
    apply(&client, SEED_KILL).await;
    let t = tapp_until(&client, NAME, "instance 1 Killed", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Killed"), ("2", "Running")])
    })
    .await;
    let st = status_json(&t);
    assert_eq!(
        (
            st["replicas"].clone(),
            st["readyReplicas"].clone(),
            st["appStatus"].clone()
        ),
        (json!(3), json!(2), json!("Running")),
        "{st}"
    );
    until("pod 1 gone", || async {
        (!pod_map(&client, sel).await.contains_key("example-tapp-1")).then_some(())
    })
    .await;
    monitor.check(|s| {
        assert!(
            s.terminating.contains("example-tapp-1"),
            "pod 1 was deleted gracefully"
        );
        assert_eq!(s.max_unavailable, 0, "pods 0 and 2 untouched");
    });
    until("a SuccessfulDelete event for pod 1", || async {
        tapp_events(&client, "SuccessfulDelete")
            .await
            .contains(&"instance: example-tapp-1".to_string())
            .then_some(())
    })
    .await;

    // 5. Scale to 5 through the scale subresource (kubectl scale, HPA, CronHPA).
    let scale = tapps(&client)
        .patch_scale(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    let t = tapp_until(&client, NAME, "5 replicas", |t| {
        statuses(t)
            == expect_statuses(&[
                ("0", "Running"),
                ("1", "Killed"),
                ("2", "Running"),
                ("3", "Running"),
                ("4", "Running"),
            ])
    })
    .await;
    assert_eq!(status_json(&t)["replicas"], 5);
    assert_eq!(status_json(&t)["readyReplicas"], 4);
    let m = pod_map(&client, sel).await;
    assert_eq!(
        m.keys().cloned().collect::<Vec<_>>(),
        names(NAME, [0, 2, 3, 4])
    );
    for new in ["example-tapp-3", "example-tapp-4"] {
        // Ids without a `templates` entry use defaultTemplateName (`default`), as the original.
        assert_eq!(image(&m[new]), "nginx:1.7.9", "{new}");
    }
    let scale = tapps(&client).get_scale(NAME).await.expect("get scale");
    assert_eq!(
        scale
            .status
            .as_ref()
            .map(|s| (s.replicas, s.selector.clone())),
        Some((5, Some(sel.to_string()))),
        "the scale subresource reports status.replicas and the selector"
    );

    // 6. Delete the TApp: its pods are garbage-collected.
    tapps(&client)
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");
    until("the pods garbage-collected", || async {
        pod_map(&client, sel).await.is_empty().then_some(())
    })
    .await;
    assert!(tapps(&client).get_opt(NAME).await.expect("get").is_none());
    monitor.check(|s| {
        assert!(
            s.names.iter().all(|n| names(NAME, 0..5).contains(n)),
            "only instance pods ever existed: {:?}",
            s.names
        );
        assert!(s.max_pods <= 5, "{}", s.max_pods);
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Batch semantics.

/// A TApp of 2 instances under `policy`: instance 0 exits 0, instance 1 exits 1 (after a short
/// run), through a pool template for instance 1.
fn batch_tapp(name: &str, policy: &str, exits: Option<[u8; 2]>) -> Value {
    let template = |code: Option<u8>| {
        let annotations = match code {
            Some(c) => json!({
                "sim.e2e.tkestack.io/exit-after-ms": "300",
                "sim.e2e.tkestack.io/exit-code": c.to_string(),
            }),
            None => json!({}),
        };
        json!({
            "metadata": {"labels": {"app": name}, "annotations": annotations},
            "spec": {"restartPolicy": policy,
                     "containers": [{"name": "job", "image": "busybox"}]}
        })
    };
    json!({
        "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "template": template(exits.map(|e| e[0])),
            "templatePool": {"other": template(exits.map(|e| e[1]))},
            "templates": {"1": "other"},
        }
    })
}

async fn create(client: &Client, obj: Value) {
    let t: TApp = serde_json::from_value(obj).expect("tapp");
    tapps(client)
        .create(&PostParams::default(), &t)
        .await
        .expect("create tapp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_exit_codes_under_each_restart_policy() {
    let (_env, client, _controller) = running(3).await;
    for (name, policy) in [
        ("never", "Never"),
        ("onfailure", "OnFailure"),
        ("always", "Always"),
    ] {
        create(&client, batch_tapp(name, policy, Some([0, 1]))).await;
    }
    // Never: 0 → Succ, 1 → Failed; the app is Failed, and once it has finished the pods are
    // deleted (--delete-pod-after-app-finish) while the instance statuses stay.
    let t = tapp_until(&client, "never", "never: Succ + Failed", |t| {
        statuses(t) == expect_statuses(&[("0", "Succ"), ("1", "Failed")])
    })
    .await;
    assert_eq!(app_status(&t), "Failed");
    assert_eq!(status_json(&t)["replicas"], 2, "finished instances count");
    until("never: pods deleted after the app finished", || async {
        pod_map(&client, "app=never").await.is_empty().then_some(())
    })
    .await;
    let t = tapps(&client).get("never").await.expect("never");
    assert_eq!(
        statuses(&t),
        expect_statuses(&[("0", "Succ"), ("1", "Failed")])
    );
    assert_eq!(app_status(&t), "Failed");

    // OnFailure: 0 → Succ (pod kept while the app runs); 1 is restarted by the kubelet in place
    // (the pod never fails for good), so the instance and the app keep running.
    let (t, m) = until("onfailure: 0 Succ, 1 restarted in place", || async {
        let t = tapps(&client).get("onfailure").await.ok()?;
        let m = pod_map(&client, "app=onfailure").await;
        (observed(&t)
            && statuses(&t).get("0").map(String::as_str) == Some("Succ")
            && m.get("onfailure-1").is_some_and(|p| restarts(p) >= 2))
        .then_some((t, m))
    })
    .await;
    assert_eq!(app_status(&t), "Running");
    assert!(
        matches!(
            statuses(&t).get("1").map(String::as_str),
            Some("Running" | "Pending")
        ),
        "{:?}",
        statuses(&t)
    );
    assert_eq!(
        phase(&m["onfailure-0"]),
        "Succeeded",
        "a Succ pod is kept while the app runs"
    );
    // Always: both containers are restarted by the kubelet; nothing is ever final.
    let (t, m) = until("always: both restarted in place", || async {
        let t = tapps(&client).get("always").await.ok()?;
        let m = pod_map(&client, "app=always").await;
        (observed(&t) && m.len() == 2 && m.values().all(|p| restarts(p) >= 2)).then_some((t, m))
    })
    .await;
    assert_eq!(app_status(&t), "Running");
    assert!(
        statuses(&t)
            .values()
            .all(|s| matches!(s.as_str(), "Running" | "Pending")),
        "{:?}",
        statuses(&t)
    );
    let pods_before: BTreeMap<String, String> =
        m.iter().map(|(n, p)| (n.clone(), uid(p))).collect();

    // Never with every instance exiting 0 → app Succ.
    create(&client, batch_tapp("allsucc", "Never", Some([0, 0]))).await;
    let t = tapp_until(&client, "allsucc", "allsucc: Succ", |t| {
        statuses(t) == expect_statuses(&[("0", "Succ"), ("1", "Succ")])
    })
    .await;
    assert_eq!(app_status(&t), "Succ");
    until("allsucc: pods deleted", || async {
        pod_map(&client, "app=allsucc")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // Killing every instance of a finished-by-kill app → Killed.
    create(&client, batch_tapp("killed", "Always", None)).await;
    tapp_until(&client, "killed", "killed: running", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
    })
    .await;
    tapps(&client)
        .patch(
            "killed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"statuses": {"0": "Killed", "1": "Killed"}}})),
        )
        .await
        .expect("kill all");
    let t = tapp_until(&client, "killed", "killed: Killed", |t| {
        statuses(t) == expect_statuses(&[("0", "Killed"), ("1", "Killed")])
    })
    .await;
    assert_eq!(app_status(&t), "Killed");

    // The Always pods were never replaced by the controller (the kubelet restarts them).
    let m = pod_map(&client, "app=always").await;
    let now: BTreeMap<String, String> = m.iter().map(|(n, p)| (n.clone(), uid(p))).collect();
    assert_eq!(now, pods_before);
}

/// Creates the two-instance `Always` TApp `name` (pods that never exit) and waits until both
/// instances are Running.
async fn create_running_service(client: &Client, name: &str) {
    create(client, batch_tapp(name, "Always", None)).await;
    tapp_until(client, name, "running", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
    })
    .await;
}

/// A completed pod of an `Always` instance (here: evicted, as the kubelet does under node
/// pressure) is migrated: deleted and created again, on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_pod_of_an_always_instance_is_migrated() {
    let (env, client, _controller) = running(2).await;
    create_running_service(&client, "svc").await;
    let before = pod_map(&client, "app=svc").await;
    let victim = &before["svc-0"];
    let node = victim
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    // Stop the node's kubelet so it does not overwrite the status we write as it would have.
    env.cluster
        .set_node_ready(&node, false)
        .await
        .expect("stop node");
    pods(&client)
        .patch_status(
            "svc-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory."}})),
        )
        .await
        .expect("evict");
    let new = until("svc-0 recreated", || async {
        let m = pod_map(&client, "app=svc").await;
        let p = m.get("svc-0")?;
        (uid(p) != uid(victim) && is_ready(p)).then(|| p.clone())
    })
    .await;
    assert_ne!(
        new.spec.as_ref().and_then(|s| s.node_name.clone()),
        Some(node),
        "rescheduled away from the unreachable node"
    );
    let t = tapp_until(&client, "svc", "running again", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
    })
    .await;
    assert_eq!(app_status(&t), "Running");
    let _ = &env.server;
}

/// A pod deleted behind the controller's back is replaced at once: the pod's watch event
/// triggers its TApp (a settled TApp is otherwise next reconciled at the idle requeue, minutes
/// later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_behind_the_controllers_back_is_replaced_at_once() {
    let (env, client, _controller) = running(1).await;
    create_running_service(&client, "gone").await;
    // Let the reconciles that follow the last status write run out (trigger debounce 100 ms,
    // expectation recheck 2 s): what this test checks is that nothing but the pod's own watch
    // event starts the next one, and idleness cannot be watched for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = uid(&pod_map(&client, "app=gone").await["gone-1"]);
    pods(&client)
        .delete("gone-1", &DeleteParams::default())
        .await
        .expect("delete pod");
    until_within("gone-1 replaced", Duration::from_secs(10), || async {
        let m = pod_map(&client, "app=gone").await;
        m.get("gone-1")
            .is_some_and(|p| uid(p) != victim)
            .then_some(())
    })
    .await;
    let _ = &env.server;
}

/// The TApp CRD as the Go original served it (apiextensions v1beta1, no schema): the API
/// server keeps whatever a client writes, wrong-typed fields included.
async fn serve_tapps_without_schema(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get("tapps.apps.tkestack.io").await.expect("TApp CRD");
    for version in &mut crd.spec.versions {
        version.schema = serde_json::from_value(json!({"openAPIV3Schema":
            {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}))
        .ok();
    }
    crds.replace("tapps.apps.tkestack.io", &PostParams::default(), &crd)
        .await
        .expect("schema-less TApp CRD");
}

/// A TApp that does not decode (`replicas` a string) is reported with a Warning Event
/// (`InvalidObject`) and the others are reconciled as usual. Without the guard the TApp list
/// fails on it, again and again, and no TApp is reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_tapp_is_reported_and_the_others_are_reconciled() {
    let env = env(1).await;
    let client = env.client.clone();
    serve_tapps_without_schema(&client).await;
    let mut bad = batch_tapp("bad", "Always", None);
    bad["spec"]["replicas"] = json!("three");
    let bad: DynamicObject = serde_json::from_value(bad).expect("object");
    Api::<DynamicObject>::default_namespaced_with(client.clone(), &ApiResource::erase::<TApp>(&()))
        .create(&PostParams::default(), &bad)
        .await
        .expect("create the undecodable TApp");
    // What an unguarded watch of TApps would do: its list fails as a whole.
    assert!(
        tapps(&client).list(&ListParams::default()).await.is_err(),
        "a typed list of TApps fails on the undecodable one"
    );

    let _controller = Controller::start(&client);
    create_running_service(&client, "good").await;
    let warning = until("the InvalidObject event on the bad TApp", || async {
        Api::<Event>::default_namespaced(client.clone())
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidObject")
                    && e.involved_object.kind.as_deref() == Some("TApp")
                    && e.involved_object.name.as_deref() == Some("bad")
            })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.message.unwrap_or_default();
    assert!(
        note.contains("\"three\""),
        "the note names the decoding error: {note}"
    );
    assert!(
        pod_map(&client, "app=bad").await.is_empty(),
        "nothing is created for the undecodable TApp"
    );
    let _ = &env.server;
}

fn claims_tapp(name: &str, policy: Option<Value>) -> Value {
    let mut t = json!({
        "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "db", "image": "postgres:16",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        }
    });
    if let Some(p) = policy {
        t["spec"]["persistentVolumeClaimRetentionPolicy"] = p;
    }
    t
}

async fn claim_uids(client: &Client, name: &str) -> BTreeMap<String, String> {
    let api: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    api.list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c.metadata.uid.clone().unwrap_or_default()))
        .filter(|(n, _)| n.starts_with(&format!("data-{name}-")))
        .collect()
}

async fn scale(client: &Client, name: &str, replicas: i32) {
    tapps(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale");
}

/// Claims `<claim>-<tapp>-<id>` are mounted by their pod and reused on scale
/// up; without a retention policy (the original) they stay on scale down and go with the
/// TApp; `whenScaled: Delete` removes the claims of removed ids, `whenDeleted: Retain` keeps
/// them after the TApp is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_claims_are_reused_and_follow_the_retention_policy() {
    let (env, client, _controller) = running(2).await;
    create(&client, claims_tapp("kept", None)).await;
    let policy = json!({"whenScaled": "Delete", "whenDeleted": "Retain"});
    create(&client, claims_tapp("pruned", Some(policy))).await;
    for name in ["kept", "pruned"] {
        tapp_until(&client, name, "running", |t| {
            statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
        })
        .await;
        let pods = pod_map(&client, &format!("app={name}")).await;
        for id in 0..2 {
            let claim = pods[&format!("{name}-{id}")]
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .find_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone());
            assert_eq!(
                claim,
                Some(format!("data-{name}-{id}")),
                "pod mounts its claim"
            );
        }
    }
    let kept_before = claim_uids(&client, "kept").await;
    assert_eq!(kept_before.len(), 2);

    // Scale down: the original keeps the claim, whenScaled=Delete removes it.
    scale(&client, "kept", 1).await;
    scale(&client, "pruned", 1).await;
    until("pod 1 of both gone, pruned's claim 1 deleted", || async {
        let gone = pod_map(&client, "app in (kept,pruned)")
            .await
            .keys()
            .all(|n| !n.ends_with("-1"));
        let pruned = claim_uids(&client, "pruned").await;
        (gone && pruned.len() == 1 && pruned.contains_key("data-pruned-0")).then_some(())
    })
    .await;
    assert_eq!(
        claim_uids(&client, "kept").await,
        kept_before,
        "kept on scale down"
    );

    // Scale up: the kept claim is reused (same uid), the pruned one is created anew.
    scale(&client, "kept", 2).await;
    scale(&client, "pruned", 2).await;
    for name in ["kept", "pruned"] {
        tapp_until(&client, name, "running again", |t| {
            statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
        })
        .await;
    }
    assert_eq!(claim_uids(&client, "kept").await, kept_before, "reused");
    assert_eq!(claim_uids(&client, "pruned").await.len(), 2);

    // Delete: the original's claims go with the TApp, whenDeleted=Retain keeps them.
    let pruned_claims = claim_uids(&client, "pruned").await;
    for name in ["kept", "pruned"] {
        tapps(&client)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    until("kept's claims collected", || async {
        claim_uids(&client, "kept").await.is_empty().then_some(())
    })
    .await;
    until("every pod gone", || async {
        pod_map(&client, "app in (kept,pruned)")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        claim_uids(&client, "pruned").await,
        pruned_claims,
        "retained"
    );
    let _ = &env.server;
}

/// `forceDeletePod`: a terminating pod on a node that stopped reporting is force-deleted (the
/// kubelet that would finish the deletion is gone) and its instance recreated; without the
/// flag the pod waits for its kubelet, as the original does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_lost_node_are_force_deleted_only_with_force_delete_pod() {
    let (env, client, _controller) = running(1).await;
    for (name, force) in [("forced", true), ("plain", false)] {
        let mut t = batch_tapp(name, "Always", None);
        t["spec"]["replicas"] = json!(1);
        t["spec"]["forceDeletePod"] = json!(force);
        create(&client, t).await;
        tapp_until(&client, name, "running", |t| {
            statuses(t) == expect_statuses(&[("0", "Running")])
        })
        .await;
    }
    let before = pod_map(&client, "app in (forced,plain)").await;
    let node = before["forced-0"]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    env.cluster
        .set_node_ready(&node, false)
        .await
        .expect("stop node");
    until("the node reported NotReady", || async {
        let n = Api::<addon_common::k8s_openapi::api::core::v1::Node>::all(client.clone())
            .get(&node)
            .await
            .ok()?;
        let ready = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status != "True").then_some(())
    })
    .await;
    for name in ["forced-0", "plain-0"] {
        pods(&client)
            .delete(name, &DeleteParams::default())
            .await
            .expect("graceful delete");
    }
    until("forced-0 force-deleted and recreated", || async {
        let m = pod_map(&client, "app=forced").await;
        let p = m.get("forced-0")?;
        (uid(p) != uid(&before["forced-0"])).then_some(())
    })
    .await;
    let plain = pod_map(&client, "app=plain").await;
    let p = &plain["plain-0"];
    assert_eq!(uid(p), uid(&before["plain-0"]), "not force-deleted");
    assert!(p.metadata.deletion_timestamp.is_some(), "still terminating");
    let _ = &env.server;
}

/// A change of container resources only is applied through the `pods/resize` subresource when
/// the cluster serves it: same pods (uids, no restart), the kubelet reports the new resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_changes_resize_pods_in_place() {
    let env = env(2).await;
    let client = env.client.clone();
    let resize_supported = controller::discover_resize(&client).await;
    assert!(resize_supported, "the simulated cluster serves pods/resize");
    let _controller = Controller::start_with(
        &client,
        Flags {
            resize_supported,
            ..Flags::default()
        },
    );
    let container = |cpu: &str| {
        json!([{"name": "app", "image": "nginx:1",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"},
                          "limits": {"cpu": cpu, "memory": "64Mi"}}}])
    };
    create(
        &client,
        json!({"apiVersion": "apps.tkestack.io/v1", "kind": "TApp", "metadata": {"name": "rs"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "rs"}},
                "spec": {"containers": container("100m")}}}}),
    )
    .await;
    tapp_until(&client, "rs", "running", |t| {
        statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
    })
    .await;
    let before = pod_map(&client, "app=rs").await;
    tapps(&client)
        .patch(
            "rs",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": container("200m")}}}}),
            ),
        )
        .await
        .expect("change resources");
    let after = until("both pods resized", || async {
        let m = pod_map(&client, "app=rs").await;
        let done = m.len() == 2
            && m.values().all(|p| {
                let reported = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("cpu"))
                    .map(|q| q.0.clone());
                reported.as_deref() == Some("200m") && is_ready(p)
            });
        done.then_some(m)
    })
    .await;
    for (name, p) in &after {
        assert_eq!(uid(p), uid(&before[name]), "{name} kept its uid");
        assert_eq!(restarts(p), 0, "{name} not restarted");
    }
    tapp_until(&client, "rs", "running after the resize", |t| {
        observed(t) && statuses(t) == expect_statuses(&[("0", "Running"), ("1", "Running")])
    })
    .await;
    let _ = &env.server;
}

// ---------------------------------------------------------------------------------------------
// 8. Reliability.

fn big_tapp(name: &str, replicas: usize, max_unavailable: i32) -> Value {
    json!({
        "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "updateStrategy": {"maxUnavailable": max_unavailable},
            "template": {
                "metadata": {"labels": {"app": name},
                             "annotations": {"sim.e2e.tkestack.io/ready-delay-ms": "50"}},
                "spec": {"containers": [{"name": "web", "image": "web:v1",
                                         "env": [{"name": "REV", "value": "1"}]}]}
            }
        }
    })
}

async fn all_running(client: &Client, name: &str, replicas: usize) -> TApp {
    tapp_until(client, name, &format!("{name}: {replicas} Running"), |t| {
        let s = statuses(t);
        s.len() == replicas && s.values().all(|v| v == "Running")
    })
    .await
}

/// Pods of `name` on `image` and ready (kubelet and gate agree).
fn on_image(m: &BTreeMap<String, Pod>, want: &str) -> usize {
    m.values()
        .filter(|p| image(p) == want && status_image(p) == want && is_ready(p))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_during_a_30_pod_rollout() {
    const N: usize = 30;
    const BUDGET: usize = 3;
    let env = env(3).await;
    let client = env.client.clone();
    let name = "big";
    let sel = "app=big";
    let mut controller = Controller::start(&client);
    create(&client, big_tapp(name, N, BUDGET as i32)).await;
    all_running(&client, name, N).await;
    let initial = pod_map(&client, sel).await;
    assert_eq!(initial.len(), N);

    let monitor = Monitor::start(&client, sel, &names(name, 0..N)).await;
    tapps(&client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:v2", "env": [{"name": "REV", "value": "1"}]}]}}}})),
        )
        .await
        .expect("roll");
    // Kill the controller at several points of the rollout and start a new one each time.
    // Some kills land right after the gate of a pod went False (mid-protocol).
    let mut kills = 0;
    for threshold in [0, 4, 9, 15, 21, 26] {
        let mid_protocol = threshold % 2 == 1;
        until(&format!("{threshold} pods rolled"), || async {
            let m = pod_map(&client, sel).await;
            let rolled = on_image(&m, "web:v2");
            let gate_false = m
                .values()
                .any(|p| condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref() == Some("False"));
            (rolled >= threshold && (!mid_protocol || gate_false || rolled == N)).then_some(())
        })
        .await;
        controller.kill();
        kills += 1;
        controller = Controller::start(&client);
    }
    let done = until("the rollout completed", || async {
        let m = pod_map(&client, sel).await;
        (on_image(&m, "web:v2") == N
            && m.values()
                .all(|p| condition(p, IN_PLACE_UPDATE_READY_CONDITION).as_deref() == Some("True")))
        .then_some(m)
    })
    .await;
    all_running(&client, name, N).await;
    assert_eq!(kills, 6);
    for (n, p) in &done {
        assert_eq!(
            uid(p),
            uid(&initial[n]),
            "{n} updated in place, not recreated"
        );
        assert_eq!(restarts(p), 1, "{n} restarted exactly once");
    }
    monitor.check(|s| {
        assert!(
            s.max_unavailable <= BUDGET,
            "{} pods unavailable at once (budget {BUDGET})",
            s.max_unavailable
        );
        assert!(s.max_unavailable >= 1, "the monitor saw the rollout");
        assert!(s.max_pods <= N, "{} pods at once", s.max_pods);
        assert_eq!(
            s.uids.len(),
            N,
            "no pod was ever replaced or duplicated: {:?}",
            s.uids.len()
        );
        assert!(s.names.iter().all(|n| names(name, 0..N).contains(n)));
    });
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_rollout_converges_under_injected_api_faults() {
    const N: usize = 12;
    const BUDGET: usize = 2;
    let env = env(3).await;
    let client = env.client.clone();
    let name = "faulty";
    let sel = "app=faulty";
    let _controller = Controller::start(&client);
    create(&client, big_tapp(name, N, BUDGET as i32)).await;
    all_running(&client, name, N).await;
    let initial = pod_map(&client, sel).await;

    let monitor = Monitor::start(&client, sel, &names(name, 0..N)).await;
    // An env change: every pod is deleted and created again, within the budget.
    tapps(&client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:v1", "env": [{"name": "REV", "value": "2"}]}]}}}})),
        )
        .await
        .expect("roll");
    let faults = env.server.faults();
    let recreated = |m: &BTreeMap<String, Pod>| {
        m.iter()
            .filter(|(n, p)| initial.get(*n).is_some_and(|i| uid(i) != uid(p)) && is_ready(p))
            .count()
    };
    for (step, threshold) in [1usize, 3, 5, 7, 9].into_iter().enumerate() {
        until(&format!("{threshold} pods recreated"), || async {
            (recreated(&pod_map(&client, sel).await) >= threshold).then_some(())
        })
        .await;
        match step {
            0 => faults.fail_writes("pods", 4, 500),
            1 => faults.fail_writes("tapps.apps.tkestack.io", 3, 409),
            2 => faults.close_watches(),
            3 => faults.compact(),
            _ => {
                faults.fail_writes("pods", 2, 409);
                faults.compact();
            }
        }
    }
    let done = until("the rollout completed", || async {
        let m = pod_map(&client, sel).await;
        (m.len() == N && recreated(&m) == N).then_some(m)
    })
    .await;
    all_running(&client, name, N).await;
    for p in done.values() {
        let env_rev = p
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].env.clone())
            .and_then(|e| e.into_iter().next())
            .and_then(|e| e.value);
        assert_eq!(env_rev.as_deref(), Some("2"));
    }
    monitor.check(|s| {
        assert!(
            s.max_unavailable <= BUDGET,
            "{} pods unavailable at once (budget {BUDGET})",
            s.max_unavailable
        );
        assert!(s.max_pods <= N, "{} pods at once", s.max_pods);
        assert!(s.names.iter().all(|n| names(name, 0..N).contains(n)));
        assert_eq!(s.uids.len(), 2 * N, "each pod recreated exactly once");
    });
    drop(monitor);

    // Right after compactions every watch fails with 410; the controller relists and acts
    // within one watch backoff (~1-2 s). Its Controller used to feed the errors of all its
    // watches into kube-runtime's single trigger backoff, which paused every watch and
    // escalated (0.8 s, 1.6 s, 3.2 s, …): the rollout above stalled ~9 s per compaction.
    for _ in 0..3 {
        faults.compact();
        // Each compaction lands after the watches restarted from the previous one's relist.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tapps(&client)
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": N + 2}})),
        )
        .await
        .expect("scale");
    until_within(
        "the new instances created soon after a compaction",
        Duration::from_secs(5),
        || async {
            let m = pod_map(&client, sel).await;
            (m.contains_key(&format!("{name}-{N}")) && m.contains_key(&format!("{name}-{}", N + 1)))
                .then_some(())
        },
    )
    .await;
}
