//! Simulated kubelet: pod lifecycle, readiness gates, in-place image restarts, scripted exits,
//! graceful deletion, pod IPs.

use e2e::cluster::ClusterConfig;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_init_containers_and_readiness_gate() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "annotations": {
            "sim.e2e.tkestack.io/exit-after-ms.init": "30", "sim.e2e.tkestack.io/ready-delay-ms.app": "50"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "nginx:1.25", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}],
            "readinessGates": [{"conditionType": "tkestack.io/InPlaceUpdate"}]
        }
    }))
    .await;
    let pod = env
        .wait_pod("default", "web", "containers ready", |p| {
            (cond(p, "ContainersReady").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    assert_eq!(phase(&pod), "Running");
    assert_eq!(cond(&pod, "Initialized").as_deref(), Some("True"));
    assert_eq!(cond(&pod, "PodScheduled").as_deref(), Some("True"));
    assert_eq!(
        cond(&pod, "Ready").as_deref(),
        Some("False"),
        "the readiness gate is not True yet"
    );
    let st = pod.status.clone().unwrap();
    let cs = &st.container_statuses.clone().unwrap()[0];
    assert_eq!(
        (
            cs.name.as_str(),
            cs.image.as_str(),
            cs.ready,
            cs.started,
            cs.restart_count
        ),
        ("app", "nginx:1.25", true, Some(true), 0)
    );
    assert!(
        cs.image_id.starts_with("docker.io/library/nginx@sha256:"),
        "{}",
        cs.image_id
    );
    assert!(cs.state.as_ref().unwrap().running.is_some());
    assert!(
        cs.container_id
            .as_deref()
            .unwrap()
            .starts_with("containerd://")
    );
    let init = &st.init_container_statuses.clone().unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    assert!(
        st.pod_ip.as_deref().unwrap().starts_with("10.244.0."),
        "{:?}",
        st.pod_ip
    );
    assert_eq!(st.host_ip.as_deref(), Some("192.168.0.2"));
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    // a controller sets the gate condition: the pod becomes Ready and the condition is kept
    let patch = json!({"status": {"conditions": [{"type": "tkestack.io/InPlaceUpdate", "status": "True"}]}});
    env.pods("default")
        .patch_status("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let pod = env
        .wait_pod("default", "web", "Ready", |p| {
            (cond(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    assert_eq!(
        cond(&pod, "tkestack.io/InPlaceUpdate").as_deref(),
        Some("True")
    );
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_restarts_the_container_in_place() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    let mut p = simple_pod("app");
    p["spec"]["containers"] =
        json!([{"name": "app", "image": "nginx:1.25"}, {"name": "side", "image": "envoy:1.0"}]);
    let created = env.create_pod(p).await;
    let before = env
        .wait_pod("default", "app", "Ready", |p| {
            (cond(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    let old_id = before
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .image_id
        .clone();
    // watch from now on to see the brief not-ready
    let api = env.pods("default");
    let rv = before.metadata.resource_version.clone().unwrap();
    let saw_unready = tokio::spawn({
        let api = api.clone();
        async move {
            // every change after `rv`, so the short not-ready window cannot be missed
            let wp = kube::api::WatchParams::default().fields("metadata.name=app");
            let mut s = std::pin::pin!(api.watch(&wp, &rv).await.unwrap());
            while let Some(ev) = s.try_next().await.unwrap() {
                if let kube::api::WatchEvent::Modified(p) = ev {
                    let cs = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.clone())
                        .unwrap_or_default();
                    if cs
                        .iter()
                        .any(|c| c.name == "app" && c.restart_count == 1 && !c.ready)
                    {
                        return cond(&p, "Ready");
                    }
                }
            }
            None
        }
    });
    let patch = json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.26"}]}});
    api.patch("app", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, saw_unready)
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some("False")
    );
    let after = env
        .wait_pod("default", "app", "restarted and ready", |p| {
            let cs = p.status.as_ref()?.container_statuses.clone()?;
            (cond(p, "Ready").as_deref() == Some("True") && cs[0].restart_count == 1)
                .then(|| p.clone())
        })
        .await;
    assert_eq!(after.metadata.uid, created.metadata.uid, "same pod");
    let cs = after.status.unwrap().container_statuses.unwrap();
    assert_eq!(cs[0].image, "nginx:1.26");
    assert_ne!(cs[0].image_id, old_id);
    assert!(cs[0].last_state.as_ref().unwrap().terminated.is_some());
    assert_eq!(cs[1].restart_count, 0, "the other container is untouched");
    env.cluster.shutdown().await;
}

fn scripted(name: &str, policy: &str, code: i32) -> serde_json::Value {
    let mut p = simple_pod(name);
    p["spec"]["restartPolicy"] = json!(policy);
    p["metadata"]["annotations"] = json!({
        "sim.e2e.tkestack.io/exit-after-ms": "40",
        "sim.e2e.tkestack.io/exit-code": code.to_string(),
        "sim.e2e.tkestack.io/restart-delay-ms": "20",
    });
    p
}

fn terminated_code(p: &Pod) -> Option<i32> {
    p.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_exit_codes_and_restart_policies() {
    let env = Env::start(ClusterConfig::with_nodes(2)).await;
    env.create_pod(scripted("never-ok", "Never", 0)).await;
    env.create_pod(scripted("never-fail", "Never", 3)).await;
    env.create_pod(scripted("onfailure-ok", "OnFailure", 0))
        .await;
    env.create_pod(scripted("onfailure-fail", "OnFailure", 1))
        .await;
    env.create_pod(scripted("always-ok", "Always", 0)).await;
    let p = env
        .wait_pod("default", "never-ok", "Succeeded", |p| {
            (phase(p) == "Succeeded").then(|| p.clone())
        })
        .await;
    assert_eq!(terminated_code(&p), Some(0));
    let p = env
        .wait_pod("default", "never-fail", "Failed", |p| {
            (phase(p) == "Failed").then(|| p.clone())
        })
        .await;
    assert_eq!(terminated_code(&p), Some(3));
    assert_eq!(cond(&p, "Ready").as_deref(), Some("False"));
    env.wait_pod("default", "onfailure-ok", "Succeeded", |p| {
        (phase(p) == "Succeeded").then_some(())
    })
    .await;
    for name in ["onfailure-fail", "always-ok"] {
        let p = env
            .wait_pod("default", name, "restarted twice", |p| {
                (p.status.as_ref()?.container_statuses.as_ref()?[0].restart_count >= 2)
                    .then(|| p.clone())
            })
            .await;
        assert_eq!(phase(&p), "Running", "{name}");
    }
    // Jobs on top: completions/parallelism, and a failing Job hitting its backoff limit
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(env.client.clone(), "default");
    let job = |name: &str,
               code: i32,
               completions: i32,
               backoff: i32|
     -> k8s_openapi::api::batch::v1::Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"completions": completions, "parallelism": 2, "backoffLimit": backoff, "template": {
                "metadata": {"annotations": {"sim.e2e.tkestack.io/exit-after-ms": "30", "sim.e2e.tkestack.io/exit-code": code.to_string()}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    };
    jobs.create(&Default::default(), &job("ok", 0, 3, 6))
        .await
        .unwrap();
    jobs.create(&Default::default(), &job("bad", 1, 3, 1))
        .await
        .unwrap();
    let has = |j: &k8s_openapi::api::batch::v1::Job, ty: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty && c.status == "True"))
    };
    let ok = wait_for("job ok Complete", || {
        let jobs = jobs.clone();
        async move { jobs.get("ok").await.ok().filter(|j| has(j, "Complete")) }
    })
    .await;
    assert_eq!(ok.status.as_ref().unwrap().succeeded, Some(3));
    assert!(ok.status.as_ref().unwrap().completion_time.is_some());
    let bad = wait_for("job bad Failed", || {
        let jobs = jobs.clone();
        async move { jobs.get("bad").await.ok().filter(|j| has(j, "Failed")) }
    })
    .await;
    let c = bad
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .clone();
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(bad.status.unwrap().failed.unwrap() >= 2);
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_and_forced_deletion_and_galaxy_ip() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    let mut p = simple_pod("slow");
    p["metadata"]["annotations"] = json!({
        "sim.e2e.tkestack.io/termination-delay-ms": "150",
        "k8s.v1.cni.galaxy.io/args": r#"{"common":{"ipinfos":[{"ip":"10.49.27.205/24","vlan":2,"gateway":"10.49.27.1"}]}}"#
    });
    env.create_pod(p).await;
    env.create_pod(simple_pod("fast")).await;
    let ip = env
        .wait_pod("default", "slow", "Running", |p| {
            (phase(p) == "Running").then(|| p.status.clone()?.pod_ip)
        })
        .await;
    assert_eq!(ip.as_deref(), Some("10.49.27.205"));
    env.wait_pod("default", "fast", "Running", |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    let api = env.pods("default");
    // graceful: the pod stays with a deletionTimestamp until the kubelet has stopped it
    let mut events = std::pin::pin!(
        watcher(
            api.clone(),
            watcher::Config::default().fields("metadata.name=slow")
        )
        .default_backoff()
    );
    api.delete("slow", &DeleteParams::default()).await.unwrap();
    let mut saw_terminating = false;
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            watcher::Event::Apply(p) if p.metadata.deletion_timestamp.is_some() => {
                saw_terminating = true
            }
            watcher::Event::Delete(_) => break,
            _ => {}
        }
    }
    assert!(saw_terminating);
    // forced: gone at once
    api.delete(
        "fast",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("fast").await.unwrap().is_none());
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_resize_is_reported_in_status() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    let mut p = simple_pod("resizable");
    p["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}});
    env.create_pod(p).await;
    env.wait_pod("default", "resizable", "Ready", |p| {
        (cond(p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;
    let patch = json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "300m"}, "limits": {"cpu": "400m"}}}]}});
    let api = env.pods("default");
    // Kubernetes 1.33 resizes through the pods/resize subresource.
    api.patch_subresource(
        "resize",
        "resizable",
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .expect("pods/resize is served");
    let cs = env
        .wait_pod("default", "resizable", "resized", |p| {
            let cs = p.status.as_ref()?.container_statuses.as_ref()?[0].clone();
            (cs.resources.as_ref()?.requests.as_ref()?.get("cpu")?.0 == "300m").then_some(cs)
        })
        .await;
    assert_eq!(
        cs.restart_count, 0,
        "cpu resizes in place (resizePolicy NotRequired)"
    );
    assert_eq!(cs.allocated_resources.unwrap()["cpu"].0, "300m");
    env.cluster.shutdown().await;
}

/// A stand-in for a device-plugin manager: refuses the first start of each container.
#[derive(Debug, Default)]
struct FlakyDevicePlugin {
    calls: std::sync::Mutex<Vec<(String, String, String)>>,
}

impl e2e::cluster::kubelet::KubeletHooks for FlakyDevicePlugin {
    fn pre_start<'a>(
        &'a self,
        node: &'a str,
        pod: &'a Pod,
        container: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut calls = self.calls.lock().unwrap();
            calls.push((
                node.to_string(),
                pod.metadata.name.clone().unwrap(),
                container.to_string(),
            ));
            if calls.iter().filter(|c| c.2 == container).count() == 1 {
                Err("PreStartContainer: device not ready".to_string())
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_hooks_gate_container_starts() {
    let hooks = std::sync::Arc::new(FlakyDevicePlugin::default());
    let env = Env::start(ClusterConfig {
        kubelet_hooks: Some(hooks.clone()),
        ..ClusterConfig::with_nodes(1)
    })
    .await;
    env.create_pod(simple_pod("gpu")).await;
    let msg = env
        .wait_pod("default", "gpu", "held", |p| {
            let w = p.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .clone()?;
            (w.reason.as_deref() == Some("CreateContainerError"))
                .then(|| w.message.unwrap_or_default())
        })
        .await;
    assert_eq!(msg, "PreStartContainer: device not ready");
    env.wait_pod("default", "gpu", "Running after the retry", |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    let calls = hooks.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0],
        ("node-0".to_string(), "gpu".to_string(), "app".to_string())
    );
    assert_eq!(calls.len(), 2);
    env.cluster.shutdown().await;
}
