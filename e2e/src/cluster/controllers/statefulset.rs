//! StatefulSet controller: ordinal pods `<name>-<i>`, PVCs `<claim>-<name>-<i>` from
//! volumeClaimTemplates, OrderedReady (one at a time, in order, each Running and Ready before
//! the next; scale down from the highest ordinal) or Parallel management, RollingUpdate (highest
//! ordinal first, honouring `partition`) and OnDelete, and the replica counts in status.
//! Revisions are hashes in `controller-revision-hash` (ControllerRevision objects are not
//! written).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive, owned_pods, pod_from_template, write_status};
use crate::cluster::util;

/// Label with the pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Controller::new(
        Api::<StatefulSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    drive(c, cancel, ctx, reconcile).await;
}

/// The ordinal of a pod named `<set>-<i>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The revision name (`<set>-<hash of the template>`).
pub fn revision(sts: &StatefulSet) -> String {
    let t = sts.spec.as_ref().map(|s| &s.template);
    format!("{}-{}", sts.name_any(), util::hash_of(&t))
}

fn pod_for(sts: &StatefulSet, i: i32, rev: &str) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let name = format!("{}-{i}", sts.name_any());
    let labels: BTreeMap<String, String> = [
        (POD_NAME_LABEL.to_string(), name.clone()),
        (REVISION_LABEL.to_string(), rev.to_string()),
        (POD_INDEX_LABEL.to_string(), i.to_string()),
    ]
    .into();
    let mut pod = pod_from_template(
        &spec.template,
        &sts.namespace().unwrap_or_default(),
        util::controller_ref(sts),
        Some(name.clone()),
        None,
        &labels,
    );
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(name.clone());
        if let Some(svc) = spec.service_name.clone().filter(|s| !s.is_empty()) {
            ps.subdomain = Some(svc);
        }
        for t in spec.volume_claim_templates.iter().flatten() {
            let claim = t.metadata.name.clone().unwrap_or_default();
            let vols = ps.volumes.get_or_insert_with(Vec::new);
            vols.retain(|v| v.name != claim);
            vols.push(Volume {
                name: claim.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{claim}-{name}"),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    pod
}

/// `persistentVolumeClaimRetentionPolicy` (`whenDeleted`, `whenScaled`), default Retain.
pub fn retention(sts: &StatefulSet) -> (String, String) {
    let p = sts
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
        .unwrap_or_default();
    (
        p.when_deleted.unwrap_or_else(|| "Retain".into()),
        p.when_scaled.unwrap_or_else(|| "Retain".into()),
    )
}

/// The (non-controller) owner reference a claim gets to be deleted with its StatefulSet.
fn set_owner(sts: &StatefulSet) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    let mut o = util::controller_ref(sts);
    o.controller = None;
    o
}

async fn add_owner(
    api: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<(), CtlError> {
    let mut refs = pvc.owner_references().to_vec();
    refs.push(owner);
    let patch =
        json!({"metadata": {"ownerReferences": refs, "resourceVersion": pvc.resource_version()}});
    api.patch(
        &pvc.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// whenScaled=Delete: the claims of a condemned pod get the pod as their only owner (the set's
/// reference is dropped, as upstream does), so they go with the pod.
async fn claims_follow_pod(ctx: &Ctx, sts: &StatefulSet, pod: &Pod) -> Result<(), CtlError> {
    let spec = sts.spec.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &sts.namespace().unwrap_or_default());
    for t in spec.volume_claim_templates.iter().flatten() {
        let name = format!(
            "{}-{}",
            t.metadata.name.clone().unwrap_or_default(),
            pod.name_any()
        );
        let Some(pvc) = api.get_opt(&name).await? else {
            continue;
        };
        if pvc
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref())
        {
            continue;
        }
        let mut refs: Vec<_> = pvc
            .owner_references()
            .iter()
            .filter(|o| Some(&o.uid) != sts.metadata.uid.as_ref())
            .cloned()
            .collect();
        let mut o = util::controller_ref(pod);
        o.controller = None;
        refs.push(o);
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pvc.resource_version()}});
        api.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

async fn ensure_claims(ctx: &Ctx, sts: &StatefulSet, i: i32) -> Result<(), CtlError> {
    let spec = sts.spec.clone().unwrap_or_default();
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for t in spec.volume_claim_templates.iter().flatten() {
        let claim = t.metadata.name.clone().unwrap_or_default();
        let name = format!("{claim}-{}-{i}", sts.name_any());
        let delete_with_set = retention(sts).0 == "Delete";
        if let Some(existing) = api.get_opt(&name).await? {
            let owned = existing
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == sts.metadata.uid.as_ref());
            if delete_with_set && !owned {
                add_owner(&api, &existing, set_owner(sts)).await?;
            }
            continue;
        }
        let mut pvc = t.clone();
        pvc.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name),
            namespace: Some(ns.clone()),
            labels: Some(
                spec.selector
                    .match_labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(t.metadata.labels.clone().unwrap_or_default())
                    .collect(),
            ),
            annotations: t.metadata.annotations.clone(),
            owner_references: delete_with_set.then(|| vec![set_owner(sts)]),
            ..Default::default()
        };
        pvc.status = None;
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if sts.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let update_rev = revision(&sts);
    let pods_list = owned_pods(
        &ctx.client,
        &ns,
        &util::selector_string(&spec.selector),
        &sts.uid().unwrap_or_default(),
    )
    .await?;
    let mut pods: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &pods_list {
        if let Some(i) = ordinal(&name, &p.name_any()) {
            pods.insert(i, p);
        }
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let healthy = |p: &Pod| util::is_active(p) && util::phase(p) == "Running" && util::is_ready(p);
    let mut blocked = false;
    // create / replace pods 0..replicas
    for i in 0..replicas {
        match pods.get(&i) {
            None => {
                if blocked {
                    break;
                }
                ensure_claims(&ctx, &sts, i).await?;
                match api
                    .create(&PostParams::default(), &pod_for(&sts, i, &update_rev))
                    .await
                {
                    Ok(p) => util::record_event(
                        &ctx.client,
                        "statefulset-controller",
                        sts.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!(
                            "create Pod {} in StatefulSet {name} successful",
                            p.name_any()
                        ),
                    ),
                    Err(e) if util::is_code(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
                if ordered {
                    blocked = true;
                }
            }
            Some(p) if util::is_terminal(p) && p.metadata.deletion_timestamp.is_none() => {
                // failed/succeeded pods are deleted and recreated
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
                if ordered {
                    blocked = true;
                }
            }
            Some(p) => {
                if ordered && !healthy(p) {
                    blocked = true;
                }
            }
        }
    }
    // condemned pods: highest ordinal first
    let all_healthy = (0..replicas).all(|i| pods.get(&i).is_some_and(|p| healthy(p)));
    let condemned: Vec<&&Pod> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
    if !condemned.is_empty() && (!ordered || all_healthy) {
        let terminating = condemned
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some());
        for p in condemned
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            if ordered && terminating {
                break;
            }
            if retention(&sts).1 == "Delete" {
                claims_follow_pod(&ctx, &sts, p).await?;
            }
            let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            util::record_event(
                &ctx.client,
                "statefulset-controller",
                sts.as_ref(),
                "Normal",
                "SuccessfulDelete",
                &format!(
                    "delete Pod {} in StatefulSet {name} successful",
                    p.name_any()
                ),
            );
            if ordered {
                break;
            }
        }
    }
    // rolling update: one pod at a time, highest ordinal first, above the partition
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") && all_healthy && condemned.is_empty() {
        let partition = strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let stale = (partition..replicas)
            .rev()
            .filter_map(|i| pods.get(&i))
            .find(|p| p.labels().get(REVISION_LABEL) != Some(&update_rev));
        if let Some(p) = stale {
            let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
        }
    }
    let status = sts_status(&sts, &pods, replicas, &update_rev);
    let sapi: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(&sapi, &name, &serde_json::to_value(&sts.status)?, status).await?;
    Ok(Action::await_change())
}

/// The status of `sts` from its pods by ordinal.
fn sts_status(
    sts: &StatefulSet,
    pods: &BTreeMap<i32, &Pod>,
    replicas: i32,
    update_rev: &str,
) -> serde_json::Value {
    let current: Vec<&Pod> = pods
        .values()
        .copied()
        .filter(|p| util::is_active(p))
        .collect();
    let ready = current.iter().filter(|p| util::is_ready(p)).count();
    let updated = current
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(update_rev))
        .count();
    let old_status = sts.status.clone().unwrap_or_default();
    let current_rev = if updated == current.len() && current.len() as i32 == replicas {
        update_rev.to_string()
    } else {
        old_status
            .current_revision
            .clone()
            .unwrap_or_else(|| update_rev.to_string())
    };
    let current_replicas = current
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL) == Some(&current_rev))
        .count();
    json!({
        "observedGeneration": sts.meta().generation,
        "replicas": current.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current_replicas,
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": old_status.collision_count.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_and_pod_shape() {
        assert_eq!(ordinal("web", "web-3"), Some(3));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "svc", "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .expect("sts");
        let p = pod_for(&sts, 2, "web-abc");
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get(POD_NAME_LABEL).map(String::as_str), Some("web-2"));
        assert_eq!(l.get("app").map(String::as_str), Some("w"));
        let ps = p.spec.expect("spec");
        assert_eq!(
            (ps.hostname.as_deref(), ps.subdomain.as_deref()),
            (Some("web-2"), Some("svc"))
        );
        assert_eq!(
            ps.volumes.expect("vols")[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-web-2")
        );
    }
}
