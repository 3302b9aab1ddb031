//! The thin executor: watches TApps and their pods/claims (and nodes), calls [`plan`] and
//! performs the plan with idempotent API calls. Testable with any `kube::Client`
//! (`Client::new(tower service, "default")`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_common::admin::Health;
use addon_common::api::tapp::TApp;
use addon_common::backoff::{Backoff, object_key};
use addon_common::events::{EventRecorder, EventType};
use chrono::Utc;
use futures::{StreamExt, future::join_all};
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::hash::HashMemo;
use crate::index::OwnerIndex;
use crate::metrics::Metrics;
use crate::plan::{self, DeleteReason, Flags, Observed, Plan, UpdateKind, status_patch};
use crate::pods::PodView;
use crate::slim::SlimPod;
use crate::{Error, Result};
use addon_common::watch::{self, Relists};
use addon_common::writes::Writer;

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
    pvcs: Store<PersistentVolumeClaim>,
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

fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(s) = node.status.as_mut() {
        s.images = None;
    }
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

/// Runs the controller until `stop` is cancelled.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    health: Health,
    stop: CancellationToken,
) {
    let ns = config.namespace.as_deref();
    health.set(
        CACHE_CHECK,
        false,
        "waiting for the pod, claim and node caches",
    );

    // Triggers: applied/deleted objects, and every TApp after any relist (see
    // addon_common::watch: a relist's objects must not be reconciled before the caches hold them).
    let (relists, relist_signals) = Relists::channel();
    let pods = OwnerIndex::new();
    let pod_index = pods.clone();
    let pod_stream = crate::podwatch::watch_pods(
        client.clone(),
        ns,
        addon_common::api::tapp::INSTANCE_ID_LABEL,
    )
    .default_backoff()
    .map(move |event| event.map(|e| pod_index.apply_watcher_event(e)));
    // The index maps each pod event to the TApp it triggers.
    let pod_triggers = skip_watch_errors("pods", watch::triggers(pod_stream, relists.clone()))
        .filter_map(|tapp| std::future::ready(tapp.ok().flatten()));
    let (pvcs, pvc_writer) = reflector::store::<PersistentVolumeClaim>();
    let pvc_stream = watcher(
        api_of::<PersistentVolumeClaim>(&client, ns),
        watcher::Config::default(),
    )
    .modify(|p| p.metadata.managed_fields = None)
    .default_backoff()
    .reflect(pvc_writer);
    let pvc_stream = watch::triggers(pvc_stream, relists.clone());
    let pvc_stream = skip_watch_errors("persistentvolumeclaims", pvc_stream);
    let (nodes, node_task) = if config.watch_nodes {
        let (reader, writer) = reflector::store::<Node>();
        let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .modify(strip_node)
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let stop = stop.clone();
        let task = tokio::spawn(async move {
            let drain = stream.for_each(|_| std::future::ready(()));
            tokio::select! { () = stop.cancelled() => {}, () = drain => {} }
        });
        (Some(reader), Some(task))
    } else {
        (None, None)
    };

    // Every trigger stream has its own backoff and its errors are logged here: errors reaching
    // the Controller would go through its one trigger backoff, which pauses all trigger
    // streams (and the reflectors inside them) and escalates across them.
    let (tapp_store, tapp_writer) = reflector::store::<TApp>();
    let tapp_stream = watcher(api_of::<TApp>(&client, ns), watcher::Config::default())
        .modify(|t| t.metadata.managed_fields = None)
        .default_backoff()
        .reflect(tapp_writer);
    let tapp_stream = watch::triggers(tapp_stream, relists);
    let tapp_stream = skip_watch_errors("tapps", tapp_stream);
    let controller = Controller::for_stream(tapp_stream, tapp_store.clone())
        .reconcile_on(pod_triggers)
        .owns_stream(pvc_stream)
        .reconcile_all_on(relist_signals)
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(if config.workers == 0 {
                    5
                } else {
                    config.workers
                })
                .debounce(TRIGGER_DEBOUNCE),
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned());
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        config.flags,
        Stores {
            pods: pods.clone(),
            pvcs: pvcs.clone(),
            nodes: nodes.clone(),
        },
    ));

    // Readiness: every cache synced.
    let ready_health = health.clone();
    let (ready_pods, ready_pvcs, ready_tapps, ready_nodes) = (
        pods.clone(),
        pvcs.clone(),
        tapp_store.clone(),
        nodes.clone(),
    );
    let ready_stop = stop.clone();
    let readiness = tokio::spawn(async move {
        let pods_synced = tokio::select! {
            () = ready_pods.wait_until_ready() => true,
            () = ready_stop.cancelled() => false,
        };
        let synced = pods_synced
            && watch::store_synced(&ready_pvcs, &ready_stop).await
            && watch::store_synced(&ready_tapps, &ready_stop).await
            && match &ready_nodes {
                Some(n) => watch::store_synced(n, &ready_stop).await,
                None => true,
            };
        if synced {
            ready_health.set(CACHE_CHECK, true, "");
        }
    });

    // Drop the per-TApp gauges and remembered template hashes of deleted TApps.
    let sweep_stop = stop.clone();
    let sweep_metrics = metrics.clone();
    let sweep_ctx = ctx.clone();
    let sweep_store = tapp_store.clone();
    let sweeper = tokio::spawn(async move {
        let mut known: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            tokio::select! {
                () = sweep_stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            let tapps = sweep_store.state();
            let now: BTreeSet<(String, String)> = tapps
                .iter()
                .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                .collect();
            for (ns, name) in known.difference(&now) {
                sweep_metrics.forget_tapp(ns, name);
            }
            known = now;
            let uids: BTreeSet<&str> = tapps
                .iter()
                .filter_map(|t| t.metadata.uid.as_deref())
                .collect();
            sweep_ctx.hash_memo.retain(|uid| uids.contains(uid));
        }
    });

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
    health.remove(CACHE_CHECK);
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

fn error_policy(tapp: Arc<TApp>, error: &Error, ctx: Arc<Context>) -> Action {
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
    /// Claims.
    pub pvcs: Store<PersistentVolumeClaim>,
    /// Nodes (when watched).
    pub nodes: Option<Store<Node>>,
}

impl Context {
    /// A context over `stores`.
    pub fn new(client: Client, metrics: Metrics, flags: Flags, stores: Stores) -> Self {
        Self {
            recorder: EventRecorder::new(client.clone(), COMPONENT),
            client,
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

/// Reconciles one TApp: observe from the caches, plan, execute.
pub async fn reconcile(tapp: Arc<TApp>, ctx: Arc<Context>) -> Result<Action> {
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
    let claim_prefixes: Vec<String> = tapp
        .spec
        .volume_claim_templates
        .iter()
        .map(|c| format!("{}-{}-", c.metadata.name.as_deref().unwrap_or(""), name))
        .collect();
    let pvcs: Vec<Arc<PersistentVolumeClaim>> = if claim_prefixes.is_empty() {
        Vec::new()
    } else {
        ctx.pvcs
            .state()
            .into_iter()
            .filter(|c| {
                c.metadata.namespace.as_deref() == Some(ns.as_str())
                    && claim_prefixes.iter().any(|p| c.name_any().starts_with(p))
            })
            .collect()
    };
    // Only the nodes the TApp's pods are on (a node missing from the cache is gone).
    let nodes: Option<BTreeMap<String, bool>> = ctx.nodes.as_ref().map(|s| {
        pods.iter()
            .filter_map(|p| p.node_name().map(str::to_string))
            .filter_map(|node| {
                let n = s.get(&ObjectRef::new(&node))?;
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True");
                Some((node, ready))
            })
            .collect()
    });
    let observed = Observed {
        pods: pods.iter().map(AsRef::as_ref).collect(),
        pvcs: pvcs.iter().map(AsRef::as_ref).collect(),
        nodes: nodes.as_ref(),
        hash_memo: Some(&ctx.hash_memo),
    };
    let plan = plan::plan(&tapp, &observed, Utc::now(), &ctx.flags);
    let action = execute(&tapp, &pods, plan, &ctx, &key).await?;
    ctx.backoff.reset(&key);
    Ok(action)
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

/// Performs `plan`; the first API error is returned after the rest (and the status) is done.
async fn execute(
    tapp: &TApp,
    pods: &[Arc<SlimPod>],
    plan: Plan,
    ctx: &Context,
    key: &str,
) -> Result<Action> {
    let ns = tapp.namespace().unwrap_or_default();
    let name = tapp.name_any();
    let client = &ctx.client;
    let tapps: Writer<TApp> = Writer::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Writes whose response is read for its resourceVersion only (addon_common::writes).
    let pod_writer: Writer<Pod> = Writer::namespaced(client.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let reference = tapp.object_ref(&());
    let pp = PatchParams::default();
    // Events are published together at the end, concurrently (one round trip, not one per
    // event, before the worker is free); each is about a child (pod or claim) of the TApp.
    let mut events = Vec::new();
    let event = |kind: &str, child_name: &str, type_, reason: &'static str, action, note| {
        ctx.recorder.publish(
            &reference,
            Some(child(&reference, kind, child_name)),
            type_,
            reason,
            action,
            note,
        )
    };
    let mut first_error: Option<Error> = None;
    let mut fail = |e: Error| {
        if first_error.is_none() {
            first_error = Some(e);
        }
    };

    if let Some(defaults) = plan.defaults {
        tracing::info!(tapp = key, "writing defaults");
        let written = tapps.patch(&name, &pp, &Patch::Merge(&defaults)).await?;
        ctx.expectations
            .tapp_written(key, written.resource_version());
        return Ok(Action::requeue(Duration::from_millis(100)));
    }

    for (reason, message) in &plan.warnings {
        let fresh = ctx
            .warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((key.to_string(), message.clone()));
        if fresh {
            ctx.recorder
                .warning(&reference, reason, "Sync", message.clone())
                .await;
        }
    }

    // Claims first; pods whose claim could not be created wait.
    let mut failed_claims: BTreeSet<String> = BTreeSet::new();
    for pvc in &plan.create_pvcs {
        let claim = pvc.name_any();
        let pod = plan
            .create_pods
            .iter()
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
            .unwrap_or_default();
        match pvc_api.create(&PostParams::default(), pvc).await {
            Ok(_) => {
                events.push(event(
                    "PersistentVolumeClaim",
                    &claim,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!("create Claim {claim} Pod {pod} in TApp {name} success"),
                ));
            }
            Err(e) if already_exists(&e) => {}
            Err(e) => {
                events.push(event(
                    "PersistentVolumeClaim",
                    &claim,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("create Claim {claim} for Pod {pod} in TApp {name} failed error: {e}"),
                ));
                failed_claims.insert(pod);
                fail(e.into());
            }
        }
    }

    // Readiness-gate conditions before deletes and updates.
    let cond_results = join_all(plan.conditions.iter().map(|c| {
        let pod_writer = pod_writer.clone();
        async move {
            let r = pod_writer
                .patch_subresource(
                    "status",
                    &c.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&c.patch),
                )
                .await;
            Ok::<_, Error>((c, r))
        }
    }))
    .await;
    for r in cond_results {
        match r {
            Ok((c, Ok(written))) => {
                ctx.expectations
                    .written(key, &c.name, written.resource_version());
            }
            // Gone, or replaced by a namesake (its uid differs from the patch's): the next
            // reconcile sees the new pod.
            Ok((_, Err(e))) if not_found(&e) || uid_changed(&e) => {}
            Ok((c, Err(e))) => {
                tracing::debug!(pod = %c.name, error = %e, "condition write failed");
                fail(e.into());
            }
            Err(e) => fail(e),
        }
    }

    // Deletes (graceful or forced) and creates, concurrently.
    let deletes = join_all(plan.deletes.iter().map(|d| {
        let pod_api = pod_api.clone();
        async move {
            let dp = DeleteParams {
                grace_period_seconds: d.force.then_some(0),
                preconditions: Some(Preconditions {
                    uid: Some(d.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            (d, pod_api.delete(&d.name, &dp).await)
        }
    }));
    let creates = join_all(
        plan.create_pods
            .iter()
            .filter(|p| !failed_claims.contains(&p.name_any()))
            .map(|p| {
                let pod_writer = pod_writer.clone();
                async move { (p, pod_writer.create(&PostParams::default(), p).await) }
            }),
    );
    let (deletes, creates) = futures::join!(deletes, creates);
    for (d, r) in deletes {
        match r {
            Ok(_) => {
                ctx.expectations.deleted(key, &d.name, &d.uid);
                if d.reason == DeleteReason::Recreate {
                    ctx.metrics
                        .pod_updates
                        .with_label_values(&["recreate"])
                        .inc();
                }
                events.push(event(
                    "Pod",
                    &d.name,
                    EventType::Normal,
                    "SuccessfulDelete",
                    "Delete",
                    format!("instance: {}", d.name),
                ));
            }
            Err(e) if not_found(&e) => {}
            Err(e) => {
                events.push(event(
                    "Pod",
                    &d.name,
                    EventType::Warning,
                    "FailedDelete",
                    "Delete",
                    format!("instance: {}, error: {e}", d.name),
                ));
                fail(e.into());
            }
        }
    }
    for (p, r) in creates {
        let pod = p.name_any();
        match r {
            Ok(created) => {
                ctx.expectations
                    .created(key, &pod, created.resource_version());
                events.push(event(
                    "Pod",
                    &pod,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!("Instance: {pod}"),
                ));
            }
            Err(e) if already_exists(&e) => {}
            Err(e) => {
                events.push(event(
                    "Pod",
                    &pod,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("Instance: {pod}, error: {e}"),
                ));
                fail(e.into());
            }
        }
    }

    // In-place updates, concurrently (per pod: the resize subresource first, then images and
    // labels); results are handled in the plan's order (ascending ids).
    let updates = join_all(plan.updates.iter().map(|u| {
        let (pod_writer, pp) = (&pod_writer, &pp);
        async move {
            if let Some(rp) = &u.resize_patch {
                pod_writer
                    .json_patch(Some("resize"), &u.name, pp, rp)
                    .await?;
            }
            Ok::<_, Error>(pod_writer.json_patch(None, &u.name, pp, &u.patch).await?)
        }
    }))
    .await;
    for (u, result) in plan.updates.iter().zip(updates) {
        match result {
            Ok(written) => {
                ctx.expectations
                    .written(key, &u.name, written.resource_version());
                let method = match u.kind {
                    UpdateKind::Metadata => "metadata",
                    UpdateKind::Images => "in_place",
                    UpdateKind::Resize => "resize",
                };
                ctx.metrics.pod_updates.with_label_values(&[method]).inc();
                if u.kind != UpdateKind::Metadata {
                    events.push(event(
                        "Pod",
                        &u.name,
                        EventType::Normal,
                        "SuccessfulUpdate",
                        "Update",
                        format!("Instance: {}", u.name),
                    ));
                } else {
                    let was_foreign = pods
                        .iter()
                        .find(|p| p.name_any() == u.name)
                        .is_some_and(|p| !crate::hash::has_own_hashes(p));
                    if was_foreign {
                        tracing::info!(pod = %u.name, "adopted pod: hash labels restamped without restart");
                    }
                }
            }
            Err(Error::Kube(e)) if not_found(&e) => {}
            Err(e) => {
                events.push(event(
                    "Pod",
                    &u.name,
                    EventType::Warning,
                    "FailedUpdate",
                    "Update",
                    format!("Instance: {}, error: {e}", u.name),
                ));
                fail(e);
            }
        }
    }

    // Claims: retention policy.
    for claim in &plan.delete_pvcs {
        match pvc_api.delete(claim, &DeleteParams::default()).await {
            Ok(_) => events.push(event(
                "PersistentVolumeClaim",
                claim,
                EventType::Normal,
                "SuccessfulDelete",
                "Delete",
                format!("delete Claim {claim} in TApp {name} success"),
            )),
            Err(e) if not_found(&e) => {}
            Err(e) => fail(e.into()),
        }
    }
    for o in &plan.claim_ownership {
        let patch = serde_json::json!({"metadata": {"ownerReferences": o.owner_references}});
        if let Err(e) = pvc_api.patch(&o.name, &pp, &Patch::Merge(&patch)).await
            && !not_found(&e)
        {
            fail(e.into());
        }
    }

    // Status.
    if let Some(status) = &plan.status {
        ctx.metrics.set_tapp(
            &ns,
            &name,
            &status.statuses,
            plan.updated_instances,
            plan.desired_running,
        );
        if tapp.status.as_ref() != Some(status) {
            let patch = status_patch(tapp.status.as_ref(), status);
            match tapps
                .patch_subresource("status", &name, &pp, &Patch::Merge(&patch))
                .await
            {
                Ok(written) => ctx
                    .expectations
                    .tapp_written(key, written.resource_version()),
                Err(e) => fail(e.into()),
            }
        }
    }

    join_all(events).await;
    if let Some(e) = first_error {
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
}
