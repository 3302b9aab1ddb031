//! DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity,
//! taints vs tolerations — with the tolerations upstream adds to daemon pods), pinned to its
//! node through a `metadata.name` matchFields node affinity and bound by the scheduler as
//! upstream does; RollingUpdate with maxUnavailable; status counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive, int_or_percent, owned_pods, pod_from_template, write_status};
use crate::cluster::scheduler::predicates;
use crate::cluster::util;

/// Runs the controller (reconciling every DaemonSet when nodes change).
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let nodes = watcher(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let c = Controller::new(
        Api::<DaemonSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(nodes);
    drive(c, cancel, ctx, reconcile).await;
}

/// The tolerations the DaemonSet controller adds to its pods.
pub fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The pod the DaemonSet wants on `node` (before defaulting): template + node affinity + tolerations.
pub fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> = [
        ("controller-revision-hash".to_string(), hash.to_string()),
        (
            "pod-template-generation".to_string(),
            ds.meta().generation.unwrap_or(1).to_string(),
        ),
    ]
    .into();
    let mut pod = pod_from_template(
        &spec.template,
        &ds.namespace().unwrap_or_default(),
        util::controller_ref(ds),
        None,
        Some(format!("{}-", ds.name_any())),
        &labels,
    );
    if let Some(ps) = pod.spec.as_mut() {
        let tol = ps.tolerations.get_or_insert_with(Vec::new);
        for t in daemon_tolerations() {
            if !tol.contains(&t) {
                tol.push(t);
            }
        }
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        };
        let aff = ps.affinity.get_or_insert_with(Default::default);
        let na = aff.node_affinity.get_or_insert_with(Default::default);
        na.required_during_scheduling_ignored_during_execution =
            Some(k8s_openapi::api::core::v1::NodeSelector {
                node_selector_terms: vec![term],
            });
    }
    pod
}

/// Whether a daemon pod should run on `node` (upstream `NodeShouldRunDaemonPod`).
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.clone().unwrap_or_default();
    let probe = Pod {
        metadata: Default::default(),
        spec: spec.template.spec.clone().map(|mut s| {
            s.tolerations
                .get_or_insert_with(Vec::new)
                .extend(daemon_tolerations());
            s
        }),
        status: None,
    };
    if !predicates::node_affinity_matches(&probe, node) {
        return false;
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tolerations = probe
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    predicates::untolerated_taint(&taints, &tolerations).is_none()
}

/// The node a daemon pod is for (its nodeName, else its matchFields affinity).
pub fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if ds.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let hash = util::hash_of(&spec.template);
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items;
    let pods = owned_pods(
        &ctx.client,
        &ns,
        &util::selector_string(&spec.selector),
        &ds.uid().unwrap_or_default(),
    )
    .await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods.iter().filter(|p| util::is_active(p)) {
        by_node
            .entry(pod_node(p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut desired = 0;
    let eligible: BTreeMap<String, bool> = nodes
        .iter()
        .map(|n| (n.name_any(), should_run(&ds, n)))
        .collect();
    for n in &nodes {
        let name = n.name_any();
        let have = by_node.get(&name).map(Vec::len).unwrap_or(0);
        if eligible[&name] {
            desired += 1;
            if have == 0 {
                match api
                    .create(&PostParams::default(), &pod_for(&ds, &name, &hash))
                    .await
                {
                    Ok(p) => util::record_event(
                        &ctx.client,
                        "daemonset-controller",
                        ds.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    ),
                    Err(e) => return Err(e.into()),
                }
            } else if have > 1 {
                for p in &by_node[&name][1..] {
                    let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
                }
            }
        }
    }
    // pods on nodes that are gone or no longer eligible
    let mut misscheduled = 0;
    for (node, ps) in &by_node {
        if !eligible.get(node).copied().unwrap_or(false) {
            misscheduled += ps.len();
            for p in ps {
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            }
        }
    }
    // rolling update
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let active: Vec<&Pod> = by_node
        .iter()
        .filter(|(n, _)| eligible.get(*n).copied().unwrap_or(false))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let max_unavail = int_or_percent(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref()),
            desired,
            "1",
            true,
        )
        .max(1);
        let unavailable = active.iter().filter(|p| !util::is_ready(p)).count() as i32
            + (desired - active.len() as i32).max(0);
        let mut budget = max_unavail - unavailable;
        for p in active
            .iter()
            .filter(|p| p.labels().get("controller-revision-hash") != Some(&hash))
        {
            if budget <= 0 {
                break;
            }
            let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            budget -= 1;
        }
    }
    let ready = active.iter().filter(|p| util::is_ready(p)).count();
    let updated = active
        .iter()
        .filter(|p| p.labels().get("controller-revision-hash") == Some(&hash))
        .count();
    let status = json!({
        "observedGeneration": ds.meta().generation,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": active.len(),
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": (desired - ready as i32).max(0),
        "updatedNumberScheduled": updated,
    });
    let dapi: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(
        &dapi,
        &ds.name_any(),
        &serde_json::to_value(&ds.status)?,
        status,
    )
    .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "x"}]}}}
        }))
        .expect("ds");
        let node = |labels: serde_json::Value, taints: serde_json::Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}),
            )
            .expect("node")
        };
        assert!(should_run(&ds, &node(json!({"role": "worker"}), json!([]))));
        assert!(!should_run(
            &ds,
            &node(json!({"role": "master"}), json!([]))
        ));
        // unreachable/unschedulable are tolerated, arbitrary NoSchedule taints are not
        assert!(should_run(
            &ds,
            &node(
                json!({"role": "worker"}),
                json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}])
            )
        ));
        assert!(!should_run(
            &ds,
            &node(
                json!({"role": "worker"}),
                json!([{"key": "virtual-kubelet.io/provider", "value": "burst", "effect": "NoSchedule"}])
            )
        ));
        let p = pod_for(&ds, "n1", "h");
        assert_eq!(pod_node(&p).as_deref(), Some("n1"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
    }
}
