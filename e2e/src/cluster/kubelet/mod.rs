//! Simulated kubelets. One controller serves every simulated node: it watches pods through the
//! API, runs each bound pod's [`lifecycle`] state machine and writes `pods/status` (optimistic
//! concurrency, so conditions written by others — readiness gates — are never lost), finishes
//! graceful deletions, and renews each node's Lease. A node made NotReady stops all of this
//! for its pods, as a dead kubelet would.
//!
//! Room for later work: the runtime of a pod ([`lifecycle::PodRuntime`]) is where a
//! device-plugin manager's `Allocate`/`PreStartContainer` would run before a container
//! starts, and [`node::NodeSpec::kubelet_port`] is the endpoint a pods/log / pods/exec proxy
//! would target.

pub mod lifecycle;
pub mod node;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use lifecycle::PodRuntime;
use node::{Cidr, IpPool, NodeResources, NodeSpec};

use crate::cluster::util;
use addon_common::watch as relist;

/// How long a container held by a failed hook waits before the hook is retried.
const HOLD_RETRY_MS: i64 = 500;

/// Extension point of the simulated kubelets (e.g. a device-plugin manager for gpu-manager,
/// whose `Allocate`/`PreStartContainer` run here).
pub trait KubeletHooks: Send + Sync + std::fmt::Debug + 'static {
    /// Called before container `container` of `pod` starts on `node` (each start, restarts
    /// included). An error holds the container in `CreateContainerError` with that message;
    /// the start is retried every 500 ms.
    fn pre_start<'a>(
        &'a self,
        node: &'a str,
        pod: &'a Pod,
        container: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// A simulated node's kubelet state.
#[derive(Debug)]
pub struct SimNode {
    /// Its shape.
    pub spec: NodeSpec,
    /// InternalIP.
    pub address: Ipv4Addr,
    /// Pod CIDR.
    pub pod_cidr: Cidr,
    /// Whether the kubelet is alive (posting status, running pods).
    pub ready: bool,
    /// Capacity and allocatable as the kubelet reports them now: its own resources from the
    /// spec, extended resources as last written through `nodes/status` (or
    /// [`Kubelets::set_extended_resource`]).
    pub resources: NodeResources,
    pool: IpPool,
}

struct RtEntry {
    rt: PodRuntime,
    node: String,
    last_written: Option<(Value, String)>,
}

/// The kubelets of all simulated nodes.
pub struct Kubelets {
    client: Client,
    nodes: Mutex<BTreeMap<String, SimNode>>,
    runtimes: Mutex<HashMap<String, RtEntry>>,
    resync: mpsc::UnboundedSender<()>,
    /// Record kubelet events (Pulled, Created, Started, Killing, BackOff).
    events: bool,
    hooks: Option<Arc<dyn KubeletHooks>>,
    resync_rx: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

/// A 404 for something that is not simulated.
fn not_simulated(msg: &str) -> kube::Error {
    sim_error(msg, "NotFound", 404)
}

fn sim_error(msg: &str, reason: &str, code: u16) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(msg, reason).with_code(code),
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops nulls, empty objects and empty arrays so statuses compare equal however the server
/// normalizes them.
fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), prune(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

/// Kubelet errors.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// API failure.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Serialization.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Kubelets {
    /// No nodes yet. `events`: record kubelet events; `hooks`: called before containers start.
    pub fn new(client: Client, events: bool, hooks: Option<Arc<dyn KubeletHooks>>) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Kubelets {
            client,
            nodes: Mutex::new(BTreeMap::new()),
            runtimes: Mutex::new(HashMap::new()),
            resync: tx,
            events,
            hooks,
            resync_rx: Mutex::new(Some(rx)),
        })
    }

    /// Registers a node (creates the Node object) and starts serving it.
    pub async fn add_node(
        &self,
        spec: NodeSpec,
        address: Ipv4Addr,
        pod_cidr: Cidr,
    ) -> Result<(), kube::Error> {
        let obj = node::node_object(&spec, address, &pod_cidr);
        node::register(&self.client, &obj).await?;
        let name = spec.name.clone();
        lock(&self.nodes).insert(
            name,
            SimNode {
                resources: NodeResources::of(&spec),
                spec,
                address,
                pod_cidr,
                ready: true,
                pool: IpPool::new(pod_cidr),
            },
        );
        let _ = self.resync.send(());
        Ok(())
    }

    /// Stops serving a node, deletes its Node object and force-deletes its pods (as the pod GC
    /// does for pods bound to a node that no longer exists).
    pub async fn remove_node(&self, name: &str) -> Result<(), kube::Error> {
        lock(&self.nodes).remove(name);
        let api: Api<Node> = Api::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_code(&e, 404) => {}
            Err(e) => return Err(e),
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        for p in pods
            .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await?
            .items
        {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
            let _ = api
                .delete(
                    &p.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
        Ok(())
    }

    /// Makes a node's kubelet stop (`false`: NotReady/unreachable) or resume (`true`).
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> Result<(), kube::Error> {
        let known = {
            let mut nodes = lock(&self.nodes);
            nodes.get_mut(name).map(|n| n.ready = ready).is_some()
        };
        if !known {
            return Err(not_simulated(&format!("node {name} is not simulated")));
        }
        node::set_reachable(&self.client, name, ready).await?;
        if ready {
            let _ = self.resync.send(());
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the extended resource `resource` of node `name` in its
    /// capacity and allocatable, as a device plugin manager does through `nodes/status`; the
    /// kubelet keeps reporting it on later status updates.
    pub async fn set_extended_resource(
        &self,
        name: &str,
        resource: &str,
        capacity: Option<&str>,
        allocatable: Option<&str>,
    ) -> Result<(), kube::Error> {
        if !node::is_extended(resource) {
            return Err(sim_error(
                &format!(
                    "{resource} is not an extended resource (a domain-prefixed name outside kubernetes.io)"
                ),
                "BadRequest",
                400,
            ));
        }
        {
            let mut nodes = lock(&self.nodes);
            let n = nodes
                .get_mut(name)
                .ok_or_else(|| not_simulated(&format!("node {name} is not simulated")))?;
            for (map, v) in [
                (&mut n.resources.capacity, capacity),
                (&mut n.resources.allocatable, allocatable),
            ] {
                match v {
                    Some(q) => map.insert(resource.to_string(), q.to_string()),
                    None => map.remove(resource),
                };
            }
        }
        let patch = serde_json::json!({"status": {
            "capacity": {resource: capacity},
            "allocatable": {resource: allocatable},
        }});
        Api::<Node>::all(self.client.clone())
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// The capacity and allocatable node `name`'s kubelet reports now.
    pub fn node_resources(&self, name: &str) -> Option<NodeResources> {
        lock(&self.nodes).get(name).map(|n| n.resources.clone())
    }

    /// The periodic node status update of every live node: extended resources written through
    /// `nodes/status` are taken into the kubelet's state (and so kept), the kubelet's own
    /// resources are written back when someone changed them.
    pub async fn sync_node_status(&self) {
        let live = self.live_nodes();
        let api: Api<Node> = Api::all(self.client.clone());
        for name in live {
            let Ok(Some(obj)) = api.get_opt(&name).await else {
                continue;
            };
            let patch = {
                let mut nodes = lock(&self.nodes);
                let Some(n) = nodes.get_mut(&name) else {
                    continue;
                };
                n.resources.adopt_extended(obj.status.as_ref());
                n.resources.native_patch(obj.status.as_ref())
            };
            let Some(mut patch) = patch else { continue };
            // optimistic concurrency: a status written meanwhile is seen on the next update
            patch["metadata"] = serde_json::json!({"resourceVersion": obj.resource_version()});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(node = %name, error = %e, "updating node status");
            }
        }
    }

    /// Names and readiness of the simulated nodes.
    pub fn nodes(&self) -> Vec<(String, bool)> {
        lock(&self.nodes)
            .iter()
            .map(|(k, v)| (k.clone(), v.ready))
            .collect()
    }

    /// Names of the nodes whose kubelet is alive.
    fn live_nodes(&self) -> Vec<String> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, n)| n.ready)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Renews the Lease of every live node.
    pub async fn renew_leases(&self, duration_secs: i32) {
        let live = self.live_nodes();
        let api: Api<Node> = Api::all(self.client.clone());
        for name in live {
            let uid = api
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.uid());
            if let Err(e) =
                node::renew_lease(&self.client, &name, uid.as_deref(), duration_secs).await
            {
                tracing::debug!(node = %name, error = %e, "renewing lease");
            }
        }
    }

    fn forget(&self, uid: &str) {
        if let Some(e) = lock(&self.runtimes).remove(uid)
            && let Some(n) = lock(&self.nodes).get_mut(&e.node)
        {
            n.pool.release(uid);
        }
    }

    /// Admits a pod onto its node: allocates its IP. None when the node is not ours or dead.
    fn admit(&self, pod: &Pod, node_name: &str, now: i64) -> Option<()> {
        let uid = pod.uid()?;
        if lock(&self.runtimes).contains_key(&uid) {
            return Some(());
        }
        let mut nodes = lock(&self.nodes);
        let n = nodes.get_mut(node_name)?;
        let host_ip = n.address.to_string();
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let existing = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let ip = if host_network {
            host_ip.clone()
        } else if let Some(ip) = lifecycle::galaxy_ip(pod) {
            ip
        } else if let Some(ip) = existing.filter(|ip| n.pool.reserve(ip, &uid)) {
            ip
        } else {
            n.pool
                .allocate(&uid)
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        drop(nodes);
        let reported = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| !c.is_empty());
        let rt = if reported {
            PodRuntime::adopt(pod, now, ip, host_ip)
        } else {
            PodRuntime::new(pod, now, ip, host_ip)
        };
        lock(&self.runtimes).insert(
            uid,
            RtEntry {
                rt,
                node: node_name.to_string(),
                last_written: None,
            },
        );
        Some(())
    }

    async fn reconcile(pod: Arc<Pod>, me: Arc<Kubelets>) -> Result<Action, KubeletError> {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Ok(Action::await_change());
        };
        let live = lock(&me.nodes).get(&node_name).map(|n| n.ready);
        if live != Some(true) {
            return Ok(Action::await_change());
        }
        let Some(uid) = pod.uid() else {
            return Ok(Action::await_change());
        };
        let now = util::now_ms();
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(me.client.clone(), &ns);
        // A pod already finished before we knew it (e.g. after a restart): only deletion matters.
        let known = lock(&me.runtimes).contains_key(&uid);
        if !known && util::is_terminal(&pod) {
            if pod.metadata.deletion_timestamp.is_some() {
                me.finish_delete(&api, &pod, &uid).await?;
            }
            return Ok(Action::await_change());
        }
        if me.admit(&pod, &node_name, now).is_none() {
            return Ok(Action::await_change());
        }
        let held = me.run_hooks(&pod, &uid, &node_name, now).await;
        let (status, next, stopped) = {
            let mut rts = lock(&me.runtimes);
            let Some(entry) = rts.get_mut(&uid) else {
                return Ok(Action::await_change());
            };
            let before = me.events.then(|| entry.rt.clone());
            let next = lifecycle::advance(&pod, &mut entry.rt, now);
            if let Some(before) = before {
                let evs = lifecycle::events(&before, &entry.rt, &pod.name_any());
                for (ty, reason, msg) in evs {
                    util::record_event(&me.client, "kubelet", pod.as_ref(), ty, reason, &msg);
                }
            }
            let status = lifecycle::render_status(&pod, &entry.rt, now);
            let stopped = pod.metadata.deletion_timestamp.is_some() && entry.rt.all_stopped();
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                // the sandbox is gone: its IP can be reused (the status keeps showing it)
                let node = entry.node.clone();
                if let Some(n) = lock(&me.nodes).get_mut(&node) {
                    n.pool.release(&uid);
                }
            }
            let new = prune(&serde_json::to_value(&status)?);
            let old = prune(&serde_json::to_value(&pod.status)?);
            let rv = pod.resource_version().unwrap_or_default();
            let skip = new == old
                || entry
                    .last_written
                    .as_ref()
                    .is_some_and(|(v, r)| *v == new && *r == rv);
            (if skip { None } else { Some((status, new)) }, next, stopped)
        };
        if let Some((status, new)) = status {
            let mut body = (*pod).clone();
            body.status = Some(status);
            match api
                .replace_status(&pod.name_any(), &PostParams::default(), &body)
                .await
            {
                Ok(written) => {
                    if let Some(e) = lock(&me.runtimes).get_mut(&uid) {
                        e.last_written =
                            Some((new, written.resource_version().unwrap_or_default()));
                    }
                }
                Err(e) if util::is_code(&e, 409) => {
                    return Ok(Action::requeue(Duration::from_millis(20)));
                }
                Err(e) if util::is_code(&e, 404) => {
                    me.forget(&uid);
                    return Ok(Action::await_change());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if stopped {
            me.finish_delete(&api, &pod, &uid).await?;
            return Ok(Action::await_change());
        }
        let next = if held {
            Some(next.map_or(now + HOLD_RETRY_MS, |t| t.min(now + HOLD_RETRY_MS)))
        } else {
            next
        };
        Ok(match next {
            Some(t) => Action::requeue(Duration::from_millis(
                u64::try_from((t - now).max(1)).unwrap_or(1),
            )),
            None => Action::await_change(),
        })
    }

    /// Runs the pre-start hooks of the containers about to start; marks failures as held.
    /// Returns whether a container is held (to retry soon).
    async fn run_hooks(&self, pod: &Pod, uid: &str, node: &str, now: i64) -> bool {
        let Some(hooks) = self.hooks.clone() else {
            return false;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let starting = match lock(&self.runtimes).get(uid) {
            Some(e) => lifecycle::starting(pod, &e.rt, now),
            None => return false,
        };
        let mut results = Vec::new();
        for name in starting {
            let r = hooks.pre_start(node, pod, &name).await;
            results.push((name, r.err()));
        }
        let mut rts = lock(&self.runtimes);
        let Some(e) = rts.get_mut(uid) else {
            return false;
        };
        for (name, err) in results {
            if let Some(c) =
                e.rt.init
                    .iter_mut()
                    .chain(e.rt.containers.iter_mut())
                    .find(|c| c.name == name)
            {
                c.hold_until = if err.is_some() {
                    now + HOLD_RETRY_MS
                } else {
                    0
                };
                c.hold = err;
            }
        }
        e.rt.init
            .iter()
            .chain(&e.rt.containers)
            .any(|c| c.hold.is_some())
    }

    async fn finish_delete(
        &self,
        api: &Api<Pod>,
        pod: &Pod,
        uid: &str,
    ) -> Result<(), KubeletError> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if util::is_code(&e, 404) || util::is_code(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        self.forget(uid);
        Ok(())
    }

    /// Runs the pod controller and the lease loop until `cancel` fires.
    pub async fn run(self: Arc<Self>, lease_interval: Duration, cancel: CancellationToken) {
        let rx = lock(&self.resync_rx).take();
        let Some(rx) = rx else { return };
        let resync =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
            );
        let pods: Api<Pod> = Api::all(self.client.clone());
        let (store, writer) = reflector::store::<Pod>();
        let (relists, relisted) = relist::Relists::channel();
        let events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        let controller = Controller::for_stream(relist::triggers(events, relists), store.clone())
            .reconcile_all_on(relisted);
        let c2 = cancel.clone();
        let me = self.clone();
        let leases = tokio::spawn(async move {
            let secs = i32::try_from(lease_interval.as_secs().max(1) * 4).unwrap_or(40);
            loop {
                me.renew_leases(secs).await;
                me.sync_node_status().await;
                // drop runtimes of pods that are gone
                let live: std::collections::HashSet<String> =
                    store.state().iter().filter_map(|p| p.uid()).collect();
                let gone: Vec<String> = lock(&me.runtimes)
                    .keys()
                    .filter(|u| !live.contains(*u))
                    .cloned()
                    .collect();
                for u in gone {
                    me.forget(&u);
                }
                tokio::select! {
                    _ = c2.cancelled() => return,
                    _ = tokio::time::sleep(lease_interval) => {}
                }
            }
        });
        let c3 = cancel.clone();
        controller
            .reconcile_all_on(resync)
            .graceful_shutdown_on(async move { c3.cancelled().await })
            .run(
                Kubelets::reconcile,
                |_pod, err, _ctx| {
                    tracing::debug!(error = %err, "kubelet reconcile failed");
                    Action::requeue(Duration::from_millis(200))
                },
                self,
            )
            .for_each(|_| futures::future::ready(()))
            .await;
        leases.abort();
    }
}
