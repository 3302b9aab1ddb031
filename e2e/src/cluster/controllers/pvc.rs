//! PVC binder (a default StorageClass with immediate binding): every Pending claim gets a
//! PersistentVolume `pvc-<uid>` of the requested size and becomes Bound.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive};
use crate::cluster::util;

/// The storage class name given to claims without one.
pub const DEFAULT_STORAGE_CLASS: &str = "standard";

/// Runs the binder.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Controller::new(
        Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    drive(c, cancel, ctx, reconcile).await;
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if pvc.meta().deletion_timestamp.is_some()
        || pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    {
        return Ok(Action::await_change());
    }
    let ns = pvc.namespace().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let uid = pvc.uid().unwrap_or_default();
    let pv_name = spec
        .volume_name
        .clone()
        .unwrap_or_else(|| format!("pvc-{uid}"));
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let modes = spec
        .access_modes
        .clone()
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let class = spec
        .storage_class_name
        .clone()
        .unwrap_or_else(|| DEFAULT_STORAGE_CLASS.into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": "sim.e2e.tkestack.io/hostpath"}},
        "spec": {
            "capacity": {"storage": size}, "accessModes": modes, "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
            "hostPath": {"path": format!("/tmp/sim-pv/{pv_name}")},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": pvc.name_any(), "uid": uid}
        }
    }))?;
    let pv_api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match pv_api.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(e) if util::is_code(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = pv_api
        .patch_status(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
        )
        .await;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let meta = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
        "spec": {"volumeName": pv_name, "storageClassName": class}});
    api.patch(
        &pvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&meta),
    )
    .await?;
    let status =
        json!({"status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}});
    api.patch_status(
        &pvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(Action::await_change())
}
