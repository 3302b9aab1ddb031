//! The thin executor: watches TApps and their pods/claims (and nodes), calls [`plan`] and
//! performs the plan with idempotent API calls. Testable with any `kube::Client`
//! (`Client::new(tower service, "default")`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_common::api::tapp::TApp;
use addon_common::backoff::{Backoff, object_key};
use addon_common::events::{EventRecorder, EventType};
use addon_common::guard::{self, DeserializeGuard};
use addon_common::k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeStatus, ObjectReference, PersistentVolumeClaim, Pod,
};
use addon_common::kube::api::{
    DeleteParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use addon_common::kube::runtime::controller::{Action, Controller};
use addon_common::kube::runtime::reflector::{self, ObjectRef, Store};
use addon_common::kube::runtime::{WatchStreamExt, watcher};
use addon_common::kube::{self, Api, Client, Resource, ResourceExt};
use addon_common::runtime::Deps;
use addon_common::watch::{self, Relists};
use addon_common::writes::{Writer, Written};
use addon_common::{admin::Health, k8s_openapi};
use chrono::Utc;
use futures::{Stream, StreamExt, future::join_all};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::expectations::Expectations;
use crate::hash::HashMemo;
use crate::index::OwnerIndex;
use crate::metrics::Metrics;
use crate::plan::{self, DeleteReason, Flags, Observed, Plan, PodUpdate, UpdateKind, status_patch};
use crate::pods::PodView;
use crate::slim::SlimPod;
use crate::{Error, Result};

/// Component name: field manager, event reporter, lease name.
pub const COMPONENT: &str = "tapp-controller";
/// Readiness check name.
pub const CACHE_CHECK: &str = "tapp-controller-cache";
/// Requeue when nothing is due (safety net, like the original's 30 s resync but cheaper).
pub const IDLE_REQUEUE: Duration = Duration::from_secs(300);
/// How long a write of ours is waited for in the watch cache at most (a lost watch event
/// delays a TApp by this much, never more).
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Triggers of one TApp closer together than this are merged into one reconcile (its pods
/// change together: without it a 10-pod rollout step costs ~10 reconciles).
const TRIGGER_DEBOUNCE: Duration = Duration::from_millis(100);
/// A TApp waiting for the cache to show our writes is looked at again after this long, if no
/// watch event triggered it before.
const EXPECTATION_RECHECK: Duration = Duration::from_secs(2);

/// The TApp as watched: an object that does not decode (a wrong-typed field written through
/// the Go original's schema-less v1beta1 CRD) arrives with its metadata and the error.
pub type GuardedTApp = DeserializeGuard<TApp>;

/// Claims as cached: metadata only (the planner reads names, labels, owners and deletion).
pub type ClaimMeta = PartialObjectMeta<PersistentVolumeClaim>;

/// Executor configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Decision flags (resize support is discovered by [`discover_resize`] when not forced).
    pub flags: Flags,
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Watch nodes to force-delete pods of lost nodes.
    pub watch_nodes: bool,
    /// TApps reconciled concurrently (0: the default, 5).
    pub workers: u16,
}

/// Shared state of the reconcilers.
pub struct Context {
    client: Client,
    recorder: EventRecorder,
    metrics: Metrics,
    backoff: Backoff,
    flags: Flags,
    pods: OwnerIndex,
    pvcs: Store<ClaimMeta>,
    nodes: Option<Store<Node>>,
    /// Our writes the caches have not shown yet, per TApp.
    expectations: Expectations,
    /// Warnings already published (TApp key, message).
    warned: Mutex<BTreeSet<(String, String)>>,
    /// Template hashes per TApp generation.
    hash_memo: HashMemo,
}

/// Whether the API server serves the pod `resize` subresource (Kubernetes 1.33+).
pub async fn discover_resize(client: &Client) -> bool {
    match client.list_core_api_resources("v1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "pods/resize"),
        Err(error) => {
            tracing::warn!(%error, "cannot discover the pods/resize subresource; resource changes recreate pods");
            false
        }
    }
}

/// Keeps of a node what the controller reads: its name and its Ready condition.
pub fn slim_node(node: &mut Node) {
    let ready: Option<NodeCondition> = node
        .status
        .take()
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"));
    node.metadata = ObjectMeta {
        name: node.metadata.name.take(),
        resource_version: node.metadata.resource_version.take(),
        uid: node.metadata.uid.take(),
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = Some(NodeStatus {
        conditions: ready.map(|c| vec![c]),
        ..NodeStatus::default()
    });
}

fn api_of<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The pod watch feeding `pods`, as the TApps its events trigger (see [`OwnerIndex`]).
fn pod_triggers(
    client: &Client,
    ns: Option<&str>,
    pods: &OwnerIndex,
    relists: Relists,
) -> impl Stream<Item = ObjectRef<GuardedTApp>> + Send + 'static {
    let index = pods.clone();
    let events = watcher(
        api_of::<SlimPod>(client, ns),
        watcher::Config::default().labels(addon_common::api::tapp::INSTANCE_ID_LABEL),
    )
    .default_backoff()
    .map(move |event| event.map(|e| index.apply_watcher_event(e)));
    skip_watch_errors("pods", watch::triggers(events, relists))
        .filter_map(|tapp| std::future::ready(tapp.ok().flatten()))
}

/// The claims' metadata watch, reflected into a store, as the claims that changed.
fn claim_watch(
    client: &Client,
    ns: Option<&str>,
    relists: Relists,
) -> (
    Store<ClaimMeta>,
    impl Stream<Item = std::result::Result<ClaimMeta, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store::<ClaimMeta>();
    // An `Api` of `PartialObjectMeta` lists and watches metadata only (as `metadata_watcher`).
    let stream = watcher(api_of::<ClaimMeta>(client, ns), watcher::Config::default())
        .modify(|p| p.metadata.managed_fields = None)
        .default_backoff()
        .reflect(writer);
    let stream = skip_watch_errors("persistentvolumeclaims", watch::triggers(stream, relists));
    (store, stream)
}

/// The nodes' watch (their Ready condition only), drained by a task until `stop`.
fn node_watch(client: &Client, stop: &CancellationToken) -> (Store<Node>, JoinHandle<()>) {
    let (reader, writer) = reflector::store::<Node>();
    let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .modify(slim_node)
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let stop = stop.clone();
    let task = tokio::spawn(
        async move {
            let drain = stream.for_each(|_| std::future::ready(()));
            tokio::select! { () = stop.cancelled() => {}, () = drain => {} }
        }
        .instrument(tracing::info_span!("node watch")),
    );
    (reader, task)
}

/// Marks the caches ready once every one has synced.
fn spawn_readiness(
    health: Health,
    stores: Stores,
    tapps: Store<GuardedTApp>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let readiness = async move {
        let pods_synced = tokio::select! {
            () = stores.pods.wait_until_ready() => true,
            () = stop.cancelled() => false,
        };
        let synced = pods_synced
            && watch::store_synced(&stores.pvcs, &stop).await
            && watch::store_synced(&tapps, &stop).await
            && match &stores.nodes {
                Some(n) => watch::store_synced(n, &stop).await,
                None => true,
            };
        if synced {
            health.set(CACHE_CHECK, true, "");
        }
    };
    tokio::spawn(readiness.instrument(tracing::info_span!("readiness")))
}

/// Every 30 s, drops the per-TApp gauges and remembered template hashes of deleted TApps.
fn spawn_sweeper(
    ctx: Arc<Context>,
    tapps: Store<GuardedTApp>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let sweep = async move {
        let mut known: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            let tapps = tapps.state();
            let now: BTreeSet<(String, String)> = tapps
                .iter()
                .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                .collect();
            for (ns, name) in known.difference(&now) {
                ctx.metrics.forget_tapp(ns, name);
            }
            known = now;
            let uids: BTreeSet<&str> = tapps
                .iter()
                .filter_map(|t| t.meta().uid.as_deref())
                .collect();
            ctx.hash_memo.retain(|uid| uids.contains(uid));
        }
    };
    tokio::spawn(sweep.instrument(tracing::info_span!("sweeper")))
}

/// Runs the controller until `stop` is cancelled: the TApp watch and its pods, claims (and
/// nodes), reconciled by [`reconcile`]; Events through `deps.events`, readiness on
/// `deps.health`.
pub async fn run(deps: Deps, config: Config, metrics: Metrics, stop: CancellationToken) {
    let (client, ns) = (&deps.client, config.namespace.as_deref());
    deps.health.set(
        CACHE_CHECK,
        false,
        "waiting for the pod, claim and node caches",
    );

    // Triggers: applied/deleted objects, and every TApp after any relist (see
    // addon_common::watch: a relist's objects must not be reconciled before the caches hold them).
    // Every trigger stream has its own backoff and its errors are logged here: errors reaching
    // the Controller would go through its one trigger backoff, which pauses all trigger
    // streams (and the reflectors inside them) and escalates across them.
    let (relists, relist_signals) = Relists::channel();
    let pods = OwnerIndex::new();
    let pod_triggers = pod_triggers(client, ns, &pods, relists.clone());
    let (pvcs, pvc_stream) = claim_watch(client, ns, relists.clone());
    let (nodes, node_task) = if config.watch_nodes {
        let (store, task) = node_watch(client, &stop);
        (Some(store), Some(task))
    } else {
        (None, None)
    };
    let (tapp_store, tapp_writer) = reflector::store::<GuardedTApp>();
    let tapp_stream = watcher(
        api_of::<GuardedTApp>(client, ns),
        watcher::Config::default(),
    )
    .modify(|t| t.meta_mut().managed_fields = None)
    .default_backoff()
    .reflect(tapp_writer);
    let tapp_stream = skip_watch_errors("tapps", watch::triggers(tapp_stream, relists));
    let workers = if config.workers == 0 {
        5
    } else {
        config.workers
    };
    let controller = Controller::for_stream(tapp_stream, tapp_store.clone())
        .reconcile_on(pod_triggers)
        .owns_stream(pvc_stream)
        .reconcile_all_on(relist_signals)
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(workers)
                .debounce(TRIGGER_DEBOUNCE),
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned());
    let stores = Stores { pods, pvcs, nodes };
    let ctx = Arc::new(Context::new(&deps, metrics, config.flags, stores.clone()));
    let readiness = spawn_readiness(
        deps.health.clone(),
        stores,
        tapp_store.clone(),
        stop.clone(),
    );
    let sweeper = spawn_sweeper(ctx.clone(), tapp_store, stop.clone());

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile failed");
            }
            std::future::ready(())
        })
        .await;
    sweeper.abort();
    readiness.abort();
    if let Some(t) = node_task {
        t.abort();
    }
    // Standby replicas stay ready (they serve the webhook); only a leader reports its caches.
    deps.health.remove(CACHE_CHECK);
}

/// Logs and drops the errors of a trigger stream (its own `default_backoff` retries it).
pub fn skip_watch_errors<K, S>(
    what: &'static str,
    stream: S,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
{
    stream.filter_map(move |item| {
        std::future::ready(match item {
            Ok(obj) => Some(Ok(obj)),
            Err(error) => {
                tracing::warn!(watch = what, %error, "watch failed, retrying after a backoff");
                None
            }
        })
    })
}

fn error_policy(tapp: Arc<GuardedTApp>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile.failure(error.metric_label());
    let key = object_key(tapp.namespace().as_deref(), &tapp.name_any());
    let delay = ctx.backoff.next_delay(&key);
    tracing::warn!(tapp = %key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    /// Pods labelled `tapp_instance_key`, by controller owner.
    pub pods: OwnerIndex,
    /// Claims (metadata only).
    pub pvcs: Store<ClaimMeta>,
    /// Nodes (when watched; name and Ready condition only, see [`slim_node`]).
    pub nodes: Option<Store<Node>>,
}

impl Context {
    /// A context over `stores`, publishing Events through `deps.events`.
    pub fn new(deps: &Deps, metrics: Metrics, flags: Flags, stores: Stores) -> Self {
        Self {
            client: deps.client.clone(),
            recorder: deps.events.clone(),
            metrics,
            backoff: Backoff::default(),
            flags,
            pods: stores.pods,
            pvcs: stores.pvcs,
            nodes: stores.nodes,
            expectations: Expectations::new(EXPECTATION_TTL),
            warned: Mutex::new(BTreeSet::new()),
            hash_memo: HashMemo::default(),
        }
    }
}

/// Reconciles one TApp in a span naming it (kube-runtime's enclosing span names the trigger):
/// a TApp that does not decode gets a Warning Event and waits for an edit; the others are
/// observed from the caches, planned and executed.
pub async fn reconcile(guarded: Arc<GuardedTApp>, ctx: Arc<Context>) -> Result<Action> {
    let span = tracing::info_span!(
        "reconcile",
        namespace = %guarded.namespace().unwrap_or_default(),
        name = %guarded.name_any(),
    );
    async {
        let Some(tapp) = guard::decoded(&guarded, &ctx.recorder).await else {
            return Ok(Action::await_change());
        };
        reconcile_tapp(tapp, &ctx).await
    }
    .instrument(span)
    .await
}

async fn reconcile_tapp(tapp: &TApp, ctx: &Context) -> Result<Action> {
    let _measure = ctx.metrics.reconcile.count_and_measure();
    let ns = tapp
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = tapp.name_any();
    let uid = tapp
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingField("metadata.uid"))?;
    let key = object_key(Some(&ns), &name);
    if tapp.metadata.deletion_timestamp.is_some() {
        ctx.expectations.forget(&key);
        return Ok(Action::await_change());
    }
    if !ctx.pods.is_ready() {
        // Planning from an empty pod cache would recreate every pod: wait for the first list
        // (its end triggers every TApp).
        return Ok(Action::requeue(EXPECTATION_RECHECK));
    }

    let pods: Vec<Arc<SlimPod>> = ctx
        .pods
        .controlled_by(&uid)
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let unmet = ctx.expectations.unmet(
        &key,
        tapp.metadata.resource_version.as_deref(),
        pods.iter().map(|p| &p.metadata),
    );
    if unmet > 0 {
        // The watch event of our last write triggers this TApp again.
        tracing::trace!(tapp = %key, unmet, "waiting for the cache to show our writes");
        ctx.metrics.deferred.inc();
        return Ok(Action::requeue(EXPECTATION_RECHECK));
    }
    let pvcs = claims_of(tapp, &ns, &ctx.pvcs);
    let nodes = ctx.nodes.as_ref().map(|s| node_readiness(&pods, s));
    let observed = Observed {
        pods: pods.iter().map(AsRef::as_ref).collect(),
        pvcs: pvcs.iter().map(|c| &c.metadata).collect(),
        nodes: nodes.as_ref(),
        hash_memo: Some(&ctx.hash_memo),
    };
    let plan = plan::plan(tapp, &observed, Utc::now(), &ctx.flags);
    let action = execute(tapp, &pods, plan, ctx, &key).await?;
    ctx.backoff.reset(&key);
    Ok(action)
}

/// The cached claims of `tapp`'s claim templates (`<template>-<tapp>-<id>`), in `ns`.
fn claims_of(tapp: &TApp, ns: &str, store: &Store<ClaimMeta>) -> Vec<Arc<ClaimMeta>> {
    let name = tapp.name_any();
    let prefixes: Vec<String> = tapp
        .spec
        .volume_claim_templates
        .iter()
        .map(|c| format!("{}-{}-", c.metadata.name.as_deref().unwrap_or(""), name))
        .collect();
    if prefixes.is_empty() {
        return Vec::new();
    }
    store
        .state()
        .into_iter()
        .filter(|c| {
            c.metadata.namespace.as_deref() == Some(ns)
                && prefixes.iter().any(|p| c.name_any().starts_with(p))
        })
        .collect()
}

/// Whether the nodes `pods` are on are Ready (a node missing from the cache is gone).
fn node_readiness(pods: &[Arc<SlimPod>], nodes: &Store<Node>) -> BTreeMap<String, bool> {
    pods.iter()
        .filter_map(|p| p.node_name().map(str::to_string))
        .filter_map(|node| {
            let n = nodes.get(&ObjectRef::new(&node))?;
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            Some((node, ready))
        })
        .collect()
}

/// The pod or claim an Event about the TApp concerns. kube-runtime's Recorder folds events
/// with the same (type, reason, action, regarding, related) into one series whatever their
/// note, so naming the child keeps one line per instance in `kubectl describe tapp`, as the
/// original had.
fn child(tapp: &ObjectReference, kind: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        namespace: tapp.namespace.clone(),
        ..ObjectReference::default()
    }
}

fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// The API server refused a patch carrying `metadata.uid` because the object has another uid
/// (kube-apiserver: 422 "field is immutable"; a uid precondition: 409 "Precondition failed").
fn uid_changed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s)
        if (s.code == 422 || s.code == 409) && s.message.to_lowercase().contains("uid"))
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// What happened to a child of the TApp, as its Event says it (`Successful<Verb>` or
/// `Failed<Verb>`, the original's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Create,
    Delete,
    Update,
}

impl Verb {
    fn action(self) -> &'static str {
        match self {
            Verb::Create => "Create",
            Verb::Delete => "Delete",
            Verb::Update => "Update",
        }
    }

    fn reason(self, ok: bool) -> &'static str {
        match (self, ok) {
            (Verb::Create, true) => "SuccessfulCreate",
            (Verb::Create, false) => "FailedCreate",
            (Verb::Delete, true) => "SuccessfulDelete",
            (Verb::Delete, false) => "FailedDelete",
            (Verb::Update, true) => "SuccessfulUpdate",
            (Verb::Update, false) => "FailedUpdate",
        }
    }
}

/// The Events of one reconcile, each about a child (pod or claim) of the TApp. They are
/// published together at the end, concurrently (one round trip, not one per event, before
/// the worker is free).
struct Events<'a> {
    recorder: &'a EventRecorder,
    tapp: ObjectReference,
    queued: Vec<(
        ObjectReference,
        EventType,
        &'static str,
        &'static str,
        String,
    )>,
}

impl<'a> Events<'a> {
    fn new(recorder: &'a EventRecorder, tapp: ObjectReference) -> Self {
        Self {
            recorder,
            tapp,
            queued: Vec::new(),
        }
    }

    /// `verb` on the child `kind`/`name` succeeded (`ok`: a Normal event) or failed (a Warning).
    fn record(&mut self, kind: &str, name: &str, verb: Verb, ok: bool, note: String) {
        let type_ = if ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let child = child(&self.tapp, kind, name);
        self.queued
            .push((child, type_, verb.reason(ok), verb.action(), note));
    }

    async fn publish(self) {
        let tapp = &self.tapp;
        join_all(
            self.queued
                .into_iter()
                .map(|(child, type_, reason, action, note)| {
                    self.recorder
                        .publish(tapp, Some(child), type_, reason, action, note)
                }),
        )
        .await;
    }
}

/// One execution of a plan: the API handles of the TApp's namespace, its Events and the
/// first error (returned once the rest of the plan is done).
struct Execution<'a> {
    ctx: &'a Context,
    key: &'a str,
    ns: String,
    name: String,
    tapps: Writer<TApp>,
    pod_api: Api<Pod>,
    /// Writes whose response is read for its resourceVersion only (addon_common::writes).
    pod_writer: Writer<Pod>,
    pvc_api: Api<PersistentVolumeClaim>,
    events: Events<'a>,
    first_error: Option<Error>,
}

impl<'a> Execution<'a> {
    fn new(tapp: &TApp, ctx: &'a Context, key: &'a str) -> Self {
        let ns = tapp.namespace().unwrap_or_default();
        let client = &ctx.client;
        Self {
            ctx,
            key,
            tapps: Writer::namespaced(client.clone(), &ns),
            pod_api: Api::namespaced(client.clone(), &ns),
            pod_writer: Writer::namespaced(client.clone(), &ns),
            pvc_api: Api::namespaced(client.clone(), &ns),
            events: Events::new(&ctx.recorder, tapp.object_ref(&())),
            name: tapp.name_any(),
            ns,
            first_error: None,
        }
    }

    /// `namespace/name` of an object in the TApp's namespace, for errors.
    fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.ns)
    }

    fn fail(&mut self, e: Error) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// The warnings of the plan, each published once per TApp (they repeat every reconcile
    /// until the user fixes the TApp).
    async fn warn(&self, warnings: &[(String, String)]) {
        for (reason, message) in warnings {
            let fresh = self
                .ctx
                .warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((self.key.to_string(), message.clone()));
            if fresh {
                self.ctx
                    .recorder
                    .warning(&self.events.tapp, reason, "Sync", message.clone())
                    .await;
            }
        }
    }

    /// Creates the claims first; returns the pods whose claim could not be created (they wait).
    async fn create_claims(&mut self, plan: &Plan) -> BTreeSet<String> {
        let mut failed = BTreeSet::new();
        for pvc in &plan.create_pvcs {
            let claim = pvc.name_any();
            let pod = pod_mounting(&plan.create_pods, &claim).unwrap_or_default();
            let name = &self.name;
            match self.pvc_api.create(&PostParams::default(), pvc).await {
                Ok(_) => {
                    let note = format!("create Claim {claim} Pod {pod} in TApp {name} success");
                    self.events.record(CLAIM, &claim, Verb::Create, true, note);
                }
                Err(e) if already_exists(&e) => {}
                Err(e) => {
                    let note = format!(
                        "create Claim {claim} for Pod {pod} in TApp {name} failed error: {e}"
                    );
                    self.events.record(CLAIM, &claim, Verb::Create, false, note);
                    failed.insert(pod);
                    let claim = self.at(&claim);
                    self.fail(Error::CreateClaim { claim, source: e });
                }
            }
        }
        failed
    }

    /// Readiness-gate conditions, before deletes and updates.
    async fn write_conditions(&mut self, plan: &Plan) {
        let pp = PatchParams::default();
        let (writer, pp) = (&self.pod_writer, &pp);
        let results = join_all(plan.conditions.iter().map(|c| async move {
            let patch = Patch::Strategic(&c.patch);
            (
                c,
                writer
                    .patch_subresource("status", &c.name, pp, &patch)
                    .await,
            )
        }))
        .await;
        for (c, result) in results {
            match result {
                Ok(written) => {
                    self.ctx
                        .expectations
                        .written(self.key, &c.name, written.resource_version());
                }
                // Gone, or replaced by a namesake (its uid differs from the patch's): the next
                // reconcile sees the new pod.
                Err(e) if not_found(&e) || uid_changed(&e) => {}
                Err(e) => {
                    tracing::debug!(pod = %c.name, error = %e, "condition write failed");
                    let pod = self.at(&c.name);
                    self.fail(Error::PatchPodCondition { pod, source: e });
                }
            }
        }
    }

    /// Deletes (graceful or forced) and creates, concurrently.
    async fn delete_and_create_pods(&mut self, plan: &Plan, failed_claims: &BTreeSet<String>) {
        let deletes = join_all(plan.deletes.iter().map(|d| {
            let dp = DeleteParams {
                grace_period_seconds: d.force.then_some(0),
                preconditions: Some(Preconditions {
                    uid: Some(d.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = self.pod_api.clone();
            async move { (d, api.delete(&d.name, &dp).await) }
        }));
        let creates = join_all(
            plan.create_pods
                .iter()
                .filter(|p| !failed_claims.contains(&p.name_any()))
                .map(|p| {
                    let writer = self.pod_writer.clone();
                    async move { (p, writer.create(&PostParams::default(), p).await) }
                }),
        );
        let (deletes, creates) = futures::join!(deletes, creates);
        for (d, result) in deletes {
            match result {
                Ok(_) => {
                    self.ctx.expectations.deleted(self.key, &d.name, &d.uid);
                    if d.reason == DeleteReason::Recreate {
                        self.ctx
                            .metrics
                            .pod_updates
                            .with_label_values(&["recreate"])
                            .inc();
                    }
                    let note = format!("instance: {}", d.name);
                    self.events.record(POD, &d.name, Verb::Delete, true, note);
                }
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    let note = format!("instance: {}, error: {e}", d.name);
                    self.events.record(POD, &d.name, Verb::Delete, false, note);
                    let pod = self.at(&d.name);
                    self.fail(Error::DeletePod { pod, source: e });
                }
            }
        }
        for (p, result) in creates {
            let pod = p.name_any();
            match result {
                Ok(created) => {
                    self.ctx
                        .expectations
                        .created(self.key, &pod, created.resource_version());
                    let note = format!("Instance: {pod}");
                    self.events.record(POD, &pod, Verb::Create, true, note);
                }
                Err(e) if already_exists(&e) => {}
                Err(e) => {
                    let note = format!("Instance: {pod}, error: {e}");
                    self.events.record(POD, &pod, Verb::Create, false, note);
                    let pod = self.at(&pod);
                    self.fail(Error::CreatePod { pod, source: e });
                }
            }
        }
    }

    /// One in-place update: the resize subresource first, then images and labels.
    async fn update_pod(&self, u: &PodUpdate) -> Result<Written> {
        let pp = PatchParams::default();
        if let Some(rp) = &u.resize_patch {
            self.pod_writer
                .json_patch(Some("resize"), &u.name, &pp, rp)
                .await
                .map_err(|source| Error::ResizePod {
                    pod: self.at(&u.name),
                    source,
                })?;
        }
        self.pod_writer
            .json_patch(None, &u.name, &pp, &u.patch)
            .await
            .map_err(|source| Error::PatchPod {
                pod: self.at(&u.name),
                source,
            })
    }

    /// In-place updates, concurrently; results are handled in the plan's order (ascending ids).
    async fn update_pods(&mut self, plan: &Plan, pods: &[Arc<SlimPod>]) {
        let results = join_all(plan.updates.iter().map(|u| self.update_pod(u))).await;
        for (u, result) in plan.updates.iter().zip(results) {
            match result {
                Ok(written) => {
                    self.ctx
                        .expectations
                        .written(self.key, &u.name, written.resource_version());
                    let method = match u.kind {
                        UpdateKind::Metadata => "metadata",
                        UpdateKind::Images => "in_place",
                        UpdateKind::Resize => "resize",
                    };
                    self.ctx
                        .metrics
                        .pod_updates
                        .with_label_values(&[method])
                        .inc();
                    if u.kind != UpdateKind::Metadata {
                        let note = format!("Instance: {}", u.name);
                        self.events.record(POD, &u.name, Verb::Update, true, note);
                    } else if pods
                        .iter()
                        .find(|p| p.name_any() == u.name)
                        .is_some_and(|p| !crate::hash::has_own_hashes(p))
                    {
                        tracing::info!(pod = %u.name, "adopted pod: hash labels restamped without restart");
                    }
                }
                Err(e) if e.api_error().is_some_and(not_found) => {}
                Err(e) => {
                    let note = format!("Instance: {}, error: {e}", u.name);
                    self.events.record(POD, &u.name, Verb::Update, false, note);
                    self.fail(e);
                }
            }
        }
    }

    /// Claims: the retention policy (deletes and owner references).
    async fn retain_claims(&mut self, plan: &Plan) {
        for claim in &plan.delete_pvcs {
            match self.pvc_api.delete(claim, &DeleteParams::default()).await {
                Ok(_) => {
                    let note = format!("delete Claim {claim} in TApp {} success", self.name);
                    self.events.record(CLAIM, claim, Verb::Delete, true, note);
                }
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    let claim = self.at(claim);
                    self.fail(Error::DeleteClaim { claim, source: e });
                }
            }
        }
        for o in &plan.claim_ownership {
            let patch = serde_json::json!({"metadata": {"ownerReferences": o.owner_references}});
            let patched = self
                .pvc_api
                .patch(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if let Err(e) = patched
                && !not_found(&e)
            {
                let claim = self.at(&o.name);
                self.fail(Error::PatchClaim { claim, source: e });
            }
        }
    }

    /// The status (and the per-TApp gauges).
    async fn write_status(&mut self, tapp: &TApp, plan: &Plan) {
        let Some(status) = &plan.status else { return };
        self.ctx.metrics.set_tapp(
            &self.ns,
            &self.name,
            &status.statuses,
            plan.updated_instances,
            plan.desired_running,
        );
        if tapp.status.as_ref() == Some(status) {
            return;
        }
        let patch = status_patch(tapp.status.as_ref(), status);
        let written = self
            .tapps
            .patch_subresource(
                "status",
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        match written {
            Ok(written) => self
                .ctx
                .expectations
                .tapp_written(self.key, written.resource_version()),
            Err(source) => {
                let tapp = self.at(&self.name);
                self.fail(Error::PatchStatus { tapp, source });
            }
        }
    }
}

const POD: &str = "Pod";
const CLAIM: &str = "PersistentVolumeClaim";

/// The pod of `pods` that mounts the claim `claim`.
fn pod_mounting(pods: &[Pod], claim: &str) -> Option<String> {
    pods.iter()
        .find(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
        })
        .map(|p| p.name_any())
}

/// Performs `plan`; the first API error is returned after the rest (and the status) is done.
async fn execute(
    tapp: &TApp,
    pods: &[Arc<SlimPod>],
    plan: Plan,
    ctx: &Context,
    key: &str,
) -> Result<Action> {
    let mut run = Execution::new(tapp, ctx, key);
    if let Some(defaults) = &plan.defaults {
        tracing::info!(tapp = key, "writing defaults");
        let written = run
            .tapps
            .patch(&run.name, &PatchParams::default(), &Patch::Merge(defaults))
            .await
            .map_err(|source| Error::PatchDefaults {
                tapp: key.to_string(),
                source,
            })?;
        ctx.expectations
            .tapp_written(key, written.resource_version());
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    run.warn(&plan.warnings).await;
    let failed_claims = run.create_claims(&plan).await;
    run.write_conditions(&plan).await;
    run.delete_and_create_pods(&plan, &failed_claims).await;
    run.update_pods(&plan, pods).await;
    run.retain_claims(&plan).await;
    run.write_status(tapp, &plan).await;
    run.events.publish().await;
    if let Some(e) = run.first_error {
        return Err(e);
    }
    // The watch events of our writes trigger the TApp again; should one be lost, the
    // expectation expires and this requeue looks again.
    let mut next = plan.requeue_after.unwrap_or(IDLE_REQUEUE);
    if ctx.expectations.contains(key) {
        next = next.min(EXPECTATION_TTL + Duration::from_secs(1));
    }
    Ok(Action::requeue(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watch_errors_are_logged_and_dropped_not_passed_to_the_controller() {
        let items: Vec<std::result::Result<u32, watcher::Error>> =
            vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2)];
        let out: Vec<u32> = skip_watch_errors("test", futures::stream::iter(items))
            .map(|r| r.expect("only Ok items"))
            .collect()
            .await;
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn a_cached_node_keeps_its_name_and_ready_condition_only() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "resourceVersion": "5", "labels": {"a": "b"},
                         "annotations": {"x": "y"}},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"}],
                "images": [{"names": ["nginx"], "sizeBytes": 1}],
                "capacity": {"cpu": "4"}}
        }))
        .expect("node");
        slim_node(&mut node);
        assert_eq!(
            serde_json::to_value(&node).expect("json"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "resourceVersion": "5"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            })
        );
    }
}
