//! Deployment controller: one ReplicaSet per pod template (`<name>-<pod-template-hash>`),
//! RollingUpdate with maxSurge/maxUnavailable (upstream's reconcileNewReplicaSet /
//! reconcileOldReplicaSets arithmetic) and Recreate, revision annotations, `paused`, and the
//! status/conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive, int_or_percent, write_status};
use crate::cluster::util;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

/// Runs the controller.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Controller::new(
        Api::<Deployment>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    // pods of a Deployment's ReplicaSets (`<deployment>-<hash>`): Recreate waits for the old
    // pods to be gone, which changes no ReplicaSet
    .watches(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
        |pod: Pod| {
            // only terminating pods matter (their disappearance); keeps status churn cheap
            pod.metadata.deletion_timestamp.as_ref()?;
            let ns = pod.namespace()?;
            let owner = pod
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")?
                .name
                .clone();
            let (deploy, _) = owner.rsplit_once('-')?;
            Some(kube::runtime::reflector::ObjectRef::<Deployment>::new(deploy).within(&ns))
        },
    );
    drive(c, cancel, ctx, reconcile).await;
}

/// The template with the hash label removed, as JSON (for equality).
fn template_key(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
        }
        if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
            m.labels = None;
        }
    }
    if t.metadata
        .as_ref()
        .is_some_and(|m| *m == Default::default())
    {
        t.metadata = None;
    }
    serde_json::to_value(&t).unwrap_or_default()
}

/// `pod-template-hash` of a template (with the collision count, as upstream).
pub fn template_hash(t: &PodTemplateSpec, collision: Option<i32>) -> String {
    let mut v = template_key(t);
    if let Some(c) = collision {
        v["__collision"] = json!(c);
    }
    util::hash_of(&v)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}
fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}
fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The rolling-update plan: new replica count for the new RS and for each old RS.
/// Pure: `(new_rs_replicas, new_rs_available, olds [(replicas, available)])`.
pub fn rolling_plan(
    desired: i32,
    max_surge: i32,
    max_unavailable: i32,
    new: (i32, i32),
    olds: &[(i32, i32)],
) -> (i32, Vec<i32>) {
    let old_total: i32 = olds.iter().map(|o| o.0).sum();
    let all_total = new.0 + old_total;
    // scale up the new RS within the surge budget
    let mut new_replicas = new.0;
    if new.0 > desired {
        new_replicas = desired;
    } else if new.0 < desired {
        let max_total = desired + max_surge;
        if all_total < max_total {
            new_replicas = (new.0 + (max_total - all_total)).min(desired);
        }
    }
    // scale down old RSes within the availability budget
    let mut olds_out: Vec<i32> = olds.iter().map(|o| o.0).collect();
    if old_total > 0 {
        let min_available = desired - max_unavailable;
        let new_unavailable = new.0 - new.1;
        let all_pods = new.0 + old_total;
        let mut max_scaled_down = all_pods - min_available - new_unavailable;
        // first clean up unhealthy old replicas
        for (i, o) in olds.iter().enumerate() {
            if max_scaled_down <= 0 {
                break;
            }
            let unhealthy = (o.0 - o.1).max(0);
            let cut = unhealthy.min(max_scaled_down);
            olds_out[i] -= cut;
            max_scaled_down -= cut;
        }
        // then scale down available old replicas
        let all_available: i32 = new.1 + olds.iter().map(|o| o.1).sum::<i32>();
        let mut total_scale_down = (all_available - min_available).min(max_scaled_down.max(0));
        for out in olds_out.iter_mut() {
            if total_scale_down <= 0 {
                break;
            }
            let cut = (*out).min(total_scale_down);
            *out -= cut;
            total_scale_down -= cut;
        }
    }
    (new_replicas, olds_out)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if d.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels(&util::selector_string(&spec.selector));
    let mut all: Vec<ReplicaSet> = rs_api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|r| util::controlled_by(&r.metadata, &uid))
        .collect();
    all.sort_by_key(|r| {
        (
            revision(r),
            r.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
        )
    });
    let key = template_key(&spec.template);
    let new_idx = all.iter().position(|r| {
        r.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(template_key)
            .as_ref()
            == Some(&key)
    });
    let max_rev = all.iter().map(revision).max().unwrap_or(0);
    if spec.paused == Some(true) {
        return status(&d, &ctx, &all, new_idx, desired).await;
    }
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = int_or_percent(ru.max_surge.as_ref(), desired, "25%", true);
    let mut unavail = int_or_percent(ru.max_unavailable.as_ref(), desired, "25%", false);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    // create the new RS when missing
    let new_idx = match new_idx {
        Some(i) => {
            // bump its revision when it becomes current again (rollback)
            if revision(&all[i]) < max_rev
                && all
                    .iter()
                    .enumerate()
                    .any(|(j, r)| j != i && replicas(r) > 0)
            {
                let p = json!({"metadata": {"annotations": {REVISION: (max_rev + 1).to_string()}}});
                all[i] = rs_api
                    .patch(
                        &all[i].name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&p),
                    )
                    .await?;
            }
            i
        }
        None => {
            let old_active = all.iter().any(|r| replicas(r) > 0);
            let start = if recreate || old_active { 0 } else { desired };
            let collision = d.status.as_ref().and_then(|s| s.collision_count);
            let hash = template_hash(&spec.template, collision);
            let rs = new_replica_set(&d, &spec, &hash, max_rev, start, desired, surge)?;
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    util::record_event(
                        &ctx.client,
                        "deployment-controller",
                        d.as_ref(),
                        "Normal",
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled up replica set {} from 0 to {start}",
                            created.name_any()
                        ),
                    );
                    all.push(created);
                    all.len() - 1
                }
                Err(e) if util::is_code(&e, 409) => {
                    return name_taken(&ctx, &d, &rs_api, &rs.name_any(), &key, collision).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let olds: Vec<usize> = (0..all.len()).filter(|i| *i != new_idx).collect();
    let mut scale: Vec<(usize, i32)> = Vec::new();
    if recreate {
        let old_running = olds.iter().any(|i| replicas(&all[*i]) > 0);
        for i in &olds {
            if replicas(&all[*i]) > 0 {
                scale.push((*i, 0));
            }
        }
        if !old_running {
            // wait until no old pod is left
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let old_uids: Vec<String> = olds.iter().filter_map(|i| all[*i].uid()).collect();
            let left = pods
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|p| old_uids.iter().any(|u| util::controlled_by(&p.metadata, u)))
                .count();
            if left == 0 && replicas(&all[new_idx]) != desired {
                scale.push((new_idx, desired));
            }
        }
    } else {
        let new = (replicas(&all[new_idx]), available(&all[new_idx]));
        let old_counts: Vec<(i32, i32)> = olds
            .iter()
            .map(|i| (replicas(&all[*i]), available(&all[*i])))
            .collect();
        let (new_replicas, old_out) = rolling_plan(desired, surge, unavail, new, &old_counts);
        if new_replicas != new.0 {
            scale.push((new_idx, new_replicas));
        }
        for (k, i) in olds.iter().enumerate() {
            if old_out[k] != old_counts[k].0 {
                scale.push((*i, old_out[k]));
            }
        }
    }
    apply_scale(&ctx, &d, &rs_api, &mut all, scale, desired, surge).await?;
    prune_history(&rs_api, &spec, &all, &olds).await;
    status(&d, &ctx, &all, Some(new_idx), desired).await
}

/// A new ReplicaSet for the current template of `d`, labelled and named by `hash`.
fn new_replica_set(
    d: &Deployment,
    spec: &DeploymentSpec,
    hash: &str,
    max_rev: i64,
    start: i32,
    desired: i32,
    surge: i32,
) -> Result<ReplicaSet, CtlError> {
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.to_string());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.to_string());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.to_string());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-{hash}", d.name_any()), "namespace": d.namespace().unwrap_or_default(), "labels": labels,
            "annotations": {REVISION: (max_rev + 1).to_string(), "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                            "deployment.kubernetes.io/max-replicas": (desired + surge).to_string()},
            "ownerReferences": [util::controller_ref(d)]
        },
        "spec": {"replicas": start, "minReadySeconds": spec.min_ready_seconds, "selector": selector, "template": template}
    }))?;
    Ok(rs)
}

/// Scale the ReplicaSets at the indexes in `scale` to their targets, with an Event for each.
async fn apply_scale(
    ctx: &Ctx,
    d: &Deployment,
    rs_api: &Api<ReplicaSet>,
    all: &mut [ReplicaSet],
    scale: Vec<(usize, i32)>,
    desired: i32,
    surge: i32,
) -> Result<(), CtlError> {
    for (i, to) in scale {
        let from = replicas(&all[i]);
        let p = json!({"metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string(),
            "deployment.kubernetes.io/max-replicas": (desired + surge).to_string()}}, "spec": {"replicas": to}});
        all[i] = rs_api
            .patch(
                &all[i].name_any(),
                &PatchParams::default(),
                &Patch::Merge(&p),
            )
            .await?;
        let verb = if to > from { "up" } else { "down" };
        util::record_event(
            &ctx.client,
            "deployment-controller",
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!(
                "Scaled {verb} replica set {} from {from} to {to}",
                all[i].name_any()
            ),
        );
    }
    Ok(())
}

/// The new ReplicaSet's name is taken. Ours (a stale read) needs only a retry; a foreign
/// ReplicaSet or another template under that name is a hash collision: count it in the status.
async fn name_taken(
    ctx: &Ctx,
    d: &Deployment,
    rs_api: &Api<ReplicaSet>,
    rs_name: &str,
    key: &Value,
    collision: Option<i32>,
) -> Result<Action, CtlError> {
    // AlreadyExists: ours (a stale read) is fine; a foreign ReplicaSet or another
    // template under that name is a hash collision (upstream's rule)
    let existing = rs_api.get_opt(rs_name).await?;
    let ours = existing.as_ref().is_some_and(|r| {
        util::controlled_by(&r.metadata, &d.uid().unwrap_or_default())
            && r.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(template_key)
                == Some(key.clone())
    });
    if existing.is_none() || ours {
        return Ok(Action::requeue(Duration::from_millis(10)));
    }
    let api: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    let p = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
    api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&p))
        .await?;
    Ok(Action::requeue(Duration::from_millis(10)))
}

/// Delete old ReplicaSets scaled to zero beyond the revision history limit.
async fn prune_history(
    rs_api: &Api<ReplicaSet>,
    spec: &DeploymentSpec,
    all: &[ReplicaSet],
    olds: &[usize],
) {
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
    let idle: Vec<&ReplicaSet> = olds
        .iter()
        .map(|i| &all[*i])
        .filter(|r| replicas(r) == 0 && r.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0)
        .collect();
    if idle.len() > limit {
        for r in &idle[..idle.len() - limit] {
            let _ = rs_api.delete(&r.name_any(), &DeleteParams::default()).await;
        }
    }
}

async fn status(
    d: &Deployment,
    ctx: &Ctx,
    all: &[ReplicaSet],
    new_idx: Option<usize>,
    desired: i32,
) -> Result<Action, CtlError> {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(f).sum::<i32>();
    let total = sum(&|r| r.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(&|r| {
        r.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let avail = sum(&|r| available(r));
    let updated = new_idx
        .map(|i| all[i].status.as_ref().map(|s| s.replicas).unwrap_or(0))
        .unwrap_or(0);
    let spec = d.spec.clone().unwrap_or_default();
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let max_unavail = if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
    {
        0
    } else {
        int_or_percent(ru.max_unavailable.as_ref(), desired, "25%", false)
    };
    let now = util::now();
    let old = d.status.clone().unwrap_or_default();
    let cond = |ty: &str, ok: bool, reason: &str, msg: String| {
        let prev = old.conditions.iter().flatten().find(|c| c.type_ == ty);
        let status = if ok { "True" } else { "False" };
        let same = prev.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
        let transition = match prev {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        let update = if same {
            prev.and_then(|p| p.last_update_time.clone())
        } else {
            Some(now.clone())
        };
        json!({"type": ty, "status": status, "reason": reason, "message": msg, "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let new_name = new_idx.map(|i| all[i].name_any()).unwrap_or_default();
    let complete = new_idx.is_some() && updated == desired && total == desired && avail >= desired;
    let available_cond = if avail >= desired - max_unavail {
        cond(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        cond(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    // progress: any change of the replica counts refreshes the Progressing condition; none
    // for progressDeadlineSeconds (default 600) gives ProgressDeadlineExceeded (what makes
    // `kubectl rollout status` fail instead of waiting forever)
    let moved = (
        old.replicas,
        old.updated_replicas,
        old.ready_replicas,
        old.available_replicas,
    ) != (Some(total), Some(updated), Some(ready), Some(avail));
    let deadline_ms = i64::from(spec.progress_deadline_seconds.unwrap_or(600)) * 1000;
    let prev_prog = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    let last_progress = prev_prog
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0.as_millisecond());
    let stalled = !complete
        && !moved
        && spec.paused != Some(true)
        && last_progress.is_some_and(|t| util::now_ms() - t > deadline_ms);
    let mut requeue_at = None;
    let progressing = if complete {
        cond(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if stalled
        || (prev_prog.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            && !moved)
    {
        cond(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        )
    } else {
        let mut c = cond(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        );
        if moved {
            c["lastUpdateTime"] = json!(now);
        }
        let since = if moved {
            util::now_ms()
        } else {
            last_progress.unwrap_or_else(util::now_ms)
        };
        requeue_at = Some(since + deadline_ms + 10);
        c
    };
    let status = json!({
        "observedGeneration": d.meta().generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "unavailableReplicas": (total.max(desired) - avail).max(0),
        "conditions": [available_cond, progressing],
    });
    let current = serde_json::to_value(&d.status)?;
    let api: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    write_status(&api, &d.name_any(), &current, status).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if !complete && min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Some(at) = requeue_at {
        let wait = u64::try_from((at - util::now_ms()).max(1)).unwrap_or(1);
        return Ok(Action::requeue(Duration::from_millis(wait)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)]
    fn rolling_plan_table() {
        // (desired, surge, unavailable, new (replicas, available), olds) -> (new replicas, old replicas)
        let cases: Vec<(i32, i32, i32, (i32, i32), Vec<(i32, i32)>, (i32, Vec<i32>))> = vec![
            // start of a rollout: surge 1 creates one new pod, unavailable 0 keeps all old
            (3, 1, 0, (0, 0), vec![(3, 3)], (1, vec![3])),
            // new pod available: one old can go
            (3, 1, 0, (1, 1), vec![(3, 3)], (1, vec![2])),
            // maxUnavailable 1, surge 0: scale old down first
            (3, 0, 1, (0, 0), vec![(3, 3)], (0, vec![2])),
            (3, 0, 1, (0, 0), vec![(2, 2)], (1, vec![2])),
            // unhealthy old replicas are removed first
            (3, 1, 1, (1, 0), vec![(3, 1)], (1, vec![2])),
            // finished
            (3, 1, 0, (3, 3), vec![(0, 0)], (3, vec![0])),
            // scale down during steady state
            (2, 1, 0, (3, 3), vec![], (2, vec![])),
            // percentages resolved by the caller; big surge creates all at once
            (4, 4, 0, (0, 0), vec![(4, 4)], (4, vec![4])),
        ];
        for (desired, surge, unavail, new, olds, want) in cases {
            assert_eq!(
                rolling_plan(desired, surge, unavail, new, &olds),
                want,
                "{desired} {surge} {unavail} {new:?} {olds:?}"
            );
        }
    }

    #[test]
    fn template_hash_ignores_the_hash_label() {
        let mut t = PodTemplateSpec::default();
        let h = template_hash(&t, None);
        t.metadata.get_or_insert_with(Default::default).labels =
            Some([(HASH_LABEL.to_string(), "x".to_string())].into());
        assert_eq!(template_hash(&t, None), h);
        assert_ne!(template_hash(&t, Some(1)), h);
    }
}
