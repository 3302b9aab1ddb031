//! What runs while this replica leads: recovery from FloatingIPs and pod annotations, the
//! ConfigMap / FloatingIP / pod / node watches, and the periodic resync.

use std::{collections::HashMap, sync::Arc, time::Duration};

use addon_common::api::galaxy::FloatingIP;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod};
use kube::{
    Api, Client, Resource,
    api::ListParams,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    allocator::{ip_string, parse_ip},
    config::{PluginConf, PoolConfig},
    key::KeyObj,
    plugin::{Plugin, PodState, allocation_from_fip, node_internal_ip},
    pod::wants_eni_ip,
};

/// Reads the pools: inline from the `--config` file, else the ConfigMap (a missing ConfigMap
/// or key is an empty configuration, not a fatal error: the watch picks it up later).
pub async fn load_config(client: &Client, conf: &PluginConf) -> Result<PoolConfig> {
    if let Some(inline) = &conf.floating_ips {
        return Ok(inline.clone());
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &conf.config_map_namespace);
    match api.get_opt(&conf.config_map_name).await? {
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
    let fips: Api<FloatingIP> = Api::all(plugin.client().clone());
    let list = fips.list(&ListParams::default()).await?;
    let mut adopted = 0usize;
    for fip in &list.items {
        let name = fip.metadata.name.clone().unwrap_or_default();
        let Some(ip) = parse_ip(&name) else {
            tracing::warn!(
                name,
                "FloatingIP whose name is not an IPv4 address: ignored"
            );
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
    let list = pods.list(&ListParams::default()).await?;
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
            let label = if matches!(e, Error::ConfigDropsAllocated(_)) {
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
pub async fn run(plugin: Arc<Plugin>, conf: PluginConf, stop: CancellationToken) {
    let mut tasks = Vec::new();
    if conf.floating_ips.is_none() {
        tasks.push(tokio::spawn(watch_configmap(plugin.clone(), conf.clone())));
    }
    tasks.push(tokio::spawn(watch_floatingips(plugin.clone())));
    tasks.push(tokio::spawn(watch_pods(plugin.clone())));
    tasks.push(tokio::spawn(watch_nodes(plugin.clone())));
    tasks.push(tokio::spawn(resync_loop(
        plugin.clone(),
        Duration::from_secs(conf.resync_interval_minutes.max(1) * 60),
    )));
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
                apply_configmap(&plugin, &cm, &conf.floating_ip_key).await;
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!("pool ConfigMap deleted: keeping the current configuration");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "ConfigMap watch"),
        }
    }
}

/// FloatingIPs labelled `reserved` created or deleted by hand reserve or free their IP.
async fn watch_floatingips(plugin: Arc<Plugin>) {
    let api: Api<FloatingIP> = Api::all(plugin.client().clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(fip) | Event::InitApply(fip)) if fip.is_reserved() => {
                let name = fip.metadata.name.clone().unwrap_or_default();
                let Some(ip) = parse_ip(&name) else {
                    tracing::warn!(
                        name,
                        "reserved FloatingIP whose name is not an IPv4 address: ignored"
                    );
                    continue;
                };
                let want = allocation_from_fip(&fip);
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
            Ok(Event::Delete(fip)) => {
                let Some(ip) = fip.ip().and_then(|ip| parse_ip(&ip.to_string())) else {
                    continue;
                };
                if let Some(cur) = plugin.ipam.get(ip)
                    && cur.reserved
                    && plugin.ipam.release(ip, &cur.key)
                {
                    tracing::info!(ip = %ip_string(ip), "reserved FloatingIP deleted: IP freed");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "FloatingIP watch"),
        }
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
                plugin.set_node_ip(
                    n.metadata.name.as_deref().unwrap_or_default(),
                    node_internal_ip(&n),
                );
            }
            Ok(Event::Delete(n)) => {
                plugin.set_node_ip(n.metadata.name.as_deref().unwrap_or_default(), None)
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "node watch"),
        }
    }
}

fn spawn_release(plugin: &Arc<Plugin>, state: PodState, why: &'static str) {
    let plugin = plugin.clone();
    tokio::spawn(async move {
        let Ok(key) = KeyObj::parse(&state.key) else {
            return;
        };
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
    });
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
    loop {
        tick.tick().await;
        if let Err(error) = resync(&plugin).await {
            plugin
                .metrics
                .errors
                .with_label_values(&[error.metric_label()])
                .inc();
            tracing::warn!(%error, "resync failed");
        }
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
        let deployment_like = key.pool.is_some() || key.is_deployment();
        if a.node.is_empty()
            && a.uid.is_empty()
            && !deployment_like
            && a.policy == addon_common::api::galaxy::ReleasePolicy::Never
        {
            continue;
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
                            && (a.uid.is_empty()
                                || p.metadata.uid.as_deref() == Some(a.uid.as_str()))
                    }
                    Ok(None) => false,
                    Err(_) => true,
                }
            }
        };
        if running {
            continue;
        }
        let _guard = plugin.lock_pod(&key).await;
        // Re-check under the lock: a bind may have just taken the IP.
        match plugin.ipam.get(ip) {
            Some(cur) if cur == a => {}
            _ => continue,
        }
        let uid = (!a.uid.is_empty()).then_some(a.uid.as_str());
        if let Err(error) = plugin
            .release_key_with_lock(&key, uid, "resync: pod not running")
            .await
        {
            tracing::warn!(%error, ip = %ip_string(ip), "resync release failed");
        }
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
