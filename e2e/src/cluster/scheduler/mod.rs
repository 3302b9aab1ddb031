//! The simulated kube-scheduler: watches pods and nodes through the API, runs the filters and
//! scores of [`predicates`], calls the HTTP [`extender`]s exactly as kube-scheduler does, and
//! binds through the `pods/binding` subresource (or the extender owning `bindVerb`).
//! Unschedulable pods get `PodScheduled=False` / `Unschedulable` and are retried when pods or
//! nodes change (and every `retry_interval`).

pub mod config;
pub mod extender;
pub mod predicates;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::SchedulerConfig;
pub use extender::{Extender, ExtenderConfig};
use predicates::NodeInfo;

use crate::cluster::util;

const COMPONENT: &str = "default-scheduler";

type Assumed = Arc<std::sync::Mutex<HashMap<String, (String, Pod)>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last failed attempt of a pod: it is retried when the cluster changed in a way that may
/// help (a node changed, a pod went away or finished), the pod's spec changed, or after the
/// retry interval — not on every unrelated pod update.
struct Attempt {
    generation: u64,
    pod_generation: Option<i64>,
    at: Instant,
}

/// Outcome of one scheduling attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Bind to this node.
    Node(String),
    /// No node fits: the FitError message.
    Unschedulable(String),
    /// An extender failed (not ignorable).
    Error(String),
}

/// A count and the total time of one kind of operation.
#[derive(Debug, Default)]
pub struct Timer {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Timer {
    fn observe(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (count, total time).
    pub fn get(&self) -> (u64, std::time::Duration) {
        (
            self.count.load(Ordering::Relaxed),
            std::time::Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }

    /// Mean time per operation.
    pub fn mean(&self) -> std::time::Duration {
        let (n, total) = self.get();
        total / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
    }
}

/// Where the scheduler's time goes (for benchmarks): cumulative since start.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Scheduling cycles (one per pod attempt: filters, extenders, scores).
    pub cycles: Timer,
    /// Extender filter calls, as the scheduler sees them (HTTP round trip included).
    pub extender_filter: Timer,
    /// Extender prioritize calls.
    pub extender_prioritize: Timer,
    /// Binding cycles through an extender's bind verb (run in the background).
    pub extender_bind: Timer,
    /// Binding cycles through `pods/binding` (run in the background).
    pub api_bind: Timer,
}

/// The scheduler.
pub struct Scheduler {
    client: Client,
    names: BTreeSet<String>,
    extenders: Vec<Extender>,
    ignored: BTreeSet<String>,
    retry: std::time::Duration,
    stats: Arc<SchedulerStats>,
}

/// Builds node infos from nodes and the pods bound (or assumed) to them.
pub fn node_infos<'a>(
    nodes: &[Arc<Node>],
    pods: impl Iterator<Item = (&'a str, &'a Pod)>,
) -> BTreeMap<String, NodeInfo> {
    node_infos_cached(nodes, pods, &mut HashMap::new())
}

/// Pod uid → (resourceVersion, cost): derived costs reused across scheduling passes.
pub type CostCache = HashMap<String, (String, Arc<predicates::PodCost>)>;

/// [`node_infos`] reusing (and refreshing) the costs in `cache`.
pub fn node_infos_cached<'a>(
    nodes: &[Arc<Node>],
    pods: impl Iterator<Item = (&'a str, &'a Pod)>,
    cache: &mut CostCache,
) -> BTreeMap<String, NodeInfo> {
    let mut infos: BTreeMap<String, NodeInfo> = nodes
        .iter()
        .map(|n| (n.name_any(), NodeInfo::new((**n).clone())))
        .collect();
    for (node, pod) in pods {
        if util::is_terminal(pod) {
            continue;
        }
        let Some(info) = infos.get_mut(node) else {
            continue;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let rv = pod.metadata.resource_version.clone().unwrap_or_default();
        let cost = match cache.get(&uid) {
            Some((r, c)) if *r == rv && !uid.is_empty() => c.clone(),
            _ => {
                let c = Arc::new(predicates::PodCost::of(pod));
                if !uid.is_empty() {
                    cache.insert(uid, (rv, c.clone()));
                }
                c
            }
        };
        info.add_cost(&cost);
    }
    infos
}

impl Scheduler {
    /// A scheduler from its configuration.
    pub fn new(client: Client, cfg: &SchedulerConfig) -> Result<Self, String> {
        extender::validate(&cfg.extenders)?;
        let extenders = cfg
            .extenders
            .iter()
            .cloned()
            .map(Extender::new)
            .collect::<Result<Vec<_>, _>>()?;
        let ignored = cfg
            .extenders
            .iter()
            .flat_map(|e| e.managed_resources.iter())
            .filter(|r| r.ignored_by_scheduler)
            .map(|r| r.name.clone())
            .collect();
        Ok(Scheduler {
            client,
            names: cfg.scheduler_names.iter().cloned().collect(),
            extenders,
            ignored,
            retry: cfg.retry_interval,
            stats: Arc::default(),
        })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// Runs the filters, extenders and scores for one pod.
    pub async fn decide(&self, pod: &Pod, infos: &BTreeMap<String, NodeInfo>) -> Decision {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        for info in infos.values() {
            match predicates::filter(pod, info, &self.ignored).and_then(|()| {
                predicates::inter_pod_affinity(pod, info, infos).map_err(|r| vec![r])
            }) {
                Ok(()) => feasible.push(info),
                Err(rs) => {
                    for r in rs {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        for ext in self
            .extenders
            .iter()
            .filter(|e| e.is_filter() && e.is_interested(pod))
        {
            if feasible.is_empty() {
                break;
            }
            let nodes: Vec<Node> = feasible.iter().map(|i| i.node.clone()).collect();
            let start = Instant::now();
            let result = ext.filter(pod, &nodes).await;
            self.stats.extender_filter.observe(start);
            match result {
                Ok(out) => {
                    for r in out.failed.values().chain(out.failed_unresolvable.values()) {
                        *reasons.entry(r.clone()).or_default() += 1;
                    }
                    let keep: BTreeSet<&str> = out.nodes.iter().map(String::as_str).collect();
                    let unexplained = feasible
                        .iter()
                        .map(|i| i.name())
                        .filter(|n| {
                            !keep.contains(n)
                                && !out.failed.contains_key(*n)
                                && !out.failed_unresolvable.contains_key(*n)
                        })
                        .count();
                    feasible.retain(|i| keep.contains(i.name()));
                    if unexplained > 0 {
                        *reasons
                            .entry(format!(
                                "node(s) filtered by extender {}",
                                ext.config.url_prefix
                            ))
                            .or_default() += unexplained;
                    }
                }
                Err(e) if ext.config.ignorable => {
                    tracing::warn!(extender = %ext.config.url_prefix, error = %e, "skipping ignorable extender");
                }
                Err(e) => return Decision::Error(e),
            }
        }
        if feasible.is_empty() {
            return Decision::Unschedulable(predicates::unschedulable_message(
                infos.len(),
                &reasons,
            ));
        }
        if feasible.len() == 1 {
            return Decision::Node(feasible[0].name().to_string());
        }
        let mut scores: BTreeMap<String, i64> = feasible
            .iter()
            .map(|i| (i.name().to_string(), predicates::score(pod, i)))
            .collect();
        for ext in self
            .extenders
            .iter()
            .filter(|e| e.is_prioritizer() && e.is_interested(pod))
        {
            let nodes: Vec<Node> = feasible.iter().map(|i| i.node.clone()).collect();
            let start = Instant::now();
            let result = ext.prioritize(pod, &nodes).await;
            self.stats.extender_prioritize.observe(start);
            match result {
                Ok(prio) => {
                    for (host, s) in prio {
                        if let Some(total) = scores.get_mut(&host) {
                            *total += s * extender::EXTENDER_SCORE_SCALE;
                        }
                    }
                }
                // upstream ignores prioritize errors
                Err(e) => {
                    tracing::warn!(extender = %ext.config.url_prefix, error = %e, "prioritize failed")
                }
            }
        }
        let best = scores
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(n, _)| n.clone());
        best.map_or_else(
            || Decision::Unschedulable(predicates::unschedulable_message(infos.len(), &reasons)),
            Decision::Node,
        )
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), String> {
        let start = Instant::now();
        if let Some(ext) = self
            .extenders
            .iter()
            .find(|e| e.is_binder() && e.is_interested(pod))
        {
            let result = ext.bind(pod, node).await;
            self.stats.extender_bind.observe(start);
            return result;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = Binding {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.into()),
                ..Default::default()
            },
        };
        let result = api
            .create_subresource::<Binding, serde_json::Value>(
                "binding",
                &pod.name_any(),
                &PostParams::default(),
                &binding,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        self.stats.api_bind.observe(start);
        result
    }

    async fn mark_unschedulable(&self, pod: &Pod, reason: &str, message: &str) {
        let mut conds: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if conds.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        }) {
            return;
        }
        conds.retain(|c| c.type_ != "PodScheduled");
        conds.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(util::now()),
            last_probe_time: None,
            observed_generation: None,
        });
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"resourceVersion": pod.resource_version()}, "status": {"conditions": conds}});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => util::record_event(
                &self.client,
                COMPONENT,
                pod,
                "Warning",
                "FailedScheduling",
                message,
            ),
            Err(e) => tracing::debug!(pod = %pod.name_any(), error = %e, "marking unschedulable"),
        }
    }

    /// Runs until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let notify = Arc::new(Notify::new());
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (nodes, node_writer) = reflector::store::<Node>();
        let cluster_gen = Arc::new(AtomicU64::new(0));
        let (g1, g2) = (cluster_gen.clone(), cluster_gen.clone());
        let n1 = notify.clone();
        let pod_stream = watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(pod_writer)
        .for_each(move |ev| {
            // deletions and finished pods free resources: unschedulable pods are worth a retry
            if let Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) = &ev {
                g1.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(watcher::Event::Apply(p)) = &ev
                && util::is_terminal(p)
            {
                g1.fetch_add(1, Ordering::Relaxed);
            }
            n1.notify_one();
            futures::future::ready(())
        });
        let n2 = notify.clone();
        let node_stream = watcher(
            Api::<Node>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(node_writer)
        .for_each(move |_| {
            g2.fetch_add(1, Ordering::Relaxed);
            n2.notify_one();
            futures::future::ready(())
        });
        let c1 = cancel.clone();
        tokio::spawn(async move {
            tokio::select! { _ = pod_stream => {}, _ = c1.cancelled() => {} }
        });
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::select! { _ = node_stream => {}, _ = c2.cancelled() => {} }
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = async { tokio::join!(pods.wait_until_ready(), nodes.wait_until_ready()) } => { let _ = r; }
        }
        // uid -> (node, pod) bound by us but not yet seen bound in the cache
        let assumed: Assumed = Arc::default();
        let mut backoff: HashMap<String, Attempt> = HashMap::new();
        let mut costs = CostCache::new();
        loop {
            let generation = cluster_gen.load(Ordering::Relaxed);
            self.schedule_pending(
                &pods,
                &nodes,
                &assumed,
                &mut backoff,
                generation,
                &mut costs,
            )
            .await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = notify.notified() => {
                    // let bursts of events coalesce
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(self.retry) => {}
            }
        }
    }

    async fn schedule_pending(
        self: &Arc<Self>,
        pods: &Store<Pod>,
        nodes: &Store<Node>,
        assumed: &Assumed,
        backoff: &mut HashMap<String, Attempt>,
        generation: u64,
        costs: &mut CostCache,
    ) {
        let all = pods.state();
        let by_uid: HashMap<String, &Arc<Pod>> =
            all.iter().filter_map(|p| p.uid().map(|u| (u, p))).collect();
        // in-flight bindings (a snapshot: no lock is held across awaits)
        let assumed_now: HashMap<String, (String, Pod)> = {
            let mut g = lock(assumed);
            g.retain(|uid, _| {
                by_uid
                    .get(uid)
                    .is_some_and(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
            });
            g.clone()
        };
        let mut pending: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| {
                let spec = p.spec.as_ref();
                spec.is_some_and(|s| s.node_name.is_none())
                    && self.names.contains(
                        spec.and_then(|s| s.scheduler_name.as_deref())
                            .unwrap_or("default-scheduler"),
                    )
                    && p.metadata.deletion_timestamp.is_none()
                    && !util::is_terminal(p)
                    && !p.uid().is_some_and(|u| assumed_now.contains_key(&u))
                    && !p.uid().and_then(|u| backoff.get(&u)).is_some_and(|a| {
                        a.generation == generation
                            && a.pod_generation == p.metadata.generation
                            && a.at.elapsed() < self.retry
                    })
            })
            .collect();
        backoff.retain(|uid, _| by_uid.contains_key(uid));
        if pending.is_empty() {
            return;
        }
        pending.sort_by_key(|p| {
            let prio = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            (
                std::cmp::Reverse(prio),
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond()),
                p.name_any(),
            )
        });
        let node_list = nodes.state();
        let bound = all.iter().filter_map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .map(|n| (n, p.as_ref()))
        });
        // built once per pass and updated as pods are bound
        let mut infos = node_infos_cached(
            &node_list,
            bound.chain(assumed_now.values().map(|(n, p)| (n.as_str(), p))),
            costs,
        );
        costs.retain(|uid, _| by_uid.contains_key(uid));
        for pod in pending {
            let attempt = Attempt {
                generation,
                pod_generation: pod.metadata.generation,
                at: Instant::now(),
            };
            if let Some(uid) = pod.uid() {
                backoff.insert(uid, attempt);
            }
            let start = Instant::now();
            let decision = self.decide(pod, &infos).await;
            self.stats.cycles.observe(start);
            match decision {
                Decision::Node(node) => {
                    // assume, then bind in the background (upstream's binding cycle)
                    if let Some(info) = infos.get_mut(&node) {
                        info.add_pod(pod);
                    }
                    let Some(uid) = pod.uid() else { continue };
                    backoff.remove(&uid);
                    lock(assumed).insert(uid.clone(), (node.clone(), (**pod).clone()));
                    let me = self.clone();
                    let pod = pod.clone();
                    let assumed = assumed.clone();
                    tokio::spawn(async move {
                        match me.bind(&pod, &node).await {
                            Ok(()) => {
                                tracing::debug!(pod = %pod.name_any(), %node, "bound");
                                let msg = format!(
                                    "Successfully assigned {}/{} to {node}",
                                    pod.namespace().unwrap_or_default(),
                                    pod.name_any()
                                );
                                util::record_event(
                                    &me.client,
                                    COMPONENT,
                                    pod.as_ref(),
                                    "Normal",
                                    "Scheduled",
                                    &msg,
                                );
                            }
                            Err(e) => {
                                tracing::info!(pod = %pod.name_any(), %node, error = %e, "binding failed");
                                lock(&assumed).remove(&uid);
                                me.mark_unschedulable(
                                    &pod,
                                    "SchedulerError",
                                    &format!("binding rejected: {e}"),
                                )
                                .await;
                            }
                        }
                    });
                }
                Decision::Unschedulable(msg) => {
                    self.mark_unschedulable(pod, "Unschedulable", &msg).await
                }
                Decision::Error(e) => self.mark_unschedulable(pod, "SchedulerError", &e).await,
            }
        }
    }
}
