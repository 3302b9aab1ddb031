//! Built-in workload controllers (the kube-controller-manager subset the add-ons' e2e needs):
//! ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, and a PVC binder. Each is a
//! kube-runtime `Controller` talking to the API; lists are read fresh from the API server
//! (consistent reads), so no expectations bookkeeping is needed. Garbage collection of owned
//! objects is the API server's ownerReference GC.

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod job;
pub mod pvc;
pub mod replicaset;
pub mod statefulset;
pub mod taints;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Shared context of the controllers.
pub struct Ctx {
    /// API client.
    pub client: Client,
}

/// Controller errors.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// API failure.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Serialization.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Which controllers run.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// ReplicaSet + Deployment.
    pub deployments: bool,
    /// StatefulSet.
    pub statefulsets: bool,
    /// DaemonSet.
    pub daemonsets: bool,
    /// Job.
    pub jobs: bool,
    /// PVC binder.
    pub pvc_binder: bool,
    /// NoExecute taint-based eviction.
    pub taint_eviction: bool,
    /// Endpoints and EndpointSlices of Services with selectors.
    pub endpoints: bool,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            deployments: true,
            statefulsets: true,
            daemonsets: true,
            jobs: true,
            pvc_binder: true,
            taint_eviction: true,
            endpoints: true,
        }
    }
}

/// Drives a controller stream to completion.
pub(crate) async fn drive<K, F, Fut>(
    controller: Controller<K>,
    cancel: CancellationToken,
    ctx: Arc<Ctx>,
    reconcile: F,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, CtlError>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(async move { cancel.cancelled().await })
        .run(
            reconcile,
            |_obj, err, _ctx| {
                tracing::debug!(error = %err, "workload reconcile failed");
                Action::requeue(Duration::from_millis(200))
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Starts the selected controllers.
pub fn spawn_all(
    client: Client,
    cfg: &ControllersConfig,
    cancel: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = Arc::new(Ctx { client });
    let mut tasks = Vec::new();
    if cfg.deployments {
        tasks.push(tokio::spawn(replicaset::run(ctx.clone(), cancel.clone())));
        tasks.push(tokio::spawn(deployment::run(ctx.clone(), cancel.clone())));
    }
    if cfg.statefulsets {
        tasks.push(tokio::spawn(statefulset::run(ctx.clone(), cancel.clone())));
    }
    if cfg.daemonsets {
        tasks.push(tokio::spawn(daemonset::run(ctx.clone(), cancel.clone())));
    }
    if cfg.jobs {
        tasks.push(tokio::spawn(job::run(ctx.clone(), cancel.clone())));
    }
    if cfg.endpoints {
        tasks.push(tokio::spawn(endpoints::run(ctx.clone(), cancel.clone())));
    }
    if cfg.taint_eviction {
        tasks.push(tokio::spawn(taints::run(
            ctx.client.clone(),
            cancel.clone(),
        )));
    }
    if cfg.pvc_binder {
        tasks.push(tokio::spawn(pvc::run(ctx.clone(), cancel.clone())));
    }
    tasks
}

/// A pod object from a template.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    ns: &str,
    owner: OwnerReference,
    name: Option<String>,
    generate_name: Option<String>,
    extra_labels: &BTreeMap<String, String>,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.extend(extra_labels.clone());
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: tmeta.annotations.clone(),
            finalizers: tmeta.finalizers.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Pods in `ns` matching `selector` and controlled by `uid`.
pub(crate) async fn owned_pods(
    client: &Client,
    ns: &str,
    selector: &str,
    uid: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = if selector.is_empty() {
        ListParams::default()
    } else {
        ListParams::default().labels(selector)
    };
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| crate::cluster::util::controlled_by(&p.metadata, uid))
        .collect())
}

/// Merge-patches `status` when it differs from `current` (compared as JSON).
pub(crate) async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    current: &serde_json::Value,
    status: serde_json::Value,
) -> Result<(), CtlError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut merged = current.clone();
    json_patch::merge(&mut merged, &status);
    if merged == *current {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Resolves an int-or-percent (`maxSurge`, `maxUnavailable`) against `total`.
pub fn int_or_percent(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    default: &str,
    round_up: bool,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) => {
            let x = p * i64::from(total);
            let v = if round_up { (x + 99) / 100 } else { x / 100 };
            i32::try_from(v).unwrap_or(0)
        }
        None => s.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn int_or_percent_rounding() {
        assert_eq!(int_or_percent(None, 10, "25%", true), 3);
        assert_eq!(int_or_percent(None, 10, "25%", false), 2);
        assert_eq!(
            int_or_percent(Some(&IntOrString::Int(2)), 10, "25%", false),
            2
        );
        assert_eq!(
            int_or_percent(Some(&IntOrString::String("50%".into())), 3, "", true),
            2
        );
        assert_eq!(
            int_or_percent(Some(&IntOrString::String("1".into())), 3, "", true),
            1
        );
    }
}
