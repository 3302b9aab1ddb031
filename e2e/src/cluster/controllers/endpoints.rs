//! Endpoints and EndpointSlice controllers: for every Service with a selector, the matching
//! pods with an IP become addresses (ready ones in `addresses`, others in
//! `notReadyAddresses`; terminating pods are left out), with the Service's ports resolved
//! against the pods' container ports (numeric or named `targetPort`). The EndpointSlice is
//! `<service>-sim`, labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive};
use crate::cluster::util;

/// Runs the controller (every Service is reconciled when pods change).
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let pods = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let c = Controller::new(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(pods);
    drive(c, cancel, ctx, reconcile).await;
}

/// The target port of `sp` on `pod` (a named targetPort is looked up in the containers).
pub fn target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// (port name, port, protocol) of every Service port, resolved for one pod.
type PortKey = Vec<(String, i32, String)>;

/// The Endpoints `subsets` and the EndpointSlice `endpoints`/`ports` for a Service. Pure.
pub fn compute(svc: &Service, pods: &[Pod]) -> (Value, Value, Value) {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // subsets grouped by the resolved port set, as upstream's RepackSubsets does
    let mut groups: BTreeMap<PortKey, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut slice_eps = Vec::new();
    let mut slice_ports: BTreeMap<String, (i32, String)> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() || util::is_terminal(pod) {
            continue;
        }
        let ready = util::is_ready(pod);
        let key: Vec<(String, i32, String)> = ports
            .iter()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    target_port(sp, pod)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        for (name, port, proto) in &key {
            slice_ports
                .entry(name.clone())
                .or_insert((*port, proto.clone()));
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let target = json!({"kind": "Pod", "namespace": pod.namespace(), "name": pod.name_any(), "uid": pod.uid()});
        let addr = json!({"ip": ip, "nodeName": node, "targetRef": target});
        let g = groups.entry(key).or_default();
        if ready {
            g.0.push(addr)
        } else {
            g.1.push(addr)
        }
        slice_eps.push(json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "nodeName": node,
            "targetRef": target,
        }));
    }
    let subsets: Vec<Value> = groups
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, (ready, not_ready))| {
            let ports: Vec<Value> = k
                .iter()
                .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
                .collect();
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let sports: Vec<Value> = slice_ports
        .into_iter()
        .map(|(n, (p, proto))| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    (json!(subsets), json!(slice_eps), json!(sports))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return Ok(Action::await_change());
    };
    if svc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&sel.join(",")))
        .await?
        .items;
    let (subsets, slice_eps, slice_ports) = compute(&svc, &pods);
    let owner = util::controller_ref(svc.as_ref());
    // Endpoints (same name as the Service)
    let eps_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let labels = svc.labels().clone();
    match eps_api.get_opt(&name).await? {
        None => {
            let ep: Endpoints = serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets}),
            )?;
            match eps_api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                Err(e) if util::is_code(&e, 409) => {
                    return Ok(Action::requeue(std::time::Duration::from_millis(10)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(cur) => {
            let have = serde_json::to_value(cur.subsets.clone().unwrap_or_default())?;
            if have != subsets {
                let patch = json!({"metadata": {"resourceVersion": cur.resource_version()}, "subsets": subsets});
                match eps_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if util::is_code(&e, 409) => {
                        return Ok(Action::requeue(std::time::Duration::from_millis(10)));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // EndpointSlice
    let slice_name = format!("{name}-sim");
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let desired = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": [owner],
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4", "endpoints": slice_eps, "ports": slice_ports,
    });
    match slices.get_opt(&slice_name).await? {
        None => {
            let s: EndpointSlice = serde_json::from_value(desired)?;
            if let Err(e) = slices.create(&PostParams::default(), &s).await
                && !util::is_code(&e, 409)
            {
                return Err(e.into());
            }
        }
        Some(cur) => {
            let cur_v = serde_json::to_value(&cur)?;
            if cur_v.get("endpoints").cloned().unwrap_or(json!([])) != slice_eps
                || cur_v.get("ports").cloned().unwrap_or(json!([])) != slice_ports
            {
                let patch = json!({"endpoints": slice_eps, "ports": slice_ports});
                slices
                    .patch(&slice_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_pods() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "metrics", "port": 9090}]}}))
        .expect("svc");
        let pod = |name: &str, ip: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "uid": name},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}}))
            .expect("pod")
        };
        let (subsets, eps, ports) = compute(
            &svc,
            &[
                pod("a", "127.1.0.2", "True"),
                pod("b", "127.1.0.3", "False"),
                pod("c", "", "True"),
            ],
        );
        assert_eq!(subsets[0]["addresses"][0]["ip"], "127.1.0.2");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "127.1.0.3");
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}])
        );
        assert_eq!(eps.as_array().map(Vec::len), Some(2));
        assert_eq!(eps[1]["conditions"]["ready"], false);
        assert_eq!(ports.as_array().map(Vec::len), Some(2));
    }
}
