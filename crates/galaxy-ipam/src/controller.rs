//! What runs while this replica leads: [`run`] builds the plugin and recovers its state from
//! the FloatingIPs and pod annotations, publishes it to the servers (which run on every
//! replica, see [`crate::server`]), then runs the ConfigMap / FloatingIP / pod / node watches
//! and the periodic resync until it stops leading.
//!
//! Every watch event is handled in a span naming the object and the trigger; FloatingIPs are
//! watched (and listed at recovery) through [`DeserializeGuard`], so one record the Go
//! original left with a wrong-typed field is reported (log and Warning Event `InvalidObject`)
//! and skipped instead of stopping the watch.

use std::{collections::HashMap, sync::Arc, time::Duration};

use addon_common::{
    api::galaxy::FloatingIP,
    events::EventRecorder,
    guard::DeserializeGuard,
    k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod},
    kube::{
        Api, Client, Resource,
        api::ListParams,
        runtime::{
            WatchStreamExt,
            watcher::{self, Event},
        },
    },
    runtime::Deps,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    Error, Result,
    allocator::{ip_string, parse_ip},
    config::{PluginConf, PoolConfig},
    key::KeyObj,
    metrics::Metrics,
    plugin::{
        Options, Plugin, PodState, Slot, allocation_from_fip, decoded_fip, is_unreadable_holder,
        node_internal_ip, unreadable_holder,
    },
    pod::wants_eni_ip,
};

/// Readiness check that passes only on the active (leading, recovered) replica, so a Service
/// in front of several replicas sends the scheduler to the leader.
pub const READY_CHECK: &str = "galaxy-ipam-active";

/// What the leader runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `--config` file's settings (pool source, resync interval).
    pub plugin: PluginConf,
    /// Where the servers find the active plugin: [`run`] fills it while it leads.
    pub slot: Slot,
}

/// What the leader runs: recover, publish the plugin to the servers, run the watches and the
/// resync until `stop`, then withdraw the plugin.
pub async fn run(deps: Deps, config: Config, metrics: Metrics, stop: CancellationToken) {
    let Deps {
        client,
        health,
        events,
    } = deps;
    let conf = config.plugin;
    let Some(plugin) = activate(&client, &conf, &metrics, Some(events), &stop).await else {
        return;
    };
    config.slot.set(Some(plugin.clone()));
    health.set(READY_CHECK, true, "leading");
    tracing::info!("IPAM active");
    run_watches(plugin, conf, stop).await;
    config.slot.set(None);
    health.set(READY_CHECK, false, "standby");
    tracing::info!("IPAM inactive");
}

/// Builds the plugin and recovers its state (retrying until it succeeds or `stop`).
pub async fn activate(
    client: &Client,
    conf: &PluginConf,
    metrics: &Metrics,
    events: Option<EventRecorder>,
    stop: &CancellationToken,
) -> Option<Arc<Plugin>> {
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = async {
            let config = load_config(client, conf).await?;
            let plugin = Plugin::new(
                client.clone(),
                config,
                metrics.clone(),
                events.clone(),
                Options::default(),
            );
            recover(&plugin).await?;
            Ok::<_, Error>(Arc::new(plugin))
        };
        tokio::select! {
            () = stop.cancelled() => return None,
            res = attempt.instrument(tracing::info_span!("recover")) => match res {
                Ok(p) => return Some(p),
                Err(error) => {
                    tracing::error!(%error, "cannot start the IPAM; retrying");
                    metrics.errors.with_label_values(&[error.metric_label()]).inc();
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Reads the pools: inline from the `--config` file, else the ConfigMap (a missing ConfigMap
/// or key is an empty configuration, not a fatal error: the watch picks it up later).
pub async fn load_config(client: &Client, conf: &PluginConf) -> Result<PoolConfig> {
    if let Some(inline) = &conf.floating_ips {
        return Ok(inline.clone());
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &conf.config_map_namespace);
    let found =
        api.get_opt(&conf.config_map_name)
            .await
            .map_err(|source| Error::ReadConfigMap {
                namespace: conf.config_map_namespace.clone(),
                name: conf.config_map_name.clone(),
                source,
            })?;
    match found {
        None => {
            tracing::warn!(configmap = %format!("{}/{}", conf.config_map_namespace, conf.config_map_name), "pool ConfigMap not found: starting with no pools");
            Ok(PoolConfig::default())
        }
        Some(cm) => config_of(&cm, &conf.floating_ip_key),
    }
}

fn config_of(cm: &ConfigMap, key: &str) -> Result<PoolConfig> {
    match cm.data.as_ref().and_then(|d| d.get(key)) {
        None => Ok(PoolConfig::default()),
        Some(text) => PoolConfig::parse(text),
    }
}

/// Rebuilds the allocations from the FloatingIPs, then from the annotations of running pods.
pub async fn recover(plugin: &Plugin) -> Result<()> {
    let fips: Api<DeserializeGuard<FloatingIP>> = Api::all(plugin.client().clone());
    let list = fips
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::ListFloatingIps { source })?;
    let mut adopted = 0usize;
    for guarded in &list.items {
        let Some(fip) = decoded_fip(guarded, plugin.events()).await else {
            hold_unreadable(plugin, guarded);
            continue;
        };
        let name = fip.metadata.name.clone().unwrap_or_default();
        let Some(ip) = named_ip(&name, "FloatingIP") else {
            continue;
        };
        if fip.spec.key.is_empty() {
            continue;
        }
        if !fip.spec.key.is_empty() && KeyObj::parse(&fip.spec.key).is_err() {
            tracing::warn!(name, key = %fip.spec.key, "FloatingIP with a malformed key: kept as is");
        }
        if !plugin.ipam.in_pool(ip) {
            tracing::warn!(name, key = %fip.spec.key, "FloatingIP outside every configured pool: kept, never handed out");
        }
        match plugin.ipam.adopt(ip, allocation_from_fip(fip)) {
            Ok(()) => adopted += 1,
            Err(cur) => tracing::warn!(name, holder = %cur.key, "duplicate FloatingIP record"),
        }
    }
    let pods: Api<Pod> = Api::all(plugin.client().clone());
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::ListPods { source })?;
    let mut states = HashMap::new();
    let mut from_annotations = 0usize;
    for pod in list.items.iter().filter(|p| wants_eni_ip(p)) {
        let state = PodState::of(pod);
        if !state.finished {
            for ip in &state.ips {
                if plugin.ipam.get(*ip).is_none() && plugin.adopt_annotated(&state, *ip).await? {
                    from_annotations += 1;
                }
            }
        }
        states.insert(pod_ref(pod), state);
    }
    *plugin.pods.lock().unwrap_or_else(|p| p.into_inner()) = states;
    tracing::info!(floatingips = adopted, from_annotations, "state recovered");
    Ok(())
}

/// The IP a FloatingIP is named after; `None`, with a warning naming `what`, when the name is
/// not an IPv4 address (such an object is ignored).
fn named_ip(name: &str, what: &str) -> Option<u32> {
    let ip = parse_ip(name);
    if ip.is_none() {
        tracing::warn!(name, "{what} whose name is not an IPv4 address: ignored");
    }
    ip
}

/// Keeps the IP of an undecodable FloatingIP out of use (see [`unreadable_holder`]).
fn hold_unreadable(plugin: &Plugin, guarded: &DeserializeGuard<FloatingIP>) {
    let Some(ip) = guarded.meta().name.as_deref().and_then(parse_ip) else {
        return;
    };
    if plugin.ipam.get(ip).is_none() && plugin.ipam.adopt(ip, unreadable_holder()).is_ok() {
        tracing::warn!(ip = %ip_string(ip), "IP of an undecodable FloatingIP kept out of use");
    }
}

/// The undecodable FloatingIP is gone: its IP is free again.
fn release_unreadable(plugin: &Plugin, guarded: &DeserializeGuard<FloatingIP>) {
    let Some(ip) = guarded.meta().name.as_deref().and_then(parse_ip) else {
        return;
    };
    if plugin
        .ipam
        .get(ip)
        .is_some_and(|cur| is_unreadable_holder(&cur))
        && plugin.ipam.release(ip, "")
    {
        tracing::info!(ip = %ip_string(ip), "undecodable FloatingIP deleted: IP freed");
    }
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Applies a new ConfigMap: invalid or dropping allocated IPs ⇒ refused (old config kept),
/// with a log line, a Warning Event on the ConfigMap and a metric.
pub async fn apply_configmap(plugin: &Plugin, cm: &ConfigMap, key: &str) {
    let result = config_of(cm, key).and_then(|cfg| {
        if *plugin.ipam.config() == cfg {
            return Ok(false);
        }
        plugin.ipam.set_config(cfg).map(|()| true)
    });
    let reference = cm.object_ref(&());
    match result {
        Ok(false) => {}
        Ok(true) => {
            plugin
                .metrics
                .config_updates
                .with_label_values(&["applied"])
                .inc();
            tracing::info!(
                pools = plugin.ipam.config().pools.len(),
                "pool configuration applied"
            );
        }
        Err(e) => {
            let label = if matches!(e, Error::ConfigDropsAllocated { .. }) {
                "refused"
            } else {
                "invalid"
            };
            plugin
                .metrics
                .config_updates
                .with_label_values(&[label])
                .inc();
            tracing::error!(error = %e, "pool configuration not applied; keeping the previous one");
            warn_event(plugin, &reference, "ConfigRefused", e.to_string()).await;
        }
    }
}

async fn warn_event(plugin: &Plugin, reference: &ObjectReference, reason: &str, note: String) {
    if let Some(events) = plugin.events() {
        events.warning(reference, reason, "Configure", note).await;
    }
}

/// Runs the watches and the resync until `stop`.
async fn run_watches(plugin: Arc<Plugin>, conf: PluginConf, stop: CancellationToken) {
    let watch = |what: &'static str| tracing::info_span!("watch", kind = what);
    let mut tasks = Vec::new();
    if conf.floating_ips.is_none() {
        let task = watch_configmap(plugin.clone(), conf.clone()).instrument(watch("ConfigMap"));
        tasks.push(tokio::spawn(task));
    }
    tasks.push(tokio::spawn(
        watch_floatingips(plugin.clone()).instrument(watch("FloatingIP")),
    ));
    tasks.push(tokio::spawn(
        watch_pods(plugin.clone()).instrument(watch("Pod")),
    ));
    tasks.push(tokio::spawn(
        watch_nodes(plugin.clone()).instrument(watch("Node")),
    ));
    let every = Duration::from_secs(conf.resync_interval_minutes.max(1) * 60);
    tasks.push(tokio::spawn(
        resync_loop(plugin.clone(), every).instrument(tracing::info_span!("resync_loop")),
    ));
    stop.cancelled().await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn watch_configmap(plugin: Arc<Plugin>, conf: PluginConf) {
    let api: Api<ConfigMap> = Api::namespaced(plugin.client().clone(), &conf.config_map_namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", conf.config_map_name));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(cm) | Event::InitApply(cm)) => {
                let span = object_span("configmap", &cm, "apply");
                apply_configmap(&plugin, &cm, &conf.floating_ip_key)
                    .instrument(span)
                    .await;
            }
            Ok(Event::Delete(cm)) => {
                let _span = object_span("configmap", &cm, "delete").entered();
                tracing::warn!("pool ConfigMap deleted: keeping the current configuration");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "ConfigMap watch"),
        }
    }
}

/// The span of the handling of one object's watch event.
fn object_span<K: Resource>(what: &'static str, obj: &K, trigger: &'static str) -> tracing::Span {
    let meta = obj.meta();
    tracing::info_span!(
        "handle",
        kind = what,
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        name = meta.name.as_deref().unwrap_or_default(),
        trigger
    )
}

/// FloatingIPs labelled `reserved` created or deleted by hand reserve or free their IP.
async fn watch_floatingips(plugin: Arc<Plugin>) {
    let api: Api<DeserializeGuard<FloatingIP>> = Api::all(plugin.client().clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(guarded) | Event::InitApply(guarded)) => {
                let span = object_span("floatingip", &guarded, "apply");
                async {
                    match decoded_fip(&guarded, plugin.events()).await {
                        Some(fip) if fip.is_reserved() => reserve_by_hand(&plugin, fip),
                        Some(fip) => adopt_repaired(&plugin, fip),
                        None => hold_unreadable(&plugin, &guarded),
                    }
                }
                .instrument(span)
                .await;
            }
            Ok(Event::Delete(guarded)) => {
                let _span = object_span("floatingip", &guarded, "delete").entered();
                match &guarded.0 {
                    Ok(fip) => unreserve_by_hand(&plugin, fip),
                    Err(_) => release_unreadable(&plugin, &guarded),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "FloatingIP watch"),
        }
    }
}

fn reserve_by_hand(plugin: &Plugin, fip: &FloatingIP) {
    let name = fip.metadata.name.clone().unwrap_or_default();
    let Some(ip) = named_ip(&name, "reserved FloatingIP") else {
        return;
    };
    let want = allocation_from_fip(fip);
    match plugin.ipam.get(ip) {
        Some(cur) if cur.key == want.key && cur.reserved => {}
        Some(cur) if cur.key == want.key => {
            let _ = plugin.ipam.assign(ip, &cur.key, want);
        }
        Some(cur) => {
            tracing::warn!(ip = name, holder = %cur.key, "reserved FloatingIP for an IP allocated to another key: ignored")
        }
        None => match plugin.ipam.adopt(ip, want) {
            Ok(()) => {
                tracing::info!(ip = name, key = %fip.spec.key, "IP reserved by hand")
            }
            Err(cur) => {
                tracing::warn!(ip = name, holder = %cur.key, "reservation conflicts")
            }
        },
    }
}

/// A FloatingIP that decodes again after being fixed takes over from the placeholder that
/// kept its IP out of use.
fn adopt_repaired(plugin: &Plugin, fip: &FloatingIP) {
    let Some(ip) = fip.metadata.name.as_deref().and_then(parse_ip) else {
        return;
    };
    if plugin
        .ipam
        .get(ip)
        .is_some_and(|cur| is_unreadable_holder(&cur))
        && plugin.ipam.release(ip, "")
        && plugin.ipam.adopt(ip, allocation_from_fip(fip)).is_ok()
    {
        tracing::info!(ip = %ip_string(ip), key = %fip.spec.key, "FloatingIP decodes again: adopted");
    }
}

fn unreserve_by_hand(plugin: &Plugin, fip: &FloatingIP) {
    let Some(ip) = fip.ip().and_then(|ip| parse_ip(&ip.to_string())) else {
        return;
    };
    if let Some(cur) = plugin.ipam.get(ip)
        && cur.reserved
        && plugin.ipam.release(ip, &cur.key)
    {
        tracing::info!(ip = %ip_string(ip), "reserved FloatingIP deleted: IP freed");
    }
}

async fn watch_nodes(plugin: Arc<Plugin>) {
    let api: Api<Node> = Api::all(plugin.client().clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(n) | Event::InitApply(n)) => {
                let _span = object_span("node", &n, "apply").entered();
                let ip = node_internal_ip(&n);
                tracing::debug!(ip = ?ip.map(ip_string), "node InternalIP");
                plugin.set_node_ip(n.metadata.name.as_deref().unwrap_or_default(), ip);
            }
            Ok(Event::Delete(n)) => {
                let _span = object_span("node", &n, "delete").entered();
                plugin.set_node_ip(n.metadata.name.as_deref().unwrap_or_default(), None)
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "node watch"),
        }
    }
}

/// Applies the release policy to a finished or deleted pod's IPs in the background (three
/// attempts; the resync catches what is left), in a span naming the pod.
fn spawn_release(plugin: &Arc<Plugin>, state: PodState, why: &'static str) {
    let Ok(key) = KeyObj::parse(&state.key) else {
        return;
    };
    let span = tracing::info_span!(
        "release",
        namespace = %key.namespace,
        name = %key.pod,
        trigger = why
    );
    let plugin = plugin.clone();
    let task = async move {
        for attempt in 1..=3u64 {
            match plugin.release_key(&key, Some(&state.uid), why).await {
                Ok(()) => return,
                Err(error) => {
                    plugin
                        .metrics
                        .errors
                        .with_label_values(&[error.metric_label()])
                        .inc();
                    tracing::warn!(%error, key = %state.key, attempt, "release failed");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        tracing::warn!(key = %state.key, "release left to the resync");
    };
    tokio::spawn(task.instrument(span));
}

/// Releases IPs of pods that finish or are deleted. A re-list after a watch gap plays the
/// role of the original's tombstones: pods that vanished meanwhile are released too.
async fn watch_pods(plugin: Arc<Plugin>) {
    let api: Api<Pod> = Api::all(plugin.client().clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<HashMap<String, PodState>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(pod)) => {
                if wants_eni_ip(&pod)
                    && let Some(r) = relist.as_mut()
                {
                    r.insert(pod_ref(&pod), PodState::of(&pod));
                }
            }
            Ok(Event::InitDone) => {
                let fresh = relist.take().unwrap_or_default();
                let old = std::mem::replace(
                    &mut *plugin.pods.lock().unwrap_or_else(|p| p.into_inner()),
                    fresh.clone(),
                );
                for state in vanished(old, &fresh) {
                    spawn_release(&plugin, state, "pod deleted (seen on re-list)");
                }
                for state in fresh.into_values().filter(|s| s.finished) {
                    spawn_release(&plugin, state, "pod finished");
                }
            }
            Ok(Event::Apply(pod)) => {
                if !wants_eni_ip(&pod) {
                    continue;
                }
                let _span = object_span("pod", &pod, "apply").entered();
                let state = PodState::of(&pod);
                let prev = plugin
                    .pods
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pod_ref(&pod), state.clone());
                if state.finished && !prev.is_some_and(|p| p.finished && p.uid == state.uid) {
                    spawn_release(&plugin, state, "pod finished");
                }
            }
            Ok(Event::Delete(pod)) => {
                if !wants_eni_ip(&pod) {
                    continue;
                }
                let _span = object_span("pod", &pod, "delete").entered();
                plugin
                    .pods
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&pod_ref(&pod));
                spawn_release(&plugin, PodState::of(&pod), "pod deleted");
            }
            Err(error) => tracing::warn!(%error, "pod watch"),
        }
    }
}

/// Pods known before a re-list that are gone from it (or came back under another UID): the
/// deletions a watch gap hid (what client-go delivers as tombstones).
pub fn vanished(
    old: HashMap<String, PodState>,
    fresh: &HashMap<String, PodState>,
) -> Vec<PodState> {
    old.into_iter()
        .filter(|(name, state)| fresh.get(name).is_none_or(|now| now.uid != state.uid))
        .map(|(_, state)| state)
        .collect()
}

/// Resyncs at once (right after the recovery: what a predecessor left behind, e.g. the IPs
/// of pods deleted while no replica ran, is released without waiting an interval; Galaxy's
/// `wait.Until` does the same), then every `every`.
async fn resync_loop(plugin: Arc<Plugin>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trigger = "start";
    loop {
        tick.tick().await;
        let span = tracing::info_span!("resync", trigger);
        if let Err(error) = resync(&plugin).instrument(span.clone()).await {
            plugin
                .metrics
                .errors
                .with_label_values(&[error.metric_label()])
                .inc();
            tracing::warn!(parent: &span, %error, "resync failed");
        }
        trigger = "interval";
    }
}

/// One resync: every pod-level allocation whose pod is not running (gone, other UID,
/// finished) gets its release policy applied; IPs recorded only in running pods' annotations
/// are recovered.
pub async fn resync(plugin: &Plugin) -> Result<()> {
    for (ip, a) in plugin.ipam.allocated() {
        if a.reserved {
            continue;
        }
        let Ok(key) = KeyObj::parse(&a.key) else {
            continue;
        };
        if key.is_app_level() {
            continue;
        }
        let span = tracing::info_span!(
            "resync_pod",
            namespace = %key.namespace,
            name = %key.pod,
            ip = %ip_string(ip),
            trigger = "resync"
        );
        resync_allocation(plugin, ip, a, key).instrument(span).await;
    }
    let states: Vec<PodState> = plugin
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|s| !s.finished && !s.ips.is_empty())
        .cloned()
        .collect();
    for state in states {
        for ip in &state.ips {
            if plugin.ipam.get(*ip).is_none() {
                let _ = plugin.adopt_annotated(&state, *ip).await?;
            }
        }
    }
    if let Err(e) = plugin.ipam.check_invariants() {
        tracing::error!(error = %e, "allocator invariants violated");
    }
    Ok(())
}

/// The resync of one pod-level allocation: released when its pod is not running.
async fn resync_allocation(plugin: &Plugin, ip: u32, a: crate::allocator::Allocation, key: KeyObj) {
    let deployment_like = key.pool.is_some() || key.is_deployment();
    if a.node.is_empty()
        && a.uid.is_empty()
        && !deployment_like
        && a.policy == addon_common::api::galaxy::ReleasePolicy::Never
    {
        return;
    }
    let known = plugin
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key.pod_ref())
        .cloned();
    let running = match known {
        Some(s) => !s.finished && (a.uid.is_empty() || s.uid == a.uid),
        None => {
            // Not in the watch cache: ask the API (unknown errors count as running).
            let api: Api<Pod> = Api::namespaced(plugin.client().clone(), &key.namespace);
            match api.get_opt(&key.pod).await {
                Ok(Some(p)) => {
                    !crate::pod::is_finished(&p)
                        && (a.uid.is_empty() || p.metadata.uid.as_deref() == Some(a.uid.as_str()))
                }
                Ok(None) => false,
                Err(_) => true,
            }
        }
    };
    if running {
        return;
    }
    let _guard = plugin.lock_pod(&key).await;
    // Re-check under the lock: a bind may have just taken the IP.
    match plugin.ipam.get(ip) {
        Some(cur) if cur == a => {}
        _ => return,
    }
    let uid = (!a.uid.is_empty()).then_some(a.uid.as_str());
    if let Err(error) = plugin
        .release_key_with_lock(&key, uid, "resync: pod not running")
        .await
    {
        tracing::warn!(%error, ip = %ip_string(ip), "resync release failed");
    }
}

#[cfg(test)]
mod tests {
    use addon_common::api::galaxy::ReleasePolicy;

    use super::*;

    fn state(uid: &str) -> PodState {
        PodState {
            uid: uid.into(),
            key: format!("NULL_ns_NULL_{uid}"),
            finished: false,
            policy: ReleasePolicy::Default,
            node: String::new(),
            ips: Vec::new(),
        }
    }

    #[test]
    fn relist_releases_pods_deleted_during_a_watch_gap() {
        let old = HashMap::from([
            ("ns/a".to_string(), state("a1")),
            ("ns/b".to_string(), state("b1")),
            ("ns/c".to_string(), state("c1")),
        ]);
        let fresh = HashMap::from([
            ("ns/a".to_string(), state("a1")),
            ("ns/c".to_string(), state("c2")),
        ]);
        let mut gone: Vec<String> = vanished(old, &fresh).into_iter().map(|s| s.uid).collect();
        gone.sort();
        assert_eq!(
            gone,
            ["b1", "c1"],
            "b deleted; c re-created under a new UID"
        );
    }
}
