//! NoExecute taint-based eviction (kube-controller-manager's taint eviction controller) and the
//! `DefaultTolerationSeconds` admission plugin that gives every pod 300 s tolerations for
//! `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`: a pod on a node with a
//! NoExecute taint it does not tolerate is deleted at once; one that tolerates it for
//! `tolerationSeconds` is deleted that long after the taint's `timeAdded`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admission::{AdmissionHook, AdmissionRequest, Operation};
use crate::cluster::scheduler::predicates::tolerates;
use crate::cluster::util;
use crate::errors::ApiResult;

/// Upstream's default `tolerationSeconds` for not-ready/unreachable.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// When a pod must be evicted from a node with these taints, relative to now (ms since epoch):
/// `Some(0)` now, `Some(t)` at `t`, `None` never.
pub fn eviction_time(taints: &[Taint], tolerations: &[Toleration], now_ms: i64) -> Option<i64> {
    let mut at: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // tolerated forever if any matching toleration has no tolerationSeconds
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint
            .time_added
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(now_ms);
        let t = added + secs * 1000;
        at = Some(at.map_or(t, |a: i64| a.min(t)));
    }
    at
}

/// Runs the eviction loop.
pub async fn run(client: Client, cancel: CancellationToken) {
    let notify = Arc::new(Notify::new());
    let (pods, pw) = reflector::store::<Pod>();
    let (nodes, nw) = reflector::store::<Node>();
    let n1 = notify.clone();
    let n2 = notify.clone();
    let ps = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pw)
        .for_each(move |_| {
            n1.notify_one();
            futures::future::ready(())
        });
    let ns = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(nw)
        .for_each(move |_| {
            n2.notify_one();
            futures::future::ready(())
        });
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::select! { _ = ps => {}, _ = c.cancelled() => {} }
    });
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::select! { _ = ns => {}, _ = c.cancelled() => {} }
    });
    loop {
        let next = evict_due(&client, &pods, &nodes).await;
        let wait = next
            .map(|t| Duration::from_millis(u64::try_from((t - util::now_ms()).max(1)).unwrap_or(1)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn evict_due(client: &Client, pods: &Store<Pod>, nodes: &Store<Node>) -> Option<i64> {
    let tainted: BTreeMap<String, Vec<Taint>> = nodes
        .state()
        .iter()
        .filter_map(|n| {
            let t: Vec<Taint> = n
                .spec
                .as_ref()?
                .taints
                .clone()?
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            (!t.is_empty()).then(|| (n.name_any(), t))
        })
        .collect();
    if tainted.is_empty() {
        return None;
    }
    let now = util::now_ms();
    let mut next: Option<i64> = None;
    for pod in pods.state() {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
            continue;
        };
        let Some(taints) = tainted.get(node) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() || util::is_terminal(&pod) {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction_time(taints, &tolerations, now) {
            Some(t) if t <= now => {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                if api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                    .is_ok()
                {
                    let msg = format!(
                        "Marking for deletion Pod {}/{}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    );
                    util::record_event(
                        client,
                        "taint-eviction-controller",
                        pod.as_ref(),
                        "Normal",
                        "TaintManagerEviction",
                        &msg,
                    );
                }
            }
            Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
            None => {}
        }
    }
    next
}

/// The `DefaultTolerationSeconds` admission plugin.
pub struct DefaultTolerationSeconds;

impl AdmissionHook for DefaultTolerationSeconds {
    fn mutate<'a>(&'a self, req: &'a mut AdmissionRequest) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if req.operation != Operation::Create
                || req.subresource.is_some()
                || !req.resource.group.is_empty()
                || req.resource.plural != "pods"
            {
                return Ok(());
            }
            let Some(obj) = req.object.as_mut() else {
                return Ok(());
            };
            let existing: Vec<Toleration> = obj
                .pointer("/spec/tolerations")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            let mut add = Vec::new();
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let taint = Taint {
                    key: key.into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                };
                if !existing.iter().any(|t| tolerates(t, &taint)) {
                    add.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
                }
            }
            if add.is_empty() {
                return Ok(());
            }
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                let list = spec.entry("tolerations").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.extend(add);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added_ms: i64) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: Some(util::time_ms(added_ms)),
        }
    }
    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn eviction_times() {
        let t = [taint("node.kubernetes.io/unreachable", 10_000)];
        assert_eq!(eviction_time(&t, &[], 20_000), Some(0));
        assert_eq!(
            eviction_time(
                &t,
                &[tol("node.kubernetes.io/unreachable", Some(300))],
                20_000
            ),
            Some(310_000)
        );
        assert_eq!(
            eviction_time(&t, &[tol("node.kubernetes.io/unreachable", None)], 20_000),
            None
        );
        assert_eq!(eviction_time(&t, &[tol("other", None)], 20_000), Some(0));
        let noschedule = [Taint {
            effect: "NoSchedule".into(),
            ..taint("k", 0)
        }];
        assert_eq!(eviction_time(&noschedule, &[], 0), None);
    }
}
