//! ReplicaSet controller: keeps `spec.replicas` active pods, deleting the least valuable ones
//! first (upstream's ranking, simplified), and reports replica counts.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive, owned_pods, pod_from_template, write_status};
use crate::cluster::util;

/// Runs the controller.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Controller::new(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    drive(c, cancel, ctx, reconcile).await;
}

/// Sort key: pods that sort first are deleted first (unassigned, pending, not ready, most
/// restarts, newest).
pub fn deletion_rank(p: &Pod) -> (bool, u8, bool, Reverse<i32>, Reverse<i64>) {
    let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = match util::phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    (
        assigned,
        phase,
        util::is_ready(p),
        Reverse(restarts),
        Reverse(created),
    )
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if rs.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = util::selector_string(&spec.selector);
    let pods = owned_pods(&ctx.client, &ns, &selector, &uid).await?;
    let mut active: Vec<&Pod> = pods.iter().filter(|p| util::is_active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let template = spec.template.clone().unwrap_or_default();
    if active.len() < want {
        let pod = pod_from_template(
            &template,
            &ns,
            util::controller_ref(rs.as_ref()),
            None,
            Some(format!("{}-", rs.name_any())),
            &Default::default(),
        );
        // upstream's slow start: batches of 1, 2, 4, ... stop at the first failure
        let pp = PostParams::default();
        let mut remaining = (want - active.len()).min(500);
        let mut batch = 1;
        while remaining > 0 {
            let n = batch.min(remaining);
            let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => util::record_event(
                        &ctx.client,
                        "replicaset-controller",
                        rs.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    ),
                    Err(e) => {
                        util::record_event(
                            &ctx.client,
                            "replicaset-controller",
                            rs.as_ref(),
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {e}"),
                        );
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            remaining -= n;
            batch *= 2;
        }
    } else if active.len() > want {
        active.sort_by_key(|p| deletion_rank(p));
        let doomed: Vec<String> = active[..active.len() - want]
            .iter()
            .map(|p| p.name_any())
            .collect();
        let dp = DeleteParams::default();
        let results = futures::future::join_all(doomed.iter().map(|n| api.delete(n, &dp))).await;
        for (p, r) in doomed.iter().zip(results) {
            match r {
                Ok(_) => util::record_event(
                    &ctx.client,
                    "replicaset-controller",
                    rs.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {p}"),
                ),
                Err(e) if util::is_code(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = util::now_ms();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&Pod> = pods.iter().filter(|p| util::is_active(p)).collect();
    let ready = active.iter().filter(|p| util::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| util::is_available(p, min_ready, now))
        .count();
    let fully = active
        .iter()
        .filter(|p| labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.meta().generation,
    });
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(
        &rs_api,
        &rs.name_any(),
        &serde_json::to_value(&rs.status)?,
        status,
    )
    .await?;
    if min_ready > 0 && available < ready {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}
